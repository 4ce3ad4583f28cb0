//! Guess-the-number, a multi-turn game with feedback.
//!
//! The problem (task `guess:D`) is a range of 2^D numbers, `guess 23-38:`, and a secret in
//! it. Each model turn is a guess (the last integer in the turn); the environment answers
//! ` hi:` (the secret is higher), ` lo:` (lower), or ends the episode with reward 1 when the
//! guess is right. A turn with no number is answered ` ?:`. The episode's turn cap (the run's
//! `episode.max_turns`) makes it a game of finding the number within K guesses: an episode cut
//! at the cap scores 0. Bisection needs D + 1 guesses at most.
//!
//! An episode reads, e.g., `guess 23-38:` `30` ` lo:` `26` ` hi:` `28`: solved in three turns.

use super::{EnvError, EnvStep, Environment};
use crate::problem::Problem;

/// The game of one episode.
#[derive(Debug, Default)]
pub struct Guess {
    secret: Option<i64>,
}

/// The last integer in a turn.
fn last_integer(text: &str) -> Option<i64> {
    text.split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

impl Environment for Guess {
    fn reset(&mut self, problem: &Problem, _seed: u64) -> Result<String, EnvError> {
        let secret = problem.answer.trim().parse().map_err(|_| {
            EnvError::Invalid(format!(
                "problem {} has answer {:?}, not a number to guess",
                problem.id, problem.answer
            ))
        })?;
        self.secret = Some(secret);
        Ok(problem.prompt.clone())
    }

    fn step(&mut self, action: &str) -> Result<EnvStep, EnvError> {
        let secret = self
            .secret
            .ok_or_else(|| EnvError::Invalid("step before reset".into()))?;
        let (observation, done) = match last_integer(action) {
            Some(g) if g == secret => ("", true),
            Some(g) if g < secret => (" hi:", false),
            Some(_) => (" lo:", false),
            None => (" ?:", false),
        };
        Ok(EnvStep {
            observation: observation.to_string(),
            reward: if done { 1.0 } else { 0.0 },
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_lower_and_found() {
        let p = Problem {
            id: "guess-4/train/0".into(),
            prompt: "guess 23-38:".into(),
            answer: "28".into(),
            solution: "30 lo:26 hi:28".into(),
        };
        let mut g = Guess::default();
        assert_eq!(g.reset(&p, 0).unwrap(), "guess 23-38:");
        assert_eq!(g.step("30").unwrap().observation, " lo:");
        assert_eq!(g.step("26").unwrap().observation, " hi:");
        assert_eq!(g.step("x").unwrap().observation, " ?:");
        let s = g.step("28").unwrap();
        assert_eq!((s.reward, s.done), (1.0, true));
        let bad = Problem {
            answer: "x".into(),
            ..p
        };
        assert!(matches!(g.reset(&bad, 0), Err(EnvError::Invalid(_))));
    }
}
