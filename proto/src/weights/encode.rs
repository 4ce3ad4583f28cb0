//! The sending side: a version's tensors as a header, chunks and a footer. Each tensor's
//! words are written once into one buffer, and its chunks are views of that buffer
//! (`Bytes::slice`): no copy per chunk.

use super::{planes, NamedTensor, WeightsError, WireDtype};
use crate::{weights_chunk::Part, TensorChunk, WeightsChunk, WeightsFooter, WeightsHeader};
use prost::bytes::Bytes;

/// The base a delta is taken against: a version the subscriber holds, as it holds it
/// (fp32 values; for bf16 their rounding, which is what a bf16 receiver holds).
#[derive(Debug, Clone, Copy)]
pub struct Delta<'a> {
    pub base_version: u64,
    /// The base's tensors, with the names and shapes of the version being sent.
    pub base: &'a [NamedTensor],
}

/// Encodes `tensors` as fp32 version `version` of lineage `lineage`, whole, `chunk_bytes` of
/// data per chunk at most.
pub fn encode(
    version: u64,
    lineage: u64,
    tensors: &[NamedTensor],
    chunk_bytes: usize,
) -> Vec<WeightsChunk> {
    encode_as(version, lineage, tensors, WireDtype::F32, None, chunk_bytes)
        .expect("a whole version always encodes")
}

/// Encodes `tensors` as version `version` of lineage `lineage` in `dtype` words, whole or
/// (with `delta`) XORed with the base's words; chunks cover `chunk_bytes` of words at most.
/// A base whose tensors do not match `tensors` by name, shape and order is an error.
pub fn encode_as(
    version: u64,
    lineage: u64,
    tensors: &[NamedTensor],
    dtype: WireDtype,
    delta: Option<Delta<'_>>,
    chunk_bytes: usize,
) -> Result<Vec<WeightsChunk>, WeightsError> {
    let width = dtype.width();
    let total: usize = tensors.iter().map(|t| t.data.len() * width).sum();
    let mut out = vec![WeightsChunk {
        part: Some(Part::Header(WeightsHeader {
            version,
            num_tensors: tensors.len() as u32,
            total_bytes: total as u64,
            lineage,
            delta: delta.is_some(),
            base_version: delta.map_or(0, |d| d.base_version),
        })),
    }];
    if let Some(d) = delta {
        check_base(tensors, d.base)?;
    }
    let per_chunk = (chunk_bytes / width).max(1);
    for (i, t) in tensors.iter().enumerate() {
        let pieces = match delta {
            None => whole(&t.data, dtype, per_chunk),
            Some(d) => xor_planes(&t.data, &d.base[i].data, dtype, per_chunk),
        };
        let n = pieces.len();
        let mut offset = 0u64;
        for (j, (data, words_bytes)) in pieces.into_iter().enumerate() {
            out.push(WeightsChunk {
                part: Some(Part::Tensor(TensorChunk {
                    name: t.name.clone(),
                    dtype: dtype.name().into(),
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                    offset,
                    crc32: crc32fast::hash(&data),
                    data,
                    last: j + 1 == n,
                    words_bytes: words_bytes as u64,
                })),
            });
            offset += words_bytes as u64;
        }
    }
    out.push(WeightsChunk {
        part: Some(Part::Footer(WeightsFooter { version })),
    });
    Ok(out)
}

fn check_base(tensors: &[NamedTensor], base: &[NamedTensor]) -> Result<(), WeightsError> {
    let fits = base.len() == tensors.len()
        && base
            .iter()
            .zip(tensors)
            .all(|(b, t)| b.name == t.name && b.shape == t.shape && b.data.len() == t.data.len());
    if fits {
        Ok(())
    } else {
        Err(WeightsError::Base(
            "a base whose tensors differ from the version's".into(),
        ))
    }
}

/// The words of `data` in one buffer, cut into views of `per_chunk` words (one empty view for
/// an empty tensor); each with the bytes of words it covers.
fn whole(data: &[f32], dtype: WireDtype, per_chunk: usize) -> Vec<(Bytes, usize)> {
    let mut buf = Vec::with_capacity(data.len() * dtype.width());
    match dtype {
        WireDtype::F32 => data
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        WireDtype::Bf16 => data
            .iter()
            .for_each(|&x| buf.extend_from_slice(&(dtype.word(x) as u16).to_le_bytes())),
    }
    let buf = Bytes::from(buf);
    if buf.is_empty() {
        return vec![(buf, 0)];
    }
    let step = per_chunk * dtype.width();
    (0..buf.len())
        .step_by(step)
        .map(|at| {
            let end = (at + step).min(buf.len());
            (buf.slice(at..end), end - at)
        })
        .collect()
}

/// The XOR of `data`'s words with `base`'s, `per_chunk` words at a time, each chunk's as
/// sparse byte planes; all chunks are views of one buffer.
fn xor_planes(
    data: &[f32],
    base: &[f32],
    dtype: WireDtype,
    per_chunk: usize,
) -> Vec<(Bytes, usize)> {
    let width = dtype.width();
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    let mut words = Vec::with_capacity(per_chunk * width);
    for (new, old) in data.chunks(per_chunk).zip(base.chunks(per_chunk)) {
        words.clear();
        for (&x, &b) in new.iter().zip(old) {
            let w = dtype.word(x) ^ dtype.word(b);
            words.extend_from_slice(&w.to_le_bytes()[..width]);
        }
        planes::encode(&words, width, &mut buf);
        ends.push((buf.len(), new.len() * width));
    }
    let buf = Bytes::from(buf);
    if ends.is_empty() {
        return vec![(buf, 0)];
    }
    let mut start = 0;
    ends.into_iter()
        .map(|(end, words_bytes)| {
            let piece = buf.slice(start..end);
            start = end;
            (piece, words_bytes)
        })
        .collect()
}
