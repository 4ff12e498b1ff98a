//! Expected against measured counts: the counts that differ in a table of their own at
//! the top, every count checked in a table that opens on demand (never a scroll box).

use contract::{CountKey, RunRecord};
use maud::{html, Markup};

use crate::format::{group_digits, params_label};
use crate::Report;

struct Line<'a> {
    r: &'a RunRecord,
    key: &'a CountKey,
    want: u64,
    got: u64,
    bad: bool,
}

fn lines(records: &[RunRecord]) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    for r in records {
        for (key, want) in &r.expected {
            let got = r
                .mismatches
                .get(key)
                .map_or_else(|| key.measure(r), |(_, got)| *got);
            out.push(Line {
                r,
                key,
                want: *want,
                got,
                bad: got != *want || r.mismatches.contains_key(key),
            });
        }
    }
    out
}

fn rows(lines: &[&Line]) -> Markup {
    html! {
        div.wrap {
            table.expected {
                tr { th { "workload" } th { "mode" } th { "parameters" } th { "repeat" } th { "counter" }
                     th { "expected" } th { "measured" } th {} }
                @for l in lines {
                    tr class=[l.bad.then_some("mismatch")] {
                        td { (l.r.workload) } td { (l.r.mode.name()) } td { (params_label(&l.r.params)) }
                        td.num { (l.r.repeat) } td { (l.key) }
                        td.num { (group_digits(l.want)) } td.num { (group_digits(l.got)) }
                        td { (if l.bad { "✗ differs" } else { "✓" }) }
                    }
                }
            }
        }
    }
}

/// The section.
pub fn table(report: &Report) -> Markup {
    let all = lines(&report.records);
    let bad: Vec<&Line> = all.iter().filter(|l| l.bad).collect();
    let every: Vec<&Line> = all.iter().collect();
    html! {
        h2 #expected { "Expected against measured counts" }
        p { "Each workload declares, per mode, exactly how many exits, traps, hypercalls and \
             port accesses it must cause (its " em { "oracle" } ")." }
        @if all.is_empty() {
            p.absent { "No run declared expected counts." }
        } @else {
            p #counts-checked { (group_digits(all.len() as u64)) " counts checked, "
                (group_digits(bad.len() as u64)) " differ." }
            @if !bad.is_empty() {
                h3 { "The counts that differ" }
                (rows(&bad))
            }
            details {
                summary { "Every count checked (" (all.len()) " rows)" }
                (rows(&every))
            }
        }
    }
}
