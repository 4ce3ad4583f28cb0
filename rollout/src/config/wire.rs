//! The run config on the wire: the coordinator hands it to every member that registers
//! (`RegisterReply.run_config`), once, as TOML, and every receiver decodes it through
//! [`RunConfig::from_wire`], which also validates it: a member never runs a config its
//! coordinator could not have meant.

use super::{ConfigError, RunConfig};

impl RunConfig {
    /// The config as it travels (TOML: the same text as a run's `config.toml`).
    pub fn to_wire(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serialises to TOML")
    }

    /// Decodes and validates a config received from the coordinator.
    pub fn from_wire(text: &str) -> Result<RunConfig, ConfigError> {
        let cfg: RunConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Decode(format!("the run config received: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Objective;

    #[test]
    fn a_config_round_trips_through_the_wire() {
        let mut cfg = RunConfig {
            task: "countdown".into(),
            eval_data: Some("held.jsonl".into()),
            ..RunConfig::default()
        };
        cfg.update.objective = Objective::PpoClip {
            eps_low: 0.2,
            eps_high: 0.28,
        };
        cfg.pipeline.heartbeat_interval_ms = 250;
        assert_eq!(RunConfig::from_wire(&cfg.to_wire()).unwrap(), cfg);
    }

    #[test]
    fn a_received_config_is_validated_and_malformed_text_refused() {
        let mut bad = RunConfig::default();
        bad.update.lr = f64::NAN;
        let err = RunConfig::from_wire(&bad.to_wire()).unwrap_err();
        assert!(err.to_string().contains("update.lr"), "{err}");
        let err = RunConfig::from_wire("no_such_key = 1").unwrap_err();
        assert!(matches!(err, ConfigError::Decode(_)), "{err}");
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }
}
