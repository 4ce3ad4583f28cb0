//! The vocabulary every task shares: a split, a problem, and the source that produces problems.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::verifier::Verifier;

/// Which side of the train/eval partition a problem comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Problems the policy trains on.
    Train,
    /// Held-out problems for evaluation; procedural tasks never show them in `Train`.
    Eval,
}

impl Split {
    /// The lowercase name used in ids and config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One prompt with a checkable answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable and unique per (source, split, index), e.g. `addition-3/train/17`.
    pub id: String,
    /// The text given to the model, e.g. `123+456=`.
    pub prompt: String,
    /// The reference answer the verifier compares with, e.g. `579`.
    pub answer: String,
    /// The target completion for supervised fine-tuning, without end-of-sequence, e.g. `579`.
    pub solution: String,
}

/// A deterministic, indexable supply of problems together with the verifier that scores them.
pub trait ProblemSource: Send + Sync {
    /// The source's name, e.g. `addition-3`; the prefix of every problem id.
    fn name(&self) -> &str;
    /// Deterministic: the same (split, index) always gives the same problem.
    fn problem(&self, split: Split, index: u64) -> Problem;
    /// Number of distinct problems in a split, None for procedural (unbounded) sources.
    fn len(&self, split: Split) -> Option<u64>;
    /// The verifier that scores completions of this source's problems.
    fn verifier(&self) -> Arc<dyn Verifier>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_serialises_lowercase() {
        assert_eq!(serde_json::to_string(&Split::Eval).unwrap(), "\"eval\"");
        let train: Split = serde_json::from_str("\"train\"").unwrap();
        assert_eq!(train, Split::Train);
        assert_eq!(Split::Train.to_string(), "train");
    }
}
