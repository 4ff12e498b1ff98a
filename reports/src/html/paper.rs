//! "Adams & Agesen (ASPLOS 2006) beside this run": the paper's nanobenchmark orderings,
//! quoted with their source, next to the orderings this run measured. Shown only when the
//! run measured at least one of the paper's operations in two modes or more.

use contract::Mode;
use maud::{html, Markup};

use crate::format::{fmt_short, group_digits, params_label};
use crate::paper::{self, Row, Verdict};
use crate::Report;

fn cycles(c: Option<u32>) -> Markup {
    match c {
        Some(c) => html! { (group_digits(u64::from(c))) },
        None => html! { span.absent { "not stated" } },
    }
}

fn agreement_class(r: &Row) -> &'static str {
    match r.verdict {
        Verdict::Compared { agrees: true, .. } => "v-ok",
        Verdict::Compared { agrees: false, .. } => "v-host",
        Verdict::Missing(_) => "absent",
    }
}

/// The section, or nothing when the run has none of the paper's operations in two modes.
pub fn section(report: &Report) -> Markup {
    let rows = paper::rows(&report.records);
    if rows.is_empty() {
        return html! {};
    }
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| rows.iter().any(|r| r.median(*m).is_some()))
        .collect();
    let absent = paper::absent(&rows);
    html! {
        h2 #adams-agesen { "Adams & Agesen (ASPLOS 2006) beside this run" }
        p #paper-citation { (paper::CITATION) "." }
        p { "The paper compared VMware's software VMM (binary translation of the guest kernel) \
             with a VMM on first-generation VT-x, without nested paging. Here its software VMM \
             is " code { "binary-translation" } " and its hardware VMM is " code { "hw-assisted" }
             "; where a run has no binary-translation, the fastest other software mode stands \
             in and is named. " (paper::SOURCE) }
        p { "This run's columns are the median guest cycles per operation over the repeats; \
             an agreement is about the ordering (which VMM is faster), not about the cycles, \
             which belong to another machine and another decade." }
        p #paper-tally { (paper::tally_words(&rows)) "." }
        div.wrap {
            table.paper {
                tr {
                    th rowspan="2" { "operation (workload)" }
                    th colspan="4" { "the paper (cycles)" }
                    th colspan=(modes.len() + 2) { "this run (guest cycles per operation, median)" }
                    th rowspan="2" { "ordering" }
                }
                tr {
                    th { "native" } th { "software VMM" } th { "hardware VMM" } th { "faster" }
                    @for m in &modes { th { (m.name()) } }
                    th { "parameters" } th { "faster" }
                }
                @for r in &rows {
                    tr {
                        td { (r.finding.name) " (" code { (r.finding.workload) } ")" }
                        td.num { (cycles(r.finding.native)) }
                        td.num { (cycles(r.finding.software)) }
                        td.num { (cycles(r.finding.hardware)) }
                        td { (paper::paper_words(r.finding)) }
                        @for m in &modes {
                            td.num { @match r.median(*m) {
                                Some(v) => (fmt_short(v)),
                                None => span.absent { "—" },
                            } }
                        }
                        td { (params_label(&r.params)) }
                        td { (r.measured_words()) }
                        td class=(agreement_class(r)) { (r.agreement()) }
                    }
                }
            }
        }
        @if !absent.is_empty() {
            p.absent #paper-absent { "Not measured in two modes in this run: " (absent.join(", "))
                ". The " code { "nanobench" } " scenario runs them all." }
        }
        details {
            summary { "The paper's words, and how each factor follows from them" }
            dl.paper-words {
                @for r in &rows {
                    dt { (r.finding.name) }
                    dd { "\u{201c}" (r.finding.words) "\u{201d} " span.absent { "Factor: " (r.finding.basis) "." } }
                    dd { "This run, fastest first: " (r.ordering()) "." }
                }
            }
        }
    }
}
