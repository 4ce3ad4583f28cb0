//! The guess-the-number task: a range of 2^D numbers and a secret in it, played through the
//! `guess` environment ([`crate::env::guess`]). Prompts name the range (`guess 23-38:`), so
//! the train/eval split by prompt hash holds out whole ranges.
//!
//! Its solution, the demonstration `oxrl sft` learns from, is a game of a player who guesses
//! uniformly among the numbers the answers so far leave possible: it always finds the
//! number, in about 2 ln(2^D) guesses rather than bisection's D + 1 at most. Turns are
//! separated by [`crate::env::TURN_SEPARATOR`]. RL under a turn cap then has something to
//! learn: guessing nearer the middle.

use crate::env::TURN_SEPARATOR;
use crate::procedural::{Draw, Generator};
use crate::rng::ProblemRng;
use std::ops::RangeInclusive;

/// Supported D (range widths 2 to 128).
pub(crate) const BITS: RangeInclusive<u32> = 1..=7;

/// Lowest number a range may start at.
const MAX_LOW: u64 = 99;

/// Ranges of 2^bits numbers.
pub(crate) struct Guessing {
    bits: u32,
}

impl Guessing {
    /// `bits` must lie in `BITS`; `spec` checks it for users.
    pub(crate) fn new(bits: u32) -> Self {
        assert!(BITS.contains(&bits), "bits {bits} unsupported");
        Guessing { bits }
    }
}

impl Generator for Guessing {
    fn draw(&self, rng: &mut ProblemRng) -> Draw {
        let low = rng.in_range(0, MAX_LOW);
        let high = low + (1 << self.bits) - 1;
        let secret = rng.in_range(low, high);
        Draw {
            prompt: format!("guess {low}-{high}:"),
            answer: secret.to_string(),
            solution: consistent_guesses(low, high, secret, rng)
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(&TURN_SEPARATOR.to_string()),
        }
    }
}

/// The guesses of a player who picks uniformly among the numbers still possible, until it
/// finds `secret`.
pub(crate) fn consistent_guesses(
    mut low: u64,
    mut high: u64,
    secret: u64,
    rng: &mut ProblemRng,
) -> Vec<u64> {
    let mut guesses = Vec::new();
    loop {
        let guess = rng.in_range(low, high);
        guesses.push(guess);
        match guess.cmp(&secret) {
            std::cmp::Ordering::Equal => return guesses,
            std::cmp::Ordering::Less => low = guess + 1,
            std::cmp::Ordering::Greater => high = guess - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Split;

    #[test]
    fn secrets_lie_in_their_range_and_the_demonstrations_find_them_consistently() {
        let g = Guessing::new(4);
        let mut turns = 0;
        for i in 0..200 {
            let d = g.draw(&mut ProblemRng::for_problem(0, Split::Train, i));
            let range = d.prompt.trim_start_matches("guess ").trim_end_matches(':');
            let (lo, hi) = range.split_once('-').unwrap();
            let (mut lo, mut hi): (u64, u64) = (lo.parse().unwrap(), hi.parse().unwrap());
            let secret: u64 = d.answer.parse().unwrap();
            assert_eq!(hi - lo + 1, 16);
            assert!((lo..=hi).contains(&secret));
            let guesses: Vec<u64> = crate::env::solution_turns(&d.solution)
                .iter()
                .map(|t| t.parse().unwrap())
                .collect();
            assert_eq!(guesses.last(), Some(&secret));
            for g in &guesses {
                assert!((lo..=hi).contains(g), "{g} outside {lo}-{hi}: {guesses:?}");
                if *g < secret {
                    lo = g + 1;
                } else if *g > secret {
                    hi = g - 1;
                }
            }
            turns += guesses.len();
        }
        // About 2 ln 16 = 5.5 guesses on average against bisection's at most 5.
        let mean = turns as f64 / 200.0;
        assert!((3.5..6.5).contains(&mean), "{mean} guesses on average");
    }
}
