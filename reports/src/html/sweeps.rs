//! Sweeps: batching (monitor events and cycles per operation against B) and scaling
//! (wall time and exits against N, with the least-squares fits the terminal prints too).

use contract::Mode;
use maud::{html, Markup};

use super::charts::{line_chart, LineChart};
use super::Charts;
use crate::digest::{self, ScalingFit};
use crate::format::fmt_num;
use crate::sentences;
use crate::Report;

/// The batching section.
pub fn batching(report: &Report, charts: &mut Charts) -> Markup {
    let list = digest::sweeps(&report.records, "b");
    let mut figures = Vec::new();
    for s in &list {
        let modes = s.modes();
        let events: Vec<(Mode, Vec<_>)> = modes
            .iter()
            .map(|m| {
                let hc = s.uses_hypercalls(*m);
                (*m, s.points(*m, |r| Some(digest::monitor_events(r, hc))))
            })
            .filter(|(_, p)| p.len() >= 2)
            .collect();
        let cycles: Vec<(Mode, Vec<_>)> = modes
            .iter()
            .map(|m| (*m, s.points(*m, |r| r.guest.map(|g| g.cycles_per_op))))
            .filter(|(_, p)| p.len() >= 2)
            .collect();
        let label = |m: Mode| {
            if s.uses_hypercalls(m) {
                format!("{m} hypercalls")
            } else {
                format!("{m} exits")
            }
        };
        let title = s.label();
        let mut svgs = vec![(
            "events".to_string(),
            line_chart(&LineChart {
                title: &format!("Monitor events against B: {title}"),
                x_desc: "batch size B (log scale)",
                y_desc: "events per run (log scale)",
                series: &events,
                label: &label,
                log: true,
                fit: false,
            }),
        )];
        if !cycles.is_empty() {
            svgs.push((
                "cycles".to_string(),
                line_chart(&LineChart {
                    title: &format!("Guest cycles per operation against B: {title}"),
                    x_desc: "batch size B (log scale)",
                    y_desc: "TSC cycles per operation (log scale)",
                    series: &cycles,
                    label: &|m| m.to_string(),
                    log: true,
                    fit: false,
                }),
            ));
        }
        let mut notice: Vec<String> = modes
            .iter()
            .filter_map(|m| sentences::batching(s, *m))
            .map(|t| format!("{t}."))
            .collect();
        let batched = events
            .iter()
            .any(|(_, p)| p.last().map(|l| l.1.median) < p.first().map(|f| f.1.median));
        notice.push(if batched {
            "Batching pays where each monitor call has a fixed cost: the events fall as 1/B and \
             the per-operation cost falls towards the cost of the work itself."
                .into()
        } else {
            "No mode batches this workload: every operation still costs one monitor call \
             whatever B is (see the mode's documentation for why)."
                .into()
        });
        figures.push(charts.figure(
            &format!("chart-batching-{}", s.workload),
            svgs,
            &notice.join(" "),
            html! {},
        ));
    }
    html! {
        h2 #batching { "Batching: the effect of B" }
        @if list.is_empty() {
            p.absent #no-batching { "These runs have no sweep of the batch size B, so there is \
                no batching curve. The " code { "io-batching" } " scenario runs the batched \
                workloads with several B values and produces it." }
        } @else {
            p { "A paravirtual guest can hand the monitor B operations in one hypercall instead \
                 of one each. Left: monitor events per run (hypercalls for modes that make them, \
                 otherwise VM exits). Right: what one operation costs the guest. Dots are \
                 medians over repeats, whiskers span the fastest to the slowest repeat." }
            @for f in &figures { (f) }
        }
    }
}

/// The scaling section.
pub fn scaling(report: &Report, charts: &mut Charts) -> Markup {
    let list = digest::sweeps(&report.records, "n");
    let mut figures = Vec::new();
    for s in &list {
        let modes = s.modes();
        let wall: Vec<(Mode, Vec<_>)> = modes
            .iter()
            .map(|m| (*m, s.points(*m, |r| Some(r.wall_ns as f64 / 1e6))))
            .filter(|(_, p)| p.len() >= 2)
            .collect();
        let exits: Vec<(Mode, Vec<_>)> = modes
            .iter()
            .map(|m| (*m, s.points(*m, |r| Some(r.total_exits() as f64))))
            .filter(|(_, p)| p.len() >= 2)
            .collect();
        let fits: Vec<ScalingFit> = digest::scaling_fits(s);
        let fit_of = |m: Mode| fits.iter().find(|f| f.mode == m);
        let label = |m: Mode| match fit_of(m) {
            Some(f) => format!("{m}: {} ns/iteration", fmt_num(f.wall.slope)),
            None => m.to_string(),
        };
        let exit_label = |m: Mode| match fit_of(m).and_then(|f| f.exits) {
            Some(e) => format!("{m}: {} exits/iteration", fmt_num(e.slope)),
            None => m.to_string(),
        };
        let title = s.label();
        let svgs = vec![
            (
                "wall".to_string(),
                line_chart(&LineChart {
                    title: &format!("Wall time against N: {title}"),
                    x_desc: "iterations N",
                    y_desc: "wall time per run (ms)",
                    series: &wall,
                    label: &label,
                    log: false,
                    fit: true,
                }),
            ),
            (
                "exits".to_string(),
                line_chart(&LineChart {
                    title: &format!("VM exits against N: {title}"),
                    x_desc: "iterations N",
                    y_desc: "VM exits per run",
                    series: &exits,
                    label: &exit_label,
                    log: false,
                    fit: true,
                }),
            ),
        ];
        let slopes = html! {
            ul.slopes {
                @for f in &fits {
                    li.slope class=[(f.wall.r2 < 0.9).then_some("poor-fit")] { (sentences::scaling(f)) }
                }
            }
        };
        let mut notice: Vec<String> = Vec::new();
        if fits.is_empty() {
            notice.push(format!(
                "A line needs at least {} values of N to be fitted; these points are joined \
                 instead.",
                digest::MIN_FIT_POINTS
            ));
        }
        if let Some(f) = fits
            .iter()
            .filter(|f| f.wall.r2 >= 0.9)
            .max_by(|a, b| a.wall.slope.total_cmp(&b.wall.slope))
        {
            if fits.len() > 1 {
                notice.push(format!(
                    "The steepest line, {}, is the costliest per iteration.",
                    f.mode
                ));
            }
        }
        notice.push(
            "A slope is only as good as its fit: where R² is low, the points stray from the \
             line and the slope says little."
                .into(),
        );
        figures.push(charts.figure(
            &format!("chart-scaling-{}", s.workload),
            svgs,
            &notice.join(" "),
            slopes,
        ));
    }
    html! {
        h2 #scaling { "Scaling: cost against N" }
        @if list.is_empty() {
            p.absent #no-scaling { "These runs have no sweep of the iteration count N, so there \
                is no scaling curve. The " code { "scaling" } " scenario runs the workloads with \
                several N values and produces it." }
        } @else {
            p { "Each workload repeats its operation N times. If the cost of one operation is \
                 constant, wall time grows on a straight line whose slope is the cost per \
                 iteration. The lines are least-squares fits through the medians (dots), the \
                 same fits the terminal prints; whiskers span the fastest to the slowest \
                 repeat. Left: wall time; right: VM exits." }
            @for f in &figures { (f) }
        }
    }
}
