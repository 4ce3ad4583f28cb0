//! The verifier interface and the simplest verifier, exact string match.
//!
//! A verifier turns a completion into a reward of 1.0 or 0.0. A completion cut at the length
//! budget is scored as it stands, with no special case: a cut answer is usually just wrong.

/// Scores completions against reference answers.
pub trait Verifier: Send + Sync {
    /// The name the verifier is registered under, e.g. `numeric`.
    fn name(&self) -> &str;
    /// The answer extracted from a completion, if any.
    fn extract(&self, completion: &str) -> Option<String>;
    /// 1.0 if the completion's answer is right, 0.0 otherwise.
    fn score(&self, completion: &str, answer: &str) -> f32;
}

/// The reward for a verdict.
pub(crate) fn reward(correct: bool) -> f32 {
    if correct {
        1.0
    } else {
        0.0
    }
}

/// Right iff the trimmed completion equals the trimmed answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactVerifier;

impl Verifier for ExactVerifier {
    fn name(&self) -> &str {
        "exact"
    }

    fn extract(&self, completion: &str) -> Option<String> {
        let trimmed = completion.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    }

    fn score(&self, completion: &str, answer: &str) -> f32 {
        reward(completion.trim() == answer.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_ignores_surrounding_whitespace_only() {
        let v = ExactVerifier;
        assert_eq!(v.score(" Paris\n", "Paris"), 1.0);
        assert_eq!(v.score("Paris", " Paris "), 1.0);
        assert_eq!(v.score("paris", "Paris"), 0.0);
        assert_eq!(v.score("Par is", "Paris"), 0.0);
        assert_eq!(v.score("", "Paris"), 0.0);
    }

    #[test]
    fn exact_extracts_trimmed_text() {
        assert_eq!(ExactVerifier.extract("  42 \n"), Some("42".to_string()));
        assert_eq!(ExactVerifier.extract(" \n"), None);
    }
}
