//! `[pipeline] weight_sync`: how the learner streams each version's weights to actors
//! (docs/weight-sync.md). Whole fp32 is exact and the default; bf16 halves the bytes and has
//! actors sample with rounded weights; a delta sends the XOR of each word with the version the
//! actor holds, bit-exact, and falls back to the whole version whenever the actor holds
//! another.

use proto::weights::WireDtype;
use serde::{Deserialize, Serialize};

/// How versions travel from the learner to actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightSync {
    /// Every version whole, in fp32: exact.
    #[default]
    Full,
    /// Every version whole, rounded to bf16 (actors hold the rounded values).
    Bf16,
    /// fp32, as the XOR with the version the actor holds (whole when it holds another):
    /// exact.
    Delta,
    /// bf16, as the XOR with the (rounded) version the actor holds.
    Bf16Delta,
}

impl WeightSync {
    /// Every mode, in the order the docs and benchmarks list them.
    pub const ALL: [WeightSync; 4] = [
        WeightSync::Full,
        WeightSync::Bf16,
        WeightSync::Delta,
        WeightSync::Bf16Delta,
    ];

    /// The words on the wire.
    pub fn dtype(self) -> WireDtype {
        match self {
            WeightSync::Full | WeightSync::Delta => WireDtype::F32,
            WeightSync::Bf16 | WeightSync::Bf16Delta => WireDtype::Bf16,
        }
    }

    /// Whether versions travel as deltas against the actor's.
    pub fn delta(self) -> bool {
        matches!(self, WeightSync::Delta | WeightSync::Bf16Delta)
    }

    /// The name in the config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WeightSync::Full => "full",
            WeightSync::Bf16 => "bf16",
            WeightSync::Delta => "delta",
            WeightSync::Bf16Delta => "bf16-delta",
        }
    }
}

/// A `weight_sync` name that is none of the modes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown weight sync {0:?}: expected full, bf16, delta or bf16-delta")]
pub struct UnknownWeightSync(pub String);

impl std::str::FromStr for WeightSync {
    type Err = UnknownWeightSync;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WeightSync::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownWeightSync(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_serde_agrees() {
        for m in WeightSync::ALL {
            assert_eq!(m.name().parse::<WeightSync>(), Ok(m));
            let toml = format!("m = {:?}", m.name());
            #[derive(Deserialize)]
            struct T {
                m: WeightSync,
            }
            let t: T = toml::from_str(&toml).unwrap();
            assert_eq!(t.m, m);
        }
        let err = "fp16".parse::<WeightSync>().unwrap_err();
        assert!(err.to_string().contains("bf16-delta"), "{err}");
        assert_eq!(WeightSync::default(), WeightSync::Full);
    }
}
