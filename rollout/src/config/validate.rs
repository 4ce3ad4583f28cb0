//! Which values of the run config can be meant: [`RunConfig::validate`] refuses the rest
//! (NaN, a negative learning rate, a group of one, a zero timeout...) with an error that names
//! the field by its TOML path and says what it may be. The checks are small public helpers, so
//! other configs (`oxrl sft`, `oxrl eval`'s flags) hold their numbers to the same ranges.

use std::fmt;

use policy::SamplingParams;

use super::{
    AdamWConfig, EpisodeConfig, Objective, PipelineConfig, RewardCombine, RewardConfig, RunConfig,
    ScoreTransform, UpdateConfig,
};

/// Why a run config was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A field holds a value outside what it may be.
    #[error("invalid config: {field} = {value} is out of range; it must be {allowed}")]
    OutOfRange {
        /// The field's TOML path (`update.lr`) or flag (`--n`).
        field: String,
        /// The value as given.
        value: String,
        /// What it may be.
        allowed: String,
    },
    /// The config's text could not be decoded.
    #[error("invalid config: {0}")]
    Decode(String),
}

/// An interval of the reals; a value must also be finite to lie in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    low: f64,
    low_open: bool,
    high: f64,
    high_open: bool,
}

impl Interval {
    /// `[low, high]`.
    pub const fn closed(low: f64, high: f64) -> Self {
        Interval {
            low,
            low_open: false,
            high,
            high_open: false,
        }
    }
    /// `(low, high]`.
    pub const fn above(low: f64, high: f64) -> Self {
        Interval {
            low,
            low_open: true,
            high,
            high_open: false,
        }
    }
    /// `[low, high)`.
    pub const fn below(low: f64, high: f64) -> Self {
        Interval {
            low,
            low_open: false,
            high,
            high_open: true,
        }
    }
    /// `(0, inf)`.
    pub const POSITIVE: Interval = Interval {
        low: 0.0,
        low_open: true,
        high: f64::INFINITY,
        high_open: true,
    };
    /// `[0, inf)`.
    pub const NON_NEGATIVE: Interval = Interval::below(0.0, f64::INFINITY);
    /// `[0, 1]`: a fraction or a probability.
    pub const UNIT: Interval = Interval::closed(0.0, 1.0);

    /// Whether `value` is finite and inside.
    pub fn contains(&self, value: f64) -> bool {
        let low_ok = if self.low_open {
            value > self.low
        } else {
            value >= self.low
        };
        let high_ok = if self.high_open {
            value < self.high
        } else {
            value <= self.high
        };
        value.is_finite() && low_ok && high_ok
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (open, close) = (
            if self.low_open { '(' } else { '[' },
            if self.high_open { ')' } else { ']' },
        );
        write!(f, "a finite number in {open}{}, ", self.low)?;
        if self.high.is_infinite() {
            write!(f, "inf{close}")
        } else {
            write!(f, "{}{close}", self.high)
        }
    }
}

/// `field = value` must be finite and in `allowed`.
pub fn real(field: &str, value: f64, allowed: Interval) -> Result<(), ConfigError> {
    if allowed.contains(value) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        field: field.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    })
}

/// `field = value` must be at least `min` (counts: group sizes, batch sizes, samples).
pub fn at_least(field: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value >= min {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        field: field.to_string(),
        value: value.to_string(),
        allowed: format!("an integer >= {min}"),
    })
}

/// `field` must not be empty.
fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if !value.trim().is_empty() {
        return Ok(());
    }
    Err(ConfigError::OutOfRange {
        field: field.to_string(),
        value: format!("{value:?}"),
        allowed: "a non-empty string".to_string(),
    })
}

/// The longest timeout a run may set (a week): longer cannot be meant, and every duration
/// built from it stays representable.
const MAX_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;

impl RunConfig {
    /// Refuses every value that cannot be meant, naming the first such field by its TOML path
    /// and its allowed range. Every entry point calls it before doing any work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("model", &self.model)?;
        non_empty("task", &self.task)?;
        real("eval_fraction", self.eval_fraction, Interval::UNIT)?;
        at_least("steps", self.steps, 1)?;
        at_least("prompts_per_step", self.prompts_per_step as u64, 1)?;
        // Advantages are group-centred: a group of one has none.
        at_least("group_size", self.group_size as u64, 2)?;
        at_least("eval_n", self.eval_n as u64, 1)?;
        at_least("eval_samples", self.eval_samples as u64, 1)?;
        check_sampling(&self.sampling, |name| format!("sampling.{name}"))?;
        self.update.validate()?;
        self.pipeline.validate()?;
        self.episode.validate()?;
        self.reward.validate()
    }
}

impl RewardConfig {
    /// The `reward` table's ranges (see [`RunConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.rm {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::OutOfRange {
                    field: "reward.rm".to_string(),
                    value: format!("{url:?}"),
                    allowed: "an http:// or https:// URL of `oxrl rm serve`".to_string(),
                });
            }
        } else if self.combine != RewardCombine::Rm || self.transform != ScoreTransform::Sigmoid {
            return Err(ConfigError::OutOfRange {
                field: "reward.rm".to_string(),
                value: "none".to_string(),
                allowed: "a reward server URL: reward.combine and reward.transform need one"
                    .to_string(),
            });
        }
        at_least("reward.timeout_ms", self.timeout_ms, 1)?;
        at_least("reward.attempts", self.attempts as u64, 1)
    }
}

impl EpisodeConfig {
    /// The `[episode]` table's ranges (see [`RunConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("episode.env", &self.env)?;
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::OutOfRange {
                    field: "episode.url".to_string(),
                    value: format!("{url:?}"),
                    allowed: "an http:// or https:// URL".to_string(),
                });
            }
        }
        at_least("episode.max_turns", self.max_turns as u64, 1)?;
        at_least("episode.timeout_ms", self.timeout_ms, 1)?;
        at_least("episode.attempts", self.attempts as u64, 1)?;
        non_empty("episode.chat_template", &self.chat_template)
    }
}

impl UpdateConfig {
    /// The `[update]` table's ranges (see [`RunConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        real("update.lr", self.lr, Interval::above(0.0, 1.0))?;
        at_least("update.micro_batch", self.micro_batch as u64, 1)?;
        match self.objective {
            Objective::Cispo { eps_max } => {
                real("update.objective.eps_max", eps_max, Interval::POSITIVE)
            }
            Objective::PpoClip { eps_low, eps_high } | Objective::Gspo { eps_low, eps_high } => {
                // The ratio is clipped to [1 - eps_low, 1 + eps_high]: both ends positive.
                real(
                    "update.objective.eps_low",
                    eps_low,
                    Interval::below(0.0, 1.0),
                )?;
                real(
                    "update.objective.eps_high",
                    eps_high,
                    Interval::NON_NEGATIVE,
                )
            }
        }?;
        self.optimizer.validate("update.optimizer")
    }
}

impl AdamWConfig {
    /// AdamW's ranges, its fields named under `table` (`update.optimizer`).
    pub fn validate(&self, table: &str) -> Result<(), ConfigError> {
        let field = |name: &str| format!("{table}.{name}");
        real(&field("beta1"), self.beta1, Interval::below(0.0, 1.0))?;
        real(&field("beta2"), self.beta2, Interval::below(0.0, 1.0))?;
        real(&field("eps"), self.eps, Interval::POSITIVE)?;
        real(&field("weight_decay"), self.weight_decay, Interval::UNIT)?;
        real(
            &field("max_grad_norm"),
            self.max_grad_norm,
            Interval::NON_NEGATIVE,
        )
    }
}

impl PipelineConfig {
    /// The `[pipeline]` table's ranges (see [`RunConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("pipeline.actors", self.actors as u64, 1)?;
        at_least(
            "pipeline.prompts_per_lease",
            self.prompts_per_lease as u64,
            1,
        )?;
        at_least("pipeline.learner_queue", self.learner_queue as u64, 1)?;
        let timeout = Interval::above(0.0, MAX_TIMEOUT_S);
        real("pipeline.lease_timeout_s", self.lease_timeout_s, timeout)?;
        real("pipeline.actor_timeout_s", self.actor_timeout_s, timeout)?;
        real("pipeline.restart_window_s", self.restart_window_s, timeout)?;
        self.validate_backoff()?;
        at_least(
            "pipeline.heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            1,
        )?;
        // An actor heartbeating less often than the timeout would be declared dead between
        // two beats.
        let beat_s = self.heartbeat_interval_ms as f64 / 1000.0;
        if beat_s >= self.actor_timeout_s {
            return Err(ConfigError::OutOfRange {
                field: "pipeline.heartbeat_interval_ms".to_string(),
                value: self.heartbeat_interval_ms.to_string(),
                allowed: format!(
                    "shorter than pipeline.actor_timeout_s ({} s), or actors are declared dead \
                     between heartbeats",
                    self.actor_timeout_s
                ),
            });
        }
        // Above 1 never retires (on purpose); below 0 would retire every prompt on sight.
        if self.retire_pass_rate.is_nan() || self.retire_pass_rate < 0.0 {
            return Err(ConfigError::OutOfRange {
                field: "pipeline.retire_pass_rate".to_string(),
                value: self.retire_pass_rate.to_string(),
                allowed: "a number >= 0 (above 1 never retires)".to_string(),
            });
        }
        crate::curriculum::check_rule(
            self.retire_pass_rate,
            self.retire_min_samples,
            self.pass_rate_window,
        )
        .map_err(|(name, reason)| ConfigError::OutOfRange {
            field: format!("pipeline.{name}"),
            value: match name {
                "pass_rate_window" => self.pass_rate_window.to_string(),
                _ => self.retire_pass_rate.to_string(),
            },
            allowed: reason,
        })
    }
}

impl PipelineConfig {
    /// The restart delays: a first one of at least a millisecond, a cap no shorter than it,
    /// both within the longest timeout.
    fn validate_backoff(&self) -> Result<(), ConfigError> {
        let max_ms = (MAX_TIMEOUT_S * 1000.0) as u64;
        let ms = |field: &str, value: u64, min: u64| {
            at_least(field, value, min)?;
            if value > max_ms {
                return Err(ConfigError::OutOfRange {
                    field: field.to_string(),
                    value: value.to_string(),
                    allowed: format!("an integer <= {max_ms} (a week)"),
                });
            }
            Ok(())
        };
        ms("pipeline.restart_backoff_ms", self.restart_backoff_ms, 1)?;
        ms(
            "pipeline.restart_backoff_max_ms",
            self.restart_backoff_max_ms,
            self.restart_backoff_ms,
        )
    }
}

/// Sampling's ranges, each field named by `field(name)` (`sampling.top_p`, or a flag).
pub fn check_sampling(
    sampling: &SamplingParams,
    field: impl Fn(&str) -> String,
) -> Result<(), ConfigError> {
    // 0 is greedy; a temperature past 100 is a uniform draw, never meant.
    real(
        &field("temperature"),
        f64::from(sampling.temperature),
        Interval::closed(0.0, 100.0),
    )?;
    real(
        &field("top_p"),
        f64::from(sampling.top_p),
        Interval::above(0.0, 1.0),
    )?;
    real(&field("min_p"), f64::from(sampling.min_p), Interval::UNIT)?;
    at_least(&field("max_new_tokens"), sampling.max_new_tokens as u64, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One edit of a config.
    type Change = Box<dyn FnOnce(&mut RunConfig)>;

    /// The error of the default config with `change` applied.
    fn refused(change: impl FnOnce(&mut RunConfig)) -> ConfigError {
        let mut cfg = RunConfig::default();
        change(&mut cfg);
        cfg.validate().expect_err("should be refused")
    }

    fn field(err: &ConfigError) -> &str {
        match err {
            ConfigError::OutOfRange { field, .. } => field,
            ConfigError::Decode(_) => panic!("not a range error: {err}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        RunConfig::default().validate().unwrap();
    }

    #[test]
    fn a_bad_learning_rate_is_named_with_its_range() {
        let err = refused(|c| c.update.lr = -1.0);
        assert_eq!(
            err.to_string(),
            "invalid config: update.lr = -1 is out of range; it must be a finite number in (0, 1]"
        );
        for lr in [0.0, f64::NAN, f64::INFINITY, 2.0] {
            assert_eq!(field(&refused(|c| c.update.lr = lr)), "update.lr", "{lr}");
        }
    }

    #[test]
    fn non_finite_reals_are_refused_everywhere() {
        let nan = f64::NAN;
        let cases: Vec<(&str, Change)> = vec![
            ("eval_fraction", Box::new(move |c| c.eval_fraction = nan)),
            (
                "update.optimizer.beta1",
                Box::new(move |c| c.update.optimizer.beta1 = nan),
            ),
            (
                "update.optimizer.beta2",
                Box::new(|c| c.update.optimizer.beta2 = 1.0),
            ),
            (
                "update.optimizer.eps",
                Box::new(|c| c.update.optimizer.eps = 0.0),
            ),
            (
                "update.optimizer.weight_decay",
                Box::new(|c| c.update.optimizer.weight_decay = -0.1),
            ),
            (
                "update.optimizer.max_grad_norm",
                Box::new(|c| c.update.optimizer.max_grad_norm = f64::INFINITY),
            ),
            (
                "sampling.temperature",
                Box::new(|c| c.sampling.temperature = f32::NAN),
            ),
            (
                "sampling.temperature",
                Box::new(|c| c.sampling.temperature = -1.0),
            ),
            ("sampling.top_p", Box::new(|c| c.sampling.top_p = 0.0)),
            ("sampling.top_p", Box::new(|c| c.sampling.top_p = 1.5)),
            ("sampling.min_p", Box::new(|c| c.sampling.min_p = 2.0)),
            (
                "pipeline.lease_timeout_s",
                Box::new(|c| c.pipeline.lease_timeout_s = 0.0),
            ),
            (
                "pipeline.actor_timeout_s",
                Box::new(move |c| c.pipeline.actor_timeout_s = nan),
            ),
            (
                "pipeline.lease_timeout_s",
                Box::new(|c| c.pipeline.lease_timeout_s = 1e12),
            ),
            (
                "pipeline.retire_pass_rate",
                Box::new(move |c| c.pipeline.retire_pass_rate = nan),
            ),
            (
                "pipeline.retire_pass_rate",
                Box::new(|c| c.pipeline.retire_pass_rate = -0.5),
            ),
            (
                "pipeline.restart_window_s",
                Box::new(|c| c.pipeline.restart_window_s = 0.0),
            ),
            (
                "pipeline.restart_window_s",
                Box::new(move |c| c.pipeline.restart_window_s = nan),
            ),
        ];
        for (name, change) in cases {
            assert_eq!(field(&refused(change)), name);
        }
    }

    #[test]
    fn clip_bounds_are_checked_per_objective() {
        let cispo = refused(|c| c.update.objective = Objective::Cispo { eps_max: 0.0 });
        assert_eq!(field(&cispo), "update.objective.eps_max");
        let low = refused(|c| {
            c.update.objective = Objective::PpoClip {
                eps_low: 1.0,
                eps_high: 0.2,
            }
        });
        assert_eq!(field(&low), "update.objective.eps_low");
        let high = refused(|c| {
            c.update.objective = Objective::Gspo {
                eps_low: 0.2,
                eps_high: f64::NAN,
            }
        });
        assert_eq!(field(&high), "update.objective.eps_high");
        let mut dapo = RunConfig::default();
        dapo.update.objective = Objective::PpoClip {
            eps_low: 0.2,
            eps_high: 0.28,
        };
        dapo.validate().unwrap();
    }

    #[test]
    fn counts_have_their_minimum() {
        let cases: Vec<(&str, &str, Change)> = vec![
            ("steps", ">= 1", Box::new(|c| c.steps = 0)),
            ("group_size", ">= 2", Box::new(|c| c.group_size = 1)),
            (
                "prompts_per_step",
                ">= 1",
                Box::new(|c| c.prompts_per_step = 0),
            ),
            ("eval_n", ">= 1", Box::new(|c| c.eval_n = 0)),
            ("eval_samples", ">= 1", Box::new(|c| c.eval_samples = 0)),
            (
                "sampling.max_new_tokens",
                ">= 1",
                Box::new(|c| c.sampling.max_new_tokens = 0),
            ),
            (
                "update.micro_batch",
                ">= 1",
                Box::new(|c| c.update.micro_batch = 0),
            ),
            (
                "pipeline.actors",
                ">= 1",
                Box::new(|c| c.pipeline.actors = 0),
            ),
            (
                "pipeline.prompts_per_lease",
                ">= 1",
                Box::new(|c| c.pipeline.prompts_per_lease = 0),
            ),
            (
                "pipeline.learner_queue",
                ">= 1",
                Box::new(|c| c.pipeline.learner_queue = 0),
            ),
            (
                "pipeline.heartbeat_interval_ms",
                ">= 1",
                Box::new(|c| c.pipeline.heartbeat_interval_ms = 0),
            ),
            (
                "pipeline.restart_backoff_ms",
                ">= 1",
                Box::new(|c| c.pipeline.restart_backoff_ms = 0),
            ),
        ];
        for (name, min, change) in cases {
            let err = refused(change);
            assert_eq!(field(&err), name);
            assert!(err.to_string().contains(min), "{err}");
        }
    }

    #[test]
    fn cross_field_rules_name_the_field_to_change() {
        let beat = refused(|c| {
            c.pipeline.heartbeat_interval_ms = 6_000;
            c.pipeline.actor_timeout_s = 5.0;
        });
        assert_eq!(field(&beat), "pipeline.heartbeat_interval_ms");
        let window = refused(|c| {
            c.pipeline.pass_rate_window = 8;
            c.pipeline.retire_min_samples = 16;
        });
        assert_eq!(field(&window), "pipeline.pass_rate_window");
        assert!(window.to_string().contains("at least 16"), "{window}");
        let cap = refused(|c| {
            c.pipeline.restart_backoff_ms = 2_000;
            c.pipeline.restart_backoff_max_ms = 1_000;
        });
        assert_eq!(field(&cap), "pipeline.restart_backoff_max_ms");
        assert!(cap.to_string().contains(">= 2000"), "{cap}");
        let empty = refused(|c| c.task = " ".into());
        assert_eq!(field(&empty), "task");
    }

    #[test]
    fn a_reward_server_is_a_url_and_its_options_need_one() {
        let url = refused(|c| c.reward.rm = Some("localhost:7200".into()));
        assert_eq!(field(&url), "reward.rm");
        let combine = refused(|c| c.reward.combine = RewardCombine::VerifierPlusRm);
        assert_eq!(field(&combine), "reward.rm");
        let attempts = refused(|c| {
            c.reward.rm = Some("http://127.0.0.1:7200".into());
            c.reward.attempts = 0;
        });
        assert_eq!(field(&attempts), "reward.attempts");
        let cfg: RunConfig = toml::from_str(
            "reward = { rm = \"http://h:1\", combine = \"verifier+rm\", transform = \"raw\" }",
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.reward.combine, RewardCombine::VerifierPlusRm);
        assert_eq!(cfg.reward.transform, ScoreTransform::Raw);
        assert_eq!(RunConfig::from_wire(&cfg.to_wire()).unwrap(), cfg);
    }

    #[test]
    fn never_retiring_and_lag_zero_are_meant() {
        let mut cfg = RunConfig::default();
        cfg.pipeline.retire_pass_rate = 2.0;
        cfg.update.max_lag = 0;
        cfg.sampling.temperature = 0.0;
        // No restarts: the first crash of a role ends an `oxrl run`, as a supervisor-less run.
        cfg.pipeline.max_restarts = 0;
        cfg.validate().unwrap();
    }
}
