//! Chart plumbing: plotters into SVG strings, a categorical axis, grouped bars on a log
//! axis and line charts of sweeps. Sizes are chosen so that every label is at least 13 px
//! when a chart is shown at its drawn size.

use std::collections::BTreeMap;
use std::ops::Range;

use contract::Mode;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::format::fmt_tick;
use crate::stats::{least_squares, Spread};

/// Chart colours (Okabe–Ito, readable with colour-blindness), indexed by the mode's
/// position in [`Mode::ALL`] so a mode keeps its colour across charts and reports.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

const FONT: &str = "sans-serif";
/// plotters writes a font of size `s` as `s / 1.24` px: these give 14.5 px tick labels,
/// 16 px axis names and legends and 19 px titles.
const TICK: f64 = 18.0;
const DESC: f64 = 20.0;
const TITLE: f64 = 24.0;

/// The colour of a mode.
pub fn mode_color(m: Mode) -> RGBColor {
    let i = Mode::ALL.iter().position(|x| *x == m).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// The colour of the `i`-th series that is not a mode (hosts, inputs).
pub fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws one chart into an SVG string (or an error paragraph if plotters failed).
pub fn svg<F>(size: (u32, u32), draw: F) -> String
where
    F: for<'a, 'b> FnOnce(&'b Area<'a>) -> DrawResult,
{
    let mut s = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut s, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        Ok(()) => s,
        Err(e) => maud::html! { p.bad { "This chart could not be drawn: " (e.to_string()) } }
            .into_string(),
    }
}

/// A categorical x axis: category `i` sits at `i as f64`, bars are placed around it.
#[derive(Debug, Clone)]
struct Categories(usize);

impl Ranged for Categories {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = (value + 0.5) / self.0.max(1) as f64;
        limit.0 + (frac * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.0 as f64 - 0.5
    }
}

impl ValueFormatter<f64> for Categories {
    // Every chart with categories gives its own label formatter.
    fn format(_value: &f64) -> String {
        String::new()
    }
}

/// Decade bounds of a log axis that holds every positive value, with a decade of
/// headroom above for the legend.
pub fn log_bounds(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let pos: Vec<f64> = values.into_iter().filter(|v| *v > 0.0).collect();
    if pos.is_empty() {
        return None;
    }
    let lo = pos.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = pos.iter().copied().fold(0.0, f64::max);
    let mut lo_b = 10f64.powf(lo.log10().floor());
    if lo_b >= lo {
        lo_b /= 10.0;
    }
    Some((lo_b, 10f64.powf(hi.log10().ceil() + 1.0)))
}

/// One chart of grouped bars on a log y axis: categories on x, one bar per series in each.
#[derive(Debug)]
pub struct Bars<'a> {
    /// Title.
    pub title: &'a str,
    /// x axis name.
    pub x_desc: &'a str,
    /// y axis name.
    pub y_desc: &'a str,
    /// Category labels.
    pub categories: &'a [String],
    /// Series names and colours.
    pub series: &'a [(String, RGBColor)],
    /// (category index, series index) → spread; absent = not run, zero = drawn as a "0".
    pub values: &'a BTreeMap<(usize, usize), Spread>,
}

/// Draws grouped bars.
pub fn bar_chart(b: &Bars) -> String {
    let Some((lo, hi)) = log_bounds(b.values.values().map(|s| s.max)) else {
        return maud::html! { p.absent { "Every value is zero." } }.into_string();
    };
    let k = b.series.len().max(1);
    let width = (160 + b.categories.len() * (k * 22 + 36)).clamp(760, 1000) as u32;
    svg((width, 480), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(b.title, (FONT, TITLE))
            .margin(14)
            .x_label_area_size(56)
            .y_label_area_size(90)
            .build_cartesian_2d(Categories(b.categories.len()), (lo..hi).log_scale())?;
        let cats = b.categories;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(b.x_desc)
            .y_desc(b.y_desc)
            .x_label_formatter(&|x| {
                cats.get(x.round().max(0.0) as usize)
                    .cloned()
                    .unwrap_or_default()
            })
            .y_label_formatter(&|y| fmt_tick(*y))
            .label_style((FONT, TICK))
            .axis_desc_style((FONT, DESC))
            .draw()?;
        let group = 0.8;
        let w = group / k as f64;
        for (i, (name, color)) in b.series.iter().enumerate() {
            let color = *color;
            let mut rects = Vec::new();
            let mut zeros = Vec::new();
            let mut whiskers = Vec::new();
            for c in 0..b.categories.len() {
                let Some(s) = b.values.get(&(c, i)) else {
                    continue;
                };
                let x0 = c as f64 - group / 2.0 + i as f64 * w;
                let (x1, xc) = (x0 + w * 0.9, x0 + w * 0.45);
                if s.median > 0.0 {
                    rects.push(Rectangle::new([(x0, lo), (x1, s.median)], color.filled()));
                } else {
                    zeros.push(xc);
                }
                if s.runs > 1 && s.max > s.min {
                    whiskers.push(ErrorBar::new_vertical(
                        xc,
                        s.min.max(lo),
                        s.median.max(lo),
                        s.max.max(lo),
                        BLACK.stroke_width(2),
                        8,
                    ));
                }
            }
            chart
                .draw_series(rects)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 7), (x + 16, y + 7)], color.filled())
                });
            chart.draw_series(zeros.into_iter().map(|xc| {
                Text::new(
                    "0",
                    (xc, lo),
                    (FONT, TICK)
                        .into_font()
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))?;
            chart.draw_series(whiskers)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, DESC))
            .draw()?;
        Ok(())
    })
}

/// One line chart of a sweep: one series per mode, medians with min–max whiskers.
pub struct LineChart<'a> {
    /// Title.
    pub title: &'a str,
    /// x axis name.
    pub x_desc: &'a str,
    /// y axis name.
    pub y_desc: &'a str,
    /// Per mode: (x, spread of y).
    pub series: &'a [(Mode, Vec<(f64, Spread)>)],
    /// The legend entry of a mode.
    pub label: &'a dyn Fn(Mode) -> String,
    /// Log₂ x axis and log₁₀ y axis (batching) instead of linear axes from zero (scaling).
    pub log: bool,
    /// Draw the least-squares line through the medians instead of joining them.
    pub fit: bool,
}

impl std::fmt::Debug for LineChart<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineChart")
            .field("title", &self.title)
            .finish()
    }
}

/// Draws a line chart.
pub fn line_chart(c: &LineChart) -> String {
    let xs = c.series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let x_lo = xs.clone().fold(f64::INFINITY, f64::min);
    let x_hi = xs.fold(0.0, f64::max);
    let y_max = c
        .series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1.max))
        .fold(0.0, f64::max);
    svg((620, 440), |root| {
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(c.title, (FONT, DESC))
            .margin(14)
            .x_label_area_size(56)
            .y_label_area_size(84);
        if c.log {
            let (lo, hi) = log_bounds(c.series.iter().flat_map(|s| s.1.iter().map(|p| p.1.min)))
                .unwrap_or((0.1, 10.0));
            let hi = hi.max(y_max * 10.0);
            let chart = builder.build_cartesian_2d(
                ((x_lo / 1.5)..(x_hi * 1.5)).log_scale().base(2.0),
                (lo..hi).log_scale(),
            )?;
            draw_lines(chart, c, &|y| fmt_tick(*y))
        } else {
            let pad = (x_hi - x_lo) * 0.05;
            let chart = builder
                .build_cartesian_2d((x_lo - pad)..(x_hi + pad), 0f64..(y_max * 1.45).max(1e-9))?;
            draw_lines(chart, c, &|y| {
                if y_max >= 1000.0 {
                    fmt_tick(*y)
                } else {
                    format!("{}", (*y * 100.0).round() / 100.0)
                }
            })
        }
    })
}

fn draw_lines<'a, X, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    c: &LineChart,
    y_fmt: &dyn Fn(&f64) -> String,
) -> DrawResult
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .x_label_formatter(&|x| fmt_tick(*x))
        .y_label_formatter(y_fmt)
        .x_labels(6)
        .label_style((FONT, TICK))
        .axis_desc_style((FONT, DESC))
        .draw()?;
    for (m, pts) in c.series {
        let color = mode_color(*m);
        let medians: Vec<(f64, f64)> = pts.iter().map(|(x, s)| (*x, s.median)).collect();
        let line = match least_squares(&medians).filter(|_| c.fit && medians.len() >= 3) {
            Some(f) => {
                let (a, b) = (medians[0].0, medians[medians.len() - 1].0);
                vec![
                    (a, f.slope * a + f.intercept),
                    (b, f.slope * b + f.intercept),
                ]
            }
            None => medians.clone(),
        };
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))?
            .label((c.label)(*m))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3)));
        chart.draw_series(medians.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        chart.draw_series(pts.iter().filter(|(_, s)| s.max > s.min).map(|(x, s)| {
            ErrorBar::new_vertical(*x, s.min, s.median, s.max, color.stroke_width(1), 8)
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, DESC))
        .draw()?;
    Ok(())
}
