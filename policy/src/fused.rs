//! Fused CPU kernels, with hand-written backward passes, for the element-wise chains of a
//! decoder layer: RMSNorm, the attention softmax, rotary embeddings and SwiGLU's gated
//! activation.
//!
//! Written out in candle ops, each of these is a chain of small element-wise ops (RMSNorm:
//! square, mean, add, sqrt, divide, multiply), and every op allocates its output in the
//! forward pass and again for its gradient in the backward pass (SiLU's backward alone is
//! nine ops); on the learner step that was a quarter of the profile (BENCHMARKS.md, "Where
//! the time goes"). candle-nn's fused versions record no gradient (`../shared/STACK.md`), so
//! these are candle `CustomOp`s whose `bwd` is written by hand, each checked against finite
//! differences and against the written-out ops it replaces (tests below). This file is the
//! candle side (shapes, layouts, which op's gradient is which); the loops are in
//! `fused/kernels.rs`, vectorised at the CPU's widest width (`fused/lanes.rs`).
//!
//! They apply to f32 tensors on the CPU ([`applies`]); the model keeps the written-out ops
//! everywhere else (CUDA, bf16), so results there do not change. `OXRL_FUSED=0` in the
//! environment turns them off everywhere, for an ablation with the same binary.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use kernels::{
    rms_norm_backward_rows, rms_norm_rows, rope_rows, softmax_backward_rows, softmax_rows,
    swiglu_backward_values, swiglu_values,
};

mod kernels;
mod lanes;

/// Whether the fused kernels apply to `x`: an f32 tensor on the CPU, unless `OXRL_FUSED=0`.
pub fn applies(x: &Tensor) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("OXRL_FUSED").map_or(true, |v| v != "0"));
    enabled && x.device().is_cpu() && x.dtype() == DType::F32
}

/// `x / sqrt(mean(x^2, last dim) + eps) * weight`, `weight` of the last dimension's size.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

/// SwiGLU's gated activation `silu(gate) * up`, for tensors of one shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

/// Attention probabilities `softmax(scores * scale + mask)` over the last dimension,
/// `scores` `[B, heads, t, s]` and the additive `mask` `[B, 1, t, s]` (the same for every
/// head, and given no gradient).
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    scores.contiguous()?.apply_op2(
        &mask.contiguous()?,
        Softmax {
            scale: scale as f32,
        },
    )
}

/// Rotary embedding in Hugging Face's rotate-half layout: `x * cos + rotate_half(x) * sin`,
/// `x` `[B, heads, t, hd]`, `cos` and `sin` `[B, 1, t, hd]` (the same for every head).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope { transpose: false },
    )
}

/// The contiguous f32 data of a storage, or an error naming `op`.
fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: f32 tensors only")
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => bail!("{op}: needs a contiguous tensor"),
    }
}

/// The size of the last dimension (1 for a scalar).
fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "oxrl-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let h = last_dim(l1);
        if w.len() != h {
            bail!("{}: weight of {} for rows of {h}", self.name(), w.len());
        }
        let out = rms_norm_rows(x, w, self.eps);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // One pass: rows 0..n of the result are dx, row n is dw.
        let h = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / h;
        let both =
            x.apply_op3_no_bwd(w, &grad.contiguous()?, &RmsNormBackward { eps: self.eps })?;
        let dx = both.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = both.narrow(0, rows, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx and dw of RMSNorm from x, w and the output's gradient g; with `r` the row's inverse
/// RMS and `a = sum_j g_j w_j x_j`: `dx = r g w - x r^3 a / h`, `dw = sum over rows of g x r`.
struct RmsNormBackward {
    eps: f32,
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "oxrl-rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, w, g) = (
            data(s1, l1, name)?,
            data(s2, l2, name)?,
            data(s3, l3, name)?,
        );
        let h = last_dim(l1);
        let rows = x.len() / h;
        if w.len() != h || g.len() != x.len() {
            bail!(
                "{name}: x {:?}, w {:?} and g {:?} differ",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let out = rms_norm_backward_rows(x, w, g, self.eps);
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, h))))
    }
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "oxrl-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        if l1.dims() != l2.dims() {
            bail!(
                "{}: gate {:?} and up {:?} differ",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        let out = swiglu_values(a, b);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // One pass: the first half of the result is d gate, the second d up.
        let both = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SwiGluBackward)?;
        let n = gate.elem_count();
        let d_gate = both.narrow(0, 0, n)?.reshape(gate.shape())?;
        let d_up = both.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

/// With `s = sigmoid(a)`: `d a = g b s (1 + a (1 - s))`, `d b = g a s`, flattened one after
/// the other.
struct SwiGluBackward;

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "oxrl-swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (a, b, g) = (
            data(s1, l1, name)?,
            data(s2, l2, name)?,
            data(s3, l3, name)?,
        );
        let n = a.len();
        if b.len() != n || g.len() != n {
            bail!(
                "{name}: gate, up and gradient of {n}, {} and {}",
                b.len(),
                g.len()
            );
        }
        let out = swiglu_backward_values(a, b, g);
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}

struct Softmax {
    scale: f32,
}

impl CustomOp2 for Softmax {
    fn name(&self) -> &'static str {
        "oxrl-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, mask) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let [b, heads, t, n] = l1.dims() else {
            bail!(
                "{}: scores must be [B, heads, t, s], got {:?}",
                self.name(),
                l1.dims()
            )
        };
        let (heads, t, n) = (*heads, *t, *n);
        if l2.dims() != [*b, 1, t, n] {
            bail!(
                "{}: mask {:?} does not fit scores {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        let out = softmax_rows(x, mask, heads, t, n, self.scale);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let backward = SoftmaxBackward { scale: self.scale };
        let dx = res.apply_op2_no_bwd(&grad.contiguous()?, &backward)?;
        Ok((Some(dx), None))
    }
}

/// `dx = scale y (g - sum(g y))` per row, from the softmax's output y and its gradient g.
struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "oxrl-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let n = last_dim(l1);
        if g.len() != y.len() {
            bail!(
                "{}: output {:?} and gradient {:?} differ",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        let out = softmax_backward_rows(y, g, n, self.scale);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Rotary embedding over pairs `(i, i + hd/2)` of each row; `transpose` applies the
/// transposed rotation (the backward pass):
/// forward `y_i = x_i c_i - x_k s_i`, `y_k = x_k c_k + x_i s_k`;
/// transposed `y_i = x_i c_i + x_k s_k`, `y_k = x_k c_k - x_i s_i` (`k = i + hd/2`).
struct Rope {
    transpose: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "oxrl-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, cos, sin) = (
            data(s1, l1, name)?,
            data(s2, l2, name)?,
            data(s3, l3, name)?,
        );
        let [b, heads, t, hd] = l1.dims() else {
            bail!("{name}: x must be [B, heads, t, hd], got {:?}", l1.dims())
        };
        let (b, heads, t, hd) = (*b, *heads, *t, *hd);
        if l2.dims() != [b, 1, t, hd] || l3.dims() != [b, 1, t, hd] || hd % 2 != 0 {
            bail!(
                "{name}: tables {:?} / {:?} do not fit x {:?}",
                l2.dims(),
                l3.dims(),
                l1.dims()
            );
        }
        let out = rope_rows(x, cos, sin, heads, t, hd, self.transpose);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The rotation is linear in x: its gradient is the transposed rotation of the
        // output's. The tables come from positions and are not trained.
        let rotation = Rope {
            transpose: !self.transpose,
        };
        let dx = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &rotation)?;
        Ok((Some(dx), None, None))
    }
}

#[cfg(test)]
mod tests;
