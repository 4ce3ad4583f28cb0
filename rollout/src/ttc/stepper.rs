//! Batched incremental forward passes over rows that may be reordered, duplicated or dropped
//! between steps: the engine under beam search (beams fork and die) and power sampling
//! (proposals of different lengths finish at different steps).
//!
//! Rows are left-padded prompts that share one slot counter, as in `policy::Decoder`; each
//! [`Stepper::step`] appends one token to every row, and [`Stepper::select`] keeps a list of
//! rows (repeats allowed) together with their KV cache and padding.

use candle_core::{Device, Tensor};
use policy::batch::{left_pad, StepInput};
use policy::{KvCache, Policy, PolicyError};

/// Rows decoding together with a shared KV cache.
pub struct Stepper {
    cache: KvCache,
    pads: Vec<usize>,
    slots: usize,
    device: Device,
}

impl Stepper {
    /// Runs `prompts` (left-padded with `pad_id`) through `policy`; returns the stepper and
    /// each row's next-token logits (fp32).
    pub fn start(
        policy: &Policy,
        prompts: &[Vec<u32>],
        pad_id: u32,
    ) -> policy::Result<(Self, Vec<Vec<f32>>)> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(PolicyError::Input(format!("prompt {i} is empty")));
        }
        let device = policy.device().clone();
        let mut stepper = Stepper {
            cache: KvCache::new(),
            pads: Vec::new(),
            slots: 0,
            device,
        };
        if prompts.is_empty() {
            return Ok((stepper, Vec::new()));
        }
        let (ids, pads) = left_pad(prompts, pad_id, &stepper.device)?;
        let input = StepInput::new(ids, &pads, 0)?;
        let slots = input.ids.dim(1)?;
        let hidden = policy.forward_hidden(&input, Some(&mut stepper.cache))?;
        let logits = policy.logits(&hidden.narrow(1, slots - 1, 1)?)?;
        stepper.pads = pads;
        stepper.slots = slots;
        Ok((stepper, logits.squeeze(1)?.to_vec2::<f32>()?))
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Appends `tokens[r]` to row `r` (one per row) and returns each row's next-token logits.
    pub fn step(&mut self, policy: &Policy, tokens: &[u32]) -> policy::Result<Vec<Vec<f32>>> {
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
    pub fn select(&mut self, rows: &[usize]) -> policy::Result<()> {
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
