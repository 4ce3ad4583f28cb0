//! The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models
//! Trained on Code"): with `n` samples of a problem of which `c` are correct,
//!
//! `pass@k = 1 - C(n - c, k) / C(n, k)`
//!
//! the probability that k samples drawn without replacement from the n include a correct one.
//! The binomials overflow long before n is large, so it is computed as the paper's code does,
//! as a product: `C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i)`.

/// Unbiased pass@k of one problem with `c` correct among `n` samples; `None` unless
/// `1 <= k <= n` and `c <= n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Some(1.0 - miss)
}

/// Mean pass@k over problems given as `(n, c)` pairs; `None` if any problem has fewer than
/// k samples, or there are no problems.
pub fn mean_pass_at_k(problems: &[(usize, usize)], k: usize) -> Option<f64> {
    if problems.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    for &(n, c) in problems {
        sum += pass_at_k(n, c, k)?;
    }
    Some(sum / problems.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn matches_hand_computed_binomials() {
        // 1 - C(3,2)/C(5,2) = 1 - 3/10.
        close(pass_at_k(5, 2, 2).unwrap(), 0.7);
        // k = 1 is the fraction correct.
        close(pass_at_k(10, 3, 1).unwrap(), 0.3);
        // 1 - C(6,3)/C(10,3) = 1 - 20/120.
        close(pass_at_k(10, 4, 3).unwrap(), 1.0 - 20.0 / 120.0);
        // 1 - C(15,4)/C(16,4) = 1 - 1365/1820 = 0.25.
        close(pass_at_k(16, 1, 4).unwrap(), 0.25);
        // k = n: any correct sample passes.
        close(pass_at_k(16, 1, 16).unwrap(), 1.0);
        close(pass_at_k(16, 0, 16).unwrap(), 0.0);
        // Fewer than k wrong samples: every k-subset has a correct one.
        close(pass_at_k(5, 4, 2).unwrap(), 1.0);
        close(pass_at_k(7, 0, 3).unwrap(), 0.0);
    }

    #[test]
    fn stable_where_binomials_overflow() {
        // C(1000, 500) overflows f64; the product form does not.
        let p = pass_at_k(1000, 1, 500).unwrap();
        close(p, 0.5);
        let p = pass_at_k(2000, 10, 100).unwrap();
        assert!(p.is_finite() && p > 0.0 && p < 1.0, "{p}");
        // Cross-check with log-binomials: 1 - exp(lnC(1990,100) - lnC(2000,100)).
        let ln_c = |n: usize, k: usize| -> f64 {
            (0..k)
                .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
                .sum()
        };
        let expected = 1.0 - (ln_c(1990, 100) - ln_c(2000, 100)).exp();
        assert!((p - expected).abs() < 1e-9, "{p} vs {expected}");
    }

    #[test]
    fn invalid_k_is_none_and_means_average() {
        assert_eq!(pass_at_k(4, 1, 0), None);
        assert_eq!(pass_at_k(4, 1, 5), None);
        assert_eq!(pass_at_k(4, 5, 1), None);
        close(
            mean_pass_at_k(&[(5, 2), (5, 5)], 2).unwrap(),
            (0.7 + 1.0) / 2.0,
        );
        assert_eq!(mean_pass_at_k(&[(5, 2), (1, 1)], 2), None);
        assert_eq!(mean_pass_at_k(&[], 1), None);
    }
}
