//! What a coordinator is started with: the task and its training pool, the pipeline lag
//! bound, the timeouts, the curriculum's retirement rule and where its journal is.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::CoordinatorError;

/// Everything the coordinator needs to run; the binary fills it from the run config and flags.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// Task spec for `tasks::from_spec`, e.g. `addition:3` or `data/train.jsonl@exact`.
    pub task: String,
    /// How a dataset task divides into train and held-out problems (the coordinator leases
    /// only the train side).
    pub split: tasks::DatasetSplit,
    /// Seed of procedural tasks.
    pub seed: u64,
    /// Training prompts of a procedural task, walked in epochs (0: an unbounded stream, every
    /// prompt new). A dataset keeps its own size.
    pub train_size: u64,
    /// Passes over a finite training pool before the rollouts end (0: no limit).
    pub epochs: u64,
    /// PipelineRL k: an actor may lease only with weights at least `learner_version - max_lag`.
    pub max_lag: u64,
    /// The run config as TOML, handed verbatim to every member that registers.
    pub run_config_toml: String,
    /// How long an actor has to complete a lease before its prompts go back to the pool.
    pub lease_timeout: Duration,
    /// How often members are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// An actor silent this long is declared dead and its leases are returned.
    pub actor_timeout: Duration,
    /// No-Positive-Resampling: a problem whose pass rate reaches this is retired...
    pub retire_pass_rate: f64,
    /// ...once it has at least this many scored samples...
    pub retire_min_samples: usize,
    /// ...among its last this many (the pass rate is over a recent window).
    pub pass_rate_window: usize,
    /// Append-only journal of the run's state changes: replayed on start (a restarted
    /// coordinator continues the run), appended to while serving. None: nothing survives a
    /// restart.
    pub journal: Option<PathBuf>,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            task: "addition:2".to_string(),
            split: tasks::DatasetSplit::default(),
            seed: 0,
            train_size: 1024,
            epochs: 0,
            max_lag: 8,
            run_config_toml: String::new(),
            lease_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_millis(500),
            actor_timeout: Duration::from_secs(5),
            retire_pass_rate: 0.9,
            retire_min_samples: 16,
            pass_rate_window: 32,
            journal: None,
        }
    }
}

impl CoordinatorSettings {
    /// Checks the ranges the logic relies on.
    pub(crate) fn validate(&self) -> Result<(), CoordinatorError> {
        let positive = [
            ("lease_timeout", self.lease_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("actor_timeout", self.actor_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(CoordinatorError::InvalidSettings {
                    name,
                    reason: "must be longer than zero".to_string(),
                });
            }
        }
        rollout::curriculum::check_rule(
            self.retire_pass_rate,
            self.retire_min_samples,
            self.pass_rate_window,
        )
        .map_err(|(name, reason)| CoordinatorError::InvalidSettings { name, reason })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_timeouts_are_not() {
        assert!(CoordinatorSettings::default().validate().is_ok());
        let zero = CoordinatorSettings {
            actor_timeout: Duration::ZERO,
            ..CoordinatorSettings::default()
        };
        let err = zero.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid coordinator setting actor_timeout: must be longer than zero"
        );
        let nan = CoordinatorSettings {
            retire_pass_rate: f64::NAN,
            ..CoordinatorSettings::default()
        };
        assert!(nan.validate().is_err());
        let narrow = CoordinatorSettings {
            pass_rate_window: 8,
            retire_min_samples: 16,
            ..CoordinatorSettings::default()
        };
        let err = narrow.validate().unwrap_err().to_string();
        assert!(err.contains("at least 16"), "{err}");
    }
}
