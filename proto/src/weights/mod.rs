//! Weights on the wire: a version's tensors as a header, CRC-checked chunks and a footer,
//! and the assembler that turns a chunk stream back into tensors (rejecting bad chunks).
//!
//! A version travels as fp32 words or as bf16 words ([`WireDtype`]), whole or as the XOR of
//! its words with those of a base version the subscriber holds (`encode.rs`, sparse byte
//! planes in `planes.rs`); `assemble.rs` rebuilds it with one copy from the received buffers
//! into each tensor's `Vec<f32>`. docs/weight-sync.md says what each mode promises.

mod assemble;
mod encode;
mod planes;

pub use assemble::{Assembler, HeldWeights};
pub use encode::{encode, encode_as, Delta};

/// One fp32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The words a version's values travel as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireDtype {
    /// IEEE single precision: exact.
    #[default]
    F32,
    /// bfloat16, rounded to nearest even from the fp32 value: half the bytes, and the
    /// receiver samples with the rounded weights.
    Bf16,
}

impl WireDtype {
    /// The `TensorChunk.dtype` string.
    pub fn name(self) -> &'static str {
        match self {
            WireDtype::F32 => "f32",
            WireDtype::Bf16 => "bf16",
        }
    }

    /// Parses a `TensorChunk.dtype` string.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(WireDtype::F32),
            "bf16" => Some(WireDtype::Bf16),
            _ => None,
        }
    }

    /// Bytes per word.
    pub fn width(self) -> usize {
        match self {
            WireDtype::F32 => 4,
            WireDtype::Bf16 => 2,
        }
    }

    /// The word of `x` (its bit pattern, rounded to bf16 for `Bf16`).
    pub fn word(self, x: f32) -> u32 {
        match self {
            WireDtype::F32 => x.to_bits(),
            WireDtype::Bf16 => bf16_bits(x) as u32,
        }
    }

    /// The fp32 value of a word.
    pub fn value(self, word: u32) -> f32 {
        match self {
            WireDtype::F32 => f32::from_bits(word),
            WireDtype::Bf16 => f32::from_bits(word << 16),
        }
    }

    /// What the receiver holds for `x`: `x` itself for fp32, its bf16 rounding for bf16.
    pub fn round(self, x: f32) -> f32 {
        self.value(self.word(x))
    }
}

/// The bf16 bits of `x`, rounded to nearest, ties to even (NaN stays a quiet NaN).
fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
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
    #[error("tensor {name}: dtype {dtype:?} is not supported (f32 or bf16)")]
    Dtype { name: String, dtype: String },
    #[error("weights stream out of order: {0}")]
    Order(String),
    /// A delta against weights the receiver does not hold (or that do not fit it).
    #[error("delta against {0}: resubscribe for the full version")]
    Base(String),
    #[error("tensor {name}: bad delta chunk: {detail}")]
    Delta { name: String, detail: String },
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
