//! Training batches: prompt + completion sequences, left-padded, with per-token values
//! (masks, `logp_gen`, weights) laid out to match the `[B, T - 1]` log-prob tensor.
//!
//! Row `b` has `pad` padding slots, then the prompt, then the completion. Completion token
//! `k` sits in slot `pad + prompt_len + k` and is predicted at log-prob index
//! `pad + prompt_len + k - 1`.
//!
//! A multi-turn episode's completion interleaves model tokens with environment tokens; its
//! mask says which is which. Per-token values exist for model tokens only: environment
//! tokens are context, with weight 0 (no gradient), and count nowhere.

use crate::error::Result;
use candle_core::{Device, Tensor};
use policy::Policy;

/// One row of a batch: the prompt, the completion, and which completion tokens the model
/// produced (`mask[k]`; an empty mask means all of them).
#[derive(Debug, Clone, Copy)]
pub struct BatchRow<'a> {
    pub prompt: &'a [u32],
    pub completion: &'a [u32],
    pub mask: &'a [bool],
}

/// Offsets (within the completion) of each row's model tokens.
pub(crate) fn model_offsets(rows: &[BatchRow]) -> Vec<Vec<usize>> {
    rows.iter()
        .map(|r| match r.mask {
            [] => (0..r.completion.len()).collect(),
            mask => (0..r.completion.len()).filter(|&k| mask[k]).collect(),
        })
        .collect()
}

/// What the update needs of a batch, whichever way its rows run through the model: its
/// log-probs `log pi_train` as a tensor with gradient, and per-token values laid out like
/// them.
pub trait Layout {
    /// Log-probs under `policy` (temperature 1), one column per position of the layout.
    fn logprobs(&self, policy: &Policy) -> Result<Tensor>;
    /// `values[b][k]` at the column of row b's k-th model token, `fill` elsewhere.
    fn per_token(&self, values: &[Vec<f32>], fill: f32) -> Result<Tensor>;
    /// Model tokens in the batch.
    fn completion_tokens(&self) -> usize;
}

impl Layout for TokenBatch {
    fn logprobs(&self, policy: &Policy) -> Result<Tensor> {
        Ok(policy::next_token_logprobs(
            policy, &self.ids, &self.pads, 1.0,
        )?)
    }
    fn per_token(&self, values: &[Vec<f32>], fill: f32) -> Result<Tensor> {
        TokenBatch::per_token(self, values, fill)
    }
    fn completion_tokens(&self) -> usize {
        TokenBatch::completion_tokens(self)
    }
}

/// A left-padded batch of (prompt, completion) rows.
pub struct TokenBatch {
    pub ids: Tensor,
    pub pads: Vec<usize>,
    prompt_lens: Vec<usize>,
    /// Offsets (within the completion) of each row's model tokens.
    model_offsets: Vec<Vec<usize>>,
    width: usize,
}

impl TokenBatch {
    /// Concatenates and left-pads each (prompt, completion) pair; every completion token is
    /// the model's.
    pub fn new(pairs: &[(&[u32], &[u32])], pad_id: u32, device: &Device) -> Result<Self> {
        let rows: Vec<BatchRow> = pairs
            .iter()
            .map(|&(prompt, completion)| BatchRow {
                prompt,
                completion,
                mask: &[],
            })
            .collect();
        Self::from_rows(&rows, pad_id, device)
    }

    /// Concatenates and left-pads each row; values go to the model tokens its mask names.
    pub fn from_rows(rows: &[BatchRow], pad_id: u32, device: &Device) -> Result<Self> {
        let seqs: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| [r.prompt, r.completion].concat())
            .collect();
        let (ids, pads) = policy::batch::left_pad(&seqs, pad_id, device)?;
        let width = ids.dim(1)?;
        let model_offsets = model_offsets(rows);
        Ok(TokenBatch {
            ids,
            pads,
            prompt_lens: rows.iter().map(|r| r.prompt.len()).collect(),
            model_offsets,
            width,
        })
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Model tokens in the batch (environment tokens are not counted).
    pub fn completion_tokens(&self) -> usize {
        self.model_offsets.iter().map(Vec::len).sum()
    }

    /// `[B, T - 1]` tensor holding `values[b][k]` at the log-prob index of row b's k-th model
    /// token and `fill` elsewhere. `values[b]` must have one entry per model token.
    pub fn per_token(&self, values: &[Vec<f32>], fill: f32) -> Result<Tensor> {
        let cols = self.width - 1;
        let mut flat = vec![fill; self.rows() * cols];
        for (b, row) in values.iter().enumerate() {
            debug_assert_eq!(row.len(), self.model_offsets[b].len());
            let start = b * cols + self.pads[b] + self.prompt_lens[b] - 1;
            for (&k, &v) in self.model_offsets[b].iter().zip(row) {
                flat[start + k] = v;
            }
        }
        Ok(Tensor::from_vec(
            flat,
            (self.rows(), cols),
            self.ids.device(),
        )?)
    }

    /// `[B, T - 1]` mask: 1 where a model token is predicted, 0 elsewhere.
    pub fn completion_mask(&self) -> Result<Tensor> {
        let ones: Vec<Vec<f32>> = self
            .model_offsets
            .iter()
            .map(|o| vec![1.0; o.len()])
            .collect();
        self.per_token(&ones, 0.0)
    }

    /// Reads per-token values of the model tokens back out of a `[B, T - 1]` tensor.
    pub fn gather_completions(&self, t: &Tensor) -> Result<Vec<Vec<f32>>> {
        let rows = t.to_vec2::<f32>()?;
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(b, row)| {
                let start = self.pads[b] + self.prompt_lens[b] - 1;
                self.model_offsets[b]
                    .iter()
                    .map(|&k| row[start + k])
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_values_land_where_their_tokens_are_predicted() {
        let b = TokenBatch::new(
            &[(&[4, 5][..], &[6, 7, 2][..]), (&[9][..], &[3][..])],
            0,
            &Device::Cpu,
        )
        .unwrap();
        // Row 0: [4 5 6 7 2], row 1: [0 0 0 9 3]; log-prob index j predicts slot j + 1.
        let m = b.completion_mask().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0], vec![0.0, 1.0, 1.0, 1.0]);
        assert_eq!(m[1], vec![0.0, 0.0, 0.0, 1.0]);
        let v = b.per_token(&[vec![1.0, 2.0, 3.0], vec![9.0]], 0.0).unwrap();
        assert_eq!(
            b.gather_completions(&v).unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![9.0]]
        );
        assert_eq!(b.completion_tokens(), 4);
    }

    #[test]
    fn environment_tokens_get_no_values() {
        // Completion [6 7 | 8 9 | 2]: the model wrote 6 7 and 2, an environment 8 9.
        let mask = [true, true, false, false, true];
        let rows = [BatchRow {
            prompt: &[4, 5],
            completion: &[6, 7, 8, 9, 2],
            mask: &mask,
        }];
        let b = TokenBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
        let m = b.completion_mask().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0], vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(b.completion_tokens(), 3);
        let v = b.per_token(&[vec![1.0, 2.0, 3.0]], -7.0).unwrap();
        assert_eq!(
            v.to_vec2::<f32>().unwrap()[0],
            vec![-7.0, 1.0, 2.0, -7.0, -7.0, 3.0]
        );
        assert_eq!(b.gather_completions(&v).unwrap(), vec![vec![1.0, 2.0, 3.0]]);
    }
}
