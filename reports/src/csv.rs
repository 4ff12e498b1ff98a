//! Tidy CSV: one observation per row, so pandas, R or a spreadsheet read it directly.
//!
//! `metric` is one of `exits`, `traps`, `hypercalls`, `translation` (a translating
//! engine's counters: `blocks`, `chains`, `lookups`, …), `shadow` (a shadow MMU's:
//! `hidden_faults`, `pages_built`, …), `device` (the disk's counters:
//! `virtio:notifications`, `ata:commands`, `virtio:bytes_read`, …), `expected`,
//! `guest_cycles_per_op`,
//! `latency_ns_p50`, `latency_ns_p99` (and for a device's or the VMM's own timings,
//! `latency_ns_max` and `latency_samples`), `wall_ns`, `block_backend` (a disk run's
//! device-model placement, the kind), `kvm_stat`, `option`, `capability`,
//! `verdict`, `result_ok`. `kind` is the exit kind (`IoOut`, `MmioRead`, … and
//! `IoOut:0xe9` for one port), the trap mnemonic, the hypercall name, the KVM statistic,
//! for `expected` the oracle key (`exits:IoOut`, `port_writes:0xe9`, `traps:cli`,
//! `hypercalls:console_write`, `injections`), and for `verdict` the run's
//! [`Verdict`](crate::verdict::Verdict) (`ok`, `declared-divergence`, `counts-differ`, …),
//! the same one the table and the HTML report show. docs/outputs.md has the whole list.

use std::io::Write;

use contract::{Outcome, RunRecord};

use crate::Result;

/// The header, exactly.
pub const CSV_HEADER: &str = "workload,mode,backend,param_n,param_b,repeat,metric,kind,value,unit";

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// The record it came from.
    pub record: &'a RunRecord,
    /// Metric name.
    pub metric: &'static str,
    /// Kind within the metric.
    pub kind: String,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
}

/// Every row of one record.
pub fn rows(r: &RunRecord) -> Vec<Row<'_>> {
    let mut out = Vec::new();
    let mut push = |metric, kind: String, value: f64, unit| {
        out.push(Row {
            record: r,
            metric,
            kind,
            value,
            unit,
        });
    };
    for (kind, n) in &r.exits {
        push("exits", kind.name().to_string(), *n as f64, "count");
    }
    for (port, c) in &r.io_ports {
        if c.writes > 0 {
            push(
                "exits",
                format!("IoOut:{port:#x}"),
                c.writes as f64,
                "count",
            );
        }
        if c.reads > 0 {
            push("exits", format!("IoIn:{port:#x}"), c.reads as f64, "count");
        }
    }
    for (m, n) in &r.traps {
        push("traps", m.clone(), *n as f64, "count");
    }
    for (h, n) in &r.hypercalls {
        push("hypercalls", h.clone(), *n as f64, "count");
    }
    for (t, n) in &r.translation {
        push("translation", t.clone(), *n as f64, "count");
    }
    for (t, n) in &r.shadow {
        push("shadow", t.clone(), *n as f64, "count");
    }
    for (d, n) in &r.device {
        push("device", d.clone(), *n as f64, "count");
    }
    for (k, n) in &r.expected {
        push("expected", k.to_string(), *n as f64, "count");
    }
    if let Some(g) = &r.guest {
        push(
            "guest_cycles_per_op",
            "tsc".into(),
            g.cycles_per_op,
            "cycles",
        );
    }
    for (kind, l) in &r.round_trip_ns {
        push(
            "latency_ns_p50",
            kind.name().to_string(),
            l.p50 as f64,
            "ns",
        );
        push(
            "latency_ns_p99",
            kind.name().to_string(),
            l.p99 as f64,
            "ns",
        );
    }
    for (name, l) in &r.event_ns {
        push("latency_ns_p50", name.clone(), l.p50 as f64, "ns");
        push("latency_ns_p99", name.clone(), l.p99 as f64, "ns");
        push("latency_ns_max", name.clone(), l.max as f64, "ns");
        push("latency_samples", name.clone(), l.count as f64, "count");
    }
    push("wall_ns", "run".into(), r.wall_ns as f64, "ns");
    if let Some(b) = r.block_backend {
        push("block_backend", b.name().into(), 1.0, "bool");
    }
    for (s, v) in &r.kvm_stats {
        push("kvm_stat", s.clone(), *v as f64, "count");
    }
    // Host-dependent options, as asked for and as in effect, and what the host was
    // measured to do: data, so that runs with and without an option can be told apart.
    for (name, s) in r.options.rows() {
        push(
            "option",
            format!("{name}.requested"),
            f64::from(u8::from(s.requested)),
            "bool",
        );
        push(
            "option",
            format!("{name}.effective"),
            f64::from(u8::from(s.effective)),
            "bool",
        );
    }
    if let Some(caps) = &r.host.capabilities {
        for (name, p) in caps.rows() {
            if let Some(present) = p.present {
                push(
                    "capability",
                    name.into(),
                    f64::from(u8::from(present)),
                    "bool",
                );
            }
        }
    }
    let verdict = crate::verdict::Verdict::of(r);
    push(
        "verdict",
        verdict.slug().into(),
        f64::from(u8::from(!verdict.is_failure())),
        "bool",
    );
    let completed = matches!(r.outcome, Outcome::Completed { .. });
    push(
        "result_ok",
        "result".into(),
        f64::from(u8::from(completed)),
        "bool",
    );
    push(
        "result_ok",
        "counts".into(),
        f64::from(u8::from(r.mismatches.is_empty())),
        "bool",
    );
    if let Some(ok) = r.console_ok {
        push(
            "result_ok",
            "console".into(),
            f64::from(u8::from(ok)),
            "bool",
        );
    }
    out
}

/// Writes the header and every row of every record.
pub fn write(records: &[RunRecord], w: impl Write) -> Result<()> {
    let mut csv = ::csv::Writer::from_writer(w);
    csv.write_record(CSV_HEADER.split(','))?;
    for r in records {
        let n = r.params.get("n").map(u64::to_string).unwrap_or_default();
        let b = r.params.get("b").map(u64::to_string).unwrap_or_default();
        let repeat = r.repeat.to_string();
        for row in rows(r) {
            csv.write_record([
                r.workload.as_str(),
                r.mode.name(),
                r.host.backend.name(),
                &n,
                &b,
                &repeat,
                row.metric,
                &row.kind,
                &format_value(row.value),
                row.unit,
            ])?;
        }
    }
    csv.flush().map_err(::csv::Error::from)?;
    Ok(())
}

/// The rows of a host-level record, without a header (they follow the records' rows):
/// per VM (`workload` and `mode` the VM's, `repeat` its index in the run) metric `host`
/// with kinds `weight`, `cap`, `runs`, `cpu_ns`, `share`, `target`, `preemptions`,
/// `granted_ns`, `overrun_ns`, `wake_ns_p50`, `wake_ns_p99`, `stop_ns_p50`, `stop_ns_p99`,
/// `between_runs_cpu_ns_p50`; then one row `host,<scheduler>,…,fairness,jain`; then
/// the shares over time (metric `host-timeline`, kind `cpu_ns@T`) and the memory (metric
/// `memory`: KSM's peak, the swap budget, `rss_anon_kib@T`, `ksm_pages_sharing@T`).
pub fn write_host(host: &contract::HostRecord, w: impl Write) -> Result<()> {
    let mut csv = ::csv::Writer::from_writer(w);
    for (i, vm) in host.vms.iter().enumerate() {
        let mut values = vec![
            ("weight", f64::from(vm.weight), "count"),
            ("cap", f64::from(vm.cap), "percent"),
            ("runs", f64::from(vm.runs), "count"),
            ("cpu_ns", vm.cpu_ns as f64, "ns"),
            ("share", vm.share, "ratio"),
            ("target", vm.target, "ratio"),
            ("preemptions", vm.preemptions as f64, "count"),
            ("granted_ns", vm.granted_ns as f64, "ns"),
            ("overrun_ns", vm.overrun_ns as f64, "ns"),
        ];
        if let Some(w) = &vm.wake_latency_ns {
            values.push(("wake_ns_p50", w.p50 as f64, "ns"));
            values.push(("wake_ns_p99", w.p99 as f64, "ns"));
        }
        if let Some(s) = &vm.stop_latency_ns {
            values.push(("stop_ns_p50", s.p50 as f64, "ns"));
            values.push(("stop_ns_p99", s.p99 as f64, "ns"));
        }
        if let Some(b) = &vm.between_runs_cpu_ns {
            values.push(("between_runs_cpu_ns_p50", b.p50 as f64, "ns"));
        }
        let repeat = i.to_string();
        for (kind, value, unit) in values {
            csv.write_record([
                vm.workload.as_str(),
                vm.mode.name(),
                "",
                "",
                "",
                &repeat,
                "host",
                kind,
                &format_value(value),
                unit,
            ])?;
        }
    }
    csv.write_record([
        "host",
        host.scheduler.name(),
        "",
        "",
        "",
        "",
        "fairness",
        "jain",
        &format_value(host.fairness),
        "ratio",
    ])?;
    // Shares over time: per VM, one row per sample of its CPU time (kind `cpu_ns@T`, T in
    // ms since the window began).
    for sample in &host.timeline {
        for (i, (vm, ns)) in host.vms.iter().zip(&sample.cpu_ns).enumerate() {
            csv.write_record([
                vm.workload.as_str(),
                vm.mode.name(),
                "",
                "",
                "",
                &i.to_string(),
                "host-timeline",
                &format!("cpu_ns@{}", sample.t_ms),
                &format_value(*ns as f64),
                "ns",
            ])?;
        }
    }
    // Memory: KSM's peak, each VM's budget, and resident memory over time.
    if let Some(m) = &host.memory {
        let mut rows = vec![
            (
                "ksm_pages_shared_peak".to_string(),
                m.ksm_peak.0 as f64,
                "pages",
            ),
            (
                "ksm_pages_sharing_peak".to_string(),
                m.ksm_peak.1 as f64,
                "pages",
            ),
        ];
        if let Some(b) = m.budget_pages_per_vm {
            rows.push(("budget_pages_per_vm".into(), b as f64, "pages"));
        }
        for s in &m.samples {
            rows.push((
                format!("rss_anon_kib@{}", s.t_ms),
                s.rss_anon_kib as f64,
                "KiB",
            ));
            rows.push((
                format!("ksm_pages_sharing@{}", s.t_ms),
                s.pages_sharing as f64,
                "pages",
            ));
        }
        for (kind, value, unit) in rows {
            csv.write_record([
                "host",
                host.scheduler.name(),
                "",
                "",
                "",
                "",
                "memory",
                &kind,
                &format_value(value),
                unit,
            ])?;
        }
    }
    csv.flush().map_err(::csv::Error::from)?;
    Ok(())
}

/// Integers without a fraction, others with up to 3 decimals.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}
