//! Training batches whose rows share prompts (`[update] share_prompts`): each distinct prompt
//! of the micro-batch runs once and its rows' completions run after it
//! (`policy::completion_logprobs`), so a group's G completions pay for its prompt once.
//!
//! The log-prob tensor is `[B, Tc]`, `Tc` the longest completion: column `k` of row `b` is
//! the log-prob of completion token `k` (model or environment token alike; per-token values
//! exist for model tokens only, as in [`crate::batch`]).

use crate::batch::{model_offsets, BatchRow, Layout};
use crate::error::Result;
use candle_core::{Device, Tensor};
use policy::{Policy, SharedPrompts};
use std::collections::HashMap;

/// Rows grouped by prompt: the distinct prompts, each row's prompt and completion.
pub struct SharedBatch {
    prompts: Vec<Vec<u32>>,
    rows: Vec<(usize, Vec<u32>)>,
    model_offsets: Vec<Vec<usize>>,
    cols: usize,
    pad_id: u32,
    device: Device,
}

impl SharedBatch {
    /// The rows, their prompts told apart by content; `None` when a row has no prompt or no
    /// completion token (the written-out layout takes such a batch).
    pub fn from_rows(rows: &[BatchRow], pad_id: u32, device: &Device) -> Option<Self> {
        if rows.is_empty()
            || rows
                .iter()
                .any(|r| r.completion.is_empty() || r.prompt.is_empty())
        {
            return None;
        }
        let mut index: HashMap<&[u32], usize> = HashMap::new();
        let mut prompts = Vec::new();
        let rows_of: Vec<(usize, Vec<u32>)> = rows
            .iter()
            .map(|r| {
                let p = *index.entry(r.prompt).or_insert_with(|| {
                    prompts.push(r.prompt.to_vec());
                    prompts.len() - 1
                });
                (p, r.completion.to_vec())
            })
            .collect();
        Some(SharedBatch {
            cols: rows.iter().map(|r| r.completion.len()).max().unwrap_or(0),
            prompts,
            rows: rows_of,
            model_offsets: model_offsets(rows),
            pad_id,
            device: device.clone(),
        })
    }

    /// Distinct prompts in the batch.
    #[cfg(test)]
    fn prompts(&self) -> usize {
        self.prompts.len()
    }
}

impl Layout for SharedBatch {
    fn logprobs(&self, policy: &Policy) -> Result<Tensor> {
        let prompts: Vec<&[u32]> = self.prompts.iter().map(Vec::as_slice).collect();
        let rows: Vec<(usize, &[u32])> =
            self.rows.iter().map(|(p, c)| (*p, c.as_slice())).collect();
        let shared = SharedPrompts {
            prompts: &prompts,
            rows: &rows,
        };
        Ok(policy::completion_logprobs(policy, shared, self.pad_id)?)
    }

    fn per_token(&self, values: &[Vec<f32>], fill: f32) -> Result<Tensor> {
        let mut flat = vec![fill; self.rows.len() * self.cols];
        for (b, row) in values.iter().enumerate() {
            debug_assert_eq!(row.len(), self.model_offsets[b].len());
            for (&k, &v) in self.model_offsets[b].iter().zip(row) {
                flat[b * self.cols + k] = v;
            }
        }
        Ok(Tensor::from_vec(
            flat,
            (self.rows.len(), self.cols),
            &self.device,
        )?)
    }

    fn completion_tokens(&self) -> usize {
        self.model_offsets.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_one_prompt_share_it_and_values_land_on_their_model_tokens() {
        let mask = [true, false, true];
        let rows = [
            BatchRow {
                prompt: &[4, 5],
                completion: &[6, 7, 2],
                mask: &mask,
            },
            BatchRow {
                prompt: &[9],
                completion: &[3],
                mask: &[],
            },
            BatchRow {
                prompt: &[4, 5],
                completion: &[8],
                mask: &[],
            },
        ];
        let b = SharedBatch::from_rows(&rows, 0, &Device::Cpu).unwrap();
        assert_eq!(b.prompts(), 2);
        assert_eq!(b.completion_tokens(), 4);
        let v = b
            .per_token(&[vec![1.0, 2.0], vec![3.0], vec![4.0]], -1.0)
            .unwrap();
        assert_eq!(
            v.to_vec2::<f32>().unwrap(),
            vec![
                vec![1.0, -1.0, 2.0],
                vec![3.0, -1.0, -1.0],
                vec![4.0, -1.0, -1.0]
            ]
        );
        let empty = [BatchRow {
            prompt: &[4],
            completion: &[],
            mask: &[],
        }];
        assert!(SharedBatch::from_rows(&empty, 0, &Device::Cpu).is_none());
    }
}
