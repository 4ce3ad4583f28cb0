//! The receiving side: rebuilds versions from a chunk stream, checking every chunk's CRC,
//! order, offset and size. Each tensor's values are written once, straight from the received
//! buffers into its `Vec<f32>` (a delta's into a copy of the base tensor), which the caller
//! can hand to a tensor library without another copy.

use super::{planes, NamedTensor, WeightsError, WireDtype};
use crate::{weights_chunk::Part, TensorChunk, WeightsChunk};

/// The weights a receiver holds, which a delta is applied to.
pub trait HeldWeights {
    /// The version held.
    fn version(&self) -> u64;
    /// The lineage of the version held.
    fn lineage(&self) -> u64;
    /// A copy of the held tensor `name` (row-major), if there is one.
    fn tensor(&self, name: &str) -> Option<Vec<f32>>;
}

/// A tensor being received.
#[derive(Debug)]
struct Partial {
    name: String,
    shape: Vec<u64>,
    dtype: WireDtype,
    /// Bytes of words the shape calls for.
    expected: u64,
    /// Bytes of words received so far.
    filled: u64,
    data: Vec<f32>,
}

/// Rebuilds versions from a chunk stream; a bad chunk is an error and drops the version.
#[derive(Debug, Default)]
pub struct Assembler {
    version: Option<u64>,
    /// The lineage named by the header of the version being received.
    lineage: u64,
    expected_tensors: usize,
    /// Bytes of words the header announced, and those the tensors so far took.
    total_bytes: u64,
    claimed: u64,
    /// The version is a delta (against the held weights, checked at the header).
    delta: bool,
    done: Vec<NamedTensor>,
    current: Option<Partial>,
    /// Scratch for one delta chunk's XOR words.
    scratch: Vec<u8>,
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

    /// Feeds one chunk of a stream of whole versions; returns a complete version when its
    /// footer arrives. A delta is an error ([`WeightsError::Base`]): use [`Self::push_onto`].
    pub fn push(
        &mut self,
        chunk: WeightsChunk,
    ) -> Result<Option<(u64, Vec<NamedTensor>)>, WeightsError> {
        self.push_onto(chunk, None)
    }

    /// Feeds one chunk; a delta is applied to `held` (which must be the version its header
    /// names as the base, of the same lineage). Returns a complete version at its footer.
    pub fn push_onto(
        &mut self,
        chunk: WeightsChunk,
        held: Option<&dyn HeldWeights>,
    ) -> Result<Option<(u64, Vec<NamedTensor>)>, WeightsError> {
        let result = match chunk.part {
            Some(Part::Header(h)) => {
                *self = Assembler {
                    scratch: std::mem::take(&mut self.scratch),
                    ..Default::default()
                };
                if h.delta {
                    let fits = held
                        .is_some_and(|w| w.version() == h.base_version && w.lineage() == h.lineage);
                    if !fits {
                        return Err(WeightsError::Base(format!(
                            "version {} of lineage {}, which is not held here",
                            h.base_version, h.lineage
                        )));
                    }
                }
                self.version = Some(h.version);
                self.lineage = h.lineage;
                self.expected_tensors = h.num_tensors as usize;
                self.total_bytes = h.total_bytes;
                self.delta = h.delta;
                Ok(None)
            }
            Some(Part::Tensor(c)) => self.tensor(c, held).map(|_| None),
            Some(Part::Footer(f)) => self.footer(f.version).map(Some),
            None => Err(WeightsError::Order("empty chunk".into())),
        };
        if result.is_err() {
            *self = Assembler::default();
        }
        result
    }

    fn footer(&mut self, version: u64) -> Result<(u64, Vec<NamedTensor>), WeightsError> {
        let expected = self
            .version
            .take()
            .ok_or_else(|| WeightsError::Order("footer without header".into()))?;
        if version != expected || self.current.is_some() || self.done.len() != self.expected_tensors
        {
            return Err(WeightsError::Order(format!(
                "footer of version {version} closes version {expected} with {} of {} tensors",
                self.done.len(),
                self.expected_tensors
            )));
        }
        let tensors = std::mem::take(&mut self.done);
        *self = Assembler {
            scratch: std::mem::take(&mut self.scratch),
            ..Default::default()
        };
        Ok((expected, tensors))
    }

    fn tensor(
        &mut self,
        c: TensorChunk,
        held: Option<&dyn HeldWeights>,
    ) -> Result<(), WeightsError> {
        if self.version.is_none() {
            return Err(WeightsError::Order("tensor chunk without header".into()));
        }
        // A delta chunk is checked before it is decoded; a full chunk as it is copied (`fill`).
        if self.delta {
            check(&c, crc32fast::hash(&c.data))?;
        }
        let mut part = match self.current.take() {
            Some(p) if p.name == c.name => p,
            Some(p) => {
                return Err(WeightsError::Order(format!(
                    "tensor {} unfinished before {}",
                    p.name, c.name
                )))
            }
            None => self.start(&c, held)?,
        };
        if WireDtype::parse(&c.dtype) != Some(part.dtype) {
            return Err(WeightsError::Order(format!(
                "tensor {}: dtype {:?} in the middle of a {} tensor",
                part.name,
                c.dtype,
                part.dtype.name()
            )));
        }
        if c.offset != part.filled {
            return Err(WeightsError::Offset {
                name: part.name,
                offset: c.offset,
                expected: part.filled,
            });
        }
        self.fill(&mut part, &c)?;
        if !c.last {
            self.current = Some(part);
            return Ok(());
        }
        if part.filled != part.expected {
            return Err(WeightsError::Size {
                name: part.name,
                bytes: part.filled as usize,
                shape: part.shape,
            });
        }
        self.done.push(NamedTensor {
            name: part.name,
            shape: part.shape.iter().map(|&d| d as usize).collect(),
            data: part.data,
        });
        Ok(())
    }

    /// A tensor's first chunk: its dtype and shape, and room for its values (the held tensor
    /// for a delta). A tensor larger than what the header announced is refused before any
    /// allocation.
    fn start(
        &mut self,
        c: &TensorChunk,
        held: Option<&dyn HeldWeights>,
    ) -> Result<Partial, WeightsError> {
        let dtype = WireDtype::parse(&c.dtype).ok_or_else(|| WeightsError::Dtype {
            name: c.name.clone(),
            dtype: c.dtype.clone(),
        })?;
        // Checked: a hostile shape must not overflow into a match.
        let expected = c
            .shape
            .iter()
            .try_fold(dtype.width() as u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= self.total_bytes - self.claimed)
            .ok_or_else(|| WeightsError::Size {
                name: c.name.clone(),
                bytes: 0,
                shape: c.shape.clone(),
            })?;
        self.claimed += expected;
        let elements = (expected / dtype.width() as u64) as usize;
        let data = if self.delta {
            let base = held.and_then(|h| h.tensor(&c.name));
            match base {
                Some(b) if b.len() == elements => b,
                _ => {
                    return Err(WeightsError::Base(format!(
                        "tensor {} of shape {:?}, which the held weights lack",
                        c.name, c.shape
                    )))
                }
            }
        } else {
            Vec::with_capacity(elements)
        };
        Ok(Partial {
            name: c.name.clone(),
            shape: c.shape.clone(),
            dtype,
            expected,
            filled: 0,
            data,
        })
    }

    /// Writes one chunk's words into the tensor.
    fn fill(&mut self, part: &mut Partial, c: &TensorChunk) -> Result<(), WeightsError> {
        let width = part.dtype.width();
        let words_bytes = if self.delta {
            c.words_bytes
        } else {
            c.data.len() as u64
        };
        if !words_bytes.is_multiple_of(width as u64) || part.filled + words_bytes > part.expected {
            return Err(WeightsError::Size {
                name: part.name.clone(),
                bytes: (part.filled + words_bytes) as usize,
                shape: part.shape.clone(),
            });
        }
        let from = part.filled as usize / width;
        let n = words_bytes as usize / width;
        part.filled += words_bytes;
        if !self.delta {
            return check(c, extend_checked(&mut part.data, &c.data, part.dtype));
        }
        self.scratch.resize(n * width, 0);
        planes::decode(&c.data, width, n, &mut self.scratch).map_err(|detail| {
            WeightsError::Delta {
                name: part.name.clone(),
                detail,
            }
        })?;
        let dtype = part.dtype;
        for (x, w) in part.data[from..from + n]
            .iter_mut()
            .zip(self.scratch.chunks_exact(width))
        {
            let mut word = [0u8; 4];
            word[..width].copy_from_slice(w);
            *x = dtype.value(dtype.word(*x) ^ u32::from_le_bytes(word));
        }
        Ok(())
    }
}

/// A [`WeightsError::Checksum`] unless `found` is the chunk's CRC.
fn check(c: &TensorChunk, found: u32) -> Result<(), WeightsError> {
    if found == c.crc32 {
        return Ok(());
    }
    Err(WeightsError::Checksum {
        name: c.name.clone(),
        expected: c.crc32,
        found,
    })
}

/// Appends the values of little-endian `dtype` words and returns the CRC-32 of the words, in
/// one pass over them: block by block, so that the copy reads what the CRC just brought into
/// the cache (a CRC pass and then a copy would read the whole chunk from memory twice).
fn extend_checked(data: &mut Vec<f32>, words: &[u8], dtype: WireDtype) -> u32 {
    const BLOCK: usize = 16 << 10;
    let mut crc = crc32fast::Hasher::new();
    for block in words.chunks(BLOCK) {
        crc.update(block);
        extend(data, block, dtype);
    }
    crc.finalize()
}

/// Appends the values of little-endian `dtype` words (whole words: the caller checks).
fn extend(data: &mut Vec<f32>, words: &[u8], dtype: WireDtype) {
    match dtype {
        // fp32 words on a little-endian machine are the values' bytes: one memcpy.
        WireDtype::F32 if cfg!(target_endian = "little") => {
            let n = words.len() / 4;
            data.reserve(n);
            let spare = &mut data.spare_capacity_mut()[..n];
            // SAFETY: `spare` has room for n f32 (4 n bytes), the source holds at least 4 n
            // bytes, the two do not overlap, and every bit pattern is a valid f32.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    words.as_ptr(),
                    spare.as_mut_ptr().cast::<u8>(),
                    4 * n,
                );
                data.set_len(data.len() + n);
            }
        }
        WireDtype::F32 => data.extend(
            words
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        WireDtype::Bf16 => data.extend(
            words
                .chunks_exact(2)
                .map(|b| dtype.value(u16::from_le_bytes([b[0], b[1]]) as u32)),
        ),
    }
}
