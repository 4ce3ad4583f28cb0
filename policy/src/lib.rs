//! The policy model shared by every role: a Llama-family decoder (Llama, Qwen2) that loads
//! and saves Hugging Face directories, samples batches with a KV cache, and scores given
//! tokens (teacher-forced log-probs) with an fp32 LM head.
//!
//! **Architecture Invariant:** `policy` does no network I/O and knows nothing of RL.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod default_model;
pub mod device;
pub mod error;
pub mod logprobs;
pub mod model;
pub mod sampling;
pub mod tokenizer;

pub use checkpoint::{random_weights, save_model_dir, ModelDir, Weights};
pub use config::{Architecture, ModelConfig};
pub use device::{DeviceSpec, Placement};
pub use error::{PolicyError, Result};
pub use logprobs::{next_token_logprobs, score_sequences};
pub use model::{KvCache, Policy};
pub use sampling::{generate, Completion, Decoder, FinishReason, SamplingParams};
pub use tokenizer::Tokenizer;
