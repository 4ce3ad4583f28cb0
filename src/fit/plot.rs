//! `oxrl fit --png`: the points and the fitted curve, drawn with plotters into an RGB buffer
//! and written as PNG by the png crate. Text uses DejaVu Sans Mono, embedded in the binary
//! (assets/fonts/, Bitstream Vera licence), so no system fonts are needed.

use super::curve::Curve;
use anyhow::Context;
use plotters::prelude::*;
use std::path::Path;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");
pub(crate) const FAMILY: &str = "oxrl-mono";
const SIZE: (u32, u32) = (960, 640);

/// What to draw.
pub struct Plot<'a> {
    /// Points the curve was fitted to.
    pub fitted: (&'a [f64], &'a [f64]),
    /// Points shown but not fitted (skipped early points, held-out later points).
    pub other: (&'a [f64], &'a [f64]),
    pub curve: Curve,
    /// The curve is drawn up to here (the prediction's compute).
    pub x_end: f64,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub title: String,
}

fn register_font() -> anyhow::Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    anyhow::ensure!(ok, "the embedded font does not parse");
    Ok(())
}

/// Draws `p` into `path` as a PNG.
pub fn write_png(path: &Path, p: &Plot) -> anyhow::Result<()> {
    write_drawn_png(path, SIZE, |buf| draw(buf, p))
}

/// Registers the embedded font, lets `draw` paint a white RGB buffer of `size`, and writes
/// it to `path` as a PNG.
pub(crate) fn write_drawn_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&mut [u8]) -> Result<(), Box<dyn std::error::Error>>,
) -> anyhow::Result<()> {
    register_font()?;
    let (w, h) = size;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    draw(&mut buf).map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&buf)?;
    writer.finish()?;
    Ok(())
}

/// Labels the log axis at 1, 2 and 5 times powers of ten only (`2e4`), so the minor ticks
/// plotters places between them do not overprint each other.
fn log_tick(v: &f64) -> String {
    if !(*v > 0.0 && v.is_finite()) {
        return String::new();
    }
    let exp = v.log10().floor();
    let mantissa = v / 10f64.powf(exp);
    // Rounding can leave the mantissa a hair under 10: that is the next power of ten.
    match [1u8, 2, 5, 10]
        .into_iter()
        .find(|&m| (mantissa / f64::from(m) - 1.0).abs() < 1e-6)
    {
        Some(10) => format!("1e{}", exp as i64 + 1),
        Some(m) => format!("{m}e{}", exp as i64),
        None => String::new(),
    }
}

fn draw(buf: &mut [u8], p: &Plot) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(buf, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = p.fitted.0.iter().chain(p.other.0).copied();
    let ys = p.fitted.1.iter().chain(p.other.1).copied();
    let x_lo = xs.clone().fold(f64::INFINITY, f64::min);
    let x_hi = xs.fold(p.x_end, f64::max);
    let x_range = (x_lo * 0.8)..(x_hi * 1.25);
    let curve_at = |i: usize, n: usize| {
        let c = x_range.start * (x_range.end / x_range.start).powf(i as f64 / (n - 1) as f64);
        (c, p.curve.eval(c))
    };
    let samples: Vec<(f64, f64)> = (0..200).map(|i| curve_at(i, 200)).collect();
    let (y_lo, y_hi) = ys
        .chain(samples.iter().map(|s| s.1))
        .chain([p.curve.a])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let pad = ((y_hi - y_lo) * 0.08).max(0.01);
    let mut chart = ChartBuilder::on(&root)
        .caption(&p.title, (FAMILY, 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.clone().log_scale(), (y_lo - pad)..(y_hi + pad))?;
    chart
        .configure_mesh()
        .x_desc(p.x_label)
        .y_desc(p.y_label)
        .label_style((FAMILY, 14))
        .x_label_formatter(&log_tick)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .draw()?;
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(DashedLineSeries::new(
            [(x_range.start, p.curve.a), (x_range.end, p.curve.a)],
            6,
            4,
            grey.stroke_width(1),
        ))?
        .label(format!("asymptote A = {:.3}", p.curve.a))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
    let red = RGBColor(200, 40, 40);
    chart
        .draw_series(LineSeries::new(samples, red.stroke_width(2)))?
        .label("fitted curve")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], red.stroke_width(2)));
    let blue = RGBColor(30, 90, 200);
    chart
        .draw_series(
            p.fitted
                .0
                .iter()
                .zip(p.fitted.1)
                .map(|(&x, &y)| Circle::new((x, y), 4, blue.filled())),
        )?
        .label("fitted points")
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, blue.filled()));
    if !p.other.0.is_empty() {
        chart
            .draw_series(
                p.other
                    .0
                    .iter()
                    .zip(p.other.1)
                    .map(|(&x, &y)| Circle::new((x, y), 4, grey.stroke_width(2))),
            )?
            .label("not fitted (skipped / held out)")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, grey.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_label_1_2_5_only() {
        assert_eq!(log_tick(&1e4), "1e4");
        assert_eq!(log_tick(&2e5), "2e5");
        assert_eq!(log_tick(&5.0), "5e0");
        assert_eq!(log_tick(&3e4), "");
        assert_eq!(log_tick(&0.0), "");
    }

    #[test]
    fn writes_a_png_with_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fit.png");
        let curve = Curve {
            r0: 0.3,
            a: 0.6,
            b: 1.0,
            c_mid: 100.0,
        };
        let x: Vec<f64> = (1..20).map(|i| 10.0 * i as f64).collect();
        let y: Vec<f64> = x.iter().map(|&c| curve.eval(c)).collect();
        write_png(
            &path,
            &Plot {
                fitted: (&x[2..], &y[2..]),
                other: (&x[..2], &y[..2]),
                curve,
                x_end: 400.0,
                x_label: "tokens",
                y_label: "reward",
                title: "test".into(),
            },
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut img = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut img).unwrap();
        assert_eq!((info.width, info.height), SIZE);
        // Something besides the white background was drawn.
        assert!(img.iter().filter(|&&b| b < 128).count() > 1000);
    }
}
