//! A comparison as a page: the inputs, one summary per input against the first, counts
//! and cost ratios per workload × mode, and across hosts a pooled table with one chart
//! per mode of the time per operation on each host.

use std::collections::BTreeMap;

use contract::CountKey;
use maud::{html, Markup};

use super::charts::{bar_chart, series_color, Bars};
use super::{document, Charts, Page};
use crate::compare::{Comparison, HostKey, Row};
use crate::format::{fmt_ns, fmt_percent, group_digits, utc_date};
use crate::stats::{Ratio, Spread};

fn ratio_cell(r: Option<Ratio>) -> Markup {
    match r {
        None => html! { td.absent { "·" } },
        Some(r) => {
            let class = if !r.exceeds(0.1) {
                ""
            } else if r.ratio > 1.0 {
                "v-host"
            } else {
                "v-ok"
            };
            html! {
                td.num class=(class) {
                    "×" (format!("{:.2}", r.ratio))
                    @if let Some(u) = r.uncertainty { " ±" (fmt_percent(u)) }
                }
            }
        }
    }
}

/// A row and its counters that differ: (key, value in a, value in b).
type Diffs<'a> = Vec<(&'a Row, Vec<(CountKey, u64, u64)>)>;

fn pair(c: &Comparison, a: usize, b: usize) -> Markup {
    let (la, lb) = (&c.inputs[a].letter, &c.inputs[b].letter);
    let diffs: Diffs = c
        .rows
        .iter()
        .filter_map(|r| {
            r.count_diffs(a, b)
                .filter(|d| !d.is_empty())
                .map(|d| (r, d))
        })
        .collect();
    html! {
        h2 id=(format!("pair-{lb}")) { (lb) " against " (la) }
        p.summary { (c.summary(a, b)) "." }
        div.wrap {
            table.pair {
                tr { th { "workload" } th { "mode" } th { "counts" }
                     th { "wall " (lb) "/" (la) } th { "per op " (lb) "/" (la) } th { "exit p50 " (lb) "/" (la) } }
                @for r in &c.rows {
                    tr {
                        td { (r.label()) } td { (r.mode.name()) }
                        @match r.count_diffs(a, b) {
                            None => { td.absent { "not in both" } }
                            Some(d) if d.is_empty() => { td.v-ok { "equal" } }
                            Some(d) => { td.v-failure { "✗ differ (" (d.len()) ")" } }
                        }
                        (ratio_cell(r.ratio(0, a, b)))
                        (ratio_cell(r.ratio(1, a, b)))
                        (ratio_cell(r.ratio(2, a, b)))
                    }
                }
            }
        }
        p.params { "Ratios of medians, " (lb) " over " (la) " (×2 = twice as long in " (lb)
            "), ± the robust spread of both sides propagated; no ± where a side ran once." }
        @if !diffs.is_empty() {
            h3 { "Counts that differ" }
            ul.problems {
                @for (r, d) in &diffs {
                    @for (key, x, y) in d {
                        li.v-failure { strong { "✗ " (r.label()) " in " (r.mode.name()) } ": " (key) " = "
                            (group_digits(*x)) " in " (la) ", " (group_digits(*y)) " in " (lb) }
                    }
                }
            }
        }
    }
}

fn cross_host(c: &Comparison, charts: &mut Charts) -> Markup {
    let hosts = c.hosts();
    let names: Vec<String> = (1..=hosts.len()).map(|i| format!("H{i}")).collect();
    let mut figures = Vec::new();
    for mode in contract::Mode::ALL {
        let rows: Vec<&Row> = c.rows.iter().filter(|r| r.mode == mode).collect();
        let mut values = BTreeMap::new();
        for (ci, r) in rows.iter().enumerate() {
            for (hi, h) in hosts.iter().enumerate() {
                if let Some(s) = r.host_cost(h) {
                    values.insert((ci, hi), s);
                }
            }
        }
        if values.is_empty() {
            continue;
        }
        let cats: Vec<String> = rows.iter().map(|r| r.workload.clone()).collect();
        let series: Vec<(String, plotters::style::RGBColor)> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("{} {}", names[i], h.backend), series_color(i)))
            .collect();
        let svg = bar_chart(&Bars {
            title: &format!("Guest time per operation in {mode}, by host"),
            x_desc: "workload",
            y_desc: "ns per operation (log scale)",
            categories: &cats,
            series: &series,
            values: &values,
        });
        figures.push(charts.figure(
            &format!("chart-hosts-{mode}"),
            vec![(String::new(), svg)],
            "The counts are the same on every host where the table says they agree; the bars \
             show what the same work costs on each.",
            html! {},
        ));
    }
    html! {
        h2 #hosts { "Across hosts" }
        ul { @for (i, h) in hosts.iter().enumerate() { li { strong { (names[i]) } " = " (h.label()) } } }
        div.wrap {
            table.hosts {
                tr { th { "workload" } th { "mode" } th { "counts" }
                     @for n in &names { th { (n) " per op" } } th { "max/min" } }
                @for r in &c.rows {
                    @let counts: Vec<_> = r.counts.iter().flatten().collect();
                    @let per: Vec<Option<Spread>> = hosts.iter().map(|h| r.host_cost(h)).collect();
                    @let medians: Vec<f64> = per.iter().flatten().map(|s| s.median).collect();
                    tr {
                        td { (r.label()) } td { (r.mode.name()) }
                        @if counts.len() < 2 { td.absent { "one input" } }
                        @else if counts.windows(2).all(|w| w[0] == w[1]) { td.v-ok { "agree" } }
                        @else { td.v-failure { "✗ differ" } }
                        @for s in &per {
                            @match s { Some(s) => { td.num { (fmt_ns(s.median)) } } None => { td.absent { "·" } } }
                        }
                        @if medians.len() >= 2 && medians.iter().all(|m| *m > 0.0) {
                            td.num { "×" (format!("{:.2}", medians.iter().copied().fold(0.0, f64::max)
                                / medians.iter().copied().fold(f64::INFINITY, f64::min))) }
                        } @else { td.absent { "·" } }
                    }
                }
            }
        }
        @for f in &figures { (f) }
    }
}

/// The comparison page and its charts.
pub fn page(c: &Comparison) -> Page {
    let mut charts = Charts::default();
    let cross = c.cross_host().then(|| cross_host(c, &mut charts));
    let html = document(
        "virtlab comparison",
        html! {
            h1 { "virtlab comparison" }
            p.lead { (c.inputs.len()) " results compared; the first is the reference." }
            ul.inputs {
                @for i in &c.inputs {
                    li { strong { (i.letter) } " = " code { (i.name) } ": " (i.runs) " runs, "
                        (utc_date(i.created_unix)) ", "
                        (i.hosts.iter().map(HostKey::label).collect::<Vec<_>>().join("; ")) }
                }
            }
            @for b in 1..c.inputs.len() { (pair(c, 0, b)) }
            @if let Some(x) = &cross { (x) }
            footer { "Made by virtlab " (env!("CARGO_PKG_VERSION")) " from the results.json files named above." }
        },
    );
    Page {
        html,
        charts: charts.0,
    }
}
