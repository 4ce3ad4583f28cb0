//! The model's incremental forward over a batch of rows: left-padded prompts that share one
//! KV cache (kept outside the weights) and one slot counter, one token appended per row per
//! step. Between steps the rows may be reordered, duplicated or dropped ([`Decoder::select`]),
//! which is what every caller needs: sampling drops sequences that ended, beam search forks
//! and prunes hypotheses, power sampling's proposals end at different steps.
//!
//! Rows may also join a batch in flight ([`Decoder::join`]: a multi-turn episode whose
//! environment has answered comes back with its whole context, prefilled alone and placed at
//! the batch's current slot), so sequences that wait on an environment do not hold up the
//! others.
//!
//! The decoder holds no weights: [`Decoder::start`] and [`Decoder::step`] take the policy to
//! run, so an actor can swap to newer weights between steps while the rows keep their cache
//! (PipelineRL's in-flight update).

use crate::batch::{left_pad, StepInput};
use crate::error::{PolicyError, Result};
use crate::model::{KvCache, Policy};
use candle_core::{Device, Tensor};

/// Rows decoding together with a shared KV cache.
pub struct Decoder {
    cache: KvCache,
    pads: Vec<usize>,
    slots: usize,
    device: Device,
}

/// Refuses an empty prompt: a row needs at least one token to condition on.
pub(crate) fn check_prompts(prompts: &[Vec<u32>]) -> Result<()> {
    match prompts.iter().position(Vec::is_empty) {
        Some(i) => Err(PolicyError::Input(format!("prompt {i} is empty"))),
        None => Ok(()),
    }
}

impl Decoder {
    /// Runs `prompts` (left-padded with `pad_id`) through `policy`; returns the decoder and
    /// each row's next-token logits (fp32).
    pub fn start(
        policy: &Policy,
        prompts: &[Vec<u32>],
        pad_id: u32,
    ) -> Result<(Self, Vec<Vec<f32>>)> {
        check_prompts(prompts)?;
        let mut decoder = Decoder {
            cache: KvCache::new(),
            pads: Vec::new(),
            slots: 0,
            device: policy.device().clone(),
        };
        if prompts.is_empty() {
            return Ok((decoder, Vec::new()));
        }
        let (ids, pads) = left_pad(prompts, pad_id, &decoder.device)?;
        let input = StepInput::new(ids, &pads, 0)?;
        let slots = input.ids.dim(1)?;
        let hidden = policy.forward_hidden(&input, Some(&mut decoder.cache))?;
        let logits = policy.logits(&hidden.narrow(1, slots - 1, 1)?)?;
        decoder.pads = pads;
        decoder.slots = slots;
        Ok((decoder, logits.squeeze(1)?.to_vec2::<f32>()?))
    }

    /// Adds `prompts` as new rows after the current ones and returns their next-token
    /// logits. Each is prefilled alone (left-padded to the batch's slot count) and its cache
    /// appended; a prompt longer than the batch's slots pads every current row on the left
    /// first. The current rows' next logits are unaffected. On an empty decoder it is
    /// [`Decoder::start`].
    pub fn join(
        &mut self,
        policy: &Policy,
        prompts: &[Vec<u32>],
        pad_id: u32,
    ) -> Result<Vec<Vec<f32>>> {
        check_prompts(prompts)?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        if self.rows() == 0 {
            let (fresh, logits) = Decoder::start(policy, prompts, pad_id)?;
            *self = fresh;
            return Ok(logits);
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest > self.slots {
            let grow = longest - self.slots;
            self.cache.pad_left(grow)?;
            self.pads.iter_mut().for_each(|p| *p += grow);
            self.slots = longest;
        }
        let widened: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                let mut row = vec![pad_id; self.slots - p.len()];
                row.extend_from_slice(p);
                row
            })
            .collect();
        let (ids, _) = left_pad(&widened, pad_id, &self.device)?;
        let pads: Vec<usize> = prompts.iter().map(|p| self.slots - p.len()).collect();
        let input = StepInput::new(ids, &pads, 0)?;
        let mut cache = KvCache::new();
        let hidden = policy.forward_hidden(&input, Some(&mut cache))?;
        let logits = policy.logits(&hidden.narrow(1, self.slots - 1, 1)?)?;
        self.cache.append_rows(cache)?;
        self.pads.extend(pads);
        Ok(logits.squeeze(1)?.to_vec2::<f32>()?)
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Appends `tokens[r]` to row `r` (one per row), runs them through `policy` and returns
    /// each row's next-token logits.
    pub fn step(&mut self, policy: &Policy, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        if tokens.len() != self.rows() {
            return Err(PolicyError::Input(format!(
                "{} tokens for {} rows",
                tokens.len(),
                self.rows()
            )));
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &self.device)?;
        let input = StepInput::new(ids, &self.pads, self.slots)?;
        self.slots += 1;
        let logits = policy.forward(&input, Some(&mut self.cache))?;
        Ok(logits.squeeze(1)?.to_vec2::<f32>()?)
    }

    /// Keeps the rows `rows`, in that order; a row may appear several times (a beam that
    /// forks) or not at all (a sequence that ended).
    pub fn select(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows()) {
            return Err(PolicyError::Input(format!(
                "row {bad} selected from a batch of {}",
                self.rows()
            )));
        }
        let identity = rows.len() == self.rows() && rows.iter().enumerate().all(|(i, &r)| i == r);
        if identity {
            return Ok(());
        }
        self.pads = rows.iter().map(|&r| self.pads[r]).collect();
        if rows.is_empty() {
            self.cache = KvCache::new();
            return Ok(());
        }
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        self.cache
            .select_rows(&Tensor::new(idx.as_slice(), &self.device)?)
    }
}
