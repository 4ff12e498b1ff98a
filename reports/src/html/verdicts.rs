//! The top of the page: the verdict grid (workload × mode), every run that was not ok
//! with what differed — failures first, then the divergences the host caused, then the
//! declared ones — and, at the end, the notes from the runs.

use std::collections::{BTreeMap, BTreeSet};

use contract::Mode;
use maud::{html, Markup};

use crate::digest;
use crate::format::params_label;
use crate::table::what_differed;
use crate::verdict::{Class, Tally, Verdict};
use crate::Report;

/// Console output shown with a problem, at most (the rest is in results.json).
const CONSOLE_LIMIT: usize = 4000;

/// The verdicts of each workload × mode.
type Tallies = BTreeMap<(String, Mode), Tally>;

fn tallies(report: &Report) -> (Vec<String>, Vec<Mode>, Tallies) {
    let mut workloads = digest::workloads(&report.records);
    let mut modes: BTreeSet<Mode> = report.records.iter().map(|r| r.mode).collect();
    let mut t = Tallies::new();
    for r in &report.records {
        t.entry((r.workload.clone(), r.mode))
            .or_default()
            .add(Verdict::of(r));
    }
    for f in &report.failures {
        if !workloads.contains(&f.workload) {
            workloads.push(f.workload.clone());
        }
        modes.insert(f.mode);
        t.entry((f.workload.clone(), f.mode))
            .or_default()
            .add(Verdict::of_failure(f));
    }
    (workloads, modes.into_iter().collect(), t)
}

/// The grid: one row per workload, one column per mode, each cell its worst verdict in
/// words, coloured and marked by class.
pub fn grid(report: &Report) -> Markup {
    let (workloads, modes, t) = tallies(report);
    let classes: BTreeSet<Class> = t
        .values()
        .flat_map(|x| x.0.keys().map(|v| v.class()))
        .collect();
    let failing = t
        .values()
        .flat_map(|x| x.0.iter())
        .filter(|(v, _)| v.is_failure())
        .map(|(_, n)| n)
        .sum::<usize>();
    html! {
        h2 #summary { "Verdicts: workload × mode" }
        @if failing > 0 {
            p.v-failure #failing { strong { "✗ " (failing) " run(s) failed." } " They are listed first under Problems below." }
        }
        div.wrap {
            table.verdicts {
                tr { th { "workload" } @for m in &modes { th { (m.name()) } } }
                @for w in &workloads {
                    tr {
                        th { (w) }
                        @for m in &modes {
                            @match t.get(&(w.clone(), *m)) {
                                Some(tally) => {
                                    @let worst = tally.worst().unwrap_or(Verdict::Ok);
                                    td class=(format!("v-{}", worst.class().name())) title=(tally.label()) {
                                        (worst.symbol()) " " (tally.label())
                                    }
                                }
                                None => { td.absent { "not run" } }
                            }
                        }
                    }
                }
            }
        }
        ul.legend {
            @for c in [Class::Ok, Class::Expected, Class::Host, Class::Failure] {
                @if classes.contains(&c) {
                    li class=(format!("v-{}", c.name())) { (legend(c)) }
                }
            }
        }
    }
}

fn legend(c: Class) -> &'static str {
    match c {
        Class::Ok => "✓ ok: completed with the expected result and counts",
        Class::Expected => {
            "◆ diverged (expected): declared by the workload for this mode, with its reason"
        }
        Class::Host => {
            "▲ diverged (host): declared, and caused by an option this host cannot honour"
        }
        Class::Failure => "✗ failure: counts differ, wrong result, fault, timeout or VMM error",
    }
}

/// Every run that was not ok, failures first, each with what differed.
pub fn problems(report: &Report) -> Markup {
    let mut items: Vec<(Verdict, String, String, Option<String>)> = Vec::new();
    for r in &report.records {
        let v = Verdict::of(r);
        if v == Verdict::Ok {
            continue;
        }
        let who = format!(
            "{} in {} ({}, repeat {})",
            r.workload,
            r.mode,
            params_label(&r.params),
            r.repeat
        );
        let console = (!r.console.is_empty() && r.console_ok != Some(true)).then(|| {
            let mut shown: String = r.console.chars().take(CONSOLE_LIMIT).collect();
            if shown.len() < r.console.len() {
                shown.push_str("\n[… the rest is in results.json]");
            }
            shown
        });
        items.push((v, who, what_differed(r, v), console));
    }
    for f in &report.failures {
        items.push((
            Verdict::VmmError,
            format!("{} in {} (repeat {})", f.workload, f.mode, f.repeat),
            format!("could not be run: {}", f.error),
            None,
        ));
    }
    items.sort_by_key(|(v, ..)| std::cmp::Reverse(v.class()));
    html! {
        h2 #problems { "Problems and divergences" }
        @if items.is_empty() {
            p.v-ok #no-problems { "Every run completed with its expected result and counts." }
        } @else {
            ul.problems {
                @for (v, who, what, console) in &items {
                    li class=(format!("v-{}", v.class().name())) {
                        strong { (v.symbol()) " " (v.words()) } ": " strong { (who) } ": " (what)
                        @if let Some(c) = console {
                            details { summary { "console output" } pre { (c) } }
                        }
                    }
                }
            }
        }
    }
}

/// The notes of the runs: each kind once (notes that differ only in a number are one),
/// with how many runs it concerns and which.
pub fn notes(report: &Report) -> Markup {
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
    html! {
        @if !notes.is_empty() {
            h2 #notes { "Notes from the runs" }
            ul.notes {
                @for (_, n, runs, count) in &notes {
                    li {
                        (n) " "
                        span.params {
                            "("
                            @if *count > 1 { (count) " runs with notes like this one: " }
                            (runs.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
                            ")"
                        }
                    }
                }
            }
        }
    }
}
