//! The loops of the fused kernels, on contiguous f32 rows, each compiled for the widest
//! vector instructions the CPU has ([`multiversion!`]).
//!
//! Outputs are written once into the spare capacity of fresh vectors (not zeroed first),
//! and only with plain `for` loops: iterator adaptors such as `collect` and `extend` end in library functions that
//! are not inlined, which would compile the loop body for plain x86-64 whatever the caller's
//! target features. The callers (`fused.rs`) check the shapes; the loops assert what their
//! writes rely on.

use super::lanes::{self, exp, multiversion, sigmoid};
use std::mem::MaybeUninit;

/// Panics unless `x` is whole rows of `h` (so that the row loops write every slot).
#[inline(always)]
fn rows_of(x: &[f32], h: usize) {
    assert!(
        h > 0 && x.len().is_multiple_of(h),
        "{} values are not rows of {h}",
        x.len()
    );
}

/// `1 / sqrt(mean(row^2) + eps)`.
#[inline(always)]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = lanes::dot(row, row) / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

multiversion! {
    /// RMSNorm of each row of `x` (rows of `w.len()`).
    pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
        rows_of(x, w.len());
        let n_out = x.len();
        let mut buf = Vec::with_capacity(n_out);
        let out = &mut buf.spare_capacity_mut()[..n_out];
        for (xr, yr) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
            let r = inv_rms(xr, eps);
            for ((y, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
                y.write(xv * r * wv);
            }
        }
        // SAFETY: whole rows; each row's slots are written.
        unsafe { buf.set_len(n_out) };
        buf
    }
}

multiversion! {
    /// RMSNorm's gradient: the rows of dx, then dw (one more row). With `r` the row's
    /// inverse RMS and `a = sum_j g_j w_j x_j`: `dx = r g w - x r^3 a / h`,
    /// `dw = sum over rows of g x r`.
    pub fn rms_norm_backward_rows(x: &[f32], w: &[f32], g: &[f32], eps: f32) -> Vec<f32> {
        let h = w.len();
        rows_of(x, h);
        assert_eq!(g.len(), x.len());
        let mut dw = vec![0f32; h];
        let n_out = x.len() + h;
        let mut buf = Vec::with_capacity(n_out);
        let out = &mut buf.spare_capacity_mut()[..n_out];
        let (dx, dw_out) = out.split_at_mut(x.len());
        let rows = x.chunks_exact(h).zip(g.chunks_exact(h));
        for ((xr, gr), dxr) in rows.zip(dx.chunks_exact_mut(h)) {
            let r = inv_rms(xr, eps);
            let c = r * r * r * lanes::dot3(gr, w, xr) / h as f32;
            for (((d, &xv), &gv), &wv) in dxr.iter_mut().zip(xr).zip(gr).zip(w) {
                d.write(r * gv * wv - xv * c);
            }
            for ((d, &gv), &xv) in dw.iter_mut().zip(gr).zip(xr) {
                *d += gv * xv * r;
            }
        }
        for (slot, &d) in dw_out.iter_mut().zip(&dw) {
            slot.write(d);
        }
        // SAFETY: whole rows of dx, then the h values of dw.
        unsafe { buf.set_len(n_out) };
        buf
    }
}

multiversion! {
    /// `silu(a) * b`, element by element.
    pub fn swiglu_values(a: &[f32], b: &[f32]) -> Vec<f32> {
        assert_eq!(a.len(), b.len());
        let n_out = a.len();
        let mut buf = Vec::with_capacity(n_out);
        let out = &mut buf.spare_capacity_mut()[..n_out];
        for ((y, &a), &b) in out.iter_mut().zip(a).zip(b) {
            y.write(a * sigmoid(a) * b);
        }
        // SAFETY: one slot per element of a.
        unsafe { buf.set_len(n_out) };
        buf
    }
}

multiversion! {
    /// SwiGLU's gradient with `s = sigmoid(a)`: `d a = g b s (1 + a (1 - s))`, then
    /// `d b = g a s`.
    pub fn swiglu_backward_values(a: &[f32], b: &[f32], g: &[f32]) -> Vec<f32> {
        let n = a.len();
        assert!(b.len() == n && g.len() == n);
        let n_out = 2 * n;
        let mut buf = Vec::with_capacity(n_out);
        let out = &mut buf.spare_capacity_mut()[..n_out];
        let (da, db) = out.split_at_mut(n);
        for ((((da, db), &a), &b), &g) in da.iter_mut().zip(db).zip(a).zip(b).zip(g) {
            let s = sigmoid(a);
            da.write(g * b * s * (1.0 + a * (1.0 - s)));
            db.write(g * a * s);
        }
        // SAFETY: n slots of d a, then n of d b.
        unsafe { buf.set_len(n_out) };
        buf
    }
}

multiversion! {
    /// `softmax(x * scale + mask)` over rows of `n`; row `r` of `x` (`[B, heads, t, n]`)
    /// takes row `(r / (heads t)) t + r % t` of the mask (`[B, 1, t, n]`).
    pub fn softmax_rows(
        x: &[f32],
        mask: &[f32],
        heads: usize,
        t: usize,
        n: usize,
        scale: f32,
    ) -> Vec<f32> {
        rows_of(x, n);
        let n_out = x.len();
        let mut buf = Vec::with_capacity(n_out);
        let out = &mut buf.spare_capacity_mut()[..n_out];
        for (row, (xr, yr)) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
            let at = (row / (heads * t) * t + row % t) * n;
            let mr = &mask[at..at + n];
            for ((y, &v), &m) in yr.iter_mut().zip(xr).zip(mr) {
                y.write(v * scale + m);
            }
            // SAFETY: every slot of the row was written just above.
            let yr = unsafe { &mut *(yr as *mut [MaybeUninit<f32>] as *mut [f32]) };
            let max = lanes::max(yr);
            for y in yr.iter_mut() {
                *y = exp(*y - max);
            }
            let inv = 1.0 / lanes::sum(yr);
            for y in yr.iter_mut() {
                *y *= inv;
            }
        }
        // SAFETY: whole rows; each row's slots are written before they are read.
        unsafe { buf.set_len(n_out) };
        buf
    }
}

multiversion! {
    /// Softmax's gradient `dx = scale y (g - sum(g y))` per row of `n`, from the output y
    /// and its gradient g.
    pub fn softmax_backward_rows(y: &[f32], g: &[f32], n: usize, scale: f32) -> Vec<f32> {
        rows_of(y, n);
        assert_eq!(g.len(), y.len());
        let n_out = y.len();
        let mut buf = Vec::with_capacity(n_out);
        let out = &mut buf.spare_capacity_mut()[..n_out];
        let rows = y.chunks_exact(n).zip(g.chunks_exact(n));
        for ((yr, gr), dr) in rows.zip(out.chunks_exact_mut(n)) {
            let dot = lanes::dot(yr, gr);
            for ((d, &y), &g) in dr.iter_mut().zip(yr).zip(gr) {
                d.write(scale * y * (g - dot));
            }
        }
        // SAFETY: whole rows; each row's slots are written.
        unsafe { buf.set_len(n_out) };
        buf
    }
}

multiversion! {
    /// The rotary rotation of rows of `hd` over pairs `(i, k = i + hd/2)` (`x`
    /// `[B, heads, t, hd]`, the tables `[B, 1, t, hd]`): forward `y_i = x_i c_i - x_k s_i`,
    /// `y_k = x_k c_k + x_i s_k`; transposed (the backward pass) `y_i = x_i c_i + x_k s_k`,
    /// `y_k = x_k c_k - x_i s_i`.
    pub fn rope_rows(
        x: &[f32],
        cos: &[f32],
        sin: &[f32],
        heads: usize,
        t: usize,
        hd: usize,
        transpose: bool,
    ) -> Vec<f32> {
        rows_of(x, hd);
        assert!(hd.is_multiple_of(2));
        let half = hd / 2;
        // Negating a product is exact, so `a c + (-1)(b s)` is `a c - b s` to the bit.
        let sign = if transpose { 1.0 } else { -1.0 };
        let n_out = x.len();
        let mut buf = Vec::with_capacity(n_out);
        let out = &mut buf.spare_capacity_mut()[..n_out];
        for (row, (xr, yr)) in x.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
            let at = (row / (heads * t) * t + row % t) * hd;
            let (c1, c2) = cos[at..at + hd].split_at(half);
            let (s1, s2) = sin[at..at + hd].split_at(half);
            let (si, sk) = if transpose { (s2, s1) } else { (s1, s2) };
            let (x1, x2) = xr.split_at(half);
            let (y1, y2) = yr.split_at_mut(half);
            for ((((y, &a), &b), &c), &s) in y1.iter_mut().zip(x1).zip(x2).zip(c1).zip(si) {
                y.write(a * c + sign * (b * s));
            }
            for ((((y, &b), &a), &c), &s) in y2.iter_mut().zip(x2).zip(x1).zip(c2).zip(sk) {
                y.write(b * c - sign * (a * s));
            }
        }
        // SAFETY: whole rows; both halves of each row are written.
        unsafe { buf.set_len(n_out) };
        buf
    }
}
