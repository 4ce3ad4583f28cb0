//! The run's training curve as the coordinator has seen it, for `/metrics` and the dashboard:
//! the last [`HISTORY_STEPS`] steps the learner reported with each `PublishVersion` (with the
//! pool's size when each arrived) and running totals over every step reported to this
//! coordinator process, the lag histogram among them.
//!
//! Not journaled: the learner's `metrics.jsonl` is the durable record of every step. A
//! restarted coordinator starts with an empty history and fills it as the learner publishes.

use std::collections::VecDeque;

use crate::domain::{StatusSnapshot, StepStats};

/// Steps kept for the dashboard's curves; older ones fall off.
pub(crate) const HISTORY_STEPS: usize = 2000;

/// Lag buckets kept in the totals: tokens of a longer lag are counted in the last bucket
/// (lags stay under `max_lag` + 1 in a sane run; this only bounds a broken one).
pub(crate) const MAX_LAG_BUCKETS: usize = 1024;

/// One reported step, as the curves draw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepPoint {
    pub step: u64,
    /// The learner's version after the step.
    pub version: u64,
    pub reward_mean: f64,
    pub pass_rate: f64,
    pub tokens_per_s: f64,
    pub step_seconds: f64,
    /// The largest lag of any token trained in the step.
    pub max_lag: u64,
    pub tokens: u64,
    pub dropped_stale: u64,
    pub zero_variance_groups: u64,
    pub wall_s: f64,
    /// Mean model turns per episode (1 for one-turn tasks).
    pub turns_mean: f64,
    /// Problems still in the pool when the step was reported.
    pub pool_active: u64,
    /// Problems retired by the curriculum when the step was reported.
    pub pool_retired: u64,
}

/// Sums over every step reported to this coordinator (restarted steps included: their
/// tokens were trained, even if the weights that learned from them were lost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StepTotals {
    pub steps: u64,
    pub tokens: u64,
    pub dropped_stale: u64,
    pub zero_variance_groups: u64,
    /// `lag_tokens[i]`: trained tokens sampled `i` versions before the trained version.
    pub lag_tokens: Vec<u64>,
}

/// The bounded step history and the running totals.
#[derive(Debug, Clone)]
pub(crate) struct StepHistory {
    points: VecDeque<StepPoint>,
    capacity: usize,
    totals: StepTotals,
}

impl Default for StepHistory {
    fn default() -> Self {
        Self::with_capacity(HISTORY_STEPS)
    }
}

impl StepHistory {
    /// An empty history keeping the last `capacity` steps (at least one).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            points: VecDeque::with_capacity(capacity.min(HISTORY_STEPS)),
            capacity,
            totals: StepTotals::default(),
        }
    }

    /// Adds the step that made `version`, with the pool's size now. A step number at or
    /// below the last one means the learner restarted from a checkpoint and is taking those
    /// steps again: the curve drops the steps it is redoing.
    pub(crate) fn record(&mut self, version: u64, stats: &StepStats, pool: (u64, u64)) {
        while self.points.back().is_some_and(|p| p.step >= stats.step) {
            self.points.pop_back();
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(StepPoint {
            step: stats.step,
            version,
            reward_mean: stats.reward_mean,
            pass_rate: stats.pass_rate,
            tokens_per_s: stats.tokens_per_s,
            step_seconds: stats.step_seconds,
            max_lag: stats.max_lag(),
            tokens: stats.tokens,
            dropped_stale: stats.dropped_stale,
            zero_variance_groups: stats.zero_variance_groups,
            wall_s: stats.wall_s,
            turns_mean: stats.turns_mean,
            pool_active: pool.0,
            pool_retired: pool.1,
        });
        let totals = &mut self.totals;
        totals.steps += 1;
        totals.tokens = totals.tokens.saturating_add(stats.tokens);
        totals.dropped_stale = totals.dropped_stale.saturating_add(stats.dropped_stale);
        totals.zero_variance_groups = totals
            .zero_variance_groups
            .saturating_add(stats.zero_variance_groups);
        for (lag, &tokens) in stats.lag_tokens.iter().enumerate() {
            let bucket = lag.min(MAX_LAG_BUCKETS - 1);
            if totals.lag_tokens.len() <= bucket {
                totals.lag_tokens.resize(bucket + 1, 0);
            }
            totals.lag_tokens[bucket] = totals.lag_tokens[bucket].saturating_add(tokens);
        }
    }

    /// The kept steps, oldest first.
    pub(crate) fn points(&self) -> impl ExactSizeIterator<Item = &StepPoint> {
        self.points.iter()
    }

    /// The sums over every step reported.
    pub(crate) fn totals(&self) -> &StepTotals {
        &self.totals
    }
}

/// Everything `/metrics` and the dashboard show, copied out of the state in one go.
#[derive(Debug, Clone)]
pub(crate) struct RunView {
    pub status: StatusSnapshot,
    /// The kept steps, oldest first.
    pub steps: Vec<StepPoint>,
    pub totals: StepTotals,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(step: u64, lag_tokens: Vec<u64>) -> StepStats {
        StepStats {
            step,
            reward_mean: step as f64 / 10.0,
            pass_rate: 0.5,
            tokens_per_s: 100.0,
            step_seconds: 0.25,
            tokens: lag_tokens.iter().sum(),
            lag_tokens,
            dropped_stale: 1,
            zero_variance_groups: 2,
            wall_s: step as f64,
            turns_mean: 1.0,
        }
    }

    #[test]
    fn keeps_the_last_steps_and_sums_every_step() {
        let mut history = StepHistory::with_capacity(3);
        for step in 1..=5 {
            history.record(step, &stats(step, vec![10, 0, step]), (100 - step, step));
        }
        let steps: Vec<u64> = history.points().map(|p| p.step).collect();
        assert_eq!(steps, [3, 4, 5]);
        let last = history.points().last().unwrap();
        assert_eq!((last.version, last.max_lag), (5, 2));
        assert_eq!((last.pool_active, last.pool_retired), (95, 5));
        assert_eq!(last.reward_mean, 0.5);
        let totals = history.totals();
        assert_eq!(totals.steps, 5);
        assert_eq!(totals.lag_tokens, [50, 0, 15]);
        assert_eq!(totals.tokens, 65);
        assert_eq!((totals.dropped_stale, totals.zero_variance_groups), (5, 10));
    }

    #[test]
    fn max_lag_is_the_longest_lag_with_tokens() {
        assert_eq!(stats(1, vec![]).max_lag(), 0);
        assert_eq!(stats(1, vec![5]).max_lag(), 0);
        assert_eq!(stats(1, vec![5, 0, 3, 0]).max_lag(), 2);
    }

    #[test]
    fn a_restarted_learner_redoes_its_steps_on_the_curve() {
        let mut history = StepHistory::default();
        for step in 1..=6 {
            history.record(step, &stats(step, vec![1]), (0, 0));
        }
        // Restarted from the checkpoint of step 4: steps 5 and 6 come again.
        history.record(5, &stats(5, vec![1]), (0, 0));
        let steps: Vec<u64> = history.points().map(|p| p.step).collect();
        assert_eq!(steps, [1, 2, 3, 4, 5]);
        assert_eq!(history.totals().steps, 7);
        assert_eq!(history.totals().lag_tokens, [7]);
    }

    #[test]
    fn absurd_lags_fold_into_the_last_bucket() {
        let mut history = StepHistory::default();
        let mut lag_tokens = vec![0; MAX_LAG_BUCKETS + 10];
        lag_tokens[0] = 4;
        lag_tokens[MAX_LAG_BUCKETS + 9] = 7;
        history.record(1, &stats(1, lag_tokens), (0, 0));
        let totals = history.totals();
        assert_eq!(totals.lag_tokens.len(), MAX_LAG_BUCKETS);
        assert_eq!(totals.lag_tokens[0], 4);
        assert_eq!(totals.lag_tokens[MAX_LAG_BUCKETS - 1], 7);
        assert_eq!(
            history.points().last().unwrap().max_lag,
            MAX_LAG_BUCKETS as u64 + 9
        );
    }
}
