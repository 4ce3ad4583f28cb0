//! The curriculum's memory: each problem's pass-rate history and zero-variance count, and the
//! No-Positive-Resampling rule that retires a problem the policy has learned.

use std::collections::HashMap;

/// Rewards seen for one problem.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PassRate {
    pub sum: f64,
    pub count: u64,
}

impl PassRate {
    /// Mean reward; 0 before any sample.
    pub(crate) fn rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Per-problem pass-rate histories and zero-variance counts, keyed by problem id.
#[derive(Debug)]
pub(crate) struct Curriculum {
    retire_pass_rate: f64,
    retire_min_samples: u64,
    history: HashMap<String, PassRate>,
    zero_variance: HashMap<String, u64>,
    zero_variance_total: u64,
}

impl Curriculum {
    /// Retires a problem once it has `retire_min_samples` samples and a pass rate of at least
    /// `retire_pass_rate`.
    pub(crate) fn new(retire_pass_rate: f64, retire_min_samples: usize) -> Self {
        Self {
            retire_pass_rate,
            retire_min_samples: retire_min_samples as u64,
            history: HashMap::new(),
            zero_variance: HashMap::new(),
            zero_variance_total: 0,
        }
    }

    /// Adds a group's rewards to the problem's history; returns the history when it now meets
    /// the retirement rule (the caller retires the problem).
    pub(crate) fn record(&mut self, problem_id: &str, rewards: &[f32]) -> Option<PassRate> {
        if rewards.is_empty() {
            return None;
        }
        let history = self.history.entry(problem_id.to_string()).or_default();
        history.sum += rewards.iter().map(|&r| f64::from(r)).sum::<f64>();
        history.count += rewards.len() as u64;
        let history = *history;
        let meets =
            history.count >= self.retire_min_samples && history.rate() >= self.retire_pass_rate;
        meets.then_some(history)
    }

    /// The history of `problem_id` if it meets the retirement rule.
    pub(crate) fn history_if_learned(&self, problem_id: &str) -> Option<PassRate> {
        let history = *self.history.get(problem_id)?;
        let meets =
            history.count >= self.retire_min_samples && history.rate() >= self.retire_pass_rate;
        meets.then_some(history)
    }

    /// Counts one dropped zero-variance group for each id (an id may repeat).
    pub(crate) fn count_zero_variance<'a>(
        &mut self,
        problem_ids: impl IntoIterator<Item = &'a str>,
    ) {
        for id in problem_ids {
            *self.zero_variance.entry(id.to_string()).or_default() += 1;
            self.zero_variance_total += 1;
        }
    }

    /// The history of one problem, if it has any.
    #[cfg(test)]
    pub(crate) fn history(&self, problem_id: &str) -> Option<PassRate> {
        self.history.get(problem_id).copied()
    }

    /// Zero-variance groups counted for one problem.
    #[cfg(test)]
    pub(crate) fn zero_variance(&self, problem_id: &str) -> u64 {
        self.zero_variance.get(problem_id).copied().unwrap_or(0)
    }

    /// Histories and counts in a canonical order, to compare a replayed curriculum with the
    /// live one.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let mut history: Vec<_> = self
            .history
            .iter()
            .map(|(id, h)| format!("{id} {}/{}", h.sum, h.count))
            .collect();
        history.sort();
        let mut zero: Vec<_> = self.zero_variance.iter().collect();
        zero.sort();
        format!(
            "{history:?} zero {zero:?} total {}",
            self.zero_variance_total
        )
    }

    /// Zero-variance groups counted over all problems.
    pub(crate) fn zero_variance_total(&self) -> u64 {
        self.zero_variance_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retires_at_the_pass_rate_once_enough_samples() {
        let mut curriculum = Curriculum::new(0.9, 16);
        // 8 of 8: perfect, but too few samples.
        assert_eq!(curriculum.record("p", &[1.0; 8]), None);
        // 15 of 16 = 0.9375 >= 0.9 with 16 samples.
        let mut group = [1.0; 8];
        group[0] = 0.0;
        let history = curriculum.record("p", &group).expect("retires");
        assert_eq!(
            history,
            PassRate {
                sum: 15.0,
                count: 16
            }
        );
    }

    #[test]
    fn exactly_the_threshold_retires_and_just_below_does_not() {
        let mut curriculum = Curriculum::new(0.9, 10);
        let mut nine_of_ten = [1.0; 10];
        nine_of_ten[3] = 0.0;
        assert!(curriculum.record("a", &nine_of_ten).is_some(), "0.9 >= 0.9");
        let mut eight_of_ten = nine_of_ten;
        eight_of_ten[4] = 0.0;
        assert!(curriculum.record("b", &eight_of_ten).is_none(), "0.8 < 0.9");
        assert_eq!(curriculum.history("b").unwrap().rate(), 0.8);
    }

    #[test]
    fn histories_are_per_problem_and_empty_groups_count_nothing() {
        let mut curriculum = Curriculum::new(0.9, 1);
        assert_eq!(curriculum.record("a", &[]), None);
        assert_eq!(curriculum.history("a"), None);
        assert_eq!(curriculum.record("b", &[0.0, 0.0]), None);
        assert!(curriculum.record("c", &[1.0]).is_some());
        assert_eq!(curriculum.history("b").unwrap().count, 2);
    }

    #[test]
    fn zero_variance_counts_per_problem_and_in_total() {
        let mut curriculum = Curriculum::new(0.9, 16);
        curriculum.count_zero_variance(["a", "b", "a"]);
        assert_eq!(curriculum.zero_variance("a"), 2);
        assert_eq!(curriculum.zero_variance("b"), 1);
        assert_eq!(curriculum.zero_variance("c"), 0);
        assert_eq!(curriculum.zero_variance_total(), 3);
    }
}
