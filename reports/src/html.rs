//! The HTML report: one self-contained file (inline CSS, inline SVG charts drawn with
//! plotters, no script, nothing fetched from the network) that a student can open and read.
//!
//! Everything is derived from the records: the modes, the workloads, the exit kinds and
//! the sweeps are whatever the records contain, so a report picks up new modes and
//! workloads without change here.
//!
//! ```
//! use reports::Report;
//!
//! let html = reports::html::render(&Report::new(Vec::new(), Vec::new()));
//! assert!(html.starts_with("<!DOCTYPE html>"));
//! assert!(html.contains("No run was recorded"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::ops::Range;

use modes::{ExitKind, LatencySummary, Mode, Outcome, RunRecord};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::digest::measured;
use crate::table::fmt_ns;
use crate::Report;

/// `insn_emulation` above this many (and above the run's own exit count) means KVM ran
/// guest code by emulation rather than on the CPU. On VT-x/SVM KVM emulates at most about
/// one instruction per exit to the VMM (MMIO, string I/O); a software backend emulates
/// every instruction of guest kernel code.
pub const EMULATION_WARN_THRESHOLD: u64 = 1000;

/// Chart colours (Okabe–Ito, readable with colour-blindness), indexed by the mode's
/// position in [`Mode::ALL`] so a mode keeps its colour across charts and reports.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

const FONT: &str = "sans-serif";

/// Renders the whole report as one HTML document.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(256 * 1024);
    out.push_str(HEAD);
    let _ = writeln!(out, "<h1>virtlab report</h1>");
    banner(&mut out, report);
    if report.records.is_empty() && report.failures.is_empty() {
        out.push_str("<p class=\"empty\">No run was recorded in this report.</p>\n");
        out.push_str("</main>\n</body>\n</html>\n");
        return out;
    }
    verdicts(&mut out, report);
    let data = Data::new(&report.records);
    event_charts(&mut out, &data);
    cycles_chart(&mut out, &data);
    latency_charts(&mut out, &data);
    batching_charts(&mut out, &data);
    scaling_charts(&mut out, &data);
    expected_table(&mut out, &report.records);
    problems(&mut out, report);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Why the report warns that guest kernel code was emulated, or `None` when it need not:
/// the backend emulates CPL 0 code, or some run's `insn_emulation` statistic is high (see
/// [`EMULATION_WARN_THRESHOLD`]).
pub fn emulation_warning(records: &[RunRecord]) -> Option<String> {
    let mut reasons = Vec::new();
    let backends: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.host.backend.emulates_kernel_code())
        .map(|r| r.host.backend.name())
        .collect();
    for b in backends {
        reasons.push(format!(
            "The KVM backend {b} emulates every instruction the guest runs at CPL 0"
        ));
    }
    let high: Vec<(&RunRecord, u64)> = records
        .iter()
        .filter_map(|r| {
            let n = r.kvm_stats.get("insn_emulation").copied().unwrap_or(0);
            (n > EMULATION_WARN_THRESHOLD.max(r.total_exits())).then_some((r, n))
        })
        .collect();
    if let Some((r, n)) = high.iter().max_by_key(|(_, n)| *n) {
        reasons.push(format!(
            "KVM's insn_emulation statistic is high in {} of {} runs; the most, {} in {} \
             ({}), emulated {} instructions while the guest exited to the monitor {}",
            high.len(),
            records.len(),
            r.workload,
            r.mode,
            params_label(&r.params),
            group_digits(*n),
            match r.total_exits() {
                1 => "once".to_string(),
                e => format!("{} times", group_digits(e)),
            }
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join(". "))
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>virtlab report</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0; background: #f6f7f9; color: #1d232b; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
h1 { margin: .3rem 0 1rem; font-size: 1.8rem; }
h2 { margin-top: 2.2rem; border-bottom: 2px solid #d5dae1; padding-bottom: .2rem; }
h3 { margin: 1.2rem 0 .4rem; }
.banner { background: #fff; border: 1px solid #d5dae1; border-radius: 8px; padding: .8rem 1rem; }
.banner dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
.banner dt { font-weight: 600; color: #4a5562; }
.banner dd { margin: 0; }
.warning { background: #fff4e5; border: 2px solid #e69f00; border-left-width: 8px;
  border-radius: 8px; padding: .7rem 1rem; margin: 1rem 0; }
.warning strong { color: #a35a00; }
figure { background: #fff; border: 1px solid #d5dae1; border-radius: 8px; margin: 1rem 0;
  padding: .6rem .8rem; }
figure svg { display: block; max-width: 100%; height: auto; margin: 0 auto; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: .5rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 0 1rem; }
.notice { margin: .4rem .2rem 0; }
.notice strong { color: #0b5a8a; }
.params { color: #4a5562; font-size: .92rem; margin: .3rem .2rem 0; }
.absent { color: #4a5562; font-style: italic; }
table { border-collapse: collapse; background: #fff; margin: .6rem 0; font-size: .92rem; }
th, td { border: 1px solid #d5dae1; padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { background: #e7f6ec; color: #135c2c; }
.bad { background: #fde8e8; color: #8a1414; font-weight: 600; }
tr.mismatch td { background: #fde8e8; color: #8a1414; font-weight: 600; }
.scroll { max-height: 34rem; overflow: auto; border: 1px solid #d5dae1; border-radius: 6px; }
.scroll table { margin: 0; }
.scroll th { position: sticky; top: 0; }
pre { background: #1d232b; color: #e8ecf1; padding: .6rem; border-radius: 6px;
  overflow: auto; max-height: 20rem; white-space: pre-wrap; }
li { margin: .3rem 0; }
footer { margin-top: 2rem; color: #4a5562; font-size: .9rem; }
</style>
</head>
<body>
<main>
"#;

// ---------------------------------------------------------------------------------------
// Banner and verdicts.

fn banner(out: &mut String, report: &Report) {
    out.push_str("<section class=\"banner\" id=\"host\">\n<dl>\n");
    let mut hosts: Vec<&modes::HostInfo> = Vec::new();
    for r in &report.records {
        let same = |h: &&modes::HostInfo| {
            h.backend == r.host.backend
                && h.cpu_model == r.host.cpu_model
                && h.kernel == r.host.kernel
                && h.tsc_khz == r.host.tsc_khz
        };
        if !hosts.iter().any(same) {
            hosts.push(&r.host);
        }
    }
    for h in &hosts {
        let tsc = h.tsc_khz.map_or("unknown".to_string(), |k| {
            format!("{:.3} GHz", f64::from(k) / 1e6)
        });
        let _ = writeln!(
            out,
            "<dt>CPU</dt><dd>{}</dd>\n<dt>Kernel</dt><dd>{}</dd>\n\
             <dt>KVM backend</dt><dd><strong>{}</strong>: {}</dd>\n<dt>TSC</dt><dd>{}</dd>\n\
             <dt>UMIP</dt><dd>{}</dd>",
            escape(&h.cpu_model),
            escape(&h.kernel),
            escape(h.backend.name()),
            escape(h.backend.explanation()),
            tsc,
            if h.umip { "yes" } else { "no" },
        );
    }
    let _ = writeln!(
        out,
        "<dt>Tool</dt><dd>{} {} (git revision {})</dd>\n<dt>Created</dt><dd>{}</dd>\n\
         <dt>Runs</dt><dd>{} recorded, {} could not be carried out</dd>",
        escape(&report.tool),
        escape(&report.version),
        escape(report.git_revision.as_deref().unwrap_or("unknown")),
        utc_date(report.created_unix),
        report.records.len(),
        report.failures.len(),
    );
    out.push_str("</dl>\n</section>\n");
    if report.interrupted {
        out.push_str(
            "<div class=\"warning\" id=\"interrupted\"><strong>Interrupted.</strong> The \
             invocation was stopped before every planned run was made; this report holds the \
             runs that finished.</div>\n",
        );
    }
    if let Some(why) = emulation_warning(&report.records) {
        let _ = writeln!(
            out,
            "<div class=\"warning\" id=\"emulation-warning\"><strong>Warning: guest kernel \
             code was emulated.</strong> {}. Guest code at CPL 0 did not run on the CPU but \
             was interpreted by KVM one instruction at a time, so compute-heavy numbers of the \
             modes that run guest kernel code (cycles per operation, wall time) are far higher \
             here than on a host with VT-x or SVM; exit and trap counts are still exact.</div>",
            escape(&why)
        );
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix seconds (civil-from-days, proleptic Gregorian).
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn verdicts(out: &mut String, report: &Report) {
    let data = Data::new(&report.records);
    let mut modes = data.modes.clone();
    let mut workloads = data.workloads.clone();
    for f in &report.failures {
        if let Ok(m) = f.mode.parse::<Mode>() {
            if !modes.contains(&m) {
                modes.push(m);
            }
        }
        if !workloads.contains(&f.workload) {
            workloads.push(f.workload.clone());
        }
    }
    modes.sort();
    out.push_str("<h2 id=\"summary\">Summary: verdict per workload and mode</h2>\n");
    out.push_str(
        "<p>A run is <em>ok</em> when the guest completed, produced its expected result and \
         console output, and every count matched the workload's oracle. Counts over several \
         runs cover repeats and parameter sweeps.</p>\n",
    );
    out.push_str("<table class=\"verdicts\">\n<tr><th>workload</th>");
    for m in &modes {
        let _ = write!(out, "<th>{}</th>", escape(m.name()));
    }
    out.push_str("</tr>\n");
    for w in &workloads {
        let _ = write!(out, "<tr><th>{}</th>", escape(w));
        for m in &modes {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for r in report
                .records
                .iter()
                .filter(|r| r.workload == *w && r.mode == *m)
            {
                *counts.entry(verdict_word(r)).or_default() += 1;
            }
            let failed = report
                .failures
                .iter()
                .filter(|f| f.workload == *w && f.mode == m.name())
                .count();
            if failed > 0 {
                counts.insert("failed", failed);
            }
            if counts.is_empty() {
                out.push_str("<td class=\"absent\">not run</td>");
                continue;
            }
            let all_ok = counts.keys().all(|k| *k == "ok");
            let text: Vec<String> = counts
                .iter()
                .map(|(k, n)| {
                    if *n == 1 {
                        (*k).to_string()
                    } else {
                        format!("{k} ×{n}")
                    }
                })
                .collect();
            let _ = write!(
                out,
                "<td class=\"{}\">{}</td>",
                if all_ok { "ok" } else { "bad" },
                escape(&text.join(", "))
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn verdict_word(r: &RunRecord) -> &'static str {
    match &r.outcome {
        Outcome::Completed { .. } if r.verdict_ok() => "ok",
        Outcome::Completed { .. } if !r.mismatches.is_empty() => "counts differ",
        Outcome::Completed { .. } => "console differs",
        Outcome::Diverged {
            host_caused: true, ..
        } => "diverged: host",
        Outcome::Diverged { .. } => "diverged",
        Outcome::GuestFault { .. } => "guest fault",
        Outcome::TimedOut { .. } => "timed out",
    }
}

// ---------------------------------------------------------------------------------------
// The records, grouped.

/// Median and range of one quantity over the repeats of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
            runs: v.len(),
        })
    }
}

/// The records that ran to the end (completed or diverged), grouped for the charts.
/// Faulted and timed-out runs have truncated counts; they appear in the problems section.
struct Data<'a> {
    modes: Vec<Mode>,
    workloads: Vec<String>,
    finished: Vec<&'a RunRecord>,
    /// Per workload, the parameters the per-workload charts use: those run by the most
    /// modes (first seen on a tie).
    chosen: BTreeMap<String, BTreeMap<String, u64>>,
}

impl<'a> Data<'a> {
    fn new(records: &'a [RunRecord]) -> Self {
        let mut modes: Vec<Mode> = records.iter().map(|r| r.mode).collect();
        modes.sort();
        modes.dedup();
        let mut workloads: Vec<String> = Vec::new();
        for r in records {
            if !workloads.contains(&r.workload) {
                workloads.push(r.workload.clone());
            }
        }
        let finished: Vec<&RunRecord> = records
            .iter()
            .filter(|r| {
                matches!(
                    r.outcome,
                    Outcome::Completed { .. } | Outcome::Diverged { .. }
                )
            })
            .collect();
        let mut chosen = BTreeMap::new();
        for w in &workloads {
            let mut candidates: Vec<(&BTreeMap<String, u64>, BTreeSet<Mode>)> = Vec::new();
            for r in finished.iter().filter(|r| r.workload == *w) {
                match candidates.iter_mut().find(|(p, _)| **p == r.params) {
                    Some((_, m)) => {
                        m.insert(r.mode);
                    }
                    None => candidates.push((&r.params, BTreeSet::from([r.mode]))),
                }
            }
            let mut best: Option<(&BTreeMap<String, u64>, usize)> = None;
            for (p, m) in &candidates {
                if best.is_none_or(|(_, n)| m.len() > n) {
                    best = Some((p, m.len()));
                }
            }
            if let Some((p, _)) = best {
                chosen.insert(w.clone(), p.clone());
            }
        }
        Data {
            modes,
            workloads,
            finished,
            chosen,
        }
    }

    /// The finished runs of `workload` in `mode` with the workload's chosen parameters.
    fn chosen_runs(&self, workload: &str, mode: Mode) -> Vec<&'a RunRecord> {
        let Some(p) = self.chosen.get(workload) else {
            return Vec::new();
        };
        self.finished
            .iter()
            .copied()
            .filter(|r| r.workload == workload && r.mode == mode && r.params == *p)
            .collect()
    }

    fn chosen_params_note(&self, workloads: &[String]) -> String {
        let parts: Vec<String> = workloads
            .iter()
            .filter_map(|w| {
                self.chosen
                    .get(w)
                    .map(|p| format!("{} ({})", escape(w), escape(&params_label(p))))
            })
            .collect();
        format!(
            "<p class=\"params\">Parameters: {}. Bars show the median over repeats; whiskers \
             span the fastest to slowest repeat.</p>",
            parts.join(", ")
        )
    }
}

fn params_label(p: &BTreeMap<String, u64>) -> String {
    if p.is_empty() {
        return "no parameters".into();
    }
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mode_color(m: Mode) -> RGBColor {
    let i = Mode::ALL.iter().position(|x| *x == m).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// `1234567` → `1,234,567`.
fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count or a measurement, short: `12`, `1,234`, `3.5`, `0.25`.
fn fmt_num(v: f64) -> String {
    if v < 0.0 {
        format!("−{}", fmt_num(-v))
    } else if (v.fract() == 0.0 || v >= 100.0) && v < 1e15 {
        group_digits(v.round() as u64)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Axis tick label for a log axis: `1`, `10`, `1k`, `10M`.
fn fmt_tick(v: f64) -> String {
    let (d, s) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if (x - x.round()).abs() < 1e-9 {
        format!("{}{s}", x.round())
    } else {
        format!("{x:.1}{s}")
    }
}

// ---------------------------------------------------------------------------------------
// Chart plumbing.

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws one chart into an SVG string (or an error paragraph if plotters failed).
fn svg<F>(size: (u32, u32), draw: F) -> String
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
        Err(e) => format!(
            "<p class=\"bad\">This chart could not be drawn: {}</p>",
            escape(&e.to_string())
        ),
    }
}

fn figure(out: &mut String, id: &str, svg: &str, notice: &str, extra: &str) {
    let _ = writeln!(
        out,
        "<figure id=\"{}\">\n{svg}\n{extra}<p class=\"notice\"><strong>What to notice.</strong> \
         {notice}</p>\n</figure>",
        escape(id)
    );
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
fn log_bounds(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let pos: Vec<f64> = values.into_iter().filter(|v| *v > 0.0).collect();
    let lo = pos.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = pos.iter().copied().fold(0.0, f64::max);
    if pos.is_empty() {
        return None;
    }
    let mut lo_b = 10f64.powf(lo.log10().floor());
    if lo_b >= lo {
        lo_b /= 10.0;
    }
    let hi_b = 10f64.powf(hi.log10().ceil() + 1.0);
    Some((lo_b, hi_b))
}

/// One chart of grouped bars on a log y axis: categories on x, one bar per series in each.
struct Bars<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    categories: &'a [String],
    series: &'a [Mode],
    /// (category index, series) → spread; absent = not run, zero = drawn as a "0".
    values: &'a BTreeMap<(usize, Mode), Spread>,
}

fn bar_chart(b: &Bars) -> String {
    let Some((lo, hi)) = log_bounds(b.values.values().map(|s| s.max)) else {
        return "<p class=\"absent\">Every value is zero.</p>".into();
    };
    let k = b.series.len().max(1);
    let width = (120 + b.categories.len() * (k * 26 + 30)).clamp(1100, 1600) as u32;
    svg((width, 440), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(b.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(78)
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
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        let group = 0.8;
        let w = group / k as f64;
        for (i, mode) in b.series.iter().enumerate() {
            let color = mode_color(*mode);
            let mut rects = Vec::new();
            let mut zeros = Vec::new();
            let mut whiskers = Vec::new();
            for c in 0..b.categories.len() {
                let Some(s) = b.values.get(&(c, *mode)) else {
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
                .label(mode.name())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            chart.draw_series(zeros.into_iter().map(|xc| {
                Text::new(
                    "0",
                    (xc, lo),
                    (FONT, 14)
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
            .label_font((FONT, 14))
            .draw()?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// a. Exits, traps and hypercalls per workload.

type Metric = (&'static str, &'static str, fn(&RunRecord) -> u64);

const EVENT_METRICS: [Metric; 3] = [
    ("VM exits", "exits", RunRecord::total_exits),
    ("Traps", "traps", |r| r.traps.values().sum()),
    ("Hypercalls", "hypercalls", |r| r.hypercalls.values().sum()),
];

fn event_charts(out: &mut String, data: &Data) {
    out.push_str("<h2 id=\"events\">Exits, traps and hypercalls per workload</h2>\n");
    out.push_str(
        "<p>Every time the guest needs the virtual machine monitor, the CPU leaves the guest: \
         a <em>VM exit</em>. In trap-and-emulate a privileged instruction faults and is \
         emulated (a <em>trap</em>); in paravirtualization the guest asks the monitor directly \
         (a <em>hypercall</em>). Fewer events mean less overhead.</p>\n",
    );
    if data.finished.is_empty() {
        out.push_str("<p class=\"absent\">No run finished, so there is nothing to chart.</p>\n");
        return;
    }
    for (title, short, metric) in EVENT_METRICS {
        let mut values = BTreeMap::new();
        for (c, w) in data.workloads.iter().enumerate() {
            for m in &data.modes {
                let runs = data.chosen_runs(w, *m);
                if let Some(s) = Spread::of(runs.iter().map(|r| metric(r) as f64).collect()) {
                    values.insert((c, *m), s);
                }
            }
        }
        if values.values().all(|s| s.max == 0.0) {
            let _ = writeln!(
                out,
                "<p class=\"absent\" id=\"no-{short}\">No run recorded any {}: {}.</p>",
                short,
                match short {
                    "traps" => "traps come from the trap-emulate mode",
                    "hypercalls" => "hypercalls come from the paravirt mode",
                    _ => "every finished run left the guest at least once to report its end",
                }
            );
            continue;
        }
        let chart_title = format!("{title} per workload, by mode");
        let svg = bar_chart(&Bars {
            title: &chart_title,
            x_desc: "workload",
            y_desc: &format!("{short} per run (count, log scale)"),
            categories: &data.workloads,
            series: &data.modes,
            values: &values,
        });
        let notice = compare_sentence(data, &values, short, "", |v| fmt_num(v.round()));
        figure(
            out,
            &format!("chart-{short}"),
            &svg,
            &format!(
                "{notice} The axis is logarithmic: each grid line is ten times the one below, \
                 so equal steps mean equal ratios; a bar marked 0 had none."
            ),
            &data.chosen_params_note(&data.workloads),
        );
    }
}

/// One workload's comparison: the modes with the most and the fewest, and their values.
struct Gap {
    workload: String,
    top_modes: String,
    top: f64,
    low_modes: String,
    low: f64,
}

impl Gap {
    fn ratio(&self) -> f64 {
        if self.low > 0.0 {
            self.top / self.low
        } else {
            f64::INFINITY
        }
    }
}

/// Sentences comparing modes: per workload when there are few, otherwise which mode led
/// how often and where the gap is largest.
fn compare_sentence(
    data: &Data,
    values: &BTreeMap<(usize, Mode), Spread>,
    what: &str,
    unit: &str,
    fmt: impl Fn(f64) -> String,
) -> String {
    let mut sentences = Vec::new();
    let mut gaps: Vec<Gap> = Vec::new();
    let mut leaders: BTreeMap<Mode, usize> = BTreeMap::new();
    for (c, w) in data.workloads.iter().enumerate() {
        let mut here: Vec<(Mode, f64)> = data
            .modes
            .iter()
            .filter_map(|m| values.get(&(c, *m)).map(|s| (*m, s.median)))
            .collect();
        if here.len() < 2 {
            continue;
        }
        here.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (top, low) = (here[0].1, here[here.len() - 1].1);
        let with = |v: f64| {
            here.iter()
                .filter(|(_, x)| *x == v)
                .map(|(m, _)| m.name())
                .collect::<Vec<_>>()
                .join(" and ")
        };
        if top == low {
            sentences.push(format!("{w}: every mode made {} {what}{unit}.", fmt(top)));
            continue;
        }
        for (m, v) in &here {
            if *v == top {
                *leaders.entry(*m).or_default() += 1;
            }
        }
        gaps.push(Gap {
            workload: w.clone(),
            top_modes: with(top),
            top,
            low_modes: with(low),
            low,
        });
    }
    let describe = |g: &Gap| {
        let ratio = if g.low > 0.0 {
            format!("{:.1}× as many as", g.ratio())
        } else {
            "against none in".to_string()
        };
        format!(
            "{} had the most {what} ({}{unit}), {ratio} {} ({}{unit})",
            g.top_modes,
            fmt(g.top),
            g.low_modes,
            fmt(g.low)
        )
    };
    let compared = gaps.len() + sentences.len();
    if compared > 0 && compared <= 3 {
        let mut per: Vec<String> = gaps
            .iter()
            .map(|g| format!("{}: {}.", g.workload, describe(g)))
            .collect();
        per.append(&mut sentences);
        return escape(&per.join(" "));
    }
    if compared > 3 {
        let mut ranked: Vec<(Mode, usize)> = leaders.into_iter().collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
        let mut text = String::new();
        if let Some(((first, n0), rest)) = ranked.split_first() {
            let mut parts = vec![format!("{first} had the most {what} in {n0}")];
            parts.extend(rest.iter().map(|(m, n)| format!("{m} in {n}")));
            let last = parts.pop().unwrap_or_default();
            let joined = if parts.is_empty() {
                last
            } else {
                format!("{} and {last}", parts.join(", "))
            };
            let _ = write!(
                text,
                "{joined} of the {compared} workloads run in several modes."
            );
        }
        let widest = gaps
            .iter()
            .filter(|g| g.ratio().is_finite())
            .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
            .or_else(|| gaps.iter().max_by(|a, b| a.top.total_cmp(&b.top)));
        if let Some(g) = widest {
            let _ = write!(
                text,
                " The largest gap is in {}, where {}.",
                g.workload,
                describe(g)
            );
        }
        let same = sentences.len();
        if same > 0 {
            let _ = write!(
                text,
                " In {same} workload(s) every mode made the same number of {what}."
            );
        }
        return escape(text.trim());
    }
    // One mode only: say where the events concentrate.
    let mut ranked: Vec<(&String, Mode, f64)> = Vec::new();
    for (c, w) in data.workloads.iter().enumerate() {
        for m in &data.modes {
            if let Some(s) = values.get(&(c, *m)) {
                ranked.push((w, *m, s.median));
            }
        }
    }
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2));
    let modes: Vec<&str> = data.modes.iter().map(|m| m.name()).collect();
    let mut s = if modes.len() == 1 {
        format!(
            "Only {} ran, so there is no mode to compare with yet.",
            modes[0]
        )
    } else {
        "No workload ran in more than one mode, so there is nothing to compare yet.".into()
    };
    match (ranked.first(), ranked.last()) {
        (Some(first), Some(last)) if ranked.len() > 1 => {
            let _ = write!(
                s,
                " {} had the most {what} ({}{unit}) and {} the fewest ({}{unit}).",
                first.0,
                fmt(first.2),
                last.0,
                fmt(last.2)
            );
        }
        (Some(only), _) => {
            let _ = write!(s, " {}: {} {what}{unit}.", only.0, fmt(only.2));
        }
        _ => {}
    }
    escape(&s)
}

// ---------------------------------------------------------------------------------------
// b. Guest cycles per operation.

fn cycles_chart(out: &mut String, data: &Data) {
    out.push_str("<h2 id=\"cycles\">Guest cycles per operation</h2>\n");
    out.push_str(
        "<p>The guest reads its time-stamp counter (RDTSC) before and after its measured loop \
         and divides by the number of operations: the cost of one operation as the guest sees \
         it, monitor included.</p>\n",
    );
    let mut values = BTreeMap::new();
    let mut cats = Vec::new();
    for w in &data.workloads {
        let mut row = Vec::new();
        for m in &data.modes {
            let runs = data.chosen_runs(w, *m);
            if let Some(s) = Spread::of(
                runs.iter()
                    .filter_map(|r| r.guest.map(|g| g.cycles_per_op))
                    .collect(),
            ) {
                row.push((*m, s));
            }
        }
        if !row.is_empty() {
            for (m, s) in row {
                values.insert((cats.len(), m), s);
            }
            cats.push(w.clone());
        }
    }
    if cats.is_empty() {
        out.push_str(
            "<p class=\"absent\" id=\"no-cycles\">No finished run measured itself with RDTSC.</p>\n",
        );
        return;
    }
    let sub = Data {
        modes: data.modes.clone(),
        workloads: cats.clone(),
        finished: data.finished.clone(),
        chosen: data.chosen.clone(),
    };
    let svg = bar_chart(&Bars {
        title: "Guest cycles per operation, by workload and mode",
        x_desc: "workload",
        y_desc: "TSC cycles per operation (log scale)",
        categories: &cats,
        series: &data.modes,
        values: &values,
    });
    let notice = compare_sentence(&sub, &values, "cycles per operation", "", fmt_num);
    figure(
        out,
        "chart-cycles",
        &svg,
        &format!(
            "{notice} A workload without sensitive instructions should cost the same in every \
             mode; the gaps elsewhere are the price of each exit, trap or hypercall."
        ),
        &data.chosen_params_note(&cats),
    );
}

// ---------------------------------------------------------------------------------------
// c. Latency distribution per exit kind.

/// One mode's latency distribution of one exit kind: (bucket upper bound in ns, share of
/// exits in %) and the summaries it was pooled from.
type LatencySeries<'a> = (Mode, Vec<(f64, f64)>, Vec<&'a LatencySummary>);

fn latency_charts(out: &mut String, data: &Data) {
    out.push_str("<h2 id=\"latency\">Latency of one exit, per exit kind</h2>\n");
    out.push_str(
        "<p>For each exit the host times the whole <code>KVM_RUN</code> round trip: from \
         entering the guest until the exit is handled and the guest may resume. Each point is \
         a power-of-two bucket: the share of exits that took up to that long. All finished \
         runs of a mode are pooled.</p>\n",
    );
    let kinds: Vec<ExitKind> = ExitKind::ALL
        .into_iter()
        .filter(|k| {
            data.finished
                .iter()
                .any(|r| r.round_trip_ns.get(k).is_some_and(|l| l.count > 0))
        })
        .collect();
    if kinds.is_empty() {
        out.push_str("<p class=\"absent\" id=\"no-latency\">No exit latency was recorded.</p>\n");
        return;
    }
    out.push_str("<div class=\"grid\">\n");
    for kind in kinds {
        let mut series: Vec<LatencySeries> = Vec::new();
        for m in &data.modes {
            let sums: Vec<&LatencySummary> = data
                .finished
                .iter()
                .filter(|r| r.mode == *m)
                .filter_map(|r| r.round_trip_ns.get(&kind))
                .filter(|l| l.count > 0)
                .collect();
            let mut merged: BTreeMap<u64, u64> = BTreeMap::new();
            for l in &sums {
                for (upper, n) in &l.buckets {
                    *merged.entry(*upper).or_default() += n;
                }
            }
            let total: u64 = merged.values().sum();
            if total == 0 {
                continue;
            }
            let points = merged
                .into_iter()
                .map(|(u, n)| (u as f64, 100.0 * n as f64 / total as f64))
                .collect();
            series.push((*m, points, sums));
        }
        if series.is_empty() {
            continue;
        }
        let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
        // Whole decades, so that the axis always has at least two labelled ticks.
        let x_lo = 10f64.powf(
            (xs.clone().fold(f64::INFINITY, f64::min) / 1.5)
                .log10()
                .floor(),
        );
        let x_hi = 10f64.powf((xs.fold(0.0, f64::max) * 1.5).log10().ceil());
        let title = format!("{} exits: KVM_RUN round trip", kind.name());
        let svg = svg((600, 360), |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&title, (FONT, 18))
                .margin(12)
                .x_label_area_size(48)
                .y_label_area_size(64)
                .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..118f64)?;
            chart
                .configure_mesh()
                .x_desc("round trip (ns, log scale)")
                .y_desc("share of exits (%)")
                .x_label_formatter(&|x| fmt_tick(*x))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()?;
            for (m, points, _) in &series {
                let color = mode_color(*m);
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))?
                    .label(m.name())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3))
                    });
                chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.4))
                .label_font((FONT, 13))
                .draw()?;
            Ok(())
        });
        let mut notice = Vec::new();
        for (m, points, sums) in &series {
            let exits: u64 = sums.iter().map(|l| l.count).sum();
            let p50 = Spread::of(sums.iter().map(|l| l.p50 as f64).collect());
            // Pooled over every run: the bucket where the cumulative share reaches 99 %.
            let mut cumulative = 0.0;
            let p99 = points
                .iter()
                .find(|(_, share)| {
                    cumulative += share;
                    cumulative >= 99.0 - 1e-9
                })
                .or(points.last())
                .map_or(0.0, |p| p.0 + 1.0);
            if let Some(p50) = p50 {
                notice.push(format!(
                    "{m}: median round trip {}; 99% of the {} exits (in {} run(s)) took under {}.",
                    fmt_ns(p50.median),
                    group_digits(exits),
                    sums.len(),
                    fmt_ns(p99)
                ));
            }
        }
        if series.len() > 1 {
            let fastest = series
                .iter()
                .filter_map(|(m, _, s)| {
                    Spread::of(s.iter().map(|l| l.p50 as f64).collect()).map(|p| (*m, p.median))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((m, _)) = fastest {
                notice.push(format!("The curve furthest left, {m}, exits fastest."));
            }
        }
        notice.push(
            "A narrow peak means steady cost; a long tail to the right means some exits were \
             delayed (host interrupts, scheduling)."
                .into(),
        );
        figure(
            out,
            &format!("chart-latency-{}", kind.name()),
            &svg,
            &escape(&notice.join(" ")),
            "",
        );
    }
    out.push_str("</div>\n");
}

// ---------------------------------------------------------------------------------------
// d./e. Sweeps.

/// Runs of one workload that differ only in `key`, grouped by the other parameters.
struct Sweep<'a> {
    workload: String,
    /// The parameters other than the swept one.
    rest: BTreeMap<String, u64>,
    runs: Vec<&'a RunRecord>,
}

fn sweeps<'a>(data: &Data<'a>, key: &str) -> Vec<Sweep<'a>> {
    let mut out: Vec<Sweep<'a>> = Vec::new();
    for r in &data.finished {
        let Some(_) = r.params.get(key) else {
            continue;
        };
        let mut rest = r.params.clone();
        rest.remove(key);
        match out
            .iter_mut()
            .find(|s| s.workload == r.workload && s.rest == rest)
        {
            Some(s) => s.runs.push(r),
            None => out.push(Sweep {
                workload: r.workload.clone(),
                rest,
                runs: vec![r],
            }),
        }
    }
    out.retain(|s| {
        data.modes.iter().any(|m| {
            s.runs
                .iter()
                .filter(|r| r.mode == *m)
                .map(|r| r.params[key])
                .collect::<BTreeSet<_>>()
                .len()
                >= 2
        })
    });
    out
}

/// Per mode: (x, spread of y) for each distinct x, sorted by x.
fn sweep_points(
    s: &Sweep,
    modes: &[Mode],
    key: &str,
    y: impl Fn(&RunRecord) -> Option<f64>,
) -> Vec<(Mode, Vec<(f64, Spread)>)> {
    let mut out = Vec::new();
    for m in modes {
        let mut by_x: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for r in s.runs.iter().filter(|r| r.mode == *m) {
            if let Some(v) = y(r) {
                by_x.entry(r.params[key]).or_default().push(v);
            }
        }
        let pts: Vec<(f64, Spread)> = by_x
            .into_iter()
            .filter_map(|(x, v)| Spread::of(v).map(|s| (x as f64, s)))
            .collect();
        if pts.len() >= 2 {
            out.push((*m, pts));
        }
    }
    out
}

fn sweep_title(s: &Sweep) -> String {
    if s.rest.is_empty() {
        s.workload.clone()
    } else {
        format!("{} ({})", s.workload, params_label(&s.rest))
    }
}

fn batching_charts(out: &mut String, data: &Data) {
    out.push_str("<h2 id=\"batching\">Batching: the effect of B</h2>\n");
    let list = sweeps(data, "b");
    if list.is_empty() {
        out.push_str(
            "<p class=\"absent\" id=\"no-batching\">These runs have no sweep of the batch size \
             B, so there is no batching curve. The <code>io-batching</code> scenario runs the \
             batched workloads with several B values and produces it.</p>\n",
        );
        return;
    }
    out.push_str(
        "<p>A paravirtual guest can hand the monitor B operations in one hypercall instead of \
         one each. Left: monitor events per run (hypercalls for modes that make them, \
         otherwise VM exits). Right: what one operation costs the guest. Dots are medians over \
         repeats, whiskers span the fastest to the slowest repeat.</p>\n",
    );
    for s in &list {
        let uses_hypercalls: BTreeSet<Mode> = s
            .runs
            .iter()
            .filter(|r| !r.hypercalls.is_empty())
            .map(|r| r.mode)
            .collect();
        let events = sweep_points(s, &data.modes, "b", |r| {
            Some(if uses_hypercalls.contains(&r.mode) {
                r.hypercalls.values().sum::<u64>() as f64
            } else {
                r.total_exits() as f64
            })
        });
        let cycles = sweep_points(s, &data.modes, "b", |r| r.guest.map(|g| g.cycles_per_op));
        let label = |m: Mode| {
            if uses_hypercalls.contains(&m) {
                format!("{m} hypercalls")
            } else {
                format!("{m} exits")
            }
        };
        let title = sweep_title(s);
        let mut svgs = line_chart(&LineChart {
            title: &format!("Monitor events against B: {title}"),
            x_desc: "batch size B (log scale)",
            y_desc: "events per run (log scale)",
            series: &events,
            label: &label,
            log: true,
            fit: false,
        });
        if !cycles.is_empty() {
            svgs.push_str(&line_chart(&LineChart {
                title: &format!("Guest cycles per operation against B: {title}"),
                x_desc: "batch size B (log scale)",
                y_desc: "TSC cycles per operation (log scale)",
                series: &cycles,
                label: &|m| m.to_string(),
                log: true,
                fit: false,
            }));
        }
        let svg = format!("<div class=\"pair\">{svgs}</div>");
        let mut notice = Vec::new();
        let mut any_batched = false;
        for (m, pts) in &events {
            let (first, last) = (pts[0], pts[pts.len() - 1]);
            any_batched |= last.1.median < first.1.median;
            let what = if uses_hypercalls.contains(m) {
                "hypercalls"
            } else {
                "exits"
            };
            let (a, z) = (first.1.median, last.1.median);
            let change = if a == z {
                format!(
                    "stayed at {} (B does not change what this mode does)",
                    fmt_num(a)
                )
            } else if z > 0.0 && a > 0.0 {
                format!(
                    "went from {} to {} ({:.1}× {})",
                    fmt_num(a),
                    fmt_num(z),
                    (a / z).max(z / a),
                    if z < a { "fewer" } else { "more" }
                )
            } else {
                format!("went from {} to {}", fmt_num(a), fmt_num(z))
            };
            let mut sentence = format!("{m}: from B={} to B={}, {what} {change}", first.0, last.0);
            if let Some((_, c)) = cycles.iter().find(|(cm, _)| cm == m) {
                let (ca, cz) = (c[0], c[c.len() - 1]);
                let _ = write!(
                    sentence,
                    " and guest cycles per operation went from {} (B={}) to {} (B={})",
                    fmt_num(ca.1.median),
                    ca.0,
                    fmt_num(cz.1.median),
                    cz.0
                );
            }
            sentence.push('.');
            notice.push(sentence);
        }
        notice.push(if any_batched {
            "Batching pays where each monitor call has a fixed cost: the events fall as 1/B and \
             the per-operation cost falls towards the cost of the work itself."
                .into()
        } else {
            "No mode batches this workload: every operation still costs one monitor call \
             whatever B is (see the mode's documentation for why)."
                .into()
        });
        figure(
            out,
            &format!("chart-batching-{}", s.workload),
            &svg,
            &escape(&notice.join(" ")),
            "",
        );
    }
}

fn signed_ns(ns: f64) -> String {
    if ns < 0.0 {
        format!("−{}", fmt_ns(-ns))
    } else {
        fmt_ns(ns)
    }
}

/// Least-squares line `y = slope·x + intercept` and its R².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Change of y per unit of x.
    pub slope: f64,
    /// y at x = 0.
    pub intercept: f64,
    /// Coefficient of determination (1 = every point on the line).
    pub r2: f64,
}

/// Fits a least-squares line through the points; `None` with fewer than two distinct x.
pub fn least_squares(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        sxy * sxy / (sxx * syy)
    };
    Some(Fit {
        slope,
        intercept: my - slope * mx,
        r2,
    })
}

fn scaling_charts(out: &mut String, data: &Data) {
    out.push_str("<h2 id=\"scaling\">Scaling: cost against N</h2>\n");
    let list = sweeps(data, "n");
    if list.is_empty() {
        out.push_str(
            "<p class=\"absent\" id=\"no-scaling\">These runs have no sweep of the iteration \
             count N, so there is no scaling curve. The <code>scaling</code> scenario runs the \
             workloads with several N values and produces it.</p>\n",
        );
        return;
    }
    out.push_str(
        "<p>Each workload repeats its operation N times. If the cost of one operation is \
         constant, wall time grows on a straight line whose slope is the cost per iteration. \
         The lines are least-squares fits through the medians (dots); whiskers span the \
         fastest to the slowest repeat. Left: wall time; right: VM exits.</p>\n",
    );
    for s in &list {
        let wall = sweep_points(s, &data.modes, "n", |r| Some(r.wall_ns as f64 / 1e6));
        let exits = sweep_points(s, &data.modes, "n", |r| Some(r.total_exits() as f64));
        let fit_of = |pts: &[(Mode, Vec<(f64, Spread)>)]| -> BTreeMap<Mode, Fit> {
            pts.iter()
                .filter_map(|(m, p)| {
                    let medians: Vec<(f64, f64)> = p.iter().map(|(x, s)| (*x, s.median)).collect();
                    least_squares(&medians).map(|f| (*m, f))
                })
                .collect()
        };
        // Wall time is charted in ms, slopes are given in ns.
        let fits: BTreeMap<Mode, Fit> = fit_of(&wall)
            .into_iter()
            .map(|(m, f)| {
                (
                    m,
                    Fit {
                        slope: f.slope * 1e6,
                        intercept: f.intercept * 1e6,
                        r2: f.r2,
                    },
                )
            })
            .collect();
        let exit_fits = fit_of(&exits);
        let label = |m: Mode| match fits.get(&m) {
            Some(f) => format!("{m}: {} ns/iteration", fmt_num(f.slope)),
            None => m.to_string(),
        };
        let exit_label = |m: Mode| match exit_fits.get(&m) {
            Some(f) => format!("{m}: {} exits/iteration", fmt_num(f.slope)),
            None => m.to_string(),
        };
        let title = sweep_title(s);
        let svg = format!(
            "<div class=\"pair\">{}{}</div>",
            line_chart(&LineChart {
                title: &format!("Wall time against N: {title}"),
                x_desc: "iterations N",
                y_desc: "wall time per run (ms)",
                series: &wall,
                label: &label,
                log: false,
                fit: true,
            }),
            line_chart(&LineChart {
                title: &format!("VM exits against N: {title}"),
                x_desc: "iterations N",
                y_desc: "VM exits per run",
                series: &exits,
                label: &exit_label,
                log: false,
                fit: true,
            })
        );
        let mut slopes = String::new();
        for (m, f) in &fits {
            let _ = write!(
                slopes,
                "<li class=\"slope\">{}: <strong>{} ns per iteration</strong> \
                 (intercept {}, R² = {:.4}){}</li>",
                escape(m.name()),
                fmt_num(f.slope),
                signed_ns(f.intercept),
                f.r2,
                exit_fits.get(m).map_or(String::new(), |e| format!(
                    "; exits grow by {} per iteration",
                    fmt_num(e.slope)
                ))
            );
        }
        let mut notice = Vec::new();
        for (m, f) in &fits {
            let straight = if f.r2 >= 0.99 {
                "lie on a straight line, so each iteration costs the same however many there are"
            } else if f.r2 >= 0.9 {
                "lie close to a straight line, with some noise"
            } else {
                "stray from a straight line: look for noisy repeats or a cost that is not \
                 linear in N"
            };
            notice.push(format!(
                "{m}: the points {straight} (R² = {:.3}); one more iteration costs about {}.",
                f.r2,
                fmt_ns(f.slope)
            ));
        }
        if fits.len() > 1 {
            if let Some((m, _)) = fits.iter().max_by(|a, b| a.1.slope.total_cmp(&b.1.slope)) {
                notice.push(format!(
                    "The steepest line, {m}, is the costliest per iteration."
                ));
            }
        }
        figure(
            out,
            &format!("chart-scaling-{}", s.workload),
            &svg,
            &escape(&notice.join(" ")),
            &format!("<ul class=\"slopes\">{slopes}</ul>"),
        );
    }
}

/// One line chart of a sweep: one series per mode, medians with min–max whiskers.
struct LineChart<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    series: &'a [(Mode, Vec<(f64, Spread)>)],
    label: &'a dyn Fn(Mode) -> String,
    /// Log₂ x axis and log₁₀ y axis (batching) instead of linear axes from zero (scaling).
    log: bool,
    /// Draw the least-squares line through the medians instead of joining them.
    fit: bool,
}

fn line_chart(c: &LineChart) -> String {
    let xs = c.series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let x_lo = xs.clone().fold(f64::INFINITY, f64::min);
    let x_hi = xs.fold(0.0, f64::max);
    let y_max = c
        .series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1.max))
        .fold(0.0, f64::max);
    svg((600, 400), |root| {
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(c.title, (FONT, 18))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70);
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
                .build_cartesian_2d((x_lo - pad)..(x_hi + pad), 0f64..(y_max * 1.35).max(1e-9))?;
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
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    for (m, pts) in c.series {
        let color = mode_color(*m);
        let medians: Vec<(f64, f64)> = pts.iter().map(|(x, s)| (*x, s.median)).collect();
        let line = match least_squares(&medians).filter(|_| c.fit) {
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
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Expected vs measured, and what went wrong.

fn expected_table(out: &mut String, records: &[RunRecord]) {
    out.push_str("<h2 id=\"expected\">Expected against measured counts</h2>\n");
    out.push_str(
        "<p>Each workload declares, per mode, exactly how many exits, traps, hypercalls and \
         port accesses it must cause (its <em>oracle</em>). Rows in red differ.</p>\n",
    );
    let rows: usize = records.iter().map(|r| r.expected.len()).sum();
    if rows == 0 {
        out.push_str("<p class=\"absent\">No run declared expected counts.</p>\n");
        return;
    }
    let mismatched: usize = records.iter().map(|r| r.mismatches.len()).sum();
    let _ = writeln!(
        out,
        "<p>{} counts checked, {} differ.</p>\n<div class=\"scroll\"><table class=\"expected\">\n\
         <tr><th>workload</th><th>mode</th><th>parameters</th><th>repeat</th><th>counter</th>\
         <th>expected</th><th>measured</th><th></th></tr>",
        group_digits(rows as u64),
        group_digits(mismatched as u64)
    );
    for r in records {
        for (key, want) in &r.expected {
            let got = r
                .mismatches
                .get(key)
                .map_or_else(|| measured(r, key), |(_, got)| *got);
            let bad = got != *want || r.mismatches.contains_key(key);
            let _ = writeln!(
                out,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                if bad { " class=\"mismatch\"" } else { "" },
                escape(&r.workload),
                escape(r.mode.name()),
                escape(&params_label(&r.params)),
                r.repeat,
                escape(key),
                group_digits(*want),
                group_digits(got),
                if bad { "✗ differs" } else { "✓" }
            );
        }
    }
    out.push_str("</table></div>\n");
}

const CONSOLE_LIMIT: usize = 4000;

fn problems(out: &mut String, report: &Report) {
    out.push_str("<h2 id=\"problems\">Divergences, faults and failures</h2>\n");
    let mut items = Vec::new();
    for r in &report.records {
        let who = format!(
            "<strong>{}</strong> in <strong>{}</strong> ({}, repeat {})",
            escape(&r.workload),
            escape(r.mode.name()),
            escape(&params_label(&r.params)),
            r.repeat
        );
        let what = match &r.outcome {
            Outcome::Completed { .. } => {
                if r.console_ok == Some(false) {
                    Some("completed, but its console output was not the expected one".to_string())
                } else {
                    None
                }
            }
            Outcome::Diverged {
                expected,
                got,
                why,
                host_caused,
                ..
            } => Some(format!(
                "diverged{}: expected {}, got {}. Why: {}",
                if *host_caused {
                    " (caused by this host)"
                } else {
                    ""
                },
                escape(expected),
                escape(got),
                escape(why)
            )),
            Outcome::GuestFault { kind, rip, detail } => Some(format!(
                "guest fault ({}){}: {}",
                escape(&format!("{kind:?}")),
                rip.map(|r| format!(" at {r:#x}")).unwrap_or_default(),
                escape(detail)
            )),
            Outcome::TimedOut { limit, rip } => Some(format!(
                "stopped at its limit ({}){}",
                escape(&format!("{limit:?}")),
                rip.map(|r| format!(" at {r:#x}")).unwrap_or_default()
            )),
        };
        if let Some(what) = what {
            let console = if r.console.is_empty() {
                String::new()
            } else {
                let shown: String = r.console.chars().take(CONSOLE_LIMIT).collect();
                let cut = if shown.len() < r.console.len() {
                    "\n[… cut]"
                } else {
                    ""
                };
                format!(
                    "<details><summary>console output</summary><pre>{}{cut}</pre></details>",
                    escape(&shown)
                )
            };
            items.push(format!("<li>{who}: {what}{console}</li>"));
        }
    }
    for f in &report.failures {
        items.push(format!(
            "<li><strong>{}</strong> in <strong>{}</strong> (repeat {}): could not be run: {}</li>",
            escape(&f.workload),
            escape(&f.mode),
            f.repeat,
            escape(&f.error)
        ));
    }
    if items.is_empty() {
        out.push_str(
            "<p class=\"ok\" id=\"no-problems\">Every run completed with its expected result.</p>\n",
        );
    } else {
        let _ = writeln!(out, "<ul class=\"problems\">\n{}\n</ul>", items.join("\n"));
    }
    // Notes repeat across repeats and sweeps, often differing only in a count: show each
    // kind once (the first seen), with how many runs it concerns and which.
    let mut notes: Vec<(String, &str, BTreeSet<String>, usize)> = Vec::new();
    for r in &report.records {
        for n in &r.notes {
            let mut key = String::new();
            for c in n.chars() {
                if !c.is_ascii_digit() {
                    key.push(c);
                } else if !key.ends_with('#') {
                    key.push('#');
                }
            }
            let run = format!("{} in {}", r.workload, r.mode);
            match notes.iter_mut().find(|(k, ..)| *k == key) {
                Some((_, _, runs, count)) => {
                    runs.insert(run);
                    *count += 1;
                }
                None => notes.push((key, n, BTreeSet::from([run]), 1)),
            }
        }
    }
    let notes: Vec<(&str, BTreeSet<String>, usize)> =
        notes.into_iter().map(|(_, n, r, c)| (n, r, c)).collect();
    if !notes.is_empty() {
        out.push_str("<h3>Notes from the runs</h3>\n<ul class=\"notes\">\n");
        for (n, runs, count) in notes {
            let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
            let similar = if count > 1 {
                format!("{count} runs with notes like this one: ")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "<li>{} <span class=\"params\">({}{})</span></li>",
                escape(n),
                similar,
                escape(&runs.join(", "))
            );
        }
        out.push_str("</ul>\n");
    }
    let _ = writeln!(
        out,
        "<footer>Made by {} {}. Every number on this page comes from the run records in \
         results.json next to it.</footer>",
        escape(&report.tool),
        escape(&report.version)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunFailure;
    use modes::{Backend, Ending, FaultKind, GuestMeasurement, HostInfo, Limit};

    fn host(backend: Backend) -> HostInfo {
        HostInfo {
            backend,
            cpu_model: "Test CPU @ 3.0GHz".into(),
            kernel: "6.1.0-test".into(),
            kvm_api_version: 12,
            tsc_khz: Some(3_000_000),
            umip: true,
            tool_version: "0.1.0".into(),
            git_revision: Some("abc123".into()),
            capabilities: None,
        }
    }

    fn latency(ns: u64, count: u64) -> LatencySummary {
        LatencySummary {
            count,
            min: ns,
            p50: ns,
            p90: ns,
            p99: ns,
            max: ns,
            mean: ns as f64,
            buckets: vec![(ns.next_power_of_two() - 1, count)],
        }
    }

    /// A completed run with `exits` exits of `kind` (plus the final exit-port write).
    fn rec(mode: Mode, workload: &str, n: u64, exits: u64, kind: ExitKind) -> RunRecord {
        let mut r = RunRecord {
            mode,
            workload: workload.into(),
            params: BTreeMap::from([("n".to_string(), n)]),
            repeat: 0,
            options: Default::default(),
            host: host(Backend::KvmIntel),
            outcome: Outcome::Completed {
                exit_code: 0,
                result: n,
                ending: Ending::ExitPort,
            },
            exits: BTreeMap::from([(kind, exits)]),
            io_ports: BTreeMap::new(),
            traps: BTreeMap::new(),
            hypercalls: BTreeMap::new(),
            injections: 0,
            event_ns: BTreeMap::new(),
            expected: BTreeMap::from([(format!("exits:{kind}"), exits)]),
            mismatches: BTreeMap::new(),
            round_trip_ns: BTreeMap::from([(kind, latency(2000, exits))]),
            handler_ns: BTreeMap::from([(kind, latency(300, exits))]),
            guest: Some(GuestMeasurement {
                cycles: 1000 * n,
                ops: n,
                cycles_per_op: 1000.0,
                ns_per_op: Some(333.0),
            }),
            kvm_stats: BTreeMap::from([("insn_emulation".to_string(), 0)]),
            wall_ns: 1_000_000,
            console: String::new(),
            console_ok: Some(true),
            notes: Vec::new(),
            trace: Vec::new(),
            kernel_code_emulated: false,
            final_regs: None,
            peeks: Vec::new(),
        };
        if kind == ExitKind::Trap {
            r.traps.insert("out".into(), exits);
        }
        if kind == ExitKind::Hypercall {
            r.hypercalls.insert("console_write".into(), exits);
        }
        r
    }

    /// Two workloads in all three modes: pio exits by IoOut, traps or hypercalls.
    fn three_modes() -> Vec<RunRecord> {
        let mut v = Vec::new();
        for (w, n) in [("pio", 100), ("cpuid", 50)] {
            v.push(rec(Mode::HwAssisted, w, n, n, ExitKind::IoOut));
            v.push(rec(Mode::TrapEmulate, w, n, n, ExitKind::Trap));
            let mut pv = rec(Mode::Paravirt, w, n, n / 10, ExitKind::Hypercall);
            pv.guest.as_mut().unwrap().cycles_per_op = 250.0;
            v.push(pv);
        }
        v
    }

    fn svg_count(html: &str) -> usize {
        html.matches("<svg").count()
    }

    fn report(records: Vec<RunRecord>) -> Report {
        let mut r = Report::new(records, Vec::new());
        r.created_unix = 1_700_000_000;
        r
    }

    #[test]
    fn one_chart_per_metric_cycles_and_exit_kind() {
        let html = render(&report(three_modes()));
        // exits, traps, hypercalls; cycles/op; latency of IoOut, Hypercall, Trap.
        assert_eq!(svg_count(&html), 7);
        for id in [
            "chart-exits",
            "chart-traps",
            "chart-hypercalls",
            "chart-cycles",
            "chart-latency-IoOut",
            "chart-latency-Hypercall",
            "chart-latency-Trap",
        ] {
            assert_eq!(
                html.matches(&format!("<figure id=\"{id}\">")).count(),
                1,
                "{id}"
            );
        }
        assert_eq!(html.matches("<strong>What to notice.</strong>").count(), 7);
        assert!(html.contains("id=\"no-batching\""));
        assert!(html.contains("id=\"no-scaling\""));
        assert!(html.contains("id=\"no-problems\""));
        // Self-contained: nothing to fetch, nothing to run.
        for outside in ["<script", "<link", "src=", "href=", "url(", "@import"] {
            assert!(!html.contains(outside), "{outside}");
        }
    }

    #[test]
    fn charts_have_titles_axis_labels_and_legends() {
        let html = render(&report(three_modes()));
        for text in [
            "\nVM exits per workload, by mode\n</text>",
            "\nTraps per workload, by mode\n</text>",
            "\nHypercalls per workload, by mode\n</text>",
            "\nGuest cycles per operation, by workload and mode\n</text>",
            "\nIoOut exits: KVM_RUN round trip\n</text>",
            "\nexits per run (count, log scale)\n</text>",
            "\nTSC cycles per operation (log scale)\n</text>",
            "\nround trip (ns, log scale)\n</text>",
            "\nshare of exits (%)\n</text>",
            "\nworkload\n</text>",
            "\npio\n</text>",
            "\ncpuid\n</text>",
        ] {
            assert!(html.contains(text), "missing {text:?}");
        }
        // Each of the 7 charts has a legend entry per mode it shows: the bar charts and the
        // IoOut/Trap/Hypercall latency charts (one mode each).
        assert_eq!(html.matches("\nhw-assisted\n</text>").count(), 5);
        assert_eq!(html.matches("\ntrap-emulate\n</text>").count(), 5);
        assert_eq!(html.matches("\nparavirt\n</text>").count(), 5);
    }

    #[test]
    fn notices_compare_the_modes_from_the_data() {
        let html = render(&report(three_modes()));
        // Exits: every mode 100 for pio except paravirt with 10 hypercall exits.
        assert!(html.contains(
            "pio: hw-assisted and trap-emulate had the most exits (100), 10.0× as many as \
             paravirt (10)."
        ));
        assert!(html.contains(
            "cpuid: hw-assisted and trap-emulate had the most cycles per operation (1,000), \
             4.0× as many as paravirt (250)."
        ));
        // Every synthetic exit took 2 µs: bucket (1024, 2047].
        assert!(html.contains(
            "hw-assisted: median round trip 2.0 µs; 99% of the 150 exits (in 2 run(s)) took \
             under 2.0 µs."
        ));
        // hw-assisted made no trap: its bar is a drawn "0".
        assert!(html.contains(
            "pio: trap-emulate had the most traps (100), against none in hw-assisted and \
             paravirt (0)."
        ));
        assert!(html.contains("\n0\n</text>"));
    }

    #[test]
    fn many_workloads_get_a_summary_instead_of_one_sentence_each() {
        // Five workloads in two modes; trap-emulate makes more exits in four of them, and
        // the widest gap is w3 (40 against 2).
        let mut records = Vec::new();
        for (i, (hw, te)) in [(10, 20), (10, 30), (10, 40), (2, 40), (50, 5)]
            .into_iter()
            .enumerate()
        {
            let w = format!("w{i}");
            records.push(rec(Mode::HwAssisted, &w, 100, hw, ExitKind::IoOut));
            records.push(rec(Mode::TrapEmulate, &w, 100, te, ExitKind::Trap));
        }
        let html = render(&report(records));
        assert!(html.contains(
            "trap-emulate had the most exits in 4 and hw-assisted in 1 of the 5 workloads run \
             in several modes. The largest gap is in w3, where trap-emulate had \
             the most exits (40), 20.0× as many as hw-assisted (2)."
        ));
        assert!(!html.contains("w0: "));
    }

    #[test]
    fn emulation_warning_appears_exactly_when_it_should() {
        let warned = |records: Vec<RunRecord>| {
            render(&report(records))
                .matches("id=\"emulation-warning\"")
                .count()
        };
        assert_eq!(warned(three_modes()), 0);

        let mut pvm = three_modes();
        pvm[0].host.backend = Backend::KvmPvm;
        assert_eq!(warned(pvm), 1);

        let mut high = three_modes();
        high[0]
            .kvm_stats
            .insert("insn_emulation".into(), EMULATION_WARN_THRESHOLD);
        assert_eq!(warned(high.clone()), 0, "at the threshold: no warning");
        high[0]
            .kvm_stats
            .insert("insn_emulation".into(), EMULATION_WARN_THRESHOLD + 1);
        assert_eq!(warned(high.clone()), 1);
        let why = emulation_warning(&high).unwrap();
        assert_eq!(
            why,
            "KVM's insn_emulation statistic is high in 1 of 6 runs; the most, pio in \
             hw-assisted (n=100), emulated 1,001 instructions while the guest exited to the \
             monitor 100 times"
        );

        // Many exits, each with one emulated instruction (MMIO on VT-x): no warning.
        let mut mmio = three_modes();
        mmio[0].exits.insert(ExitKind::IoOut, 5000);
        mmio[0].kvm_stats.insert("insn_emulation".into(), 5000);
        assert_eq!(warned(mmio), 0);
    }

    #[test]
    fn strings_from_records_are_escaped() {
        let mut records = three_modes();
        let evil = "<script>alert('x')</script>";
        records[0].workload = evil.into();
        records[0].console = "</pre><b>bold & \"quoted\"</b>".into();
        records[0].outcome = Outcome::GuestFault {
            kind: FaultKind::Exception,
            rip: Some(0x1000),
            detail: "#GP <at> 0x1000".into(),
        };
        records[1].notes.push("<i>note</i>".into());
        let html = render(&report(records));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<b>"));
        assert!(!html.contains("<i>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("&lt;/pre&gt;&lt;b&gt;bold &amp; &quot;quoted&quot;&lt;/b&gt;"));
        assert!(html.contains("guest fault (Exception) at 0x1000: #GP &lt;at&gt; 0x1000"));
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }

    /// Paravirt pio with B = 1, 2, 4, 8: N/B hypercalls, cycles/op falling with B.
    fn b_sweep() -> Vec<RunRecord> {
        [1u64, 2, 4, 8]
            .into_iter()
            .map(|b| {
                let mut r = rec(Mode::Paravirt, "pio", 64, 64 / b, ExitKind::Hypercall);
                r.params.insert("b".into(), b);
                r.guest.as_mut().unwrap().cycles_per_op = 100.0 + 800.0 / b as f64;
                r
            })
            .collect()
    }

    #[test]
    fn a_b_sweep_draws_the_batching_charts() {
        let html = render(&report(b_sweep()));
        assert!(!html.contains("id=\"no-batching\""));
        assert_eq!(
            html.matches("<figure id=\"chart-batching-pio\">").count(),
            1
        );
        // hypercalls bar chart, exits, cycles, latency, and the batching pair.
        assert_eq!(svg_count(&html), 4 + 2);
        assert!(html.contains("\nMonitor events against B: pio (n=64)\n</text>"));
        assert!(html.contains("\nGuest cycles per operation against B: pio (n=64)\n</text>"));
        assert!(html.contains("\nbatch size B (log scale)\n</text>"));
        assert!(html.contains("\nparavirt hypercalls\n</text>"));
        assert!(html.contains(
            "paravirt: from B=1 to B=8, hypercalls went from 64 to 8 (8.0× fewer) and guest \
             cycles per operation went from 900 (B=1) to 200 (B=8)."
        ));
        // Without a sweep the section says which scenario produces one.
        let single = render(&report(b_sweep().into_iter().take(1).collect()));
        assert!(single.contains("id=\"no-batching\""));
        assert!(single.contains("<code>io-batching</code>"));
    }

    /// hw-assisted pio at N = 100…800, wall = 1500 ns × N + 20 µs, 3 repeats each with
    /// the middle one on the line.
    fn n_sweep() -> Vec<RunRecord> {
        let mut v = Vec::new();
        for n in [100u64, 200, 400, 800] {
            for (repeat, jitter) in [(0u32, 0i64), (1, -5000), (2, 9000)] {
                let mut r = rec(Mode::HwAssisted, "pio", n, n + 1, ExitKind::IoOut);
                r.repeat = repeat;
                r.wall_ns = (1500 * n as i64 + 20_000 + jitter) as u64;
                v.push(r);
            }
        }
        v
    }

    #[test]
    fn an_n_sweep_draws_the_scaling_charts_with_the_slope() {
        let html = render(&report(n_sweep()));
        assert!(!html.contains("id=\"no-scaling\""));
        assert_eq!(html.matches("<figure id=\"chart-scaling-pio\">").count(), 1);
        // exits, cycles, IoOut latency, and the scaling pair.
        assert_eq!(svg_count(&html), 3 + 2);
        assert!(html.contains(
            "<li class=\"slope\">hw-assisted: <strong>1,500 ns per iteration</strong> \
             (intercept 20.0 µs, R² = 1.0000); exits grow by 1 per iteration</li>"
        ));
        assert!(html.contains("\nhw-assisted: 1,500 ns/iteration\n</text>"));
        assert!(html.contains("\nhw-assisted: 1 exits/iteration\n</text>"));
        assert!(html.contains("\nWall time against N: pio\n</text>"));
        assert!(html.contains("\niterations N\n</text>"));
        assert!(html.contains("\nwall time per run (ms)\n</text>"));
        assert!(html.contains("<td class=\"ok\">ok ×12</td>"));
    }

    #[test]
    fn least_squares_is_exact_on_a_line() {
        let f = least_squares(&[(1.0, 5.0), (2.0, 7.0), (4.0, 11.0)]).unwrap();
        assert_eq!((f.slope, f.intercept, f.r2), (2.0, 3.0, 1.0));
        assert_eq!(least_squares(&[(1.0, 5.0)]), None);
        assert_eq!(least_squares(&[(1.0, 5.0), (1.0, 6.0)]), None);
    }

    #[test]
    fn repeats_give_median_min_and_max() {
        let s = Spread::of(vec![900.0, 100.0, 200.0]).unwrap();
        assert_eq!(
            s,
            Spread {
                median: 200.0,
                min: 100.0,
                max: 900.0,
                runs: 3
            }
        );
        assert_eq!(Spread::of(vec![1.0, 3.0]).unwrap().median, 2.0);
        // With spread, each bar gets a whisker: three more lines per bar than without.
        let mut records = three_modes();
        let single = render(&report(records.clone()));
        for c in [100.0, 900.0] {
            let mut r = records[0].clone();
            r.repeat += 1;
            r.guest.as_mut().unwrap().cycles_per_op = c;
            records.push(r);
        }
        let repeated = render(&report(records));
        let lines = |h: &str| h.matches("<polyline").count() + h.matches("<line").count();
        assert!(lines(&repeated) > lines(&single));
        assert!(repeated.contains("<td class=\"ok\">ok ×3</td>"));
    }

    #[test]
    fn expected_table_and_problems() {
        let mut records = three_modes();
        records[1].mismatches.insert("exits:Trap".into(), (100, 99));
        records[2].outcome = Outcome::Diverged {
            expected: "100".into(),
            got: "7".into(),
            why: "paravirt reads a virtual timer".into(),
            declared: true,
            host_caused: false,
            result: Some(7),
        };
        records[3].outcome = Outcome::TimedOut {
            limit: Limit::WallClock,
            rip: None,
        };
        let failures = vec![RunFailure {
            workload: "cpuid".into(),
            mode: "paravirt".into(),
            repeat: 1,
            error: "KVM_CREATE_VM: Cannot allocate memory".into(),
        }];
        let mut rep = Report::new(records, failures);
        rep.created_unix = 0;
        let html = render(&rep);
        assert_eq!(html.matches("<tr class=\"mismatch\">").count(), 1);
        assert!(html.contains(
            "<tr class=\"mismatch\"><td>pio</td><td>trap-emulate</td><td>n=100</td>\
             <td class=\"num\">0</td><td>exits:Trap</td><td class=\"num\">100</td>\
             <td class=\"num\">99</td><td>✗ differs</td></tr>"
        ));
        assert!(html.contains("<p>6 counts checked, 1 differ.</p>"));
        assert!(html.contains("diverged: expected 100, got 7. Why: paravirt reads a virtual timer"));
        assert!(html.contains("stopped at its limit (WallClock)"));
        assert!(html.contains("could not be run: KVM_CREATE_VM: Cannot allocate memory"));
        assert!(html.contains("<td class=\"bad\">counts differ</td>"));
        assert!(html.contains("<td class=\"bad\">failed, ok</td>"));
        assert!(html.contains("1970-01-01 00:00:00 UTC"));
    }

    #[test]
    fn banner_names_host_backend_and_tool() {
        let html = render(&report(three_modes()));
        assert!(html.contains("<dt>CPU</dt><dd>Test CPU @ 3.0GHz</dd>"));
        assert!(html.contains(&format!(
            "<dt>KVM backend</dt><dd><strong>kvm_intel</strong>: {}</dd>",
            Backend::KvmIntel.explanation()
        )));
        assert!(html.contains("<dt>TSC</dt><dd>3.000 GHz</dd>"));
        assert!(html.contains("(git revision abc123)"));
        assert!(html.contains("2023-11-14 22:13:20 UTC"));
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert!(!html.contains("id=\"interrupted\""));
        let mut r = report(three_modes());
        r.interrupted = true;
        assert!(render(&r).contains("<div class=\"warning\" id=\"interrupted\">"));
    }
}
