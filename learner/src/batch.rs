//! Training batches: prompt + completion sequences, left-padded, with per-token values
//! (masks, `logp_gen`, weights) laid out to match the `[B, T - 1]` log-prob tensor.
//!
//! Row `b` has `pad` padding slots, then the prompt, then the completion. Completion token
//! `k` sits in slot `pad + prompt_len + k` and is predicted at log-prob index
//! `pad + prompt_len + k - 1`.

use crate::error::Result;
use candle_core::{Device, Tensor};

/// A left-padded batch of (prompt, completion) pairs.
pub struct TokenBatch {
    pub ids: Tensor,
    pub pads: Vec<usize>,
    prompt_lens: Vec<usize>,
    completion_lens: Vec<usize>,
    width: usize,
}

impl TokenBatch {
    /// Concatenates and left-pads each (prompt, completion) pair.
    pub fn new(pairs: &[(&[u32], &[u32])], pad_id: u32, device: &Device) -> Result<Self> {
        let seqs: Vec<Vec<u32>> = pairs.iter().map(|(p, c)| [*p, *c].concat()).collect();
        let (ids, pads) = policy::batch::left_pad(&seqs, pad_id, device)?;
        let width = ids.dim(1)?;
        Ok(TokenBatch {
            ids,
            pads,
            prompt_lens: pairs.iter().map(|(p, _)| p.len()).collect(),
            completion_lens: pairs.iter().map(|(_, c)| c.len()).collect(),
            width,
        })
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Completion tokens in the batch.
    pub fn completion_tokens(&self) -> usize {
        self.completion_lens.iter().sum()
    }

    /// `[B, T - 1]` tensor holding `values[b][k]` at completion token k's log-prob index
    /// and `fill` elsewhere. `values[b]` must have one entry per completion token.
    pub fn per_token(&self, values: &[Vec<f32>], fill: f32) -> Result<Tensor> {
        let cols = self.width - 1;
        let mut flat = vec![fill; self.rows() * cols];
        for (b, row) in values.iter().enumerate() {
            debug_assert_eq!(row.len(), self.completion_lens[b]);
            let start = self.pads[b] + self.prompt_lens[b] - 1;
            flat[b * cols + start..b * cols + start + row.len()].copy_from_slice(row);
        }
        Ok(Tensor::from_vec(
            flat,
            (self.rows(), cols),
            self.ids.device(),
        )?)
    }

    /// `[B, T - 1]` mask: 1 where a completion token is predicted, 0 elsewhere.
    pub fn completion_mask(&self) -> Result<Tensor> {
        let ones: Vec<Vec<f32>> = self.completion_lens.iter().map(|&n| vec![1.0; n]).collect();
        self.per_token(&ones, 0.0)
    }

    /// Reads per-token values of completions back out of a `[B, T - 1]` tensor.
    pub fn gather_completions(&self, t: &Tensor) -> Result<Vec<Vec<f32>>> {
        let rows = t.to_vec2::<f32>()?;
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(b, row)| {
                let start = self.pads[b] + self.prompt_lens[b] - 1;
                row[start..start + self.completion_lens[b]].to_vec()
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
}
