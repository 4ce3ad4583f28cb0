//! Teacher-forced log-probs of given token sequences: the learner's `log pi_train`.
//!
//! `logprobs[i] = log p(ids[i+1] | ids[..=i])`, computed with the fp32 LM head and an fp32
//! log-softmax over `logits / temperature` (temperature 1 is the model's own distribution).

use crate::batch::{left_pad, StepInput};
use crate::error::{PolicyError, Result};
use crate::model::Policy;
use candle_core::{Tensor, D};

/// Log-probs `[B, T - 1]` of each next token of left-padded `ids` (`[B, T]`), as a tensor
/// that carries gradient. Entry `[b, j]` is the log-prob of `ids[b, j + 1]`; entries of
/// padding slots are meaningless and must be masked by the caller (see `pads`).
pub fn next_token_logprobs(
    policy: &Policy,
    ids: &Tensor,
    pads: &[usize],
    temperature: f64,
) -> Result<Tensor> {
    let (_, t) = ids.dims2()?;
    if t < 2 {
        return Err(PolicyError::Input(
            "sequences need at least two tokens to score".into(),
        ));
    }
    let input = StepInput::new(ids.clone(), pads, 0)?;
    let logits = policy.forward(&input, None)?.narrow(1, 0, t - 1)?;
    let logits = if temperature > 0.0 && temperature != 1.0 {
        (logits / temperature)?
    } else {
        logits
    };
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let targets = ids.narrow(1, 1, t - 1)?.contiguous()?;
    Ok(logp.gather(&targets.unsqueeze(2)?, 2)?.squeeze(2)?)
}

/// Teacher-forced log-probs of each sequence (one entry fewer than tokens), no gradient.
pub fn score_sequences(
    policy: &Policy,
    seqs: &[Vec<u32>],
    pad_id: u32,
    temperature: f64,
) -> Result<Vec<Vec<f32>>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(short) = seqs.iter().position(|s| s.len() < 2) {
        return Err(PolicyError::Input(format!(
            "sequence {short} has fewer than two tokens: nothing to score"
        )));
    }
    let (ids, pads) = left_pad(seqs, pad_id, policy.device())?;
    let logp = next_token_logprobs(policy, &ids, &pads, temperature)?.detach();
    let rows = logp.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .zip(seqs.iter().zip(&pads))
        .map(|(row, (seq, &pad))| row[pad..pad + seq.len() - 1].to_vec())
        .collect())
}
