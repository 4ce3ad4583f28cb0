//! The arithmetic the fused kernels are made of, written so that the compiler vectorises
//! it, and compiled once per vector width ([`multiversion!`]).
//!
//! - Reductions ([`sum`], [`dot`], [`max`]) keep [`LANES`] independent partial results and
//!   add them up in a fixed order at the end. A plain `iter().sum()` is one dependency chain
//!   that no compiler may reorder (float addition is not associative), so it runs at one
//!   add per four cycles; sixteen chains fill a vector register of any width. The order is
//!   the same at every width, so the results are bit for bit the same on every CPU.
//! - [`exp`] is branch-free (a select where glibc's `expf` branches), so a loop of it
//!   vectorises; glibc's is a scalar call per element. It is the classic Cephes reduction
//!   (`x = n ln 2 + r`, a degree-6 polynomial in `r`), within 2 ulp of the exact value,
//!   exactly 0 below `ln(f32::MIN_POSITIVE)` (masked attention scores stay exactly 0) and
//!   infinite above `ln(f32::MAX)`.
//!
//! Nothing here uses fused multiply-add: the same arithmetic on every CPU, with or without
//! FMA units.

/// Partial results a reduction keeps: one AVX-512 register of f32.
pub const LANES: usize = 16;

/// `e^x` (see the module docs for its accuracy and range).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * C1 is exact for the n that occur.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (|x| < 2^22 here).
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_83;
    let c = x.clamp(LO, HI);
    let shifted = c * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The same n as an integer, read from the low bits of `shifted` (1.5 * 2^23 + n):
    // `n as i32` would be a saturating conversion, which compilers do not vectorise.
    let k = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = c - n * C1 - n * C2;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * (r * r) + r + 1.0;
    // 2^n, n in [-126, 128], as 2^a * 2^b with a and b in [-63, 64]: both normal floats.
    let a = k >> 1;
    let pow = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let y = p * pow(a) * pow(k - a);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// The logistic sigmoid `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Adds up partial results in a fixed order.
#[inline(always)]
fn fold(acc: [f32; LANES]) -> f32 {
    let mut half = [0f32; LANES / 2];
    for i in 0..LANES / 2 {
        half[i] = acc[i] + acc[i + LANES / 2];
    }
    let mut quarter = [0f32; LANES / 4];
    for i in 0..LANES / 4 {
        quarter[i] = half[i] + half[i + LANES / 4];
    }
    (quarter[0] + quarter[2]) + (quarter[1] + quarter[3])
}

/// `sum_i xs[i]`.
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (whole, rest) = xs.as_chunks::<LANES>();
    for c in whole {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a += v;
    }
    fold(acc)
}

/// `sum_i a[i] * b[i]` (over the shorter length).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; LANES];
    let (wa, ra) = a[..n].as_chunks::<LANES>();
    let (wb, rb) = b[..n].as_chunks::<LANES>();
    for (x, y) in wa.iter().zip(wb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for ((a, &x), &y) in acc.iter_mut().zip(ra).zip(rb) {
        *a += x * y;
    }
    fold(acc)
}

/// `sum_i a[i] * b[i] * c[i]` (over the shortest length).
#[inline(always)]
pub fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let n = a.len().min(b.len()).min(c.len());
    let mut acc = [0f32; LANES];
    let (wa, ra) = a[..n].as_chunks::<LANES>();
    let (wb, rb) = b[..n].as_chunks::<LANES>();
    let (wc, rc) = c[..n].as_chunks::<LANES>();
    for ((x, y), z) in wa.iter().zip(wb).zip(wc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l] * z[l];
        }
    }
    for (((a, &x), &y), &z) in acc.iter_mut().zip(ra).zip(rb).zip(rc) {
        *a += x * y * z;
    }
    fold(acc)
}

/// The largest of `xs` (`-inf` for none; NaNs are passed over).
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (whole, rest) = xs.split_at(xs.len() / LANES * LANES);
    for chunk in whole.chunks_exact(LANES) {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = if v > *a { v } else { *a };
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a = if v > *a { v } else { *a };
    }
    acc.into_iter()
        .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
}

/// The vector instructions this CPU has, detected once.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    /// AVX-512 (F, BW, DQ, VL).
    V4,
    /// AVX2.
    V3,
    /// What every x86-64 has (SSE2).
    Base,
}

#[cfg(target_arch = "x86_64")]
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            Level::V4
        } else if std::arch::is_x86_feature_detected!("avx2") {
            Level::V3
        } else {
            Level::Base
        }
    })
}

/// Defines `fn $name(args) -> T` that runs `$body` compiled for AVX-512, AVX2 or plain
/// x86-64, whichever this CPU has (and as written elsewhere). The body must only use
/// `#[inline(always)]` helpers, so that all of it is compiled at the chosen width.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn imp($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
                fn v4($($arg: $ty),*) -> $ret {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn v3($($arg: $ty),*) -> $ret {
                    imp($($arg),*)
                }
                use $crate::fused::lanes::{level, Level};
                match level() {
                    // SAFETY: the CPU has the features each version is compiled for.
                    Level::V4 => unsafe { v4($($arg),*) },
                    Level::V3 => unsafe { v3($($arg),*) },
                    Level::Base => imp($($arg),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            imp($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between two finite floats of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_range_and_saturates_outside_it() {
        let mut worst = 0;
        let mut x = -87.3f32;
        while x < 88.7 {
            let exact = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), exact));
            x += 0.001_37;
        }
        assert!(worst <= 2, "{worst} ulp");
        for tiny in [-1e-30f32, 0.0, 1e-30] {
            assert_eq!(exp(tiny), 1.0);
        }
        for masked in [-87.4f32, -1e9, f32::NEG_INFINITY] {
            assert_eq!(exp(masked), 0.0);
        }
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn reductions_match_f64_at_every_length() {
        for n in [0usize, 1, 7, 15, 16, 17, 40, 160, 333] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 5.0)
                .collect();
            let s: f64 = a.iter().map(|&v| v as f64).sum();
            let d: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((sum(&a) as f64 - s).abs() < 1e-3, "sum of {n}");
            assert!((dot(&a, &b) as f64 - d).abs() < 1e-2, "dot of {n}");
            let d3: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| x as f64 * y as f64 * x as f64)
                .sum();
            assert!((dot3(&a, &b, &a) as f64 - d3).abs() < 1e-1, "dot3 of {n}");
            let m = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&a), m, "max of {n}");
        }
    }

    multiversion! {
        fn softmax_sum(xs: &[f32]) -> f32 {
            let m = max(xs);
            let e: Vec<f32> = xs.iter().map(|&x| exp(x - m)).collect();
            sum(&e) + dot3(xs, xs, &e)
        }
    }

    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919 % 1009) as f32) / 50.0 - 10.0)
            .collect();
        #[inline(always)]
        fn plain(xs: &[f32]) -> f32 {
            let m = max(xs);
            let e: Vec<f32> = xs.iter().map(|&x| exp(x - m)).collect();
            sum(&e) + dot3(xs, xs, &e)
        }
        assert_eq!(softmax_sum(&xs).to_bits(), plain(&xs).to_bits());
    }
}
