//! The No-Positive-Resampling curriculum as pure logic, shared by the coordinator and the
//! synchronous loop: a prompt's pass rate over a recent window of samples and the rule that
//! retires a prompt the policy has learned ([`Curriculum`]), and the walk over a finite
//! training pool in epochs that never hands out a retired prompt again ([`TrainPool`]).
//!
//! Neither knows about leases, clocks or the network: the coordinator adds those around
//! them, the synchronous loop calls them directly.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Checks a retirement rule: the setting at fault and what to do, if it is unusable (a NaN
/// pass rate, or a window too small to ever hold `retire_min_samples` samples).
pub fn check_rule(
    retire_pass_rate: f64,
    retire_min_samples: usize,
    window: usize,
) -> Result<(), (&'static str, String)> {
    if retire_pass_rate.is_nan() {
        return Err((
            "retire_pass_rate",
            "is NaN: give a pass rate such as 0.9 (above 1.0 never retires)".to_string(),
        ));
    }
    if window == 0 || window < retire_min_samples {
        return Err((
            "pass_rate_window",
            format!(
                "{window} samples cannot hold retire_min_samples = {retire_min_samples}: no \
                 prompt could ever retire; make the window at least {} (or set \
                 retire_pass_rate above 1.0 to never retire)",
                retire_min_samples.max(1)
            ),
        ));
    }
    Ok(())
}

/// A prompt's rewards over its window: their sum and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassRate {
    pub sum: f64,
    pub count: u64,
}

impl PassRate {
    /// Mean reward; 0 before any sample.
    pub fn rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Per-prompt windows of recent rewards and the retirement rule: a prompt retires once its
/// window holds at least `retire_min_samples` samples whose mean reaches `retire_pass_rate`.
///
/// The window is the last `window` samples, not the whole run: a prompt is judged by the
/// policy as it is now, so one that was failed long ago and is solved now retires, and one
/// solved long ago and failed now does not.
///
/// It serialises (serde) so that a run can keep it in its checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curriculum {
    retire_pass_rate: f64,
    retire_min_samples: u64,
    window: usize,
    recent: HashMap<String, VecDeque<f32>>,
    retired: HashSet<String>,
}

impl Curriculum {
    /// A curriculum that judges each prompt by its last `window` samples (at least 1).
    pub fn new(retire_pass_rate: f64, retire_min_samples: usize, window: usize) -> Self {
        Self {
            retire_pass_rate,
            retire_min_samples: retire_min_samples as u64,
            window: window.max(1),
            recent: HashMap::new(),
            retired: HashSet::new(),
        }
    }

    /// Adds a group's rewards to the prompt's window; true when the prompt meets the rule
    /// now for the first time (the caller retires it: it is never sampled again).
    pub fn record(&mut self, problem_id: &str, rewards: &[f32]) -> bool {
        if rewards.is_empty() {
            return false;
        }
        let window = self.window;
        let recent = self.recent.entry(problem_id.to_string()).or_default();
        for &reward in rewards {
            if recent.len() == window {
                recent.pop_front();
            }
            recent.push_back(reward);
        }
        let learned = self.meets(problem_id);
        learned && self.retired.insert(problem_id.to_string())
    }

    /// The prompt's pass rate over its window, if it has any samples.
    pub fn pass_rate(&self, problem_id: &str) -> Option<PassRate> {
        let recent = self.recent.get(problem_id)?;
        Some(PassRate {
            sum: recent.iter().map(|&r| f64::from(r)).sum(),
            count: recent.len() as u64,
        })
    }

    /// Whether `record` has retired the prompt.
    pub fn is_retired(&self, problem_id: &str) -> bool {
        self.retired.contains(problem_id)
    }

    /// Prompts retired so far.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Forgets every prompt `keep` says no (its window and its retirement), so that a run over
    /// an unbounded source keeps only the prompts that can still come back: the caller
    /// guarantees a forgotten prompt is never recorded for again, or does not mind it
    /// starting over.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.recent.retain(|id, _| keep(id));
        self.retired.retain(|id| keep(id));
    }

    /// Takes `saved`'s windows and retirements, keeping this curriculum's rule (a restored
    /// snapshot follows the settings in force, as a replayed journal does).
    pub fn restore_memory(&mut self, saved: Curriculum) {
        self.recent = saved.recent;
        self.retired = saved.retired;
    }

    /// Prompts with a window or a retirement remembered.
    pub fn tracked(&self) -> usize {
        self.recent.len() + self.retired.len()
    }

    /// Windows and retirements in a canonical order (to compare two curricula in tests).
    pub fn describe(&self) -> String {
        let mut recent: Vec<_> = self
            .recent
            .iter()
            .map(|(id, rewards)| format!("{id} {rewards:?}"))
            .collect();
        recent.sort();
        let mut retired: Vec<_> = self.retired.iter().collect();
        retired.sort();
        format!("{recent:?} retired {retired:?}")
    }

    fn meets(&self, problem_id: &str) -> bool {
        self.pass_rate(problem_id).is_some_and(|p| {
            p.count >= self.retire_min_samples && p.rate() >= self.retire_pass_rate
        })
    }
}

/// The walk over a training pool's indices `0..len`, in order, one pass (epoch) after
/// another, skipping retired indices; for `len = None` an unbounded stream `0, 1, 2, ...`
/// (each index handed out once). With `epochs > 0` the walk ends after that many passes.
///
/// The position is one number, `cursor`: passes completed times `len` plus the place in the
/// current pass, so a journal or checkpoint that keeps it (and the retired indices) restores
/// the walk exactly; it also serialises as a whole (serde).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainPool {
    len: Option<u64>,
    epochs: u64,
    cursor: u64,
    retired: HashSet<u64>,
    /// Retired indices of an unbounded stream forgotten (`forget_retired`): counted, no
    /// longer listed.
    #[serde(default)]
    retired_forgotten: u64,
}

impl TrainPool {
    /// A pool of `len` prompts (None: unbounded) walked for `epochs` passes (0: no limit).
    pub fn new(len: Option<u64>, epochs: u64) -> Self {
        Self {
            len,
            epochs,
            cursor: 0,
            retired: HashSet::new(),
            retired_forgotten: 0,
        }
    }

    /// On an unbounded stream, forgets the retired indices `keep` says no (still counted in
    /// [`retired`](Self::retired)): the walk never comes back to an index behind its cursor, so
    /// only the indices the caller may still hand out again (leased, returned) need their
    /// mark. A finite pool keeps every mark: its walk comes round again.
    pub fn forget_retired(&mut self, keep: impl Fn(u64) -> bool) {
        if self.len.is_some() {
            return;
        }
        let before = self.retired.len();
        self.retired.retain(|&index| keep(index));
        self.retired_forgotten += (before - self.retired.len()) as u64;
    }

    /// The next `n` indices of the walk (retired ones skipped); fewer once it is exhausted.
    /// A batch may span two epochs; an index appears at most once per epoch.
    pub fn next_batch(&mut self, n: usize) -> Vec<u64> {
        let mut batch = Vec::with_capacity(n.min(1024));
        while batch.len() < n {
            match self.next_unless(|_| false) {
                Some(index) => batch.push(index),
                None => break,
            }
        }
        batch
    }

    /// The next index of the walk, or None, without moving, when that index is `busy` (the
    /// coordinator's: still leased from the previous pass) or the walk is exhausted.
    pub fn next_unless(&mut self, busy: impl Fn(u64) -> bool) -> Option<u64> {
        if self.len == Some(0) || self.exhausted() {
            return None;
        }
        let end = self.end();
        // Not exhausted: a live index comes within one pass, before `end`.
        while self.cursor < end {
            let index = self.index_at(self.cursor);
            if self.retired.contains(&index) {
                self.cursor += 1;
                continue;
            }
            if busy(index) {
                return None;
            }
            self.cursor += 1;
            return Some(index);
        }
        None
    }

    /// Retires `index` for good; true if it was not retired before (an index outside the
    /// pool is ignored).
    pub fn retire(&mut self, index: u64) -> bool {
        if self.len.is_some_and(|len| index >= len) {
            return false;
        }
        self.retired.insert(index)
    }

    /// Whether `index` is retired.
    pub fn is_retired(&self, index: u64) -> bool {
        self.retired.contains(&index)
    }

    /// Passes over the pool completed (0 for an unbounded stream). Once the configured
    /// epochs are exhausted this is `epochs`, even if the last pass ended on retired indices.
    pub fn epoch(&self) -> u64 {
        match self.len {
            Some(len) if len > 0 => {
                let passes = self.cursor / len;
                if self.epochs > 0 && self.exhausted() {
                    self.epochs
                } else {
                    passes
                }
            }
            _ => 0,
        }
    }

    /// Prompts that may still be handed out: the pool's prompts not retired, or for an
    /// unbounded stream the prompts handed out so far that are not retired.
    pub fn active(&self) -> u64 {
        self.len
            .unwrap_or(self.cursor)
            .saturating_sub(self.retired())
    }

    /// Prompts retired.
    pub fn retired(&self) -> u64 {
        self.retired.len() as u64 + self.retired_forgotten
    }

    /// The retired indices, in order (to save them with the cursor).
    pub fn retired_indices(&self) -> Vec<u64> {
        let mut retired: Vec<u64> = self.retired.iter().copied().collect();
        retired.sort_unstable();
        retired
    }

    /// Nothing more will be handed out: every prompt is retired, or the configured epochs
    /// are done (what is left of the last pass is retired). Never for an unbounded stream.
    pub fn exhausted(&self) -> bool {
        let Some(len) = self.len else {
            return false;
        };
        if self.active() == 0 {
            return true;
        }
        if self.epochs == 0 {
            return false;
        }
        let end = self.end();
        // A full pass still ahead holds every live index.
        if end.saturating_sub(self.cursor) >= len {
            return false;
        }
        (self.cursor..end).all(|p| self.retired.contains(&self.index_at(p)))
    }

    /// The pool's size (None: unbounded).
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// Whether the pool has no prompts at all (a finite pool of size 0).
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }

    /// The configured passes (0: no limit).
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// Walks for `epochs` passes from now on (a resumed run may be given more).
    pub fn set_epochs(&mut self, epochs: u64) {
        self.epochs = epochs;
    }

    /// Where the walk stands: passes completed times `len`, plus the place in this pass.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Puts the walk at `cursor` (replaying a journal, resuming a run).
    pub fn set_cursor(&mut self, cursor: u64) {
        self.cursor = cursor;
    }

    fn index_at(&self, position: u64) -> u64 {
        match self.len {
            Some(len) => position % len,
            None => position,
        }
    }

    /// The position the walk ends at.
    fn end(&self) -> u64 {
        match self.len {
            Some(len) if self.epochs > 0 => self.epochs.saturating_mul(len),
            _ => u64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retires_at_the_pass_rate_once_the_window_holds_enough_samples() {
        let mut curriculum = Curriculum::new(0.9, 16, 32);
        // 8 of 8: perfect, but too few samples.
        assert!(!curriculum.record("p", &[1.0; 8]));
        // 15 of 16 = 0.9375 >= 0.9 with 16 samples.
        let mut group = [1.0; 8];
        group[0] = 0.0;
        assert!(curriculum.record("p", &group));
        assert_eq!(
            curriculum.pass_rate("p"),
            Some(PassRate {
                sum: 15.0,
                count: 16
            })
        );
        assert!(!curriculum.record("p", &[1.0; 8]), "retired only once");
        assert!(curriculum.is_retired("p"));
        assert_eq!(curriculum.retired(), 1);
    }

    #[test]
    fn exactly_the_threshold_retires_and_just_below_does_not() {
        let mut curriculum = Curriculum::new(0.9, 10, 10);
        let mut nine_of_ten = [1.0; 10];
        nine_of_ten[3] = 0.0;
        assert!(curriculum.record("a", &nine_of_ten), "0.9 >= 0.9");
        let mut eight_of_ten = nine_of_ten;
        eight_of_ten[4] = 0.0;
        assert!(!curriculum.record("b", &eight_of_ten), "0.8 < 0.9");
        assert_eq!(curriculum.pass_rate("b").unwrap().rate(), 0.8);
    }

    #[test]
    fn the_pass_rate_is_over_the_recent_window() {
        let mut curriculum = Curriculum::new(0.9, 8, 8);
        // Failed long ago, solved now: the old failures leave the window and it retires.
        assert!(!curriculum.record("late", &[0.0; 8]));
        assert!(!curriculum.record("late", &[1.0; 4]), "4 of 8");
        assert!(curriculum.record("late", &[1.0; 4]), "8 of the last 8");
        // Solved long ago, failed now: 4 of 7 since the start would retire it at 0.5, but
        // its window of the last 4 holds 1 of 4.
        let mut early = Curriculum::new(0.5, 4, 4);
        assert!(!early.record("early", &[1.0; 3]), "3 samples < 4");
        assert!(!early.record("early", &[1.0, 0.0, 0.0, 0.0]));
        assert_eq!(early.pass_rate("early").unwrap().rate(), 0.25);
        assert!(!early.record("early", &[0.0; 4]));
        let mut since_start = Curriculum::new(0.5, 4, 1000);
        assert!(!since_start.record("early", &[1.0; 3]));
        assert!(since_start.record("early", &[1.0, 0.0, 0.0, 0.0]), "4 of 7");
    }

    #[test]
    fn windows_are_per_prompt_and_empty_groups_count_nothing() {
        let mut curriculum = Curriculum::new(0.9, 1, 4);
        assert!(!curriculum.record("a", &[]));
        assert_eq!(curriculum.pass_rate("a"), None);
        assert!(!curriculum.record("b", &[0.0, 0.0]));
        assert!(curriculum.record("c", &[1.0]));
        assert_eq!(curriculum.pass_rate("b").unwrap().count, 2);
        // A group larger than the window keeps its last samples.
        curriculum.record("b", &[1.0, 1.0, 1.0, 0.0, 1.0]);
        assert_eq!(
            curriculum.pass_rate("b"),
            Some(PassRate { sum: 3.0, count: 4 })
        );
    }

    #[test]
    fn an_unbounded_stream_forgets_retired_marks_and_still_counts_them() {
        let mut stream = TrainPool::new(None, 0);
        assert_eq!(stream.next_batch(4), [0, 1, 2, 3]);
        for index in [0, 1, 3] {
            stream.retire(index);
        }
        stream.forget_retired(|index| index == 3);
        assert_eq!(stream.retired_indices(), [3]);
        assert_eq!((stream.retired(), stream.active()), (3, 1));
        // A finite pool's walk comes round again: it keeps every mark.
        let mut pool = TrainPool::new(Some(4), 0);
        pool.retire(1);
        pool.forget_retired(|_| false);
        assert_eq!(pool.retired_indices(), [1]);
        // A checkpoint written before the count existed still loads.
        let old = r#"{"len":null,"epochs":0,"cursor":5,"retired":[2]}"#;
        let restored: TrainPool = serde_json::from_str(old).unwrap();
        assert_eq!(restored.retired(), 1);
    }

    #[test]
    fn retain_forgets_windows_and_retirements() {
        let mut curriculum = Curriculum::new(0.5, 1, 4);
        assert!(curriculum.record("gone", &[1.0]));
        assert!(!curriculum.record("kept", &[0.0]));
        assert_eq!(curriculum.tracked(), 3);
        curriculum.retain(|id| id == "kept");
        assert_eq!(curriculum.tracked(), 1);
        assert!(!curriculum.is_retired("gone"));
        assert_eq!(curriculum.pass_rate("gone"), None);
    }

    #[test]
    fn unusable_rules_name_the_setting() {
        assert!(check_rule(0.9, 16, 32).is_ok());
        assert!(check_rule(2.0, 0, 1).is_ok(), "never retires, on purpose");
        assert_eq!(
            check_rule(f64::NAN, 16, 32).unwrap_err().0,
            "retire_pass_rate"
        );
        let (name, reason) = check_rule(0.9, 16, 8).unwrap_err();
        assert_eq!(name, "pass_rate_window");
        assert!(reason.contains("at least 16"), "{reason}");
        assert!(check_rule(0.9, 0, 0).is_err(), "an empty window");
    }

    #[test]
    fn a_curriculum_and_a_pool_survive_a_round_trip_through_json() {
        let mut curriculum = Curriculum::new(0.5, 2, 4);
        curriculum.record("a", &[1.0, 1.0]);
        curriculum.record("b", &[0.0]);
        let back: Curriculum =
            serde_json::from_str(&serde_json::to_string(&curriculum).unwrap()).unwrap();
        assert_eq!(back.describe(), curriculum.describe());
        let mut pool = TrainPool::new(Some(5), 2);
        pool.next_batch(3);
        pool.retire(1);
        let mut back: TrainPool =
            serde_json::from_str(&serde_json::to_string(&pool).unwrap()).unwrap();
        assert_eq!(back.next_batch(4), pool.next_batch(4));
    }

    #[test]
    fn a_finite_pool_is_walked_in_epochs_skipping_retired_prompts() {
        let mut pool = TrainPool::new(Some(4), 0);
        assert_eq!(pool.next_batch(3), [0, 1, 2]);
        assert_eq!(pool.epoch(), 0);
        assert!(pool.retire(1));
        assert!(!pool.retire(1), "already retired");
        assert!(!pool.retire(4), "outside the pool");
        assert_eq!(pool.next_batch(3), [3, 0, 2], "1 is never handed out again");
        assert_eq!(pool.epoch(), 1);
        assert_eq!((pool.active(), pool.retired()), (3, 1));
        assert!(!pool.exhausted());
        for index in [0, 2, 3] {
            pool.retire(index);
        }
        assert!(pool.exhausted(), "every prompt retired");
        assert!(pool.next_batch(1).is_empty());
        assert_eq!(pool.retired_indices(), [0, 1, 2, 3]);
    }

    #[test]
    fn the_walk_ends_after_the_configured_epochs() {
        let mut pool = TrainPool::new(Some(3), 2);
        assert_eq!(pool.next_batch(4), [0, 1, 2, 0]);
        assert_eq!(pool.epoch(), 1);
        pool.retire(2);
        assert!(!pool.exhausted());
        assert_eq!(
            pool.next_batch(4),
            [1],
            "2 is retired and ends the last pass"
        );
        assert!(pool.exhausted());
        assert_eq!(pool.epoch(), 2);
        assert!(pool.next_batch(4).is_empty());

        let mut whole = TrainPool::new(Some(2), 1);
        assert_eq!(whole.next_batch(5), [0, 1]);
        assert!(whole.exhausted());
        assert_eq!(whole.epoch(), 1);
    }

    #[test]
    fn a_busy_index_holds_the_walk_where_it_is() {
        let mut pool = TrainPool::new(Some(3), 0);
        assert_eq!(pool.next_batch(3), [0, 1, 2]);
        assert_eq!(pool.next_unless(|i| i == 0), None);
        assert_eq!(pool.cursor(), 3, "did not move");
        assert_eq!(pool.next_unless(|i| i == 1), Some(0));
        assert_eq!(pool.next_unless(|i| i == 1), None);
    }

    #[test]
    fn an_unbounded_stream_never_ends_and_a_cursor_restores_the_walk() {
        let mut stream = TrainPool::new(None, 3);
        assert_eq!(stream.next_batch(3), [0, 1, 2]);
        stream.retire(1);
        assert_eq!(
            (stream.active(), stream.retired(), stream.epoch()),
            (2, 1, 0)
        );
        assert!(!stream.exhausted());
        assert_eq!(stream.next_batch(2), [3, 4]);

        let mut pool = TrainPool::new(Some(5), 0);
        pool.next_batch(7);
        let mut restored = TrainPool::new(Some(5), 0);
        restored.set_cursor(pool.cursor());
        assert_eq!(restored.epoch(), 1);
        assert_eq!(restored.next_batch(4), pool.next_batch(4));
        assert!(TrainPool::new(Some(0), 0).next_batch(1).is_empty());
    }
}
