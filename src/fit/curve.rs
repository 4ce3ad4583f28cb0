//! The compute-performance curve `R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B)` and its fit
//! as ScaleRL does it: a grid over the asymptote A and the midpoint C_mid (log-spaced), and
//! for every grid cell a 1-D least-squares minimisation over the exponent B. The best cell is
//! refined on finer grids around it. Uncertainty comes from the same grid: every parameter
//! set whose squared error is within one estimated noise variance of the best
//! (`SSE <= SSE_min + SSE_min / (n - p)`, the delta-chi-square = 1 region) is kept, and the
//! intervals are the ranges of A, B, C_mid and of the prediction over that set.

use serde::Serialize;

/// One curve: `r0` the reward at zero compute, `a` the asymptote, `b` the efficiency
/// exponent, `c_mid` the compute at which half of the gain `a - r0` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Curve {
    pub r0: f64,
    pub a: f64,
    pub b: f64,
    pub c_mid: f64,
}

impl Curve {
    /// The predicted reward at compute `c` (`r0` at `c <= 0`).
    pub fn eval(&self, c: f64) -> f64 {
        if c <= 0.0 {
            return self.r0;
        }
        self.r0 + (self.a - self.r0) * share(self.b, self.c_mid.ln() - c.ln())
    }
}

/// `1 / (1 + exp(b * d))` with `d = ln C_mid - ln C`: the fraction of the gain reached.
fn share(b: f64, d: f64) -> f64 {
    1.0 / (1.0 + (b * d).exp())
}

/// How R0 is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum R0 {
    /// A known value (the command uses the run's first point).
    Fixed(f64),
    /// Least squares together with the rest (closed form for each A, C_mid, B).
    Fit,
}

/// Search ranges and grid sizes. `None` ranges are chosen from the data and widened
/// automatically when the best value lands on their edge.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub r0: R0,
    pub a_range: Option<(f64, f64)>,
    pub c_mid_range: Option<(f64, f64)>,
    pub b_range: (f64, f64),
    pub a_steps: usize,
    pub c_mid_steps: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            r0: R0::Fit,
            a_range: None,
            c_mid_range: None,
            b_range: (0.05, 20.0),
            a_steps: 201,
            c_mid_steps: 61,
        }
    }
}

/// A fitted curve with its uncertainty.
#[derive(Debug, Clone)]
pub struct Fit {
    pub curve: Curve,
    /// Sum of squared residuals of `curve` over the points.
    pub sse: f64,
    pub n: usize,
    /// The grids finally searched.
    pub a_range: (f64, f64),
    pub c_mid_range: (f64, f64),
    /// Ranges over the delta-chi-square = 1 region.
    pub a_interval: (f64, f64),
    pub b_interval: (f64, f64),
    pub c_mid_interval: (f64, f64),
    /// Parameters whose best value sits on the edge of its search range.
    pub at_edge: Vec<&'static str>,
    region: Vec<Curve>,
}

impl Fit {
    /// The prediction at `c` and its range over the uncertainty region.
    pub fn predict(&self, c: f64) -> (f64, f64, f64) {
        let best = self.curve.eval(c);
        self.region
            .iter()
            .map(|k| k.eval(c))
            .fold((best, best, best), |(v, lo, hi), p| {
                (v, lo.min(p), hi.max(p))
            })
    }

    /// Root-mean-square residual.
    pub fn rmse(&self) -> f64 {
        (self.sse / self.n.max(1) as f64).sqrt()
    }
}

/// What can make a fit impossible.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    TooFewPoints(usize),
    BadPoint(usize),
    BadRange(&'static str),
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::TooFewPoints(n) => write!(
                f,
                "{n} points to fit; the curve needs at least 4 (use more of the run, or a reward \
                 series logged every step)"
            ),
            FitError::BadPoint(i) => write!(
                f,
                "point {i}: compute must be positive and finite, reward finite"
            ),
            FitError::BadRange(what) => write!(f, "{what}: the range must be lo < hi"),
        }
    }
}

impl std::error::Error for FitError {}

/// The data and the settings shared by every evaluation.
struct Problem<'a> {
    log_x: Vec<f64>,
    y: &'a [f64],
    r0: R0,
    log_b: (f64, f64),
}

/// One evaluated grid cell.
#[derive(Clone, Copy)]
struct Cell {
    curve: Curve,
    sse: f64,
}

const B_GRID: usize = 16;
const GOLDEN_ITERS: usize = 30;

impl Problem<'_> {
    /// SSE and the R0 used, for fixed A, ln C_mid and B.
    fn sse(&self, a: f64, log_c: f64, b: f64) -> (f64, f64) {
        let r0 = match self.r0 {
            R0::Fixed(v) => v,
            R0::Fit => {
                // y - a s = r0 (1 - s): least squares in r0.
                let (mut num, mut den) = (0.0, 0.0);
                for (lx, y) in self.log_x.iter().zip(self.y) {
                    let s = share(b, log_c - lx);
                    num += (1.0 - s) * (y - a * s);
                    den += (1.0 - s) * (1.0 - s);
                }
                if den > 1e-300 {
                    num / den
                } else {
                    a
                }
            }
        };
        let sse = self
            .log_x
            .iter()
            .zip(self.y)
            .map(|(lx, y)| {
                let r = r0 + (a - r0) * share(b, log_c - lx) - y;
                r * r
            })
            .sum();
        (sse, r0)
    }

    /// The best B for fixed A and C_mid: a coarse grid in ln B, then golden-section search
    /// between the neighbours of the best grid point.
    fn best_b(&self, a: f64, log_c: f64) -> Cell {
        let (lo, hi) = self.log_b;
        let step = (hi - lo) / (B_GRID - 1) as f64;
        let f = |lb: f64| self.sse(a, log_c, lb.exp()).0;
        let (k, _) = (0..B_GRID).map(|k| (k, f(lo + step * k as f64))).fold(
            (0, f64::INFINITY),
            |best, (k, v)| {
                if v < best.1 {
                    (k, v)
                } else {
                    best
                }
            },
        );
        let (mut l, mut r) = (
            lo + step * k.saturating_sub(1) as f64,
            lo + step * (k + 1).min(B_GRID - 1) as f64,
        );
        let g = (5f64.sqrt() - 1.0) / 2.0;
        let (mut m1, mut m2) = (r - g * (r - l), l + g * (r - l));
        let (mut f1, mut f2) = (f(m1), f(m2));
        for _ in 0..GOLDEN_ITERS {
            if f1 < f2 {
                r = m2;
                m2 = m1;
                f2 = f1;
                m1 = r - g * (r - l);
                f1 = f(m1);
            } else {
                l = m1;
                m1 = m2;
                f1 = f2;
                m2 = l + g * (r - l);
                f2 = f(m2);
            }
        }
        let b = ((l + r) / 2.0).exp();
        let (sse, r0) = self.sse(a, log_c, b);
        Cell {
            curve: Curve {
                r0,
                a,
                b,
                c_mid: log_c.exp(),
            },
            sse,
        }
    }

    /// Evaluates an `na` x `nc` grid (A linear, C_mid log-spaced); returns every cell.
    fn grid(&self, a: (f64, f64), log_c: (f64, f64), na: usize, nc: usize) -> Vec<Cell> {
        let at = |(lo, hi): (f64, f64), n: usize, i: usize| {
            if n <= 1 {
                (lo + hi) / 2.0
            } else {
                lo + (hi - lo) * i as f64 / (n - 1) as f64
            }
        };
        let mut out = Vec::with_capacity(na * nc);
        for i in 0..na {
            for j in 0..nc {
                out.push(self.best_b(at(a, na, i), at(log_c, nc, j)));
            }
        }
        out
    }
}

fn best(cells: &[Cell]) -> Cell {
    *cells
        .iter()
        .min_by(|p, q| p.sse.total_cmp(&q.sse))
        .expect("a grid has cells")
}

/// The grid of (A, ln C_mid) being searched, `na` x `nc` cells.
#[derive(Clone, Copy)]
struct Grid {
    a: (f64, f64),
    log_c: (f64, f64),
    na: usize,
    nc: usize,
}

impl Grid {
    /// The spacing of the coarse grid along A and along ln C_mid.
    fn steps(&self) -> (f64, f64) {
        (
            (self.a.1 - self.a.0) / (self.na - 1) as f64,
            (self.log_c.1 - self.log_c.0) / (self.nc - 1) as f64,
        )
    }
}

/// The smallest and the largest of `values`.
fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Fits the curve to points `(x, y)` (x > 0, the compute).
pub fn fit(x: &[f64], y: &[f64], opts: &FitOptions) -> Result<Fit, FitError> {
    let (n, params) = check_points(x, y, opts)?;
    let problem = Problem {
        log_x: x[..n].iter().map(|v| v.ln()).collect(),
        y: &y[..n],
        r0: opts.r0,
        log_b: (opts.b_range.0.ln(), opts.b_range.1.ln()),
    };
    let grid = initial_grid(&problem, opts)?;
    let (grid, mut cells, top) = coarse_search(&problem, grid, opts);
    let top = refine(&problem, &grid, &mut cells, top);
    let region = uncertainty_region(&cells, top, n, params);
    let range = |f: fn(&Curve) -> f64| min_max(region.iter().map(f));
    Ok(Fit {
        curve: top.curve,
        sse: top.sse,
        n,
        a_range: grid.a,
        c_mid_range: (grid.log_c.0.exp(), grid.log_c.1.exp()),
        a_interval: range(|c| c.a),
        b_interval: range(|c| c.b),
        c_mid_interval: range(|c| c.c_mid),
        at_edge: at_edge(&problem, &grid, top),
        region,
    })
}

/// The number of points used and of parameters fitted, after checking points and B's range.
fn check_points(x: &[f64], y: &[f64], opts: &FitOptions) -> Result<(usize, usize), FitError> {
    let n = x.len().min(y.len());
    let params = if opts.r0 == R0::Fit { 4 } else { 3 };
    if n < 4 || n < params {
        return Err(FitError::TooFewPoints(n));
    }
    if let Some(i) = (0..n).find(|&i| !(x[i] > 0.0 && x[i].is_finite() && y[i].is_finite())) {
        return Err(FitError::BadPoint(i));
    }
    if !ordered(opts.b_range) || opts.b_range.0 <= 0.0 {
        return Err(FitError::BadRange("B"));
    }
    Ok((n, params))
}

/// A range `lo < hi` of finite numbers.
fn ordered(r: (f64, f64)) -> bool {
    r.0 < r.1 && r.0.is_finite() && r.1.is_finite()
}

/// The first grid: the options' ranges, or data-driven defaults: A from a little under the
/// best observed reward up to 1 (rewards here are pass rates); C_mid two decades either side
/// of the observed compute.
fn initial_grid(problem: &Problem, opts: &FitOptions) -> Result<Grid, FitError> {
    let (_, y_max) = min_max(problem.y.iter().copied());
    let (x_min, x_max) = min_max(problem.log_x.iter().copied());
    let a = opts
        .a_range
        .unwrap_or(((y_max - 0.1).max(0.0), 1f64.max(y_max + 0.05)));
    let log_c = match opts.c_mid_range {
        Some((lo, hi)) if lo > 0.0 => (lo.ln(), hi.ln()),
        Some(_) => return Err(FitError::BadRange("C_mid")),
        None => (x_min - 100f64.ln(), x_max + 100f64.ln()),
    };
    if !ordered(a) {
        return Err(FitError::BadRange("A"));
    }
    if !ordered(log_c) {
        return Err(FitError::BadRange("C_mid"));
    }
    Ok(Grid {
        a,
        log_c,
        na: opts.a_steps.max(3),
        nc: opts.c_mid_steps.max(3),
    })
}

/// Evaluates the coarse grid, widening a defaulted range (at most three times) while the best
/// cell lands on its edge; returns the grid finally searched, its cells and the best one.
fn coarse_search(problem: &Problem, mut grid: Grid, opts: &FitOptions) -> (Grid, Vec<Cell>, Cell) {
    let (y_min, _) = min_max(problem.y.iter().copied());
    let mut widenings = 0;
    loop {
        let cells = problem.grid(grid.a, grid.log_c, grid.na, grid.nc);
        let top = best(&cells);
        let (da, dc) = grid.steps();
        let a_low = top.curve.a <= grid.a.0 + da / 2.0 && opts.a_range.is_none();
        let free_c = opts.c_mid_range.is_none();
        let c_low = top.curve.c_mid.ln() <= grid.log_c.0 + dc / 2.0 && free_c;
        let c_high = top.curve.c_mid.ln() >= grid.log_c.1 - dc / 2.0 && free_c;
        if widenings >= 3 || !(a_low || c_low || c_high) {
            return (grid, cells, top);
        }
        widenings += 1;
        if a_low {
            // The data fall or sit far under the default range: reach down to the lowest
            // reward and below.
            grid.a.0 = (grid.a.0 - (grid.a.1 - grid.a.0))
                .min(y_min - 0.1)
                .max(-1.0);
        }
        if c_low {
            grid.log_c.0 -= 100f64.ln();
        }
        if c_high {
            grid.log_c.1 += 100f64.ln();
        }
    }
}

/// Refines by local grids around the best cell: 11 x 11 cells over +-1 coarse step; while the
/// best lands on the local grid's edge (the error valley runs on, as it does along the
/// A-C_mid-B trade-off) recentres there at the same scale, else shrinks the scale five-fold.
/// Every evaluated cell joins `cells` (for the uncertainty region).
fn refine(problem: &Problem, grid: &Grid, cells: &mut Vec<Cell>, mut top: Cell) -> Cell {
    let (mut da, mut dc) = grid.steps();
    for _level in 0..5 {
        for _walk in 0..40 {
            let ca = top.curve.a;
            let cc = top.curve.c_mid.ln();
            let fine = problem.grid(
                ((ca - da).max(grid.a.0), (ca + da).min(grid.a.1)),
                ((cc - dc).max(grid.log_c.0), (cc + dc).min(grid.log_c.1)),
                11,
                11,
            );
            let t = best(&fine);
            cells.extend(fine);
            if t.sse >= top.sse {
                break;
            }
            top = t;
            let on_edge =
                (t.curve.a - ca).abs() > 0.75 * da || (t.curve.c_mid.ln() - cc).abs() > 0.75 * dc;
            if !on_edge {
                break;
            }
        }
        da /= 5.0;
        dc /= 5.0;
    }
    top
}

/// The curves whose SSE is within one noise variance of the best (delta-chi-square = 1).
fn uncertainty_region(cells: &[Cell], top: Cell, n: usize, params: usize) -> Vec<Curve> {
    let sigma2 = top.sse / (n - params).max(1) as f64;
    let threshold = top.sse + sigma2.max(1e-12);
    cells
        .iter()
        .filter(|c| c.sse <= threshold)
        .map(|c| c.curve)
        .chain(std::iter::once(top.curve))
        .collect()
}

/// The parameters whose best value sits on the edge of the range searched.
fn at_edge(problem: &Problem, grid: &Grid, top: Cell) -> Vec<&'static str> {
    let mut edges = Vec::new();
    let (a_step, c_step) = grid.steps();
    if top.curve.a <= grid.a.0 + a_step / 2.0 || top.curve.a >= grid.a.1 - a_step / 2.0 {
        edges.push("A");
    }
    let lc = top.curve.c_mid.ln();
    if lc <= grid.log_c.0 + c_step / 2.0 || lc >= grid.log_c.1 - c_step / 2.0 {
        edges.push("C_mid");
    }
    let lb = top.curve.b.ln();
    if lb <= problem.log_b.0 + 1e-3 || lb >= problem.log_b.1 - 1e-3 {
        edges.push("B");
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a seeded uniform in (0, 1].
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON
        }
    }

    /// Points on `truth` at `n` log-spaced compute values in `[lo, hi]`, with Gaussian noise.
    fn synthetic(
        truth: &Curve,
        lo: f64,
        hi: f64,
        n: usize,
        noise: f64,
        seed: u64,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut rng = Rng(seed);
        let x: Vec<f64> = (0..n)
            .map(|i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64))
            .collect();
        let y = x
            .iter()
            .map(|&c| {
                // Box-Muller.
                let (u1, u2) = (rng.uniform(), rng.uniform());
                truth.eval(c)
                    + noise * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        (x, y)
    }

    #[test]
    fn noiseless_points_are_fitted_exactly() {
        let truth = Curve {
            r0: 0.2,
            a: 0.6,
            b: 1.5,
            c_mid: 3e5,
        };
        let (x, y) = synthetic(&truth, 1e4, 1e7, 30, 0.0, 0);
        let f = fit(
            &x,
            &y,
            &FitOptions {
                r0: R0::Fixed(0.2),
                ..Default::default()
            },
        )
        .unwrap();
        assert!((f.curve.a - 0.6).abs() < 2e-3, "{:?}", f.curve);
        assert!((f.curve.b - 1.5).abs() < 0.05, "{:?}", f.curve);
        assert!((f.curve.c_mid / 3e5 - 1.0).abs() < 0.05, "{:?}", f.curve);
        assert!(f.rmse() < 1e-3, "rmse {}", f.rmse());
        assert!(f.at_edge.is_empty(), "{:?}", f.at_edge);
    }

    #[test]
    fn the_asymptote_is_recovered_within_0_02_from_noisy_curves() {
        // (r0, a, b, c_mid), compute range, noise: several shapes, including ours (rewards
        // 0.38 -> 0.5) and ScaleRL's ranges.
        let cases = [
            (
                Curve {
                    r0: 0.38,
                    a: 0.50,
                    b: 1.2,
                    c_mid: 2e4,
                },
                (2e3, 2e5),
                0.004,
            ),
            (
                Curve {
                    r0: 0.10,
                    a: 0.61,
                    b: 1.0,
                    c_mid: 3e3,
                },
                (2e2, 6e4),
                0.01,
            ),
            (
                Curve {
                    r0: 0.25,
                    a: 0.80,
                    b: 2.0,
                    c_mid: 50.0,
                },
                (5.0, 1e3),
                0.01,
            ),
            (
                Curve {
                    r0: 0.30,
                    a: 0.45,
                    b: 0.8,
                    c_mid: 1e6,
                },
                (1e5, 3e7),
                0.005,
            ),
        ];
        for (k, (truth, (lo, hi), noise)) in cases.into_iter().enumerate() {
            for seed in 0..3 {
                let (x, y) = synthetic(&truth, lo, hi, 40, noise, 100 * k as u64 + seed);
                for r0 in [R0::Fixed(truth.r0), R0::Fit] {
                    let f = fit(
                        &x,
                        &y,
                        &FitOptions {
                            r0,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    assert!(
                        (f.curve.a - truth.a).abs() < 0.02,
                        "case {k} seed {seed} {r0:?}: fitted {:?}, truth {truth:?}",
                        f.curve
                    );
                    assert!(
                        f.a_interval.0 <= f.curve.a && f.curve.a <= f.a_interval.1,
                        "{:?}",
                        f.a_interval
                    );
                }
            }
        }
    }

    #[test]
    fn a_fit_on_the_first_half_predicts_the_end() {
        let truth = Curve {
            r0: 0.2,
            a: 0.7,
            b: 1.3,
            c_mid: 1e4,
        };
        let (x, y) = synthetic(&truth, 1e3, 1e5, 40, 0.005, 7);
        let half: Vec<usize> = (0..40).filter(|&i| x[i] <= 5e4).collect();
        let xs: Vec<f64> = half.iter().map(|&i| x[i]).collect();
        let ys: Vec<f64> = half.iter().map(|&i| y[i]).collect();
        let f = fit(
            &xs,
            &ys,
            &FitOptions {
                r0: R0::Fixed(0.2),
                ..Default::default()
            },
        )
        .unwrap();
        let (p, lo, hi) = f.predict(1e5);
        assert!(
            (p - truth.eval(1e5)).abs() < 0.02,
            "predicted {p}, truth {}",
            truth.eval(1e5)
        );
        assert!(lo <= p && p <= hi);
    }

    #[test]
    fn intervals_widen_with_noise() {
        let truth = Curve {
            r0: 0.3,
            a: 0.6,
            b: 1.0,
            c_mid: 1e3,
        };
        let width = |noise| {
            let (x, y) = synthetic(&truth, 1e2, 1e4, 30, noise, 3);
            let f = fit(
                &x,
                &y,
                &FitOptions {
                    r0: R0::Fixed(0.3),
                    ..Default::default()
                },
            )
            .unwrap();
            f.a_interval.1 - f.a_interval.0
        };
        let (quiet, loud) = (width(0.002), width(0.03));
        assert!(
            loud > 2.0 * quiet,
            "noise 0.03: {loud}, noise 0.002: {quiet}"
        );
    }

    #[test]
    fn an_asymptote_below_the_default_range_is_found_by_widening() {
        // A falling curve: the default A range starts a little under the largest reward.
        let truth = Curve {
            r0: 0.6,
            a: 0.2,
            b: 1.0,
            c_mid: 1e3,
        };
        let (x, y) = synthetic(&truth, 1e2, 1e5, 30, 0.002, 1);
        let f = fit(
            &x,
            &y,
            &FitOptions {
                r0: R0::Fixed(0.6),
                ..Default::default()
            },
        )
        .unwrap();
        assert!((f.curve.a - 0.2).abs() < 0.02, "{:?}", f.curve);
        assert!(f.a_range.0 < 0.2);
    }

    #[test]
    fn bad_input_is_an_error() {
        let o = FitOptions::default();
        assert_eq!(
            fit(&[1.0, 2.0], &[0.1, 0.2], &o).unwrap_err(),
            FitError::TooFewPoints(2)
        );
        assert_eq!(
            fit(&[1.0, 2.0, 0.0, 4.0], &[0.1, 0.2, 0.3, 0.4], &o).unwrap_err(),
            FitError::BadPoint(2)
        );
        let bad = FitOptions {
            a_range: Some((0.8, 0.4)),
            ..Default::default()
        };
        assert_eq!(
            fit(&[1.0, 2.0, 3.0, 4.0], &[0.1, 0.2, 0.3, 0.4], &bad).unwrap_err(),
            FitError::BadRange("A")
        );
    }
}
