//! What the report is about: one line under the title, the "interrupted" warning, and
//! the host in detail (after the verdicts) with the warning about emulated kernel code.

use std::collections::BTreeSet;

use contract::{HostInfo, RunRecord};
use maud::{html, Markup};

use crate::format::{group_digits, params_label, utc_date};
use crate::Report;

/// `insn_emulation` above this many (and above the run's own exit count) means KVM ran
/// guest code by emulation rather than on the CPU. On VT-x/SVM KVM emulates at most about
/// one instruction per exit to the VMM (MMIO, string I/O); a software backend emulates
/// every instruction of guest kernel code.
pub const EMULATION_WARN_THRESHOLD: u64 = 1000;

fn hosts(report: &Report) -> Vec<&HostInfo> {
    let mut out: Vec<&HostInfo> = Vec::new();
    for r in &report.records {
        let same = |h: &&HostInfo| {
            h.backend == r.host.backend
                && h.cpu_model == r.host.cpu_model
                && h.kernel == r.host.kernel
                && h.tsc_khz == r.host.tsc_khz
        };
        if !out.iter().any(same) {
            out.push(&r.host);
        }
    }
    out
}

/// The line under the title: how many runs, where, when; and the interrupted warning.
pub fn lead(report: &Report) -> Markup {
    let hosts: Vec<String> = hosts(report)
        .iter()
        .map(|h| format!("{} ({})", h.cpu_model, h.backend.name()))
        .collect();
    html! {
        p.lead {
            (report.records.len()) " runs recorded"
            @if !report.failures.is_empty() { ", " (report.failures.len()) " could not be carried out" }
            @if !hosts.is_empty() { " on " (hosts.join("; ")) }
            ", " (utc_date(report.created_unix)) "."
        }
        @if report.interrupted {
            div.warning #interrupted {
                strong { "Interrupted." }
                " The invocation was stopped before every planned run was made; this report \
                  holds the runs that finished."
            }
        }
    }
}

/// The host in detail, and the emulation warning.
pub fn banner(report: &Report) -> Markup {
    html! {
        h2 #host { "Host and tool" }
        section.banner {
            dl {
                @for h in hosts(report) {
                    dt { "CPU" } dd { (h.cpu_model) }
                    dt { "Kernel" } dd { (h.kernel) }
                    dt { "KVM backend" } dd { strong { (h.backend.name()) } ": " (h.backend.explanation()) }
                    @if let Some(mmu) = &h.guest_mmu {
                        dt { "Guest MMU under hw-assisted" } dd { (mmu) }
                    }
                    dt { "TSC" } dd { (h.tsc_khz.map_or("unknown".to_string(), |k| format!("{:.3} GHz", f64::from(k) / 1e6))) }
                    dt { "UMIP" } dd { (if h.umip { "yes" } else { "no" }) }
                }
                dt { "Tool" } dd { (report.tool) " " (report.version) " (git revision "
                    (report.git_revision.as_deref().unwrap_or("unknown")) ")" }
                dt { "Created" } dd { (utc_date(report.created_unix)) }
                dt { "Runs" } dd { (report.records.len()) " recorded, " (report.failures.len()) " could not be carried out" }
            }
        }
        @if let Some(why) = emulation_warning(&report.records) {
            div.warning #emulation-warning {
                strong { "Warning: guest kernel code was emulated." }
                " " (why) ". Guest code at CPL 0 did not run on the CPU but was interpreted by \
                 KVM one instruction at a time, so compute-heavy numbers of the modes that run \
                 guest kernel code (cycles per operation, wall time) are far higher here than \
                 on a host with VT-x or SVM; exit and trap counts are still exact."
            }
        }
    }
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
