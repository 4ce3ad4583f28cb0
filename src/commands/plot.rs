//! `oxrl plot sweep`: accuracy against N (log x) for several ways of choosing one of N
//! samples, one panel per model, from a JSON of the measured figures (docs/best-of-n-sweep.json
//! draws docs/best-of-n-sweep.png; docs/test-time-compute.md says how they were measured).

use crate::fit::plot::{write_drawn_png, FAMILY};
use anyhow::Context;
use plotters::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PlotCommand,
}

#[derive(clap::Subcommand)]
enum PlotCommand {
    /// Accuracy against N, one panel per model, from `{"panels": [{"title", "n": [..],
    /// "series": [{"name", "accuracy": [..]}]}]}` (null for an N not measured).
    Sweep(SweepArgs),
}

#[derive(clap::Args)]
struct SweepArgs {
    /// The figures (JSON).
    #[arg(long)]
    json: PathBuf,
    /// The PNG to write (640 x 480 pixels per panel, side by side).
    #[arg(long)]
    png: PathBuf,
}

/// The figures of a sweep.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    pub panels: Vec<Panel>,
}

/// One model's sweep.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    pub title: String,
    /// The N of each column.
    pub n: Vec<u32>,
    pub series: Vec<Series>,
    /// Where the legend's upper-left corner goes, as `[N, accuracy]` (default: middle right).
    #[serde(default)]
    pub legend: Option<(u32, f64)>,
}

/// One way of choosing: its accuracy at each N (`None`: not measured).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    pub name: String,
    pub accuracy: Vec<Option<f64>>,
}

const PANEL: (u32, u32) = (640, 480);
const COLOURS: [RGBColor; 6] = [
    RGBColor(30, 90, 200),
    RGBColor(40, 150, 60),
    RGBColor(200, 40, 40),
    RGBColor(120, 120, 120),
    RGBColor(200, 130, 0),
    RGBColor(130, 60, 170),
];

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        PlotCommand::Sweep(s) => {
            let text = std::fs::read_to_string(&s.json)
                .with_context(|| format!("reading {}", s.json.display()))?;
            let sweep: Sweep = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", s.json.display()))?;
            write_sweep_png(&s.png, &sweep)?;
            println!("wrote {}", s.png.display());
            Ok(())
        }
    }
}

/// Draws `sweep` into `path`: one panel per model, side by side.
pub fn write_sweep_png(path: &Path, sweep: &Sweep) -> anyhow::Result<()> {
    anyhow::ensure!(!sweep.panels.is_empty(), "no panels to draw");
    for p in &sweep.panels {
        anyhow::ensure!(
            !p.n.is_empty() && p.n.iter().all(|&n| n > 0),
            "panel {:?}: n must be positive and non-empty",
            p.title
        );
        for s in &p.series {
            anyhow::ensure!(
                s.accuracy.len() == p.n.len(),
                "panel {:?}, series {:?}: {} accuracies for {} values of n",
                p.title,
                s.name,
                s.accuracy.len(),
                p.n.len()
            );
        }
    }
    let size = (PANEL.0 * sweep.panels.len() as u32, PANEL.1);
    write_drawn_png(path, size, |buf| {
        let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((1, sweep.panels.len()));
        for (area, panel) in areas.iter().zip(&sweep.panels) {
            draw_panel(area, panel)?;
        }
        root.present()?;
        Ok(())
    })
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    p: &Panel,
) -> Result<(), Box<dyn std::error::Error>> {
    // x is log2(N) on a linear axis, so that the ticks fall on whole powers of two and only
    // the measured N are labelled.
    let x = |n: u32| f64::from(n).log2();
    let lo = x(*p.n.iter().min().expect("checked non-empty"));
    let hi = x(*p.n.iter().max().expect("checked non-empty"));
    let span = (hi - lo).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FAMILY, 16))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(52)
        .build_cartesian_2d((lo - 0.05 * span)..(hi + 0.05 * span), 0.0..1.02)?;
    let ticks: Vec<u32> = p.n.clone();
    chart
        .configure_mesh()
        .x_desc("N (samples per problem, log scale)")
        .y_desc("accuracy")
        .label_style((FAMILY, 13))
        .x_labels(((hi.ceil() - lo.floor()) as usize + 1).max(2))
        .x_label_formatter(&move |v| {
            ticks
                .iter()
                .find(|&&n| (x(n) - v).abs() < 1e-6)
                .map_or(String::new(), |n| n.to_string())
        })
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    for (i, s) in p.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> =
            p.n.iter()
                .zip(&s.accuracy)
                .filter_map(|(&n, a)| a.map(|a| (x(n), a)))
                .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&pt| Circle::new(pt, 4, colour.filled())))?;
    }
    let position = match p.legend {
        Some((n, a)) => {
            // Coordinate is relative to the plotting area, backend_coord to the whole image.
            let (px, py) = chart.backend_coord(&(x(n), a));
            let (bx, by) = chart.plotting_area().get_base_pixel();
            SeriesLabelPosition::Coordinate(px - bx, py - by)
        }
        None => SeriesLabelPosition::MiddleRight,
    };
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(panels: usize, wrong_len: bool) -> Sweep {
        let panel = |t: usize| Panel {
            title: format!("model {t}"),
            n: vec![1, 4, 16, 64],
            series: vec![
                Series {
                    name: "majority".into(),
                    accuracy: vec![Some(0.2), Some(0.3), Some(0.6), Some(0.8)],
                },
                Series {
                    name: "oracle".into(),
                    accuracy: if wrong_len {
                        vec![Some(0.2)]
                    } else {
                        vec![Some(0.2), Some(0.6), None, Some(1.0)]
                    },
                },
            ],
            legend: (t == 1).then_some((4, 0.6)),
        };
        Sweep {
            panels: (0..panels).map(panel).collect(),
        }
    }

    #[test]
    fn writes_one_panel_per_model_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.png");
        write_sweep_png(&path, &sweep(2, false)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut img = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut img).unwrap();
        assert_eq!((info.width, info.height), (2 * PANEL.0, PANEL.1));
        // Both halves hold a drawing, not only the white background.
        let row = (info.width * 3) as usize;
        let dark_in = |x0: usize, x1: usize| {
            img.chunks(row)
                .flat_map(|r| r[x0 * 3..x1 * 3].iter())
                .filter(|&&b| b < 128)
                .count()
        };
        assert!(dark_in(0, 640) > 1000 && dark_in(640, 1280) > 1000);
    }

    #[test]
    fn refuses_a_series_of_the_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_sweep_png(&dir.path().join("x.png"), &sweep(1, true)).unwrap_err();
        assert!(err.to_string().contains("1 accuracies for 4"), "{err}");
    }
}
