//! Weights on the wire: a version's tensors as a header, CRC-checked chunks and a footer,
//! and the assembler that turns a chunk stream back into tensors (rejecting bad chunks).

use crate::{weights_chunk::Part, TensorChunk, WeightsChunk, WeightsFooter, WeightsHeader};

/// One fp32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What can be wrong with a weights stream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightsError {
    #[error("tensor {name}: chunk checksum {found:#x} does not match {expected:#x}")]
    Checksum {
        name: String,
        expected: u32,
        found: u32,
    },
    #[error("tensor {name}: chunk at offset {offset}, expected {expected}")]
    Offset {
        name: String,
        offset: u64,
        expected: u64,
    },
    #[error("tensor {name}: {bytes} bytes do not fill shape {shape:?}")]
    Size {
        name: String,
        bytes: usize,
        shape: Vec<u64>,
    },
    #[error("tensor {name}: dtype {dtype:?} is not supported (f32 only)")]
    Dtype { name: String, dtype: String },
    #[error("weights stream out of order: {0}")]
    Order(String),
}

/// Encodes `tensors` as version `version` of lineage `lineage`, `chunk_bytes` of data per
/// chunk at most.
pub fn encode(
    version: u64,
    lineage: u64,
    tensors: &[NamedTensor],
    chunk_bytes: usize,
) -> Vec<WeightsChunk> {
    let total: usize = tensors.iter().map(|t| t.data.len() * 4).sum();
    let mut out = vec![WeightsChunk {
        part: Some(Part::Header(WeightsHeader {
            version,
            num_tensors: tensors.len() as u32,
            total_bytes: total as u64,
            lineage,
        })),
    }];
    for t in tensors {
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let pieces: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(chunk_bytes.max(4) / 4 * 4).collect()
        };
        let n = pieces.len();
        let mut offset = 0u64;
        for (i, piece) in pieces.into_iter().enumerate() {
            out.push(WeightsChunk {
                part: Some(Part::Tensor(TensorChunk {
                    name: t.name.clone(),
                    dtype: "f32".into(),
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                    offset,
                    crc32: crc32fast::hash(piece),
                    data: piece.to_vec(),
                    last: i + 1 == n,
                })),
            });
            offset += piece.len() as u64;
        }
    }
    out.push(WeightsChunk {
        part: Some(Part::Footer(WeightsFooter { version })),
    });
    out
}

/// Rebuilds versions from a chunk stream; a bad chunk is an error and drops the version.
#[derive(Debug, Default)]
pub struct Assembler {
    version: Option<u64>,
    /// The lineage named by the header of the version being received.
    lineage: u64,
    expected_tensors: usize,
    done: Vec<NamedTensor>,
    current: Option<(String, Vec<u64>, Vec<u8>)>,
}

impl Assembler {
    /// A fresh assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version being received, once its header arrived.
    pub fn receiving(&self) -> Option<u64> {
        self.version
    }

    /// The lineage of the version being received (0 before a header, or when not stated);
    /// read it before the footer completes the version.
    pub fn lineage(&self) -> u64 {
        self.lineage
    }

    /// Feeds one chunk; returns a complete version when its footer arrives.
    pub fn push(
        &mut self,
        chunk: WeightsChunk,
    ) -> Result<Option<(u64, Vec<NamedTensor>)>, WeightsError> {
        match chunk.part {
            Some(Part::Header(h)) => {
                *self = Assembler {
                    version: Some(h.version),
                    lineage: h.lineage,
                    expected_tensors: h.num_tensors as usize,
                    ..Default::default()
                };
                Ok(None)
            }
            Some(Part::Tensor(c)) => self
                .tensor(c)
                .inspect_err(|_| *self = Assembler::default())
                .map(|_| None),
            Some(Part::Footer(f)) => {
                let version = self
                    .version
                    .take()
                    .ok_or_else(|| WeightsError::Order("footer without header".into()))?;
                if f.version != version
                    || self.current.is_some()
                    || self.done.len() != self.expected_tensors
                {
                    *self = Assembler::default();
                    return Err(WeightsError::Order(format!(
                        "footer of version {} closes version {version} with {} of {} tensors",
                        f.version,
                        self.done.len(),
                        self.expected_tensors
                    )));
                }
                let tensors = std::mem::take(&mut self.done);
                *self = Assembler::default();
                Ok(Some((version, tensors)))
            }
            None => Err(WeightsError::Order("empty chunk".into())),
        }
    }

    fn tensor(&mut self, c: TensorChunk) -> Result<(), WeightsError> {
        if self.version.is_none() {
            return Err(WeightsError::Order("tensor chunk without header".into()));
        }
        if c.dtype != "f32" {
            return Err(WeightsError::Dtype {
                name: c.name,
                dtype: c.dtype,
            });
        }
        let found = crc32fast::hash(&c.data);
        if found != c.crc32 {
            return Err(WeightsError::Checksum {
                name: c.name,
                expected: c.crc32,
                found,
            });
        }
        let (name, shape, mut bytes) = match self.current.take() {
            Some((name, shape, bytes)) if name == c.name => (name, shape, bytes),
            Some((name, ..)) => {
                return Err(WeightsError::Order(format!(
                    "tensor {name} unfinished before {}",
                    c.name
                )))
            }
            None => (c.name.clone(), c.shape.clone(), Vec::new()),
        };
        if c.offset != bytes.len() as u64 {
            return Err(WeightsError::Offset {
                name,
                offset: c.offset,
                expected: bytes.len() as u64,
            });
        }
        bytes.extend_from_slice(&c.data);
        if !c.last {
            self.current = Some((name, shape, bytes));
            return Ok(());
        }
        // Checked: a hostile shape must not overflow into a match.
        let expected = shape.iter().try_fold(4u64, |n, &d| n.checked_mul(d));
        if expected != Some(bytes.len() as u64) {
            return Err(WeightsError::Size {
                name,
                bytes: bytes.len(),
                shape,
            });
        }
        let data = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        self.done.push(NamedTensor {
            name,
            shape: shape.iter().map(|&d| d as usize).collect(),
            data,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "a".into(),
                shape: vec![3, 5],
                data: (0..15).map(|i| i as f32 * 0.5).collect(),
            },
            NamedTensor {
                name: "b".into(),
                shape: vec![2],
                data: vec![-1.0, 2.5],
            },
        ]
    }

    #[test]
    fn round_trip_through_small_chunks() {
        let chunks = encode(7, 0, &tensors(), 8);
        assert!(
            chunks.len() > 4,
            "a 60-byte tensor in 8-byte chunks spans several chunks"
        );
        let mut asm = Assembler::new();
        let mut out = None;
        for c in chunks {
            if let Some(v) = asm.push(c).unwrap() {
                out = Some(v);
            }
        }
        assert_eq!(out, Some((7, tensors())));
    }

    #[test]
    fn a_corrupted_chunk_is_rejected_by_its_checksum() {
        let mut chunks = encode(1, 0, &tensors(), 8);
        if let Some(Part::Tensor(t)) = &mut chunks[2].part {
            t.data[0] ^= 0xff;
        }
        let mut asm = Assembler::new();
        let err = chunks
            .into_iter()
            .map(|c| asm.push(c))
            .find_map(|r| r.err())
            .unwrap();
        assert!(
            matches!(err, WeightsError::Checksum { ref name, .. } if name == "a"),
            "{err}"
        );
    }

    #[test]
    fn missing_chunks_and_wrong_sizes_are_rejected() {
        let mut chunks = encode(1, 0, &tensors(), 8);
        chunks.remove(2);
        let mut asm = Assembler::new();
        assert!(chunks
            .into_iter()
            .map(|c| asm.push(c))
            .any(|r| matches!(r, Err(WeightsError::Offset { .. }))));
        let mut short = tensors();
        short[1].shape = vec![3];
        let mut asm = Assembler::new();
        let errs: Vec<_> = encode(2, 0, &short, 64)
            .into_iter()
            .filter_map(|c| asm.push(c).err())
            .collect();
        assert!(matches!(errs[0], WeightsError::Size { .. }), "{errs:?}");
    }
}

#[cfg(test)]
mod props {
    //! Whatever arrives on a weights stream, the assembler answers with a version, nothing
    //! yet, or an error, never a panic; and a version it completes is exactly what was sent.

    use super::*;
    use proptest::prelude::*;

    fn sent() -> Vec<NamedTensor> {
        vec![
            NamedTensor {
                name: "w".into(),
                shape: vec![2, 3],
                data: (0..6).map(|i| i as f32 - 2.5).collect(),
            },
            NamedTensor {
                name: "b".into(),
                shape: vec![3],
                data: vec![0.5, -1.0, 4.0],
            },
        ]
    }

    /// Ways one chunk of a good stream can go wrong.
    #[derive(Debug, Clone)]
    enum Fault {
        Drop,
        Duplicate,
        FlipByte(usize),
        Shape(Vec<u64>),
        Offset(u64),
        Empty,
        Version(u64),
        Count(u32),
    }

    fn any_fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            Just(Fault::Drop),
            Just(Fault::Duplicate),
            any::<usize>().prop_map(Fault::FlipByte),
            proptest::collection::vec(any::<u64>(), 0..4).prop_map(Fault::Shape),
            any::<u64>().prop_map(Fault::Offset),
            Just(Fault::Empty),
            any::<u64>().prop_map(Fault::Version),
            any::<u32>().prop_map(Fault::Count),
        ]
    }

    fn apply(chunks: &mut Vec<WeightsChunk>, at: usize, fault: &Fault) {
        let at = at % chunks.len();
        match (fault, &mut chunks[at].part) {
            (Fault::Drop, _) => {
                chunks.remove(at);
            }
            (Fault::Duplicate, _) => {
                let copy = chunks[at].clone();
                chunks.insert(at, copy);
            }
            (Fault::Empty, _) => chunks[at].part = None,
            (Fault::FlipByte(i), Some(Part::Tensor(t))) if !t.data.is_empty() => {
                let i = i % t.data.len();
                t.data[i] ^= 0x5a;
            }
            (Fault::Shape(shape), Some(Part::Tensor(t))) => t.shape = shape.clone(),
            (Fault::Offset(o), Some(Part::Tensor(t))) => t.offset = *o,
            (Fault::Version(v), Some(Part::Header(h))) => h.version = *v,
            (Fault::Version(v), Some(Part::Footer(f))) => f.version = *v,
            (Fault::Count(n), Some(Part::Header(h))) => h.num_tensors = *n,
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_damaged_stream_never_panics_and_never_yields_wrong_weights(
            faults in proptest::collection::vec((any::<usize>(), any_fault()), 0..4),
            chunk_bytes in 1usize..40,
        ) {
            let mut chunks = encode(9, 0, &sent(), chunk_bytes);
            for (at, fault) in &faults {
                if !chunks.is_empty() {
                    apply(&mut chunks, *at, fault);
                }
            }
            let mut asm = Assembler::new();
            for c in chunks {
                if let Ok(Some((version, tensors))) = asm.push(c) {
                    // A completed version has whole tensors of the shapes it names.
                    for t in &tensors {
                        prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
                    }
                    if faults.is_empty() {
                        prop_assert_eq!((version, tensors), (9, sent()));
                    }
                }
            }
        }

        #[test]
        fn random_chunks_never_panic(
            parts in proptest::collection::vec(
                (any::<u8>(), any::<u64>(), ".{0,4}", proptest::collection::vec(any::<u64>(), 0..3),
                 proptest::collection::vec(any::<u8>(), 0..16), any::<bool>()),
                0..12,
            )
        ) {
            let mut asm = Assembler::new();
            for (kind, n, name, shape, data, last) in parts {
                let part = match kind % 4 {
                    0 => Some(Part::Header(WeightsHeader { version: n, num_tensors: (n % 4) as u32, ..Default::default() })),
                    1 => Some(Part::Footer(WeightsFooter { version: n })),
                    2 => Some(Part::Tensor(TensorChunk {
                        crc32: crc32fast::hash(&data),
                        name, shape, dtype: "f32".into(), offset: n % 32, data, last,
                    })),
                    _ => None,
                };
                let _ = asm.push(WeightsChunk { part });
            }
        }
    }
}
