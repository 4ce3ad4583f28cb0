//! Whatever arrives on a weights stream, the assembler answers with a version, nothing
//! yet, or an error, never a panic; and a version it completes is exactly what was sent.

use super::*;
use crate::{weights_chunk::Part, TensorChunk, WeightsChunk, WeightsFooter, WeightsHeader};
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
            let mut data = t.data.to_vec();
            data[i] ^= 0x5a;
            t.data = data.into();
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
                    name, shape, dtype: "f32".into(), offset: n % 32, data: data.into(), last, words_bytes: 0,
                })),
                _ => None,
            };
            let _ = asm.push(WeightsChunk { part });
        }
    }
}
