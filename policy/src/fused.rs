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
//! differences and against the written-out ops it replaces (tests below).
//!
//! They apply to f32 tensors on the CPU ([`applies`]); the model keeps the written-out ops
//! everywhere else (CUDA, bf16), so results there do not change. `OXRL_FUSED=0` in the
//! environment turns them off everywhere, for an ablation with the same binary.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

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

/// `1 / sqrt(mean(row^2) + eps)`.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
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
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
            let r = inv_rms(xr, self.eps);
            for ((y, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
                *y = xv * r * wv;
            }
        }
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
        let mut out = vec![0f32; x.len() + h];
        let (dx, dw) = out.split_at_mut(x.len());
        for ((xr, gr), dxr) in x
            .chunks_exact(h)
            .zip(g.chunks_exact(h))
            .zip(dx.chunks_exact_mut(h))
        {
            let r = inv_rms(xr, self.eps);
            let a: f32 = xr.iter().zip(gr).zip(w).map(|((x, g), w)| g * w * x).sum();
            let c = r * r * r * a / h as f32;
            for j in 0..h {
                dxr[j] = r * gr[j] * w[j] - xr[j] * c;
                dw[j] += gr[j] * xr[j] * r;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, h))))
    }
}

struct SwiGlu;

/// The logistic sigmoid, as candle's `silu` computes it.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

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
        let out = a.iter().zip(b).map(|(&a, &b)| a * sigmoid(a) * b).collect();
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
        let mut out = vec![0f32; 2 * n];
        let (da, db) = out.split_at_mut(n);
        for i in 0..n {
            let s = sigmoid(a[i]);
            da[i] = g[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
            db[i] = g[i] * a[i] * s;
        }
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
        let mut out = vec![0f32; x.len()];
        for (row, (xr, yr)) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
            let at = (row / (heads * t) * t + row % t) * n;
            let mr = &mask[at..at + n];
            let mut max = f32::NEG_INFINITY;
            for ((y, &v), &m) in yr.iter_mut().zip(xr).zip(mr) {
                *y = v * self.scale + m;
                max = max.max(*y);
            }
            let mut sum = 0f32;
            for y in yr.iter_mut() {
                *y = (*y - max).exp();
                sum += *y;
            }
            let inv = 1.0 / sum;
            yr.iter_mut().for_each(|y| *y *= inv);
        }
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
        let mut out = vec![0f32; y.len()];
        for ((yr, gr), dr) in y
            .chunks_exact(n)
            .zip(g.chunks_exact(n))
            .zip(out.chunks_exact_mut(n))
        {
            let dot: f32 = yr.iter().zip(gr).map(|(y, g)| y * g).sum();
            for ((d, &y), &g) in dr.iter_mut().zip(yr).zip(gr) {
                *d = self.scale * y * (g - dot);
            }
        }
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
        let half = hd / 2;
        let mut out = vec![0f32; x.len()];
        for (row, (xr, yr)) in x.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
            let (bi, ti) = (row / (heads * t), row % t);
            let at = (bi * t + ti) * hd;
            let (c, s) = (&cos[at..at + hd], &sin[at..at + hd]);
            for i in 0..half {
                let k = i + half;
                if self.transpose {
                    yr[i] = xr[i] * c[i] + xr[k] * s[k];
                    yr[k] = xr[k] * c[k] - xr[i] * s[i];
                } else {
                    yr[i] = xr[i] * c[i] - xr[k] * s[i];
                    yr[k] = xr[k] * c[k] + xr[i] * s[k];
                }
            }
        }
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
