//! Prompts whose answers a program can check, for reinforcement learning with verifiable
//! rewards: procedural tasks with a difficulty knob, JSONL datasets, and the verifiers that
//! turn a completion into a reward of 1.0 or 0.0.
//!
//! The consumer may be a character-level model, so every built-in prompt and solution is short
//! plain ASCII:
//!
//! | task             | prompt          | answer     | solution  | difficulty (default)  |
//! |------------------|-----------------|------------|-----------|-----------------------|
//! | `addition`       | `123+456=`      | `579`      | `579`     | digits per operand (3)|
//! | `multiplication` | `12*34=`        | `408`      | `408`     | digits per operand (2)|
//! | `countdown`      | `3 5 8>23:`     | `23\|3 5 8` | `3*5+8`   | how many numbers (3)  |
//! | `sorting`        | `sort 5 2 9 1:` | `1 2 5 9`  | `1 2 5 9` | list length (4)       |
//! | `guess`          | `guess 23-38:`  | `28`       | `31␟25␟28` (turns) | range 2^D (4) |
//!
//! `guess` is played over several turns through the `guess` environment ([`env`]), where
//! environments for multi-turn episodes live.
//!
//! Procedural tasks are deterministic in (seed, split, index), and their train and eval splits
//! never share a prompt: a prompt is eval iff a fixed hash of it is 0 mod 10. A JSONL dataset
//! holds out a share of its prompts by the same hash (`eval_fraction`, default 0.1), or takes
//! its eval split from a second file: see [`DatasetSplit`]. Size an evaluation with
//! [`capped_eval_n`], so that a finite eval split is never repeated.
//!
//! **Architecture Invariant:** `tasks` does no network I/O and knows nothing of models or
//! tokens; its only file I/O is reading a dataset when asked to.

mod arithmetic;
mod countdown;
mod dataset;
pub mod env;
mod error;
mod expr;
mod finite;
mod guessing;
mod numeric;
mod problem;
mod procedural;
mod registry;
mod rng;
mod sorting;
mod spec;
mod verifier;

pub use countdown::CountdownVerifier;
pub use dataset::{Dataset, DatasetSplit, DEFAULT_EVAL_FRACTION};
pub use env::{EnvError, EnvFactory, EnvStep, Environment};
pub use error::TaskError;
pub use finite::{finite_train, FiniteTrain};
pub use numeric::NumericVerifier;
pub use problem::{Problem, ProblemSource, Split};
pub use registry::VerifierRegistry;
pub use sorting::SortingVerifier;
pub use spec::{builtin, builtin_names, from_spec, from_spec_split};
pub use verifier::{ExactVerifier, Verifier};

/// How many eval problems to evaluate when `n` are asked for: `min(n, len(Split::Eval))` for
/// a finite source, `n` for an unbounded one. Indices `0..capped_eval_n(source, n)` of
/// [`Split::Eval`] are then distinct problems (a dataset's indices wrap around its split, so
/// asking for more would repeat problems and weight them twice); 0 when a dataset holds
/// nothing out.
pub fn capped_eval_n(source: &dyn ProblemSource, n: usize) -> usize {
    match source.len(Split::Eval) {
        Some(len) => n.min(usize::try_from(len).unwrap_or(usize::MAX)),
        None => n,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn capped_eval_n_caps_finite_sources_only() {
        let procedural = builtin("addition", None, 0).unwrap();
        assert_eq!(capped_eval_n(procedural.as_ref(), 1000), 1000);
        let mut file = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        for i in 0..5 {
            writeln!(file, "{{\"prompt\": \"{i}=\", \"answer\": \"{i}\"}}").unwrap();
        }
        let eval = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        std::fs::write(eval.path(), "{\"prompt\": \"a\", \"answer\": \"1\"}\n").unwrap();
        let dataset =
            Dataset::load_with_eval_file(file.path(), eval.path(), Arc::new(NumericVerifier))
                .unwrap();
        assert_eq!(capped_eval_n(&dataset, 1000), 1);
        assert_eq!(capped_eval_n(&dataset, 0), 0);
        let none = Dataset::load_split(
            file.path(),
            &DatasetSplit::Hashed { eval_fraction: 0.0 },
            Arc::new(NumericVerifier),
        )
        .unwrap();
        assert_eq!(capped_eval_n(&none, 10), 0, "nothing held out");
    }
}
