//! The policy crate's error type: every message says what was wrong and what to do.

use std::path::PathBuf;

/// Errors from loading, running or saving a policy model.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid model config: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "unsupported architecture {found:?}: supported are LlamaForCausalLM and Qwen2ForCausalLM \
         (and, as reward models, LlamaForSequenceClassification and Qwen2ForSequenceClassification)"
    )]
    UnsupportedArchitecture { found: Vec<String> },
    #[error("checkpoint tensor {name} has shape {found:?}, config expects {expected:?}")]
    ShapeMismatch {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("checkpoint in {dir} has no tensor {name} (expected shape {expected:?})")]
    MissingTensor {
        dir: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    #[error("{dir}: no model.safetensors or model.safetensors.index.json found")]
    NoWeights { dir: PathBuf },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// A chat template that could not be read, compiled or rendered; `path` is the file it
    /// came from (`tokenizer_config.json`, `chat_template.jinja`, or `<memory>`).
    #[error("chat template {path}: {message}")]
    ChatTemplate { path: PathBuf, message: String },
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfVocab { id: u32, vocab_size: usize },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("device {0}")]
    Device(String),
}

/// Result alias for the policy crate.
pub type Result<T> = std::result::Result<T, PolicyError>;

impl PolicyError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PolicyError::Io {
            path: path.into(),
            source,
        }
    }
}
