//! `oxrl fit --metrics DIR/metrics.jsonl`: fits ScaleRL's compute-performance curve
//! `R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B)` to a run's reward, prints A, B, C_mid with
//! their uncertainty and the predicted reward at a later compute, then one JSON line; with
//! `--fit-fraction F` it fits the first part only and reports the prediction of the last
//! point next to what happened; `--png` draws it. Method: docs/fit.md.

use crate::fit::curve::{fit, Fit, FitOptions, R0};
use crate::fit::plot::{write_png, Plot};
use crate::fit::series::{load, Series, XAxis, YSeries};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The run's metrics log (`DIR/metrics.jsonl`, or the run directory).
    #[arg(long)]
    metrics: PathBuf,
    /// Compute axis: cumulative trained tokens, optimizer steps, or 6 * params * tokens.
    #[arg(long, value_enum, default_value_t = XAxis::Tokens)]
    x: XAxis,
    /// Reward series (auto: held-out eval_pass_rate when logged at >= 4 steps, else
    /// reward_mean).
    #[arg(long, value_enum, default_value_t = YSeries::Auto)]
    y: YSeries,
    /// Parameter count for `--x flops` (default: the model named in the run's config.toml).
    #[arg(long)]
    params: Option<u64>,
    /// Drop the earliest points: those with compute below this fraction of the largest
    /// fitted compute (ScaleRL dropped its runs' first ~1.5k GPU-hours, about a tenth).
    #[arg(long, default_value_t = 0.1)]
    skip_fraction: f64,
    /// Fit only the points with compute up to this fraction of the last point's, and report
    /// the prediction of the last point next to its actual reward.
    #[arg(long, default_value_t = 1.0)]
    fit_fraction: f64,
    /// R0, the reward at zero compute: `first` (the run's first point, before skipping),
    /// `fit` (least squares), or a number.
    #[arg(long, default_value = "first")]
    r0: String,
    /// Grid range of the asymptote A, `LO,HI` (default: from 0.1 under the highest reward
    /// to 1.0, widened downwards when the best A lands on its lower edge; ScaleRL: 0.45,0.8).
    #[arg(long, value_parser = parse_range)]
    a_range: Option<(f64, f64)>,
    /// Grid range of C_mid, `LO,HI` (default: two decades either side of the data, widened
    /// when the best C_mid lands on an edge).
    #[arg(long, value_parser = parse_range)]
    c_mid_range: Option<(f64, f64)>,
    /// Search range of B, `LO,HI`.
    #[arg(long, value_parser = parse_range, default_value = "0.05,20")]
    b_range: (f64, f64),
    /// Compute at which to predict the reward (default: twice the last point's; with
    /// `--fit-fraction` below 1, the last point's).
    #[arg(long)]
    predict_at: Option<f64>,
    /// Draw the points and the fitted curve into this PNG file.
    #[arg(long)]
    png: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (lo, hi) = s
        .split_once(',')
        .ok_or_else(|| format!("expected LO,HI, got {s:?}"))?;
    let p = |v: &str| v.trim().parse::<f64>().map_err(|e| format!("{v:?}: {e}"));
    let (lo, hi) = (p(lo)?, p(hi)?);
    if lo < hi {
        Ok((lo, hi))
    } else {
        Err(format!("{s}: LO must be below HI"))
    }
}

/// The parameter count of the model a run trained, from `config.toml` beside its metrics.
fn run_params(metrics: &Path) -> anyhow::Result<u64> {
    let config = metrics.with_file_name("config.toml");
    let text = std::fs::read_to_string(&config).with_context(|| {
        format!(
            "reading {} for the parameter count (or pass --params)",
            config.display()
        )
    })?;
    let value: toml::Value = toml::from_str(&text)?;
    let model = value
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or(crate::model_arg::DEFAULT_MODEL);
    let cfg = if model == crate::model_arg::DEFAULT_MODEL {
        policy::default_model::embedded_config()?
    } else {
        policy::ModelConfig::load(&PathBuf::from(model).join("config.json"))
            .with_context(|| format!("the parameter count of model {model:?} (or pass --params)"))?
    };
    Ok(cfg.num_parameters() as u64)
}

/// Which points are fitted: those with compute in `[skip_below, fit_hi]`.
struct Window {
    fitted: Vec<usize>,
    fit_hi: f64,
    skip_below: f64,
}

impl Window {
    /// The points up to `fit_fraction` of the last point's compute, less the earliest
    /// `skip_fraction` of that span.
    fn new(series: &Series, fit_fraction: f64, skip_fraction: f64) -> anyhow::Result<Self> {
        let x_last = *series.x.last().context("no points")?;
        let fit_end = fit_fraction * x_last;
        let fit_hi = series
            .x
            .iter()
            .copied()
            .filter(|&x| x <= fit_end * (1.0 + 1e-12))
            .fold(0.0, f64::max);
        let skip_below = skip_fraction * fit_hi;
        let fitted = (0..series.x.len())
            .filter(|&i| series.x[i] >= skip_below && series.x[i] <= fit_hi)
            .collect();
        Ok(Self {
            fitted,
            fit_hi,
            skip_below,
        })
    }

    fn xs(&self, series: &Series) -> Vec<f64> {
        self.fitted.iter().map(|&i| series.x[i]).collect()
    }

    fn ys(&self, series: &Series) -> Vec<f64> {
        self.fitted.iter().map(|&i| series.y[i]).collect()
    }
}

/// `--r0`: `first` (the first point's reward), `fit`, or a number.
fn parse_r0(r0: &str, series: &Series) -> anyhow::Result<R0> {
    Ok(match r0 {
        "first" => R0::Fixed(series.y[0]),
        "fit" => R0::Fit,
        v => R0::Fixed(
            v.parse()
                .with_context(|| format!("--r0 {v:?}: expected first, fit or a number"))?,
        ),
    })
}

fn check_fractions(a: &Args) -> anyhow::Result<()> {
    if !(a.fit_fraction > 0.0 && a.fit_fraction <= 1.0) {
        bail!("--fit-fraction must be in (0, 1], got {}", a.fit_fraction);
    }
    if !(0.0..1.0).contains(&a.skip_fraction) {
        bail!("--skip-fraction must be in [0, 1), got {}", a.skip_fraction);
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let metrics = if a.metrics.is_dir() {
        a.metrics.join("metrics.jsonl")
    } else {
        a.metrics.clone()
    };
    check_fractions(&a)?;
    let params = match (a.x, a.params) {
        (XAxis::Flops, None) => Some(run_params(&metrics)?),
        (_, p) => p,
    };
    let series = load(&metrics, a.x, a.y, params)?;
    let window = Window::new(&series, a.fit_fraction, a.skip_fraction)?;
    let (xs, ys) = (window.xs(&series), window.ys(&series));
    let r0 = parse_r0(&a.r0, &series)?;
    let opts = FitOptions {
        r0,
        a_range: a.a_range,
        c_mid_range: a.c_mid_range,
        b_range: a.b_range,
        ..Default::default()
    };
    let f = fit(&xs, &ys, &opts).with_context(|| {
        format!(
            "fitting {} points of {} (skip-fraction {}, fit-fraction {})",
            xs.len(),
            series.y_series.field(),
            a.skip_fraction,
            a.fit_fraction
        )
    })?;
    let x_last = *series.x.last().expect("Window::new checked");
    let holdout = a.fit_fraction < 1.0;
    let predict_at = a
        .predict_at
        .unwrap_or(if holdout { x_last } else { 2.0 * x_last });
    print_fit(&a, &series, &window, &f, predict_at);
    let mut json = fit_json(&a, &metrics, params, &series, &window, &f, predict_at);
    if holdout {
        report_holdout(&series, &window, &f, &mut json);
    }
    if let Some(path) = &a.png {
        draw(path, &a, &series, &window, &f, predict_at)?;
        json["png"] = path.display().to_string().into();
    }
    println!("{json}");
    Ok(())
}

/// The human-readable report: what was fitted, the parameters with their ranges, warnings
/// for parameters on the edge of their range, and the prediction.
fn print_fit(a: &Args, series: &Series, window: &Window, f: &Fit, predict_at: f64) {
    let n = series.x.len();
    let fitted = &window.fitted;
    let c = f.curve;
    let y_name = series.y_series.field();
    println!(
        "{} points of {y_name} against {}; fitted {} (steps {}..={}), skipped {} early, held out {}",
        n,
        a.x.name(),
        fitted.len(),
        series.steps[fitted[0]],
        series.steps[*fitted.last().expect("fit needs points")],
        (0..n).filter(|&i| series.x[i] < window.skip_below).count(),
        (0..n).filter(|&i| series.x[i] > window.fit_hi).count(),
    );
    println!(
        "R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B), ranges over SSE <= SSE_min (1 + 1/(n - p)):"
    );
    let r0_how = if a.r0 == "fit" { "fitted" } else { "fixed" };
    println!("  R0    = {:.4} ({r0_how})", c.r0);
    println!(
        "  A     = {:.4}  [{:.4}, {:.4}]",
        c.a, f.a_interval.0, f.a_interval.1
    );
    println!(
        "  B     = {:.3}  [{:.3}, {:.3}]",
        c.b, f.b_interval.0, f.b_interval.1
    );
    println!(
        "  C_mid = {:.4e}  [{:.4e}, {:.4e}]",
        c.c_mid, f.c_mid_interval.0, f.c_mid_interval.1
    );
    println!("  rmse  = {:.4}", f.rmse());
    for p in &f.at_edge {
        println!(
            "  warning: {p} sits on the edge of its search range; widen it (--{}-range)",
            p.to_lowercase().replace('_', "-")
        );
    }
    let (pred, pred_lo, pred_hi) = f.predict(predict_at);
    println!(
        "predicted {y_name} at {} = {predict_at:.4e}: {pred:.4}  [{pred_lo:.4}, {pred_hi:.4}]",
        a.x.name()
    );
}

/// The one JSON line of the fit (holdout and PNG fields are added by their steps).
fn fit_json(
    a: &Args,
    metrics: &Path,
    params: Option<u64>,
    series: &Series,
    window: &Window,
    f: &Fit,
    predict_at: f64,
) -> serde_json::Value {
    let c = f.curve;
    let (pred, pred_lo, pred_hi) = f.predict(predict_at);
    serde_json::json!({
        "metrics": metrics.display().to_string(), "x": a.x.name(), "y": series.y_series.field(),
        "params": params, "points": series.x.len(), "fitted": window.fitted.len(),
        "skip_fraction": a.skip_fraction, "fit_fraction": a.fit_fraction,
        "r0": c.r0, "r0_fitted": a.r0 == "fit",
        "a": c.a, "a_lo": f.a_interval.0, "a_hi": f.a_interval.1,
        "b": c.b, "b_lo": f.b_interval.0, "b_hi": f.b_interval.1,
        "c_mid": c.c_mid, "c_mid_lo": f.c_mid_interval.0, "c_mid_hi": f.c_mid_interval.1,
        "a_grid": [f.a_range.0, f.a_range.1], "c_mid_grid": [f.c_mid_range.0, f.c_mid_range.1],
        "sse": f.sse, "rmse": f.rmse(), "at_edge": f.at_edge,
        "predict_at": predict_at, "predicted": pred, "predicted_lo": pred_lo, "predicted_hi": pred_hi,
    })
}

/// With `--fit-fraction` below 1: the prediction of the last point next to what happened, and
/// the error over the held-out points.
fn report_holdout(series: &Series, window: &Window, f: &Fit, json: &mut serde_json::Value) {
    let n = series.x.len();
    let x_last = series.x[n - 1];
    let actual = series.y[n - 1];
    let tail: Vec<f64> = series.y[n.saturating_sub(3)..].to_vec();
    let tail_mean = tail.iter().sum::<f64>() / tail.len() as f64;
    let (pred_last, ..) = f.predict(x_last);
    let held: Vec<usize> = (0..n).filter(|&i| series.x[i] > window.fit_hi).collect();
    let held_rmse = (held
        .iter()
        .map(|&i| (f.curve.eval(series.x[i]) - series.y[i]).powi(2))
        .sum::<f64>()
        / held.len().max(1) as f64)
        .sqrt();
    println!(
        "fitted on {} of {} (x <= {:.4e}); at the last point (step {}): predicted {pred_last:.4}, actual {actual:.4} (mean of the last 3 points {tail_mean:.4}); held-out rmse {held_rmse:.4}",
        window.fitted.len(),
        n,
        window.fit_hi,
        series.steps[n - 1]
    );
    json["last_x"] = x_last.into();
    json["last_step"] = series.steps[n - 1].into();
    json["predicted_last"] = pred_last.into();
    json["actual_last"] = actual.into();
    json["actual_last3_mean"] = tail_mean.into();
    json["held_out"] = held.len().into();
    json["held_out_rmse"] = held_rmse.into();
}

/// `--png`: the fitted points, the others, and the curve out to `predict_at`.
fn draw(
    path: &Path,
    a: &Args,
    series: &Series,
    window: &Window,
    f: &Fit,
    predict_at: f64,
) -> anyhow::Result<()> {
    let c = f.curve;
    let (xs, ys) = (window.xs(series), window.ys(series));
    let others: Vec<usize> = (0..series.x.len())
        .filter(|i| !window.fitted.contains(i))
        .collect();
    let ox: Vec<f64> = others.iter().map(|&i| series.x[i]).collect();
    let oy: Vec<f64> = others.iter().map(|&i| series.y[i]).collect();
    write_png(
        path,
        &Plot {
            fitted: (&xs, &ys),
            other: (&ox, &oy),
            curve: c,
            x_end: predict_at,
            x_label: a.x.name(),
            y_label: series.y_series.field(),
            title: format!(
                "A = {:.3} [{:.3}, {:.3}], B = {:.2}, C_mid = {:.3e}",
                c.a, f.a_interval.0, f.a_interval.1, c.b, c.c_mid
            ),
        },
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
