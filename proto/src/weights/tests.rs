//! The codec's examples: round trips through small chunks, a corrupted chunk, missing chunks
//! and wrong sizes, and each sync mode's promise (bit-exact fp32, bf16 rounding, deltas).

use super::*;
use crate::{weights_chunk::Part, WeightsChunk};

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
        let mut data = t.data.to_vec();
        data[0] ^= 0xff;
        t.data = data.into();
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

/// Weights a test receiver holds.
struct Held {
    version: u64,
    lineage: u64,
    tensors: Vec<NamedTensor>,
}

impl HeldWeights for Held {
    fn version(&self) -> u64 {
        self.version
    }
    fn lineage(&self) -> u64 {
        self.lineage
    }
    fn tensor(&self, name: &str) -> Option<Vec<f32>> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.data.clone())
    }
}

/// Feeds `chunks` onto `held`; the version they complete, or the first error.
fn receive(
    chunks: Vec<WeightsChunk>,
    held: Option<&Held>,
) -> Result<(u64, Vec<NamedTensor>), WeightsError> {
    let mut asm = Assembler::new();
    for c in chunks {
        if let Some(v) = asm.push_onto(c, held.map(|h| h as &dyn HeldWeights))? {
            return Ok(v);
        }
    }
    Err(WeightsError::Order("no footer".into()))
}

/// Values a step of training could produce from `base`: small relative moves, values whose
/// difference does not survive `a + (b - a)`, signs that flip, zeros and subnormals.
fn stepped(base: &[NamedTensor], seed: u32) -> Vec<NamedTensor> {
    base.iter()
        .map(|t| NamedTensor {
            data: t
                .data
                .iter()
                .enumerate()
                .map(|(i, &x)| match (i as u32 + seed) % 5 {
                    0 => x * (1.0 + 1e-5),
                    1 => x + 1e-7,
                    2 => -x,
                    3 => f32::from_bits(x.to_bits() ^ 1),
                    _ => f32::from_bits(3),
                })
                .collect(),
            ..t.clone()
        })
        .collect()
}

fn bits(tensors: &[NamedTensor]) -> Vec<Vec<u32>> {
    tensors
        .iter()
        .map(|t| t.data.iter().map(|x| x.to_bits()).collect())
        .collect()
}

fn odd_values() -> Vec<NamedTensor> {
    let mut t = tensors();
    t[0].data[0] = -0.0;
    t[0].data[1] = f32::from_bits(1);
    t[0].data[2] = 0.1 + 0.2;
    t[1].data[0] = 1.0 + f32::EPSILON;
    t
}

#[test]
fn full_f32_is_bit_exact() {
    let sent = odd_values();
    let (v, got) = receive(
        encode_as(3, 1, &sent, WireDtype::F32, None, 12).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(v, 3);
    assert_eq!(bits(&got), bits(&sent));
}

#[test]
fn full_bf16_holds_each_value_rounded_to_nearest_even() {
    let mut sent = odd_values();
    // Ties: 1 + 2^-8 sits halfway between bf16 neighbours 1 and 1 + 2^-7: rounds to even (1);
    // 1 + 3 * 2^-8 rounds up to 1 + 2^-6.
    sent[1].data = vec![1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)];
    let chunks = encode_as(3, 1, &sent, WireDtype::Bf16, None, 6).unwrap();
    let (_, got) = receive(chunks, None).unwrap();
    assert_eq!(got[1].data, vec![1.0, 1.0 + 2f32.powi(-6)]);
    for (g, s) in got.iter().zip(&sent) {
        for (&y, &x) in g.data.iter().zip(&s.data) {
            assert_eq!(y.to_bits() & 0xffff, 0, "a bf16 value has no low bits");
            // Within half a unit in the last place (bf16 keeps 8 significand bits).
            let ulp_floor = f32::from_bits(1 << 16);
            assert!(
                (y - x).abs() <= x.abs() * 2f32.powi(-8) + ulp_floor,
                "{x} -> {y}"
            );
            assert_eq!(y, WireDtype::Bf16.round(x));
        }
    }
}

#[test]
fn an_f32_delta_rebuilds_the_new_version_bit_for_bit() {
    let base = odd_values();
    let next = stepped(&base, 0);
    let held = Held {
        version: 4,
        lineage: 2,
        tensors: base.clone(),
    };
    let delta = Delta {
        base_version: 4,
        base: &base,
    };
    for chunk_bytes in [4, 12, 1 << 20] {
        let chunks = encode_as(5, 2, &next, WireDtype::F32, Some(delta), chunk_bytes).unwrap();
        let (v, got) = receive(chunks, Some(&held)).unwrap();
        assert_eq!(v, 5);
        assert_eq!(bits(&got), bits(&next), "chunks of {chunk_bytes} bytes");
    }
}

#[test]
fn a_bf16_delta_rebuilds_the_rounded_new_version() {
    let base = odd_values();
    let next = stepped(&base, 1);
    let rounded = |ts: &[NamedTensor]| -> Vec<NamedTensor> {
        ts.iter()
            .map(|t| NamedTensor {
                data: t.data.iter().map(|&x| WireDtype::Bf16.round(x)).collect(),
                ..t.clone()
            })
            .collect()
    };
    // The receiver holds the base as a bf16 receiver does: rounded.
    let held = Held {
        version: 4,
        lineage: 2,
        tensors: rounded(&base),
    };
    let delta = Delta {
        base_version: 4,
        base: &base,
    };
    let chunks = encode_as(5, 2, &next, WireDtype::Bf16, Some(delta), 8).unwrap();
    let (_, got) = receive(chunks, Some(&held)).unwrap();
    assert_eq!(bits(&got), bits(&rounded(&next)));
}

#[test]
fn a_delta_against_weights_not_held_is_refused_at_its_header() {
    let base = tensors();
    let next = stepped(&base, 0);
    let delta = Delta {
        base_version: 4,
        base: &base,
    };
    let chunks = encode_as(5, 2, &next, WireDtype::F32, Some(delta), 16).unwrap();
    for held in [
        None,
        Some(Held {
            version: 3,
            lineage: 2,
            tensors: base.clone(),
        }),
        Some(Held {
            version: 4,
            lineage: 1,
            tensors: base.clone(),
        }),
    ] {
        let err = receive(chunks.clone(), held.as_ref()).unwrap_err();
        assert!(matches!(err, WeightsError::Base(_)), "{err}");
    }
    // A base that does not fit the version cannot be encoded against.
    let err = encode_as(
        5,
        2,
        &next,
        WireDtype::F32,
        Some(Delta {
            base_version: 4,
            base: &base[..1],
        }),
        16,
    )
    .unwrap_err();
    assert!(matches!(err, WeightsError::Base(_)), "{err}");
}

#[test]
fn deltas_of_small_steps_are_smaller_than_the_whole_version() {
    let base: Vec<NamedTensor> = vec![NamedTensor {
        name: "w".into(),
        shape: vec![4096],
        data: (0..4096)
            .map(|i| ((i as f32) * 0.37).sin() * 0.05)
            .collect(),
    }];
    // An optimizer step: every weight moves by about 1e-5 of itself.
    let next: Vec<NamedTensor> = vec![NamedTensor {
        data: base[0].data.iter().map(|x| x * (1.0 + 1e-5)).collect(),
        ..base[0].clone()
    }];
    let size = |dtype, delta| -> usize {
        encode_as(2, 1, &next, dtype, delta, 1 << 20)
            .unwrap()
            .iter()
            .map(|c| match &c.part {
                Some(Part::Tensor(t)) => t.data.len(),
                _ => 0,
            })
            .sum()
    };
    let delta = Some(Delta {
        base_version: 1,
        base: &base,
    });
    let full = size(WireDtype::F32, None);
    assert_eq!(full, 4096 * 4);
    assert_eq!(size(WireDtype::Bf16, None), 4096 * 2);
    assert!(
        size(WireDtype::F32, delta) * 10 < full * 7,
        "{}",
        size(WireDtype::F32, delta)
    );
    assert!(
        size(WireDtype::Bf16, delta) * 10 < full,
        "{}",
        size(WireDtype::Bf16, delta)
    );
}
