//! candle's f32 matrix product as oxrl builds it (third_party/candle-core/OXRL.md): its output
//! buffer is not zeroed before `gemm` writes it. Every element must still be the product's,
//! whatever the memory held before, for every shape class gemm has a path for (single rows
//! and columns, an empty inner dimension, batches, a batch-invariant right-hand side folded
//! into one product, transposed operands).

use candle_core::{Device, Tensor};

/// A seeded tensor of values in [-1, 1).
fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
}

/// `a @ b` for `[.., m, k]` and `[.., k, n]` (b broadcast over a's batch when it has none),
/// in f64 by the definition.
fn reference(a: &Tensor, b: &Tensor) -> Vec<f32> {
    let (m, k) = (a.dim(a.rank() - 2).unwrap(), a.dim(a.rank() - 1).unwrap());
    let n = b.dim(b.rank() - 1).unwrap();
    let batch: usize = a.dims()[..a.rank() - 2].iter().product();
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b_all = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b_batched = b.rank() == 3;
    let mut out = Vec::new();
    for s in 0..batch {
        let bs = if b_batched { s * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let v: f64 = (0..k)
                    .map(|l| a[s * m * k + i * k + l] as f64 * b_all[bs + l * n + j] as f64)
                    .sum();
                out.push(v as f32);
            }
        }
    }
    out
}

/// Leaves freed heap memory full of NaN, so that an output buffer that is read before it is
/// written shows it.
fn poison_the_heap() {
    for len in [1 << 10, 1 << 14, 1 << 18, 1 << 21] {
        let junk = vec![f32::NAN; len];
        std::hint::black_box(&junk);
    }
}

fn check(a: &Tensor, b: &Tensor) {
    let want = reference(a, b);
    poison_the_heap();
    let got = a
        .matmul(b)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got.len(), want.len(), "{:?} @ {:?}", a.dims(), b.dims());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{:?} @ {:?}: element {i} is {g}, not {w}",
            a.dims(),
            b.dims()
        );
    }
}

#[test]
fn every_output_element_is_the_products_whatever_memory_held_before() {
    for (m, k, n) in [
        (1, 7, 5),
        (5, 7, 1),
        (1, 1, 1),
        (3, 0, 4),
        (33, 17, 65),
        (128, 96, 40),
    ] {
        check(&tensor(&[m, k], 1), &tensor(&[k, n], 2));
        // x · Wᵀ as `Linear` computes it: a transposed right-hand side.
        let w = tensor(&[n, k], 3);
        check(&tensor(&[m, k], 4), &w.t().unwrap());
        // Batches, and a batch-invariant right-hand side (folded into one product).
        check(&tensor(&[3, m, k], 5), &tensor(&[3, k, n], 6));
        let x = tensor(&[3, m, k], 7);
        let rhs = tensor(&[k, n], 8);
        check(&x, &rhs.broadcast_as((3, k, n)).unwrap());
    }
}
