//! The learner: turns rollout groups into optimizer steps (the ScaleRL update), the
//! synchronous RL loop and its curriculum, run checkpoints, the metrics log, and the supervised warm start.
//!
//! **Architecture Invariant:** only the learner writes weights; everyone else reads
//! versioned snapshots.

pub mod batch;
pub mod checkpoint;
pub mod collective;
pub mod episodes;
pub mod error;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod params;
pub mod replicas;
pub mod server;
pub mod sft;
pub mod sync_curriculum;
pub mod sync_loop;
pub mod update;

pub use error::{LearnerError, Result};
pub use optim::{AdamW, AdamWConfig};
pub use params::TrainableModel;
pub use rollout::config::{PipelineConfig, RunConfig};
pub use sft::{train_sft, SftConfig};
pub use update::{Learner, StepReport, UpdateConfig};
