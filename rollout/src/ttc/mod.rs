//! Test-time compute: ways to spend more inference on the same model for better answers
//! (DESIGN.md section 8), and their evaluation side by side.
//!
//! - [`beam`]: beam search (width W, optionally length-normalised), exact at large W.
//! - [`best_of`]: best-of-N by sequence log-prob, or by the verifier (oracle upper bound).
//! - [`scorer`]: what `best-of-rm:N` ranks by, a reward model the caller lends.
//! - [`vote`]: majority vote over verifier-extracted answers, ties broken deterministically.
//! - [`passk`]: the unbiased pass@k estimator.
//! - [`power`]: power sampling (Karan & Du 2025), target `p(x)^alpha` by Metropolis-Hastings.
//! - [`per_prompt`]: per-prompt optimization, test-time RL on each prompt with a
//!   self-consistency reward (TTRL), through a learner the caller lends.
//! - [`sampler`]: the `--sampler` spellings; [`evaluate`](mod@evaluate): runs samplers on
//!   held-out problems.
//!
//! Beam search and power sampling work on token ids through `policy::Decoder` (rows that can
//! be reordered or duplicated); text appears only in [`evaluate`](mod@evaluate) and
//! `draws.rs`, where completions are decoded and verified, greedy and sampled draws through
//! the same `crate::eval` code that training's evaluation uses.

pub mod beam;
pub mod best_of;
mod draws;
pub mod evaluate;
pub mod passk;
pub mod per_prompt;
pub mod power;
pub mod sampler;
pub mod scorer;
pub mod vote;

pub use beam::{beam_search, Beam, BeamOutput, BeamParams};
pub use best_of::Selection;
pub use evaluate::{evaluate, evaluate_with_progress, Example, Lent, SamplerReport, TtcOptions};
pub use passk::{mean_pass_at_k, pass_at_k};
pub use per_prompt::{self_consistency_rewards, PerPromptRun, PromptAnswer, TestTimeLearner};
pub use power::{power_sample, PowerParams, PowerSample};
pub use sampler::{parse_list, Sampler, SamplerSpecError};
pub use scorer::SampleScorer;
pub use vote::{majority_vote, Vote};
