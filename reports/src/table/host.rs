//! The host-level record of a run of several VMs at once, as a table: each VM's CPU share
//! next to its weight's part, preemptions and wake-up latency, then Jain's index.

use std::fmt::Write;

use contract::HostRecord;

use super::style::{columns, Cell, Paint};
use crate::format::fmt_ns;

/// The host-level table; empty when no VM ran.
pub fn render_host(host: &HostRecord) -> String {
    let mut out = String::new();
    if host.vms.is_empty() {
        return out;
    }
    let secs = host.wall_ns as f64 / 1e9;
    let slice = if host.scheduler == contract::SchedulerKind::Linux {
        String::new()
    } else {
        format!(", slices of {} ms", host.slice_ms)
    };
    let _ = writeln!(
        out,
        "\nhost: {} VMs on {} host CPUs, scheduler {}{slice}, {secs:.1} s measured",
        host.vms.len(),
        host.cpus,
        host.scheduler,
    );
    let head = [
        "vm", "workload", "mode", "weight", "cap", "runs", "share", "target", "ratio", "preempt",
        "wake p50", "wake p99",
    ];
    let mut rows = vec![head.iter().map(|h| Cell::plain(h.to_string())).collect()];
    for (i, v) in host.vms.iter().enumerate() {
        let (p50, p99) = v
            .wake_latency_ns
            .as_ref()
            .map_or(("-".into(), "-".into()), |w| {
                (fmt_ns(w.p50 as f64), fmt_ns(w.p99 as f64))
            });
        let ratio = if v.target > 0.0 {
            format!(
                "{:.2}{}",
                v.share / v.target,
                if host.within_tolerance(i) { "" } else { " !" }
            )
        } else {
            "-".into()
        };
        rows.push(
            [
                v.name.clone(),
                v.workload.clone(),
                v.mode.name().to_string(),
                v.weight.to_string(),
                if v.cap == 0 {
                    "-".into()
                } else {
                    format!("{}%", v.cap)
                },
                v.runs.to_string(),
                format!("{:.1}%", v.share * 100.0),
                format!("{:.1}%", v.target * 100.0),
                ratio,
                v.preemptions.to_string(),
                p50,
                p99,
            ]
            .into_iter()
            .map(Cell::plain)
            .collect(),
        );
    }
    columns(&mut out, &rows, 2, &Paint { color: false });
    let inside = (0..host.vms.len())
        .filter(|&i| host.within_tolerance(i))
        .count();
    let _ = writeln!(
        out,
        "shares within ±{:.0}% of their weight's part: {inside} of {}; fairness (Jain's \
         index of share/target): {:.3}",
        host.tolerance * 100.0,
        host.vms.len(),
        host.fairness
    );
    out
}
