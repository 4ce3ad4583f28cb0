//! Rollouts: a policy's scored answers to problems. The domain types that flow from actors
//! to the learner ([`RolloutGroup`], [`Sample`]) and the code that makes them (sample G
//! completions per prompt, decode, verify), greedy and sampled evaluation on held-out
//! problems, and test-time compute (`ttc`: beam search, best-of-N, majority vote, pass@k,
//! power sampling).
//!
//! **Architecture Invariant:** `rollout` does no network I/O; it is shared by the actor, the
//! learner's synchronous loop and `oxrl eval`, so none of them depends on another role.

pub mod config;
pub mod curriculum;
pub mod episode;
pub mod eval;
pub mod group;
pub mod lease_ids;
pub mod lineage;
pub mod reward;
pub mod staleness;
pub mod ttc;
pub mod wire;

pub use episode::chat::{ChatFormat, Conversation};
pub use episode::{
    run_episodes, DroppedGroup, EpisodeLimits, EpisodeOutcome, EpisodeStats, Episodes,
};
pub use eval::{greedy_eval, held_out_eval, sampled_eval, EvalReport};
pub use group::{GroupBatch, GroupError, RolloutGroup, Sample};
pub use lineage::Lineage;
pub use staleness::LagBound;
