//! The HTML report: one self-contained page (its CSS inline, its charts inline SVG drawn
//! with plotters, no script, nothing fetched) that opens with the verdicts and what went
//! wrong, then the charts. Every chart is also written as an SVG file beside the page.
//!
//! The page is built with maud, which escapes every string from the records; the
//! sections live in one module each.
//!
//! ```
//! use reports::Report;
//!
//! let page = reports::html::page(&Report::new(Vec::new(), Vec::new()));
//! assert!(page.html.starts_with("<!DOCTYPE html>"));
//! assert!(page.html.contains("No run was recorded"));
//! ```

mod banner;
pub mod charts;
pub mod compare;
mod events;
mod expected;
pub mod host;
mod io;
mod latency;
mod paper;
mod sweeps;
mod verdicts;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::Report;

pub use banner::{emulation_warning, EMULATION_WARN_THRESHOLD};

/// The page's style sheet, inlined into every page.
pub const STYLE: &str = include_str!("style.css");

/// One chart: its id (also its file name, `ID.svg`) and its SVG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// `chart-exits`, `chart-latency-IoOut`, …
    pub id: String,
    /// The SVG document.
    pub svg: String,
}

/// A rendered page and the charts in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The HTML document.
    pub html: String,
    /// Its charts, each to be written as `ID.svg` beside the page.
    pub charts: Vec<Chart>,
}

/// The charts a page collects while its sections are rendered.
#[derive(Debug, Default)]
pub struct Charts(pub Vec<Chart>);

impl Charts {
    /// A figure with the chart `id` (kept for its own file), a "what to notice" sentence,
    /// extra markup under the chart, and a link to the chart's file.
    pub fn figure(
        &mut self,
        id: &str,
        svgs: Vec<(String, String)>,
        notice: &str,
        extra: Markup,
    ) -> Markup {
        let many = svgs.len() > 1;
        let mut files = Vec::new();
        let mut drawn = Vec::new();
        for (suffix, svg) in svgs {
            let chart_id = if suffix.is_empty() {
                id.to_string()
            } else {
                format!("{id}-{suffix}")
            };
            files.push(format!("{chart_id}.svg"));
            drawn.push(svg.clone());
            if svg.starts_with("<svg") {
                self.0.push(Chart { id: chart_id, svg });
            }
        }
        html! {
            figure id=(id) {
                @if many {
                    div.pair { @for svg in &drawn { div.chart { (PreEscaped(svg)) } } }
                } @else {
                    @for svg in &drawn { div.chart { (PreEscaped(svg)) } }
                }
                (extra)
                p.notice { strong { "What to notice." } " " (notice) }
                p.save { "Save: " @for (i, f) in files.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(f) download { (f) }
                } }
            }
        }
    }
}

/// The whole page of one report.
pub fn page(report: &Report) -> Page {
    let mut charts = Charts::default();
    let body = if report.records.is_empty() && report.failures.is_empty() {
        html! { p.absent { "No run was recorded in this report." } }
    } else {
        html! {
            (verdicts::grid(report))
            (verdicts::problems(report))
            (banner::banner(report))
            (host::section(report, &mut charts))
            (events::events(report, &mut charts))
            (events::cycles(report, &mut charts))
            (paper::section(report))
            (latency::section(report, &mut charts))
            (sweeps::batching(report, &mut charts))
            (sweeps::scaling(report, &mut charts))
            (io::section(report, &mut charts))
            (expected::table(report))
            (verdicts::notes(report))
        }
    };
    let html = document(
        "virtlab report",
        html! {
            h1 { "virtlab report" }
            (banner::lead(report))
            (body)
            footer {
                "Made by " (report.tool) " " (report.version) ". Every number on this page comes \
                 from the run records in results.json next to it."
            }
        },
    );
    Page {
        html,
        charts: charts.0,
    }
}

/// The page of one report, as HTML.
pub fn render(report: &Report) -> String {
    page(report).html
}

/// A whole document around `body`.
pub fn document(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests;
