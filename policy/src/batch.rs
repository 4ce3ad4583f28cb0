//! Left-padded batches: token ids, per-sequence positions and the attention mask.
//!
//! Sequences of different lengths share one tensor by padding on the left. Row `b` has
//! `pads[b]` padding slots; a token in slot `j` sits at position `j - pads[b]`, and a query
//! in slot `j` may attend to slots `pads[b]..=j`. Padding is masked with a large finite
//! negative (not -inf) so that a padded query row never turns into NaN.

use crate::error::Result;
use candle_core::{Device, Tensor};

/// Added to the scores of keys a query must not see.
pub const MASKED: f32 = -1e9;

/// Left-pads `seqs` with `pad_id`; returns the `[B, T]` ids and each row's padding count.
pub fn left_pad(seqs: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<(Tensor, Vec<usize>)> {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(seqs.len() * t);
    let mut pads = Vec::with_capacity(seqs.len());
    for s in seqs {
        let pad = t - s.len();
        pads.push(pad);
        flat.extend(std::iter::repeat_n(pad_id, pad));
        flat.extend_from_slice(s);
    }
    Ok((Tensor::from_vec(flat, (seqs.len(), t), device)?, pads))
}

/// Positions `[B, t]` (u32) of slots `start..start + t`.
pub fn positions(pads: &[usize], start: usize, t: usize, device: &Device) -> Result<Tensor> {
    let flat: Vec<u32> = pads
        .iter()
        .flat_map(|&p| (start..start + t).map(move |j| j.saturating_sub(p) as u32))
        .collect();
    Ok(Tensor::from_vec(flat, (pads.len(), t), device)?)
}

/// Additive mask `[B, 1, t, start + t]` for queries in slots `start..start + t`.
pub fn attention_mask(pads: &[usize], start: usize, t: usize, device: &Device) -> Result<Tensor> {
    let s = start + t;
    let mut flat = Vec::with_capacity(pads.len() * t * s);
    for &p in pads {
        for q in start..start + t {
            flat.extend((0..s).map(|k| if k >= p && k <= q { 0.0 } else { MASKED }));
        }
    }
    Ok(Tensor::from_vec(flat, (pads.len(), 1, t, s), device)?)
}

/// The inputs of one forward pass over slots `start..start + t` of every row.
#[derive(Debug, Clone)]
pub struct StepInput {
    /// `[B, t]` token ids.
    pub ids: Tensor,
    /// `[B, t]` positions.
    pub positions: Tensor,
    /// `[B, 1, t, start + t]` additive attention mask.
    pub mask: Tensor,
}

impl StepInput {
    /// Builds positions and mask for `ids` (`[B, t]`) placed at slots `start..`.
    pub fn new(ids: Tensor, pads: &[usize], start: usize) -> Result<Self> {
        let t = ids.dim(1)?;
        let device = ids.device().clone();
        Ok(StepInput {
            positions: positions(pads, start, t, &device)?,
            mask: attention_mask(pads, start, t, &device)?,
            ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_positions_and_mask_agree() {
        let d = Device::Cpu;
        let (ids, pads) = left_pad(&[vec![5, 6, 7], vec![9]], 0, &d).unwrap();
        assert_eq!(
            ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![0, 0, 9]]
        );
        assert_eq!(pads, vec![0, 2]);
        let pos = positions(&pads, 0, 3, &d)
            .unwrap()
            .to_vec2::<u32>()
            .unwrap();
        assert_eq!(pos, vec![vec![0, 1, 2], vec![0, 0, 0]]);
        let m = attention_mask(&pads, 0, 3, &d).unwrap();
        let m = m.squeeze(1).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(m[0][1], vec![0.0, 0.0, MASKED]);
        assert_eq!(m[1][2], vec![MASKED, MASKED, 0.0]);
        // A decode step at slot 3 sees every real token of its row.
        let m = attention_mask(&pads, 3, 1, &d)
            .unwrap()
            .flatten_all()
            .unwrap();
        assert_eq!(
            m.to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0, 0.0, 0.0, MASKED, MASKED, 0.0, 0.0]
        );
    }
}
