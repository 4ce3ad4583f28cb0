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

/// Rows that share prompts: the distinct prompts, and each row's prompt (an index into them)
/// and completion.
#[derive(Debug, Clone, Copy)]
pub struct SharedPrompts<'a> {
    pub prompts: &'a [&'a [u32]],
    pub rows: &'a [(usize, &'a [u32])],
}

/// Log-probs `[B, Tc]` of each row's completion tokens (`Tc` the longest completion; column
/// `k` is the log-prob of completion token `k`, entries past a row's end are meaningless),
/// as a tensor that carries gradient; the same values as [`next_token_logprobs`] over the
/// concatenated sequences, with each distinct prompt run once.
///
/// The prompts run as one left-padded batch whose keys and values then serve every row of
/// their prompt (`index_select`, whose gradient sums the rows' back into the prompt); the
/// completions run as one right-padded batch after them. The first completion token is
/// predicted by its prompt's last position. With G completions a prompt, the prompt's
/// tokens cost 1/G of what they cost written out.
pub fn completion_logprobs(policy: &Policy, shared: SharedPrompts, pad_id: u32) -> Result<Tensor> {
    let device = policy.device().clone();
    if shared.prompts.iter().any(|p| p.is_empty()) || shared.rows.is_empty() {
        return Err(PolicyError::Input(
            "every prompt needs a token, and there must be a row to score".into(),
        ));
    }
    if let Some(&(p, _)) = shared
        .rows
        .iter()
        .find(|(p, c)| *p >= shared.prompts.len() || c.is_empty())
    {
        return Err(PolicyError::Input(format!(
            "a row names prompt {p} of {} or has no completion",
            shared.prompts.len()
        )));
    }
    let prompts: Vec<Vec<u32>> = shared.prompts.iter().map(|p| p.to_vec()).collect();
    let (ids_p, pads_p) = left_pad(&prompts, pad_id, &device)?;
    let lp = ids_p.dim(1)?;
    let mut cache = crate::model::KvCache::new();
    let hidden = policy.forward_hidden(&StepInput::new(ids_p, &pads_p, 0)?, Some(&mut cache))?;
    let first = policy.logits(&hidden.narrow(1, lp - 1, 1)?)?;
    let of_row: Vec<u32> = shared.rows.iter().map(|&(p, _)| p as u32).collect();
    let of_row = Tensor::from_vec(of_row, shared.rows.len(), &device)?;
    cache.select_rows(&of_row)?;
    let first = first.index_select(&of_row, 0)?;
    let tc = shared.rows.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(shared.rows.len() * tc);
    for (_, c) in shared.rows {
        flat.extend_from_slice(c);
        flat.extend(std::iter::repeat_n(pad_id, tc - c.len()));
    }
    let ids_c = Tensor::from_vec(flat, (shared.rows.len(), tc), &device)?;
    let pads: Vec<usize> = shared.rows.iter().map(|&(p, _)| pads_p[p]).collect();
    let logits = if tc > 1 {
        let input = StepInput::new(ids_c.narrow(1, 0, tc - 1)?, &pads, lp)?;
        let rest = policy.forward(&input, Some(&mut cache))?;
        Tensor::cat(&[&first, &rest], 1)?
    } else {
        first
    };
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    Ok(logp.gather(&ids_c.unsqueeze(2)?, 2)?.squeeze(2)?)
}
