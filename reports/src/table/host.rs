//! The host-level record of a run of several VMs at once, as a table: each VM's CPU share
//! next to its weight's part, preemptions and wake-up latency, then Jain's index; under a
//! VMM scheduler a second table says what it granted against what the threads used.

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
    let slice = match host.scheduler {
        contract::SchedulerKind::Linux => String::new(),
        _ if !host.work_conserving => format!(
            ", slices of {} ms, not work-conserving (a vCPU in debt waits)",
            host.slice_ms
        ),
        _ => format!(", slices of {} ms", host.slice_ms),
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
    if host.scheduler != contract::SchedulerKind::Linux {
        render_grants(&mut out, host);
    }
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

/// Granted against used: each VM's part of the grants, the CPU its thread used while not
/// granted one (overrun), how long a preempted vCPU took to stop, and the CPU time
/// between two runs (one VM torn down, the next built).
fn render_grants(out: &mut String, host: &HostRecord) {
    let granted: u64 = host.vms.iter().map(|v| v.granted_ns).sum();
    let head = [
        "vm",
        "used",
        "granted",
        "used/granted",
        "overrun",
        "stop p50",
        "stop p99",
        "between runs p50",
    ];
    let mut rows = vec![head.iter().map(|h| Cell::plain(h.to_string())).collect()];
    let p50 = |l: &Option<contract::LatencySummary>| {
        l.as_ref().map_or("-".into(), |l| fmt_ns(l.p50 as f64))
    };
    let p99 = |l: &Option<contract::LatencySummary>| {
        l.as_ref().map_or("-".into(), |l| fmt_ns(l.p99 as f64))
    };
    for v in &host.vms {
        rows.push(
            [
                v.name.clone(),
                fmt_ns(v.cpu_ns as f64),
                if granted == 0 {
                    "-".into()
                } else {
                    format!(
                        "{} ({:.1}%)",
                        fmt_ns(v.granted_ns as f64),
                        v.granted_ns as f64 * 100.0 / granted as f64
                    )
                },
                if v.granted_ns == 0 {
                    "-".into()
                } else {
                    format!("{:.2}", v.cpu_ns as f64 / v.granted_ns as f64)
                },
                fmt_ns(v.overrun_ns as f64),
                p50(&v.stop_latency_ns),
                p99(&v.stop_latency_ns),
                p50(&v.between_runs_cpu_ns),
            ]
            .into_iter()
            .map(Cell::plain)
            .collect(),
        );
    }
    let _ = writeln!(out, "granted by the scheduler, used by the VM threads:");
    columns(out, &rows, 2, &Paint { color: false });
}

#[cfg(test)]
mod tests {
    use contract::metrics::Latency;
    use contract::{HostRecord, Mode, SchedulerKind, VmShare};

    use super::render_host;

    fn vm(name: &str, weight: u32, cpu_ms: u64, granted_ms: u64, share: f64) -> VmShare {
        let mut stop = Latency::new();
        stop.record(3_000_000);
        VmShare {
            name: name.into(),
            workload: "compute".into(),
            mode: Mode::TrapEmulate,
            weight,
            cap: 0,
            runs: 10,
            cpu_ns: cpu_ms * 1_000_000,
            share,
            target: f64::from(weight) / 3.0,
            granted_ns: granted_ms * 1_000_000,
            preemptions: 4,
            overrun_ns: 2_000_000,
            stop_latency_ns: Some(stop.summary()),
            between_runs_cpu_ns: None,
            wake_latency_ns: None,
        }
    }

    fn host(scheduler: SchedulerKind, work_conserving: bool) -> HostRecord {
        HostRecord {
            scheduler,
            cpus: 2,
            slice_ms: 10,
            wall_ns: 1_000_000_000,
            vms: vec![
                vm("a", 1, 100, 400, 1.0 / 3.0),
                vm("b", 2, 200, 1600, 2.0 / 3.0),
            ],
            fairness: 1.0,
            tolerance: 0.1,
            work_conserving,
            memory: None,
            timeline: Vec::new(),
        }
    }

    #[test]
    fn a_vmm_scheduler_adds_what_it_granted_against_what_was_used() {
        let out = render_host(&host(SchedulerKind::Credit, false));
        assert!(
            out.contains(
                "scheduler credit, slices of 10 ms, not work-conserving (a vCPU in debt \
                 waits), 1.0 s measured"
            ),
            "{out}"
        );
        let granted: Vec<String> = out
            .lines()
            .skip_while(|l| !l.starts_with("granted by the scheduler"))
            .skip(1)
            .take(3)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            granted,
            [
                "vm used granted used/granted overrun stop p50 stop p99 between runs p50",
                "a 100.00 ms 400.00 ms (20.0%) 0.25 2.00 ms 3.00 ms 3.00 ms -",
                "b 200.00 ms 1.60 s (80.0%) 0.12 2.00 ms 3.00 ms 3.00 ms -",
            ]
        );
        // Linux grants nothing: no such table, and no work-conserving note.
        let linux = render_host(&host(SchedulerKind::Linux, true));
        assert!(!linux.contains("granted by the scheduler"), "{linux}");
        assert!(!linux.contains("work-conserving"), "{linux}");
        let xen = render_host(&host(SchedulerKind::Credit, true));
        assert!(xen.contains("slices of 10 ms, 1.0 s measured"), "{xen}");
    }
}
