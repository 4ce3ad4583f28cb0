//! The actor (`oxrl actor`): leases prompts from the coordinator, samples G completions per
//! prompt with the newest weights it holds, verifies them and streams the groups to the
//! learner.
//!
//! New weights arrive on a background stream and are swapped in between decode steps; the
//! sequences in flight keep their KV cache (PipelineRL's in-flight update), and every token
//! records the version that produced it. The actor never generates with weights more than
//! `max_lag` versions behind the learner: it waits for newer ones first. Decoding runs on a
//! blocking thread so heartbeats and the weight stream keep flowing.
//!
//! **Architecture Invariant:** actors never write weights; they read versioned snapshots.

mod deliver;
mod envs;
mod error;
mod generate;
mod heartbeat;
mod learner_version;
pub mod metrics;
mod rewards;
mod run;
mod subscriber;

pub use error::ActorError;
pub use metrics::ActorMetrics;
pub use run::{run_actor, ActorSummary};
