//! A calculator tool for arithmetic problems.
//!
//! The syntax a model uses: a turn that ends in a call, `[EXPR]` (integers, `+ - * /`,
//! parentheses; e.g. `[37*48]`), is answered with `=VALUE;` (`=1776;`), or `=error;` when
//! the expression does not parse or divides by zero; the model then takes another turn. Any
//! other turn is the final answer, scored by the task's verifier, and ends the episode. At
//! most [`MAX_CALLS`] calls are answered; a later turn counts as the answer whatever it is.
//!
//! An episode reads, e.g., `37*48=` `[37*48]` `=1776;` `1776`: prompt, model, environment,
//! model.

use super::{EnvError, EnvStep, Environment};
use crate::expr::evaluate;
use crate::problem::Problem;
use crate::verifier::Verifier;
use std::sync::Arc;

/// Calls answered per episode.
pub const MAX_CALLS: usize = 4;

/// The calculator environment of one episode.
pub struct Calculator {
    verifier: Arc<dyn Verifier>,
    answer: Option<String>,
    calls: usize,
}

impl Calculator {
    /// Final answers are scored with `verifier`.
    pub fn new(verifier: Arc<dyn Verifier>) -> Self {
        Calculator {
            verifier,
            answer: None,
            calls: 0,
        }
    }
}

/// The expression of a turn that is a call: the text between the last `[` and a final `]`.
pub fn call_in(turn: &str) -> Option<&str> {
    let turn = turn.trim_end();
    let body = turn.strip_suffix(']')?;
    let open = body.rfind('[')?;
    Some(&body[open + 1..])
}

/// The environment's answer to a call of `expr`.
pub fn answer_call(expr: &str) -> String {
    match evaluate(expr) {
        Ok(e) => format!("={};", e.value),
        Err(_) => "=error;".to_string(),
    }
}

/// A demonstration that uses the tool: the prompt's expression (`37*48=` -> `[37*48]`), then
/// the answer, as turns (see [`super::TURN_SEPARATOR`]); `None` when the prompt is not an
/// expression the calculator evaluates.
pub fn tool_demonstration(problem: &Problem) -> Option<String> {
    let expr = problem.prompt.trim().trim_end_matches('=');
    evaluate(expr).ok()?;
    Some(format!(
        "[{expr}]{}{}",
        super::TURN_SEPARATOR,
        problem.solution
    ))
}

impl Environment for Calculator {
    fn reset(&mut self, problem: &Problem, _seed: u64) -> Result<String, EnvError> {
        self.answer = Some(problem.answer.clone());
        self.calls = 0;
        Ok(problem.prompt.clone())
    }

    fn step(&mut self, action: &str) -> Result<EnvStep, EnvError> {
        let answer = self
            .answer
            .as_deref()
            .ok_or_else(|| EnvError::Invalid("step before reset".into()))?;
        if let Some(expr) = call_in(action).filter(|_| self.calls < MAX_CALLS) {
            self.calls += 1;
            return Ok(EnvStep {
                observation: answer_call(expr),
                reward: 0.0,
                done: false,
            });
        }
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

    fn problem() -> Problem {
        Problem {
            id: "m/train/0".into(),
            prompt: "37*48=".into(),
            answer: "1776".into(),
            solution: "1776".into(),
        }
    }

    #[test]
    fn a_call_is_answered_and_the_final_answer_scored() {
        let mut env = Calculator::new(Arc::new(NumericVerifier));
        assert_eq!(env.reset(&problem(), 0).unwrap(), "37*48=");
        let s = env.step("[37*48]").unwrap();
        assert_eq!(s.observation, "=1776;");
        assert!(!s.done);
        assert_eq!(s.reward, 0.0);
        let s = env.step("1776").unwrap();
        assert!(s.done);
        assert_eq!(s.reward, 1.0);
    }

    #[test]
    fn bad_expressions_and_too_many_calls() {
        let mut env = Calculator::new(Arc::new(NumericVerifier));
        env.reset(&problem(), 0).unwrap();
        assert_eq!(env.step("[37*]").unwrap().observation, "=error;");
        assert_eq!(env.step("[1/0]").unwrap().observation, "=error;");
        for _ in 2..MAX_CALLS {
            assert!(!env.step("[1+1]").unwrap().done);
        }
        let s = env.step("[37*48]").unwrap();
        assert!(s.done, "calls past the limit are the final answer");
        assert_eq!(s.reward, 0.0);
        // Text around a call: only a turn that ends in `]` calls.
        assert_eq!(call_in("so [2+2]"), Some("2+2"));
        assert_eq!(call_in("[2+2] is 4"), None);
        assert_eq!(call_in("4"), None);
    }

    #[test]
    fn a_tool_demonstration_calls_with_the_prompt_and_answers() {
        let p = problem();
        let demo = tool_demonstration(&p).unwrap();
        assert_eq!(demo, "[37*48]\u{1f}1776");
        let sorting = Problem {
            prompt: "sort 3 1:".into(),
            ..problem()
        };
        assert_eq!(tool_demonstration(&sorting), None);
    }

    #[test]
    fn a_direct_answer_ends_the_episode_at_once() {
        let mut env = Calculator::new(Arc::new(NumericVerifier));
        env.reset(&problem(), 0).unwrap();
        let s = env.step("1777").unwrap();
        assert_eq!((s.reward, s.done), (0.0, true));
    }
}
