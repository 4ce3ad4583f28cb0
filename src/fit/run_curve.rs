//! The learning curve `oxrl run` leaves in its run directory (`curve.png`): the training
//! reward of every step and held-out pass@1 (greedy and sampled at T = 1, from `eval.jsonl`,
//! step 0 included), against optimizer steps on the left and wall time on the right; and the
//! one-line summary of where the run started and where it ended.

use plotters::prelude::*;
use std::path::Path;

use super::plot::{write_drawn_png, FAMILY};

const SIZE: (u32, u32) = (1280, 560);

/// The series of one run, read from its directory.
#[derive(Debug, Default, Clone)]
pub struct RunCurve {
    /// (step, wall_s, reward_mean) per optimizer step.
    pub reward: Vec<(f64, f64, f64)>,
    /// (step, wall_s, greedy, sampled) per evaluation.
    pub evals: Vec<(f64, f64, f64, f64)>,
}

impl RunCurve {
    /// Reads `dir/metrics.jsonl` and `dir/eval.jsonl` (either may be missing or empty).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut curve = RunCurve::default();
        let metrics = dir.join("metrics.jsonl");
        if metrics.exists() {
            for line in learner::metrics::read_metrics(&metrics)? {
                curve
                    .reward
                    .push((line.step as f64, line.wall_s, line.report.reward_mean));
            }
        }
        for e in learner::metrics::read_evals(dir)? {
            curve.evals.push((
                e.step as f64,
                e.wall_s,
                e.eval_pass_rate,
                e.eval_sampled_pass_rate,
            ));
        }
        Ok(curve)
    }

    /// "held-out pass@1 sampled 0.281 -> 0.862, greedy 0.934 -> 0.978 (step 0 -> 60)", or
    /// `None` before two evaluations exist.
    pub fn summary(&self) -> Option<String> {
        let (first, last) = (self.evals.first()?, self.evals.last()?);
        if self.evals.len() < 2 {
            return None;
        }
        Some(format!(
            "held-out pass@1 sampled {:.3} -> {:.3}, greedy {:.3} -> {:.3} (step {} -> {})",
            first.3, last.3, first.2, last.2, first.0, last.0
        ))
    }

    /// Wall seconds at the first evaluation whose sampled pass@1 reached `target`.
    pub fn time_to_sampled(&self, target: f64) -> Option<f64> {
        self.evals.iter().find(|e| e.3 >= target).map(|e| e.1)
    }
}

/// Draws `curve` into `path` as a PNG titled `title`.
pub fn write_png(path: &Path, curve: &RunCurve, title: &str) -> anyhow::Result<()> {
    write_drawn_png(path, SIZE, |buf| draw(buf, curve, title))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(buf: &mut [u8], curve: &RunCurve, title: &str) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FAMILY, 20))?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    panel(&left, curve, false)?;
    panel(&right, curve, true)?;
    root.present()?;
    Ok(())
}

/// One panel: x is the step, or wall seconds when `by_time`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    c: &RunCurve,
    by_time: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x_of = |step: f64, wall: f64| if by_time { wall } else { step };
    let x_hi = c
        .reward
        .iter()
        .map(|r| x_of(r.0, r.1))
        .chain(c.evals.iter().map(|e| x_of(e.0, e.1)))
        .fold(1.0_f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..x_hi * 1.02, 0.0..1.0_f64)?;
    chart
        .configure_mesh()
        .x_desc(if by_time {
            "wall time (s)"
        } else {
            "optimizer step"
        })
        .y_desc("reward / pass@1")
        .label_style((FAMILY, 14))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    let grey = RGBColor(140, 140, 140);
    chart
        .draw_series(LineSeries::new(
            c.reward.iter().map(|r| (x_of(r.0, r.1), r.2)),
            grey.stroke_width(1),
        ))?
        .label("training reward (mean)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
    let red = RGBColor(200, 40, 40);
    chart
        .draw_series(LineSeries::new(
            c.evals.iter().map(|e| (x_of(e.0, e.1), e.3)),
            red.stroke_width(2),
        ))?
        .label("held-out pass@1, sampled T = 1")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red.stroke_width(2)));
    chart.draw_series(
        c.evals
            .iter()
            .map(|e| Circle::new((x_of(e.0, e.1), e.3), 4, red.filled())),
    )?;
    let blue = RGBColor(30, 90, 200);
    chart
        .draw_series(LineSeries::new(
            c.evals.iter().map(|e| (x_of(e.0, e.1), e.2)),
            blue.stroke_width(2),
        ))?
        .label("held-out pass@1, greedy")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart.draw_series(
        c.evals
            .iter()
            .map(|e| Circle::new((x_of(e.0, e.1), e.2), 4, blue.filled())),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The sampled pass@1 whose first crossing the final line reports (time to accuracy).
const SAMPLED_TARGET: f64 = 0.8;

/// The end of a run, sync or pipeline: draws `DIR/curve.png` and prints the final line, which
/// says where held-out pass@1 (sampled and greedy) started and where it ended.
pub fn finish(dir: &Path, steps: u64, version: u64, wall_s: f64) -> anyhow::Result<()> {
    let curve = RunCurve::load(dir)?;
    let png = dir.join("curve.png");
    let title = format!("oxrl run {}", dir.display());
    let drawn = match write_png(&png, &curve, &title) {
        Ok(()) => format!("; curve in {}", png.display()),
        Err(e) => {
            tracing::warn!(error = %e, "could not draw the learning curve");
            String::new()
        }
    };
    let reached = curve
        .time_to_sampled(SAMPLED_TARGET)
        .map(|s| format!(" (sampled >= {SAMPLED_TARGET} at {s:.0} s)"))
        .unwrap_or_default();
    println!(
        "run finished: {steps} steps, version {version}, {}{reached}, {wall_s:.0} s{drawn}; metrics in {}",
        curve
            .summary()
            .unwrap_or_else(|| "no held-out evaluation".into()),
        dir.join("metrics.jsonl").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunCurve {
        RunCurve {
            reward: (1..=20)
                .map(|s| (s as f64, s as f64 * 2.0, 0.3 + s as f64 * 0.03))
                .collect(),
            evals: vec![
                (0.0, 0.0, 0.9, 0.28),
                (10.0, 20.0, 0.95, 0.6),
                (20.0, 40.0, 0.97, 0.85),
            ],
        }
    }

    #[test]
    fn summary_and_time_to_target() {
        let c = sample();
        assert_eq!(
            c.summary().unwrap(),
            "held-out pass@1 sampled 0.280 -> 0.850, greedy 0.900 -> 0.970 (step 0 -> 20)"
        );
        assert_eq!(c.time_to_sampled(0.8), Some(40.0));
        assert_eq!(c.time_to_sampled(0.9), None);
        assert!(RunCurve::default().summary().is_none());
    }

    #[test]
    fn draws_a_png_with_something_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curve.png");
        write_png(&path, &sample(), "test run").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut img = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut img).unwrap();
        assert_eq!((info.width, info.height), SIZE);
        // Red curve pixels exist (the sampled pass@1 line).
        let red = img
            .chunks(3)
            .filter(|p| p[0] > 180 && p[1] < 80 && p[2] < 80)
            .count();
        assert!(red > 200, "{red} red pixels");
    }
}
