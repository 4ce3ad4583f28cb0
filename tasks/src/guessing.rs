//! The guess-the-number task: a range of 2^D numbers and a secret in it, played through the
//! `guess` environment ([`crate::env::guess`]). Prompts name the range (`guess 23-38:`), so
//! the train/eval split by prompt hash holds out whole ranges.

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
            solution: bisection(low, high, secret),
        }
    }
}

/// The bisection game's transcript, model turns and the environment's answers, e.g.
/// `30 lo:26 hi:28` (what a perfect player writes; for reading, not for training).
pub(crate) fn bisection(mut low: u64, mut high: u64, secret: u64) -> String {
    let mut out = String::new();
    loop {
        let guess = low + (high - low) / 2;
        out.push_str(&guess.to_string());
        if guess == secret {
            return out;
        }
        if guess < secret {
            out.push_str(" hi:");
            low = guess + 1;
        } else {
            out.push_str(" lo:");
            high = guess - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Split;

    #[test]
    fn secrets_lie_in_their_range_and_bisection_finds_them() {
        let g = Guessing::new(4);
        for i in 0..200 {
            let d = g.draw(&mut ProblemRng::for_problem(0, Split::Train, i));
            let range = d.prompt.trim_start_matches("guess ").trim_end_matches(':');
            let (lo, hi) = range.split_once('-').unwrap();
            let (lo, hi): (u64, u64) = (lo.parse().unwrap(), hi.parse().unwrap());
            let secret: u64 = d.answer.parse().unwrap();
            assert_eq!(hi - lo + 1, 16);
            assert!((lo..=hi).contains(&secret));
            let guesses = d.solution.split(':').count();
            assert!(guesses <= 5, "{}: {guesses} guesses", d.solution);
            assert!(d.solution.ends_with(&d.answer));
        }
        assert_eq!(bisection(23, 38, 28), "30 lo:26 hi:28");
    }
}
