//! Environments for multi-turn episodes: the model acts, the environment answers, the model
//! acts again, and rewards come from the environment.
//!
//! An [`Environment`] is opened on a leased [`Problem`] ([`Environment::reset`], which gives
//! the first observation: what the model sees before its first turn) and then answers each
//! model turn ([`Environment::step`]: an observation to append, a reward, whether the episode
//! is over). A single-turn task is the special case of one step ([`SingleTurn`]: the prompt,
//! then the verifier's reward), so every task runs through the same path.
//!
//! The built-ins ([`builtin`]): `single`, `calculator` (a tool the model may call, see
//! [`calculator`]) and `guess` (guess-the-number with higher/lower answers, see [`guess`]).
//! Environments elsewhere (any language, over gRPC) implement the same trait through
//! `oxrl.v1.Environment`; this crate knows nothing of that.

pub mod calculator;
pub mod guess;
mod single;

pub use calculator::Calculator;
pub use guess::Guess;
pub use single::SingleTurn;

use crate::problem::Problem;
use crate::verifier::Verifier;
use std::sync::Arc;

/// The environment's answer to one model turn.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvStep {
    /// Text appended to the episode before the model's next turn (ignored when `done`).
    pub observation: String,
    /// Reward for this turn; an episode's reward is the sum over its turns.
    pub reward: f32,
    /// Whether the episode is over.
    pub done: bool,
}

/// Why an environment could not answer. Never a silent zero reward: the caller retries what
/// may pass ([`EnvError::is_transient`]) and otherwise drops the episode's group, counted by
/// [`EnvError::reason`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    /// The environment could not be reached or did not answer in time (worth a retry).
    #[error("environment unavailable: {0}")]
    Unavailable(String),
    /// It answered with something that cannot be used (a non-finite reward, an unknown
    /// session, a protocol error).
    #[error("environment answered garbage: {0}")]
    Invalid(String),
    /// It did not answer within its deadline.
    #[error("environment timed out after {0} ms")]
    Timeout(u64),
    /// A name no environment answers to.
    #[error("unknown environment {name:?}; the built-ins are {known}")]
    Unknown { name: String, known: String },
}

impl EnvError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, EnvError::Unavailable(_) | EnvError::Timeout(_))
    }

    /// The label of `oxrl_rejected_total{reason}` and the run's summary.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvError::Unavailable(_) => "env_unavailable",
            EnvError::Invalid(_) => "env_invalid",
            EnvError::Timeout(_) => "env_timeout",
            EnvError::Unknown { .. } => "env_unknown",
        }
    }
}

/// One episode's environment.
pub trait Environment: Send {
    /// Opens an episode on `problem`; returns the first observation.
    fn reset(&mut self, problem: &Problem, seed: u64) -> Result<String, EnvError>;
    /// Answers the model's turn `action` (its text, special tokens left out).
    fn step(&mut self, action: &str) -> Result<EnvStep, EnvError>;
    /// Whether `reset` and `step` wait on something outside the process (a server): the
    /// episode engine then calls them off the decode thread, and the other sequences keep
    /// decoding meanwhile. In-process environments answer at once, in order, which keeps a
    /// seeded run reproducible.
    fn is_remote(&self) -> bool {
        false
    }
    /// Ends the episode early (the engine stopped it: a cap, or its group was dropped).
    /// Remote environments release their session; the default does nothing.
    fn close(&mut self) {}
}

/// Makes one [`Environment`] per episode.
pub trait EnvFactory: Send + Sync {
    /// The name it is configured by.
    fn name(&self) -> &str;
    /// A fresh environment for one episode.
    fn make(&self) -> Result<Box<dyn Environment>, EnvError>;
}

/// Separates the model's turns in a multi-turn task's `solution` (ASCII unit separator): a
/// demonstration lists the model's turns only, and the environment's answers come from
/// playing them against it (`oxrl sft` does, masking the answers out of the loss).
pub const TURN_SEPARATOR: char = '\u{1f}';

/// The model's turns of a solution (one for a one-turn task).
pub fn solution_turns(solution: &str) -> Vec<&str> {
    solution.split(TURN_SEPARATOR).collect()
}

/// The names [`builtin`] knows.
pub const BUILTIN_ENVS: &[&str] = &["single", "calculator", "guess"];

/// A built-in environment by name; `verifier` is the task's (what `single` and `calculator`
/// score a final answer with).
pub fn builtin(name: &str, verifier: Arc<dyn Verifier>) -> Result<Arc<dyn EnvFactory>, EnvError> {
    match name {
        "single" => Ok(Arc::new(Builtin::Single(verifier))),
        "calculator" => Ok(Arc::new(Builtin::Calculator(verifier))),
        "guess" => Ok(Arc::new(Builtin::Guess)),
        _ => Err(EnvError::Unknown {
            name: name.to_string(),
            known: BUILTIN_ENVS.join(", "),
        }),
    }
}

enum Builtin {
    Single(Arc<dyn Verifier>),
    Calculator(Arc<dyn Verifier>),
    Guess,
}

impl EnvFactory for Builtin {
    fn name(&self) -> &str {
        match self {
            Builtin::Single(_) => "single",
            Builtin::Calculator(_) => "calculator",
            Builtin::Guess => "guess",
        }
    }

    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(match self {
            Builtin::Single(v) => Box::new(SingleTurn::new(v.clone())),
            Builtin::Calculator(v) => Box::new(Calculator::new(v.clone())),
            Builtin::Guess => Box::new(Guess::default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NumericVerifier;

    #[test]
    fn builtins_by_name_and_a_clear_error_otherwise() {
        for name in BUILTIN_ENVS {
            let f = builtin(name, Arc::new(NumericVerifier)).unwrap();
            assert_eq!(f.name(), *name);
            assert!(f.make().is_ok());
        }
        let err = builtin("chess", Arc::new(NumericVerifier))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("chess") && err.contains("calculator"), "{err}");
    }
}
