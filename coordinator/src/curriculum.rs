//! The curriculum's memory: each problem's recent pass rate and the No-Positive-Resampling
//! rule that retires a problem the policy has learned (`rollout::curriculum`, shared with the
//! synchronous loop), plus the count of zero-variance groups the learner reports (a total:
//! nothing reads it per problem, and a count per problem id would grow with an unbounded
//! source).

pub(crate) use rollout::curriculum::PassRate;

/// The curriculum as a snapshot keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedCurriculum {
    rule: rollout::curriculum::Curriculum,
    zero_variance_total: u64,
}

/// Per-problem pass-rate windows, keyed by problem id, and the zero-variance count.
#[derive(Debug)]
pub(crate) struct Curriculum {
    rule: rollout::curriculum::Curriculum,
    zero_variance_total: u64,
}

impl Curriculum {
    /// Retires a problem once its last `window` samples number at least
    /// `retire_min_samples` and pass at a rate of at least `retire_pass_rate`.
    pub(crate) fn new(retire_pass_rate: f64, retire_min_samples: usize, window: usize) -> Self {
        Self {
            rule: rollout::curriculum::Curriculum::new(
                retire_pass_rate,
                retire_min_samples,
                window,
            ),
            zero_variance_total: 0,
        }
    }

    /// Adds a group's rewards to the problem's window; returns its pass rate when the
    /// problem meets the retirement rule now for the first time (the caller retires it).
    pub(crate) fn record(&mut self, problem_id: &str, rewards: &[f32]) -> Option<PassRate> {
        if self.rule.record(problem_id, rewards) {
            self.rule.pass_rate(problem_id)
        } else {
            None
        }
    }

    /// Counts one dropped zero-variance group for each id (an id may repeat).
    pub(crate) fn count_zero_variance<'a>(
        &mut self,
        problem_ids: impl IntoIterator<Item = &'a str>,
    ) {
        self.zero_variance_total += problem_ids.into_iter().count() as u64;
    }

    /// Forgets the windows and retirements of the problems `keep` says no (an unbounded
    /// source's settled prompts: `state/settle.rs`).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.rule.retain(keep);
    }

    /// Problems with a window or a retirement remembered.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.rule.tracked()
    }

    /// The window of one problem, if it has any samples.
    #[cfg(test)]
    pub(crate) fn history(&self, problem_id: &str) -> Option<PassRate> {
        self.rule.pass_rate(problem_id)
    }

    /// Windows and counts in a canonical order, to compare a replayed curriculum with the
    /// live one.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} zero-variance total {}",
            self.rule.describe(),
            self.zero_variance_total
        )
    }

    /// The windows, retirements and count, for a snapshot (`state/image.rs`).
    pub(crate) fn save(&self) -> SavedCurriculum {
        SavedCurriculum {
            rule: self.rule.clone(),
            zero_variance_total: self.zero_variance_total,
        }
    }

    /// Takes a snapshot's windows, retirements and count under this curriculum's rule.
    pub(crate) fn restore(&mut self, saved: SavedCurriculum) {
        self.rule.restore_memory(saved.rule);
        self.zero_variance_total = saved.zero_variance_total;
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
        let mut curriculum = Curriculum::new(0.9, 16, 32);
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
        assert_eq!(curriculum.record("p", &[1.0; 8]), None, "only once");
    }

    #[test]
    fn a_prompt_is_judged_by_its_recent_samples() {
        // Bad long ago, good now: the old failures leave the window of 8.
        let mut curriculum = Curriculum::new(0.9, 8, 8);
        assert_eq!(curriculum.record("late", &[0.0; 8]), None);
        assert_eq!(curriculum.record("late", &[1.0; 4]), None);
        assert!(curriculum.record("late", &[1.0; 4]).is_some());
        // Good long ago, bad now: 4 of 7 since the start would reach 0.5, the window of the
        // last 4 holds 1 of 4.
        let mut curriculum = Curriculum::new(0.5, 4, 4);
        assert_eq!(curriculum.record("early", &[1.0; 3]), None, "too few");
        assert_eq!(curriculum.record("early", &[1.0, 0.0, 0.0, 0.0]), None);
        assert_eq!(curriculum.history("early").unwrap().rate(), 0.25);
    }

    #[test]
    fn zero_variance_groups_are_counted_in_total() {
        let mut curriculum = Curriculum::new(0.9, 16, 32);
        curriculum.count_zero_variance(["a", "b", "a"]);
        assert_eq!(curriculum.zero_variance_total(), 3);
    }

    #[test]
    fn retain_forgets_windows_and_retirements() {
        let mut curriculum = Curriculum::new(0.5, 1, 4);
        assert!(curriculum.record("gone", &[1.0]).is_some());
        assert!(curriculum.record("kept", &[0.0]).is_none());
        assert_eq!(curriculum.tracked(), 3, "two windows and one retirement");
        curriculum.retain(|id| id == "kept");
        assert_eq!(curriculum.tracked(), 1);
        assert!(curriculum.history("gone").is_none());
        assert_eq!(curriculum.history("kept").unwrap().count, 1);
    }
}
