//! Each fused kernel against the written-out candle ops it replaces (forward and gradients)
//! and against finite differences of its own forward pass.

use super::*;
use candle_core::{Device, Var, D};

/// A seeded tensor of values in [-2, 2).
fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
}

fn rms_norm_ref(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

fn rope_ref(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Rotary tables `[B, 1, t, hd]` with distinct halves, so that a kernel mixing up which half
/// of the table goes with which half of the pair fails.
fn tables(b: usize, t: usize, hd: usize) -> (Tensor, Tensor) {
    let angles = tensor(&[b, 1, t, hd], 99);
    (angles.cos().unwrap(), angles.sin().unwrap())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Gradients of `sum(f(inputs) * r)` with respect to every input, `r` fixed and random.
fn grads(inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> Vec<Tensor> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&tensors).unwrap();
    let r = tensor(y.dims(), 7);
    let store = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    tensors
        .iter()
        .map(|t| store.get(t).expect("a gradient for every input").clone())
        .collect()
}

/// Central differences of `sum(f(x) * r)` in every entry of input `which`.
fn numeric_grad(
    inputs: &[Tensor],
    which: usize,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Tensor {
    let r = tensor(f(inputs).unwrap().dims(), 7);
    let loss = |inputs: &[Tensor]| -> f64 {
        let y = f(inputs).unwrap();
        (y * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let base = inputs[which]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let eps = 1e-2f32;
    let mut out = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let at = |delta: f32| {
            let mut v = base.clone();
            v[i] += delta;
            let mut moved = inputs.to_vec();
            moved[which] = Tensor::from_vec(v, inputs[which].dims(), &Device::Cpu).unwrap();
            loss(&moved)
        };
        out.push(((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32);
    }
    Tensor::from_vec(out, inputs[which].dims(), &Device::Cpu).unwrap()
}

/// The fused op against the written-out ops: the same output, the same gradient for every
/// input, and that gradient equal to central differences of the fused forward pass.
fn check(
    inputs: &[Tensor],
    fused: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    written: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    assert!(max_diff(&fused(inputs).unwrap(), &written(inputs).unwrap()) < 1e-6);
    let (g_fused, g_written) = (grads(inputs, fused), grads(inputs, written));
    for (which, (a, b)) in g_fused.iter().zip(&g_written).enumerate() {
        assert_eq!(a.dims(), inputs[which].dims());
        assert!(max_diff(a, b) < 1e-5, "input {which}: {}", max_diff(a, b));
        let numeric = numeric_grad(inputs, which, fused);
        let off = max_diff(a, &numeric);
        assert!(off < 2e-3, "input {which}: {off}");
    }
}

#[test]
fn rms_norm_matches_the_written_out_ops_and_finite_differences() {
    let eps = 1e-6;
    let inputs = [tensor(&[2, 3, 8], 1), tensor(&[8], 2)];
    check(
        &inputs,
        &|t: &[Tensor]| rms_norm(&t[0], &t[1], eps),
        &|t: &[Tensor]| rms_norm_ref(&t[0], &t[1], eps),
    );
}

/// An additive mask `[2, 1, 3, 5]` hiding a different suffix of each query's row.
fn mask() -> Tensor {
    let rows: Vec<f32> = (0..2 * 3)
        .flat_map(|r| {
            (0..5).map(move |j| {
                if j > 2 + r % 3 {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(rows, (2, 1, 3, 5), &Device::Cpu).unwrap()
}

#[test]
fn masked_softmax_matches_the_written_out_ops_and_finite_differences() {
    let (mask, scale) = (mask(), 0.7);
    let inputs = [(tensor(&[2, 2, 3, 5], 3) * 3.0).unwrap()];
    check(
        &inputs,
        &|t: &[Tensor]| masked_softmax(&t[0], &mask, scale),
        &|t: &[Tensor]| candle_nn::ops::softmax(&(&t[0] * scale)?.broadcast_add(&mask)?, D::Minus1),
    );
}

#[test]
fn swiglu_matches_the_written_out_ops_and_finite_differences() {
    let inputs = [tensor(&[2, 3, 5], 11), tensor(&[2, 3, 5], 12)];
    check(
        &inputs,
        &|t: &[Tensor]| swiglu(&t[0], &t[1]),
        &|t: &[Tensor]| candle_nn::ops::silu(&t[0])? * &t[1],
    );
}

#[test]
fn a_masked_entry_gets_zero_probability_and_zero_gradient() {
    let scores = tensor(&[2, 2, 3, 5], 4);
    let probs = masked_softmax(&scores, &mask(), 1.0).unwrap();
    let rows = probs.flatten_to(2).unwrap().to_vec2::<f32>().unwrap();
    // Batch 0, head 0, query 0 sees keys 0..=2 only.
    assert_eq!(&rows[0][3..], [0.0, 0.0]);
    assert!((rows[0].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    let g = &grads(&[scores], &|t: &[Tensor]| {
        masked_softmax(&t[0], &mask(), 1.0)
    })[0];
    let g = g.flatten_to(2).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(&g[0][3..], [0.0, 0.0]);
}

#[test]
fn rope_matches_the_written_out_ops_and_finite_differences() {
    let (b, heads, t, hd) = (2, 3, 4, 6);
    let (cos, sin) = tables(b, t, hd);
    check(
        &[tensor(&[b, heads, t, hd], 5)],
        &|x: &[Tensor]| rope(&x[0], &cos, &sin),
        &|x: &[Tensor]| rope_ref(&x[0], &cos, &sin),
    );
}

#[test]
fn wrong_shapes_and_dtypes_are_errors_not_garbage() {
    let x = tensor(&[2, 8], 1);
    assert!(rms_norm(&x, &tensor(&[7], 2), 1e-6).is_err());
    assert!(swiglu(&x, &tensor(&[2, 7], 3)).is_err());
    let (cos, sin) = tables(1, 4, 6);
    assert!(
        rope(&tensor(&[2, 3, 4, 6], 5), &cos, &sin).is_err(),
        "batch mismatch"
    );
    assert!(masked_softmax(&tensor(&[2, 2, 3, 4], 6), &mask(), 1.0).is_err());
    let bf16 = x.to_dtype(DType::BF16).unwrap();
    assert!(swiglu(&bf16, &bf16).is_err());
    assert!(!applies(&bf16) && applies(&x));
}
