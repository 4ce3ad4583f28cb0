//! An outcome reward model (ORM): the policy's decoder with a scalar head, saved and loaded as
//! the Hugging Face directory that transformers reads as `LlamaForSequenceClassification` /
//! `Qwen2ForSequenceClassification` with `num_labels = 1`.
//!
//! The score of a sequence is `score.weight · h_last`, where `h_last` is the final-norm hidden
//! state at its last token, which is what transformers computes (it takes the last non-pad
//! token, hence `pad_token_id` in the config). Batches here are left-padded, so the last slot
//! of every row is its last token. The head has no bias and the decoder's weights keep their
//! `model.*` names; there is no `lm_head.weight`. The decoder is built as if its embeddings
//! were tied: it never calls an LM head, so none is needed.

use crate::batch::{left_pad, StepInput};
use crate::checkpoint::{checked_weights, read_safetensors, save_weights, Weights};
use crate::config::ModelConfig;
use crate::error::{PolicyError, Result};
use crate::model::{validate_weights, Policy};
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// The score head's Hugging Face name (`nn.Linear(hidden, 1, bias=False)`).
pub const SCORE_WEIGHT: &str = "score.weight";

/// A decoder and a score vector: one scalar per sequence.
pub struct RewardModel {
    decoder: Policy,
    /// `[1, hidden]`.
    score: Tensor,
}

impl std::fmt::Debug for RewardModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewardModel")
            .field("decoder", &self.decoder)
            .finish()
    }
}

/// The decoder's config: the reward model's, with the LM head tied away (it is never used).
fn decoder_config(cfg: &ModelConfig) -> ModelConfig {
    let mut cfg = cfg.clone();
    cfg.tie_word_embeddings = true;
    cfg
}

impl RewardModel {
    /// Builds the model over `weights` (decoder tensors by Hugging Face name, plus
    /// [`SCORE_WEIGHT`]).
    pub fn new(cfg: &ModelConfig, weights: &Weights) -> Result<Self> {
        let decoder = Policy::new(&decoder_config(cfg), weights)?;
        let score =
            weights
                .get(SCORE_WEIGHT)
                .cloned()
                .ok_or_else(|| PolicyError::MissingTensor {
                    dir: "<weights>".into(),
                    name: SCORE_WEIGHT.into(),
                    expected: vec![1, cfg.hidden_size],
                })?;
        Self::over(decoder, score)
    }

    /// A reward model over an existing decoder (e.g. one built over trainable variables) and a
    /// `[1, hidden]` score vector; gradients flow into both.
    pub fn over(decoder: Policy, score: Tensor) -> Result<Self> {
        let expected = vec![1, decoder.config().hidden_size];
        if score.dims() != expected.as_slice() {
            return Err(PolicyError::ShapeMismatch {
                name: SCORE_WEIGHT.into(),
                found: score.dims().to_vec(),
                expected,
            });
        }
        Ok(RewardModel { decoder, score })
    }

    /// The decoder (hidden states; its LM head is not the reward model's).
    pub fn decoder(&self) -> &Policy {
        &self.decoder
    }

    /// Final-norm hidden states `[B, hidden]` (fp32) at the last token of each sequence.
    pub fn last_hidden(&self, seqs: &[Vec<u32>], pad_id: u32) -> Result<Tensor> {
        if let Some(i) = seqs.iter().position(Vec::is_empty) {
            return Err(PolicyError::Input(format!(
                "sequence {i} is empty: a reward model scores at least one token"
            )));
        }
        let (ids, pads) = left_pad(seqs, pad_id, self.decoder.device())?;
        let t = ids.dim(1)?;
        let hidden = self
            .decoder
            .forward_hidden(&StepInput::new(ids, &pads, 0)?, None)?;
        Ok(hidden
            .narrow(1, t - 1, 1)?
            .squeeze(1)?
            .to_dtype(DType::F32)?)
    }

    /// Scores `[B, t]` (fp32, carrying gradient) at every slot of `seqs` left-padded to the
    /// longest, `t`, with each row's pad count: slot `pads[i] + k` holds the score after token
    /// `k` of sequence `i`, and the last slot the score [`Self::score_tensor`] gives. What a
    /// verifier trained at every token (Cobbe et al. 2021) is fitted on.
    pub fn score_every_token(
        &self,
        seqs: &[Vec<u32>],
        pad_id: u32,
    ) -> Result<(Tensor, Vec<usize>)> {
        if let Some(i) = seqs.iter().position(Vec::is_empty) {
            return Err(PolicyError::Input(format!(
                "sequence {i} is empty: a reward model scores at least one token"
            )));
        }
        let (ids, pads) = left_pad(seqs, pad_id, self.decoder.device())?;
        let hidden = self
            .decoder
            .forward_hidden(&StepInput::new(ids, &pads, 0)?, None)?
            .to_dtype(DType::F32)?;
        let w = self.score.to_dtype(DType::F32)?;
        Ok((hidden.broadcast_matmul(&w.t()?)?.squeeze(2)?, pads))
    }

    /// Scores `[B]` (fp32, carrying gradient) of `seqs` (prompt and completion tokens).
    pub fn score_tensor(&self, seqs: &[Vec<u32>], pad_id: u32) -> Result<Tensor> {
        let h = self.last_hidden(seqs, pad_id)?;
        let w = self.score.to_dtype(DType::F32)?;
        Ok(h.matmul(&w.t()?)?.squeeze(1)?)
    }

    /// Scores of `seqs`, no gradient; empty for no sequences.
    pub fn scores(&self, seqs: &[Vec<u32>], pad_id: u32) -> Result<Vec<f32>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.score_tensor(seqs, pad_id)?.detach().to_vec1::<f32>()?)
    }
}

/// The config of a reward model made from `policy`'s: the family's sequence-classification
/// class, one label (`id2label`/`label2id` as transformers writes them) and a `pad_token_id`
/// (`pad_id` unless the policy names one), which transformers needs to find the last token.
pub fn reward_config(policy: &ModelConfig, pad_id: u32) -> Result<ModelConfig> {
    let mut cfg = policy.clone();
    cfg.architectures = vec![policy.architecture()?.hf_classifier_name().to_string()];
    cfg.pad_token_id = Some(policy.pad_token_id.unwrap_or(pad_id));
    cfg.extra.insert("num_labels".into(), 1.into());
    cfg.extra
        .insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
    cfg.extra
        .insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
    Ok(cfg)
}

/// A reward model directory in memory.
#[derive(Debug)]
pub struct RewardModelDir {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// Decoder tensors (`model.*`) and [`SCORE_WEIGHT`].
    pub weights: Weights,
}

impl RewardModelDir {
    /// Loads `dir`, checking that it is a one-label sequence classifier and every tensor's
    /// shape.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let path = dir.join("config.json");
        let config = ModelConfig::load(&path)?;
        let bad = |message: String| PolicyError::Config {
            path: path.clone(),
            message,
        };
        if !config.is_reward_model() {
            return Err(bad(format!(
                "{:?} is not a reward model: expected LlamaForSequenceClassification or \
                 Qwen2ForSequenceClassification (made by `oxrl rm train`)",
                config.architectures
            )));
        }
        let labels = config.extra.get("id2label").and_then(|v| v.as_object());
        let num_labels = config.extra.get("num_labels").and_then(|v| v.as_u64());
        if labels.is_some_and(|l| l.len() != 1) || num_labels.is_some_and(|n| n != 1) {
            return Err(bad("a reward model has one label (num_labels = 1)".into()));
        }
        if config.pad_token_id.is_none() {
            return Err(bad(
                "no pad_token_id: transformers needs it to find the last token".into(),
            ));
        }
        let tokenizer = Tokenizer::load_dir(dir)?;
        let file = dir.join("model.safetensors");
        let bytes = std::fs::read(&file).map_err(|e| PolicyError::io(&file, e))?;
        let mut weights = read_safetensors(&bytes, &file, device)?;
        let score = weights
            .remove(SCORE_WEIGHT)
            .ok_or_else(|| PolicyError::MissingTensor {
                dir: dir.into(),
                name: SCORE_WEIGHT.into(),
                expected: vec![1, config.hidden_size],
            })?;
        let mut weights = checked_weights(weights, &decoder_config(&config), dir, dtype)?;
        weights.insert(SCORE_WEIGHT.into(), score.to_dtype(dtype)?);
        Ok(RewardModelDir {
            config,
            tokenizer,
            weights,
        })
    }

    /// The reward model over these weights.
    pub fn model(&self) -> Result<RewardModel> {
        RewardModel::new(&self.config, &self.weights)
    }

    /// Writes `config.json`, `model.safetensors` (decoder and score head, fp32, no LM head)
    /// and the tokenizer's files.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| PolicyError::io(dir, e))?;
        let decoder = decoder_config(&self.config);
        validate_weights(&decoder, &self.weights, dir)?;
        let mut to_save = Weights::new();
        let names = decoder.parameter_shapes().into_iter().map(|(n, _)| n);
        for name in names.chain([SCORE_WEIGHT.to_string()]) {
            let t = self
                .weights
                .get(&name)
                .ok_or_else(|| PolicyError::MissingTensor {
                    dir: dir.into(),
                    name: name.clone(),
                    expected: vec![1, self.config.hidden_size],
                })?;
            to_save.insert(name.clone(), t.to_dtype(DType::F32)?.copy()?);
        }
        save_weights(&dir.join("model.safetensors"), &to_save)?;
        self.config.save(&dir.join("config.json"))?;
        self.tokenizer.save_dir(dir)
    }
}

#[cfg(test)]
mod tests;
