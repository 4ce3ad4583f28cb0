//! The one-turn environment: the prompt is the observation, the verifier scores the model's
//! one answer, and the episode ends. Every single-turn task runs through it.

use super::{EnvError, EnvStep, Environment};
use crate::problem::Problem;
use crate::verifier::Verifier;
use std::sync::Arc;

/// Prompt, answer, reward.
pub struct SingleTurn {
    verifier: Arc<dyn Verifier>,
    answer: Option<String>,
}

impl SingleTurn {
    /// Scores with `verifier`.
    pub fn new(verifier: Arc<dyn Verifier>) -> Self {
        SingleTurn {
            verifier,
            answer: None,
        }
    }
}

impl Environment for SingleTurn {
    fn reset(&mut self, problem: &Problem, _seed: u64) -> Result<String, EnvError> {
        self.answer = Some(problem.answer.clone());
        Ok(problem.prompt.clone())
    }

    fn step(&mut self, action: &str) -> Result<EnvStep, EnvError> {
        let answer = self
            .answer
            .as_deref()
            .ok_or_else(|| EnvError::Invalid("step before reset".into()))?;
        Ok(EnvStep {
            observation: String::new(),
            reward: self.verifier.score(action, answer),
            done: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NumericVerifier;

    #[test]
    fn one_step_scored_by_the_verifier() {
        let p = Problem {
            id: "a/train/0".into(),
            prompt: "2+3=".into(),
            answer: "5".into(),
            solution: "5".into(),
        };
        let mut env = SingleTurn::new(Arc::new(NumericVerifier));
        assert!(env.step("5").is_err(), "no step before reset");
        assert_eq!(env.reset(&p, 0).unwrap(), "2+3=");
        let s = env.step("5").unwrap();
        assert_eq!((s.reward, s.done), (1.0, true));
        assert_eq!(env.step("6").unwrap().reward, 0.0);
    }
}
