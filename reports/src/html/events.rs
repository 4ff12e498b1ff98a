//! Exits, traps and hypercalls per workload, and the guest's cycles per operation: one bar
//! chart each, modes side by side, with a sentence comparing them.

use std::collections::{BTreeMap, BTreeSet};

use contract::{Mode, RunRecord};
use maud::{html, Markup};

use super::charts::{bar_chart, mode_color, Bars};
use super::Charts;
use crate::digest::{self, Params};
use crate::format::{fmt_num, params_label};
use crate::stats::Spread;
use crate::Report;

/// Per workload, the parameters the per-workload charts use: those run by the most modes
/// (the first seen on a tie).
pub fn chosen(records: &[RunRecord]) -> BTreeMap<String, Params> {
    let mut out = BTreeMap::new();
    for w in digest::workloads(records) {
        let mut candidates: Vec<(&Params, BTreeSet<Mode>)> = Vec::new();
        for r in records
            .iter()
            .filter(|r| r.workload == w && digest::finished(r))
        {
            match candidates.iter_mut().find(|(p, _)| **p == r.params) {
                Some((_, m)) => {
                    m.insert(r.mode);
                }
                None => candidates.push((&r.params, BTreeSet::from([r.mode]))),
            }
        }
        let mut best: Option<(&Params, usize)> = None;
        for (p, m) in &candidates {
            if best.is_none_or(|(_, n)| m.len() > n) {
                best = Some((p, m.len()));
            }
        }
        if let Some((p, _)) = best {
            out.insert(w, p.clone());
        }
    }
    out
}

/// The spread of `metric` over the chosen runs of each workload × mode.
fn values(
    report: &Report,
    workloads: &[String],
    modes: &[Mode],
    metric: &dyn Fn(&RunRecord) -> Option<f64>,
) -> BTreeMap<(usize, usize), Spread> {
    let chosen = chosen(&report.records);
    let mut out = BTreeMap::new();
    for (c, w) in workloads.iter().enumerate() {
        for (i, m) in modes.iter().enumerate() {
            let v: Vec<f64> = report
                .records
                .iter()
                .filter(|r| {
                    r.workload == *w
                        && r.mode == *m
                        && digest::finished(r)
                        && chosen.get(w) == Some(&r.params)
                })
                .filter_map(metric)
                .collect();
            if let Some(s) = Spread::of(&v) {
                out.insert((c, i), s);
            }
        }
    }
    out
}

fn params_note(report: &Report, workloads: &[String]) -> Markup {
    let chosen = chosen(&report.records);
    let parts: Vec<String> = workloads
        .iter()
        .filter_map(|w| chosen.get(w).map(|p| format!("{w} ({})", params_label(p))))
        .collect();
    html! {
        p.params { "Parameters: " (parts.join(", ")) ". Bars show the median over repeats; \
                   whiskers span the fastest to the slowest repeat." }
    }
}

fn series(modes: &[Mode]) -> Vec<(String, plotters::style::RGBColor)> {
    modes
        .iter()
        .map(|m| (m.name().to_string(), mode_color(*m)))
        .collect()
}

type Metric = (&'static str, &'static str, fn(&RunRecord) -> u64);

const EVENT_METRICS: [Metric; 3] = [
    ("VM exits", "exits", RunRecord::total_exits),
    ("Traps", "traps", digest::traps),
    ("Hypercalls", "hypercalls", digest::hypercalls),
];

/// The three event charts.
pub fn events(report: &Report, charts: &mut Charts) -> Markup {
    let workloads = digest::workloads(&report.records);
    let modes = digest::modes(&report.records);
    let any_finished = report.records.iter().any(digest::finished);
    let mut parts = Vec::new();
    for (title, short, metric) in EVENT_METRICS {
        if !any_finished {
            break;
        }
        let v = values(report, &workloads, &modes, &|r| Some(metric(r) as f64));
        if v.values().all(|s| s.max == 0.0) {
            let why = match short {
                "traps" => "traps come from the trap-emulate mode",
                "hypercalls" => "hypercalls come from the paravirt mode",
                _ => "every finished run left the guest at least once to report its end",
            };
            parts.push(html! { p.absent id=(format!("no-{short}")) { "No run recorded any " (short) ": " (why) "." } });
            continue;
        }
        let chart_title = format!("{title} per workload, by mode");
        let svg = bar_chart(&Bars {
            title: &chart_title,
            x_desc: "workload",
            y_desc: &format!("{short} per run (count, log scale)"),
            categories: &workloads,
            series: &series(&modes),
            values: &v,
        });
        let notice = format!(
            "{} The axis is logarithmic: each grid line is ten times the one below, so equal \
             steps mean equal ratios; a bar marked 0 had none.",
            compare_sentence(&workloads, &modes, &v, short, |x| fmt_num(x.round()))
        );
        parts.push(charts.figure(
            &format!("chart-{short}"),
            vec![(String::new(), svg)],
            &notice,
            params_note(report, &workloads),
        ));
    }
    html! {
        h2 #events { "Exits, traps and hypercalls per workload" }
        p { "Every time the guest needs the virtual machine monitor, the CPU leaves the guest: \
             a " em { "VM exit" } ". In trap-and-emulate a privileged instruction faults and is \
             emulated (a " em { "trap" } "); in paravirtualization the guest asks the monitor \
             directly (a " em { "hypercall" } "). Fewer events mean less overhead." }
        @if !any_finished { p.absent { "No run finished, so there is nothing to chart." } }
        @for p in &parts { (p) }
    }
}

/// The cycles-per-operation chart.
pub fn cycles(report: &Report, charts: &mut Charts) -> Markup {
    let modes = digest::modes(&report.records);
    let all = digest::workloads(&report.records);
    let v = values(report, &all, &modes, &|r| r.guest.map(|g| g.cycles_per_op));
    let measured: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(c, _)| (0..modes.len()).any(|i| v.contains_key(&(*c, i))))
        .map(|(_, w)| w.clone())
        .collect();
    let v = values(report, &measured, &modes, &|r| {
        r.guest.map(|g| g.cycles_per_op)
    });
    let body = if measured.is_empty() {
        html! { p.absent #no-cycles { "No finished run measured itself with RDTSC." } }
    } else {
        let svg = bar_chart(&Bars {
            title: "Guest cycles per operation, by workload and mode",
            x_desc: "workload",
            y_desc: "TSC cycles per operation (log scale)",
            categories: &measured,
            series: &series(&modes),
            values: &v,
        });
        let notice = format!(
            "{} A workload without sensitive instructions should cost the same in every mode; \
             the gaps elsewhere are the price of each exit, trap or hypercall.",
            compare_sentence(&measured, &modes, &v, "cycles per operation", fmt_num)
        );
        charts.figure(
            "chart-cycles",
            vec![(String::new(), svg)],
            &notice,
            params_note(report, &measured),
        )
    };
    html! {
        h2 #cycles { "Guest cycles per operation" }
        p { "The guest reads its time-stamp counter (RDTSC) before and after its measured loop \
             and divides by the number of operations: the cost of one operation as the guest \
             sees it, monitor included." }
        (body)
    }
}

/// The modes with the most and their value, the modes with the fewest and theirs.
type Gap = (String, f64, String, f64);

/// Compares the modes from the data: one sentence per workload when there are few,
/// otherwise which mode led how often and where the gap is widest.
fn compare_sentence(
    workloads: &[String],
    modes: &[Mode],
    values: &BTreeMap<(usize, usize), Spread>,
    what: &str,
    fmt: impl Fn(f64) -> String,
) -> String {
    // Per workload: the modes with the most and the fewest, or None when all are equal.
    let mut per: Vec<(String, Option<Gap>, f64)> = Vec::new();
    let mut leaders: BTreeMap<Mode, usize> = BTreeMap::new();
    for (c, w) in workloads.iter().enumerate() {
        let mut here: Vec<(Mode, f64)> = modes
            .iter()
            .enumerate()
            .filter_map(|(i, m)| values.get(&(c, i)).map(|s| (*m, s.median)))
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
            per.push((w.clone(), None, top));
            continue;
        }
        for (m, v) in &here {
            if *v == top {
                *leaders.entry(*m).or_default() += 1;
            }
        }
        per.push((w.clone(), Some((with(top), top, with(low), low)), top));
    }
    let describe = |(tm, t, lm, l): &Gap| {
        let ratio = if *l > 0.0 {
            format!("{:.1}× as many as", t / l)
        } else {
            "against none in".to_string()
        };
        format!(
            "{tm} had the most {what} ({}), {ratio} {lm} ({})",
            fmt(*t),
            fmt(*l)
        )
    };
    if per.is_empty() {
        let only: Vec<&str> = modes.iter().map(|m| m.name()).collect();
        return match only.as_slice() {
            [one] => format!("Only {one} ran, so there is no mode to compare with yet."),
            _ => {
                "No workload ran in more than one mode, so there is nothing to compare yet.".into()
            }
        };
    }
    if per.len() <= 3 {
        return per
            .iter()
            .map(|(w, gap, v)| match gap {
                Some(g) => format!("{w}: {}.", describe(g)),
                None => format!("{w}: every mode made {} {what}.", fmt(*v)),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut ranked: Vec<(Mode, usize)> = leaders.into_iter().collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    let mut parts: Vec<String> = ranked
        .iter()
        .enumerate()
        .map(|(i, (m, n))| {
            if i == 0 {
                format!("{m} had the most {what} in {n}")
            } else {
                format!("{m} in {n}")
            }
        })
        .collect();
    let last = parts.pop().unwrap_or_default();
    let mut text = if parts.is_empty() {
        last
    } else {
        format!("{} and {last}", parts.join(", "))
    };
    text.push_str(&format!(
        " of the {} workloads run in several modes.",
        per.len()
    ));
    let ratio = |g: &(String, f64, String, f64)| if g.3 > 0.0 { g.1 / g.3 } else { 0.0 };
    if let Some((w, Some(g), _)) = per.iter().filter(|p| p.1.is_some()).max_by(|a, b| {
        ratio(a.1.as_ref().unwrap_or(&Default::default()))
            .total_cmp(&ratio(b.1.as_ref().unwrap_or(&Default::default())))
    }) {
        text.push_str(&format!(
            " The largest gap is in {w}, where {}.",
            describe(g)
        ));
    }
    let same = per.iter().filter(|p| p.1.is_none()).count();
    if same > 0 {
        text.push_str(&format!(
            " In {same} workload(s) every mode made the same number of {what}."
        ));
    }
    text
}
