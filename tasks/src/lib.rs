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
//!
//! Procedural tasks are deterministic in (seed, split, index), and their train and eval splits
//! never share a prompt: a prompt is eval iff a fixed hash of it is 0 mod 10.
//!
//! **Architecture Invariant:** `tasks` does no network I/O and knows nothing of models or
//! tokens; its only file I/O is reading a dataset when asked to.

mod arithmetic;
mod countdown;
mod dataset;
mod error;
mod expr;
mod numeric;
mod problem;
mod procedural;
mod registry;
mod rng;
mod sorting;
mod spec;
mod verifier;

pub use countdown::CountdownVerifier;
pub use dataset::Dataset;
pub use error::TaskError;
pub use numeric::NumericVerifier;
pub use problem::{Problem, ProblemSource, Split};
pub use registry::VerifierRegistry;
pub use sorting::SortingVerifier;
pub use spec::{builtin, builtin_names, from_spec};
pub use verifier::{ExactVerifier, Verifier};
