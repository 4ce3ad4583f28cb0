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

#[cfg(test)]
mod props {
    //! The run config a member receives is decoded and validated or refused with an error,
    //! whatever the bytes: random text, and the default config with lines dropped, values
    //! swapped for other ones, or the text cut anywhere.

    use super::*;
    use proptest::prelude::*;

    /// Values a mutated line may take: numbers out of range, negatives, NaN, strings, tables.
    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:?}")),
            Just("nan".to_string()),
            Just("-inf".to_string()),
            Just("\"\"".to_string()),
            "\"[a-z:0-9]{0,8}\"",
            Just("{}".to_string()),
            Just("[]".to_string()),
            Just("true".to_string()),
        ]
    }

    /// The default config's wire text with one line changed: dropped, or its value replaced.
    fn mutated_default() -> impl Strategy<Value = String> {
        let lines: Vec<String> = RunConfig::default()
            .to_wire()
            .lines()
            .map(str::to_string)
            .collect();
        let n = lines.len();
        (0..n, any::<bool>(), any_value(), 0usize..4096).prop_map(move |(at, drop, value, cut)| {
            let mut lines = lines.clone();
            if drop {
                lines.remove(at);
            } else if let Some((key, _)) = lines[at].split_once(" = ") {
                lines[at] = format!("{key} = {value}");
            }
            let text = lines.join("\n");
            // Sometimes cut as well (at a char boundary).
            let cut = (0..=cut.min(text.len()))
                .rev()
                .find(|&c| text.is_char_boundary(c))
                .unwrap_or(0);
            if cut % 3 == 0 {
                text[..cut].to_string()
            } else {
                text
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_text_is_refused_without_a_panic(text in ".{0,200}") {
            let _ = RunConfig::from_wire(&text);
        }

        #[test]
        fn a_mutated_config_decodes_valid_or_is_refused(text in mutated_default()) {
            if let Ok(cfg) = RunConfig::from_wire(&text) {
                // Accepted means valid and stable on the wire.
                prop_assert!(cfg.validate().is_ok());
                prop_assert_eq!(RunConfig::from_wire(&cfg.to_wire()).ok(), Some(cfg));
            }
        }
    }
}
