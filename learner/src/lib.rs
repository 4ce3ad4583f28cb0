//! The learner: turns rollout groups into optimizer steps (the ScaleRL update), the
//! synchronous RL loop and its curriculum, run checkpoints, the metrics log, the supervised warm start,
//! the learner per-prompt optimization trains at test time (`per_prompt.rs`), and the outcome
//! reward model's training (`reward/`).
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
pub mod per_prompt;
pub mod replicas;
pub mod reward;
pub mod rm_rewards;
pub mod server;
pub mod sft;
pub mod shared_batch;
pub mod sync_curriculum;
pub mod sync_loop;
pub mod update;

pub use error::{LearnerError, Result};
pub use optim::{AdamW, AdamWConfig};
pub use params::TrainableModel;
pub use per_prompt::{per_prompt_update, PerPromptLearner, PER_PROMPT_LR};
pub use reward::{train_reward_model, RmConfig, RmObjective, RmOutcome, RmProgress, RmStep};
pub use rollout::config::{PipelineConfig, RunConfig, WeightSync};
pub use sft::{train_sft, SftConfig};
pub use update::{Learner, StepReport, UpdateConfig};
