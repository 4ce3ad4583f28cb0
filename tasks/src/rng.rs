//! Deterministic randomness for procedural tasks: one generator per (seed, split, index), and
//! the hash that assigns every prompt to exactly one split.
//!
//! Hand-written rather than `rand::StdRng` because problems are identified by
//! (seed, split, index) in logs and eval reports: they must map to the same prompts forever,
//! and `rand` does not promise value stability across releases.

use crate::problem::Split;

/// One in this many prompts belongs to the eval split.
const EVAL_ONE_IN: u64 = 10;

/// The splitmix64 finaliser: a bijective mix in which every input bit affects every output bit.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The split a prompt belongs to: eval iff its hash is 0 mod 10. It depends on the prompt
/// alone (not the seed), so the eval prompts of one seed never appear in the training stream
/// of another.
pub(crate) fn split_of(prompt: &str) -> Split {
    if prompt_hash(prompt).is_multiple_of(EVAL_ONE_IN) {
        Split::Eval
    } else {
        Split::Train
    }
}

/// A well-mixed 64-bit hash of a prompt.
pub(crate) fn prompt_hash(prompt: &str) -> u64 {
    // FNV-1a folds the bytes; splitmix64 then spreads them so `% 10` sees well-mixed bits.
    let folded = prompt
        .bytes()
        .fold(0xCBF2_9CE4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3)
        });
    splitmix64(folded)
}

/// A splitmix64 stream: small, fast, and good enough to draw operands and shuffles.
#[derive(Debug, Clone)]
pub(crate) struct ProblemRng {
    state: u64,
}

impl ProblemRng {
    /// The stream for one problem; different seeds, splits or indices give unrelated streams.
    pub(crate) fn for_problem(seed: u64, split: Split, index: u64) -> Self {
        let split_tag = match split {
            Split::Train => 0x7472_6169_6E00_0000, // "train"
            Split::Eval => 0x6576_616C_0000_0000,  // "eval"
        };
        let state = splitmix64(seed ^ splitmix64(split_tag ^ splitmix64(index)));
        Self { state }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.state)
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values to draw from");
        // Rejection removes the modulo bias that would favour small values.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        match (hi - lo).checked_add(1) {
            Some(width) => lo + self.below(width),
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let draw = |seed, split, index| {
            let mut rng = ProblemRng::for_problem(seed, split, index);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1, Split::Train, 5), draw(1, Split::Train, 5));
        assert_ne!(draw(1, Split::Train, 5), draw(2, Split::Train, 5));
        assert_ne!(draw(1, Split::Train, 5), draw(1, Split::Eval, 5));
        assert_ne!(draw(1, Split::Train, 5), draw(1, Split::Train, 6));
    }

    #[test]
    fn in_range_stays_in_range_and_covers_it() {
        let mut rng = ProblemRng::for_problem(0, Split::Train, 0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let x = rng.in_range(3, 12);
            assert!((3..=12).contains(&x));
            seen[(x - 3) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.in_range(7, 7), 7);
    }

    #[test]
    fn about_one_prompt_in_ten_is_eval() {
        let eval = (0..10_000)
            .filter(|i| split_of(&format!("{i}+1=")) == Split::Eval)
            .count();
        assert!((800..1200).contains(&eval), "{eval} of 10000 in eval");
    }
}
