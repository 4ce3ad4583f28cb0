//! The policy model shared by every role: a Llama-family decoder (Llama, Qwen2) that loads
//! and saves Hugging Face directories, decodes batches incrementally with a KV cache
//! (`decoder.rs`), samples them in one loop with a per-step hook (`generate.rs`), and scores
//! given tokens (teacher-forced log-probs) with an fp32 LM head; conversations are rendered
//! with the model's own chat template (`chat.rs`); an outcome reward model, the decoder with a
//! scalar head, saved as transformers' sequence classifier (`reward_model.rs`).
//!
//! **Architecture Invariant:** `policy` does no network I/O and knows nothing of RL.

pub mod batch;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod default_model;
pub mod device;
pub mod error;
pub mod fused;
pub mod generate;
pub mod logprobs;
pub mod model;
pub mod reward_model;
pub mod sampling;
pub mod tokenizer;

pub use chat::{ChatTemplate, Message};
pub use checkpoint::{random_weights, save_model_dir, ModelDir, Weights};
pub use config::{Architecture, ModelConfig};
pub use decoder::Decoder;
pub use device::{DeviceSpec, Placement};
pub use error::{PolicyError, Result};
pub use generate::{
    decode_dynamic, decode_rows, generate, row_seed, sample, Completion, FinishReason,
    FixedWeights, RowDriver, StepHook,
};
pub use logprobs::{completion_logprobs, next_token_logprobs, score_sequences, SharedPrompts};
pub use model::{KvCache, Policy};
pub use reward_model::{reward_config, RewardModel, RewardModelDir, SCORE_WEIGHT};
pub use sampling::SamplingParams;
pub use tokenizer::Tokenizer;
