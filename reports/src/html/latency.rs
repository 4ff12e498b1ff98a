//! The latency of one exit, per exit kind: the pooled distribution of every run's
//! round trips, with each run's lone final exit kept apart, and a caption that quotes the
//! very distribution the chart draws.

use contract::{ExitKind, Mode};
use maud::{html, Markup};
use plotters::prelude::*;

use super::charts::{mode_color, svg};
use super::Charts;
use crate::digest::{self, KindLatency};
use crate::format::fmt_tick;
use crate::sentences;
use crate::Report;

const FONT: &str = "sans-serif";

/// The section.
pub fn section(report: &Report, charts: &mut Charts) -> Markup {
    let modes = digest::modes(&report.records);
    let finished: Vec<&contract::RunRecord> = report
        .records
        .iter()
        .filter(|r| digest::finished(r))
        .collect();
    let mut figures = Vec::new();
    let mut lone_only = Vec::new();
    for kind in ExitKind::ALL {
        let series: Vec<(Mode, KindLatency)> = modes
            .iter()
            .map(|m| {
                let runs: Vec<&contract::RunRecord> =
                    finished.iter().copied().filter(|r| r.mode == *m).collect();
                (*m, digest::pooled_latency(&runs, kind))
            })
            .filter(|(_, l)| l.pooled.total() > 0 || !l.lone.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let drawn: Vec<&(Mode, KindLatency)> = series
            .iter()
            .filter(|(_, l)| l.pooled.total() > 0)
            .collect();
        let notice: Vec<String> = series
            .iter()
            .filter_map(|(m, l)| sentences::latency(*m, kind, l))
            .collect();
        if drawn.is_empty() {
            lone_only.push(notice.join(" "));
            continue;
        }
        let title = format!("{kind} exits: KVM_RUN round trip");
        let chart = draw(&title, &drawn);
        let mut text = notice.join(" ");
        text.push_str(
            " A narrow peak means a steady cost; a long tail to the right means some exits \
             were delayed (host interrupts, scheduling).",
        );
        figures.push(charts.figure(
            &format!("chart-latency-{kind}"),
            vec![(String::new(), chart)],
            &text,
            html! {},
        ));
    }
    html! {
        h2 #latency { "Latency of one exit, per exit kind" }
        p { "For each exit the host times the whole " code { "KVM_RUN" } " round trip: from \
             entering the guest until the exit is handled and the guest may resume. Each point \
             is a power-of-two bucket: the share of exits that took up to that long, pooled \
             over every finished run of a mode. A run's only exit of a kind is left out: it is \
             almost always the run's last (the exit-port write), and its round trip spans \
             everything the guest did before it." }
        @if figures.is_empty() && lone_only.is_empty() {
            p.absent #no-latency { "No exit latency was recorded." }
        }
        div.grid { @for f in &figures { (f) } }
        @if !lone_only.is_empty() {
            h3 { "Exit kinds with only a final exit" }
            ul.lone { @for l in &lone_only { li { (l) } } }
        }
    }
}

fn draw(title: &str, series: &[&(Mode, KindLatency)]) -> String {
    let points: Vec<(Mode, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(m, l)| (*m, l.pooled.shares()))
        .collect();
    let xs = points.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    // Whole decades, so that the axis always has at least two labelled ticks.
    let x_lo = 10f64.powf(
        (xs.clone().fold(f64::INFINITY, f64::min) / 1.5)
            .log10()
            .floor(),
    );
    let x_hi = 10f64.powf((xs.fold(0.0, f64::max) * 1.5).log10().ceil());
    svg((620, 420), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(14)
            .x_label_area_size(56)
            .y_label_area_size(72)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..118f64)?;
        chart
            .configure_mesh()
            .x_desc("round trip (ns, log scale)")
            .y_desc("share of exits (%)")
            .x_label_formatter(&|x| fmt_tick(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 18))
            .axis_desc_style((FONT, 20))
            .draw()?;
        for (m, pts) in &points {
            let color = mode_color(*m);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(m.name())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3))
                });
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 20))
            .draw()?;
        Ok(())
    })
}
