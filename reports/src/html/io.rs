//! The disk: for each disk workload (and queue depth) swept over the request size S,
//! throughput, time per request and exits per KiB moved, one line per mode.

use std::collections::BTreeMap;

use contract::{BlockBackend, Mode, Outcome, RunRecord};
use maud::{html, Markup};

use super::charts::{line_chart, LineChart};
use super::Charts;
use crate::stats::Spread;
use crate::Report;

/// Bytes a disk run moved: N requests of S bytes written, then read back.
fn bytes(r: &RunRecord) -> Option<f64> {
    let (n, s) = (r.params.get("n")?, r.params.get("s")?);
    let b = 2 * n * s;
    (b > 0).then_some(b as f64)
}

fn throughput(r: &RunRecord) -> Option<f64> {
    (r.wall_ns > 0).then(|| bytes(r).map(|b| b / (r.wall_ns as f64 / 1e9) / f64::from(1 << 20)))?
}

fn per_request_us(r: &RunRecord) -> Option<f64> {
    let n = *r.params.get("n")?;
    (n > 0).then(|| r.wall_ns as f64 / 1e3 / (2 * n) as f64)
}

/// The median request's latency as the device measured it: from the doorbell (virtio)
/// or the command register's write (ATA) to the request's completion.
fn completion_p50_us(r: &RunRecord) -> Option<f64> {
    ["virtio:completion", "ata:completion"]
        .iter()
        .find_map(|k| r.event_ns.get(*k))
        .filter(|l| l.count > 0)
        .map(|l| l.p50 as f64 / 1e3)
}

fn exits_per_kib(r: &RunRecord) -> Option<f64> {
    bytes(r).map(|b| r.total_exits() as f64 / (b / 1024.0))
}

type Series = Vec<(Mode, Vec<(f64, Spread)>)>;

/// The runs drawn together: workload, queue depth (blk-virtio) and backend.
type GroupKey = (String, Option<u64>, Option<BlockBackend>);

/// Per mode, the spread of `metric` at each S.
fn series(runs: &[&RunRecord], metric: fn(&RunRecord) -> Option<f64>) -> Series {
    let mut by_mode: BTreeMap<Mode, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in runs {
        if let (Some(s), Some(v)) = (r.params.get("s"), metric(r)) {
            by_mode
                .entry(r.mode)
                .or_default()
                .entry(*s)
                .or_default()
                .push(v);
        }
    }
    by_mode
        .into_iter()
        .map(|(m, points)| {
            let p: Vec<(f64, Spread)> = points
                .into_iter()
                .filter_map(|(s, v)| Spread::of(&v).map(|sp| (s as f64, sp)))
                .collect();
            (m, p)
        })
        .filter(|(_, p)| p.len() >= 2)
        .collect()
}

/// The disk section; nothing when no disk workload was swept over S.
pub fn section(report: &Report, charts: &mut Charts) -> Markup {
    let mut groups: BTreeMap<GroupKey, Vec<&RunRecord>> = BTreeMap::new();
    for r in &report.records {
        if r.params.contains_key("s") && matches!(r.outcome, Outcome::Completed { .. }) {
            let key = (
                r.workload.clone(),
                r.params.get("q").copied(),
                r.block_backend,
            );
            groups.entry(key).or_default().push(r);
        }
    }
    let mut figures = Vec::new();
    for ((workload, q, backend), runs) in &groups {
        let tput = series(runs, throughput);
        if tput.is_empty() {
            continue;
        }
        let title = match q {
            Some(q) => format!("{workload} (q={q})"),
            None => workload.clone(),
        };
        // The default backend keeps the plain title and id; another is named in both.
        let other = backend.filter(|b| *b != BlockBackend::Inline);
        let title = match other {
            Some(b) => format!("{title}, {b} backend"),
            None => title,
        };
        let label = |m: Mode| m.to_string();
        let chart = |what: &str, y: &str, s: &Series| {
            line_chart(&LineChart {
                title: &format!("{what} against S: {title}"),
                x_desc: "request size S, bytes (log scale)",
                y_desc: y,
                series: s,
                label: &label,
                log: true,
                fit: false,
            })
        };
        // Records without the device's completion times (older ones) fall back to the
        // wall time over the requests.
        let completion = series(runs, completion_p50_us);
        let latency = if completion.is_empty() {
            chart(
                "Time per request",
                "µs per request (log scale)",
                &series(runs, per_request_us),
            )
        } else {
            chart(
                "Latency per request",
                "µs, doorbell or command to completion, p50 (log scale)",
                &completion,
            )
        };
        let svgs = vec![
            (
                "throughput".to_string(),
                chart("Throughput", "MiB/s moved (log scale)", &tput),
            ),
            ("latency".to_string(), latency),
            (
                "exits".to_string(),
                chart(
                    "Exits per KiB",
                    "exits per KiB moved (log scale)",
                    &series(runs, exits_per_kib),
                ),
            ),
        ];
        let notice = if workload == "blk-virtio" {
            "One doorbell per batch of Q requests, whatever S is: the exits per KiB fall as 1/S \
             and the throughput climbs until the guest's own work on the data dominates."
        } else {
            "Every register access is an exit or a trap, and the data goes through a register \
             too: the exits per KiB stay flat however large the requests, and so does the \
             throughput."
        };
        let id = match q {
            Some(q) => format!("chart-io-{workload}-q{q}"),
            None => format!("chart-io-{workload}"),
        };
        let id = match other {
            Some(b) => format!("{id}-{b}"),
            None => id,
        };
        figures.push(charts.figure(&id, svgs, notice, html! {}));
    }
    if figures.is_empty() {
        return html! {};
    }
    html! {
        h2 #io { "I/O: where the bytes go" }
        p { "The disk workloads write N requests of S bytes and read them back: an emulated \
             ATA disk driven register by register (blk-emulated) against virtio-blk's ring \
             with one doorbell per Q requests (blk-virtio). Throughput is the bytes moved \
             over the run's wall time; latency per request is the median request's time from \
             the doorbell (virtio) or the command (ATA) to its completion, as the device \
             measured it (results.json has each run's p50, p99 and max under event_ns). \
             See docs/io.md." }
        @for f in &figures { (f) }
    }
}

#[cfg(test)]
mod tests {
    use contract::ExitKind;

    use super::*;
    use crate::testdata::{rec, report};

    fn disk_run(
        mode: Mode,
        workload: &str,
        s: u64,
        q: Option<u64>,
        exits: u64,
        ms: u64,
    ) -> RunRecord {
        let mut r = rec(mode, workload, 4, exits, ExitKind::MmioWrite);
        r.params.insert("s".into(), s);
        if let Some(q) = q {
            r.params.insert("q".into(), q);
        }
        r.wall_ns = ms * 1_000_000;
        let mut l = contract::metrics::Latency::new();
        l.record(ms * 1000);
        let name = if workload == "blk-virtio" {
            "virtio:completion"
        } else {
            "ata:completion"
        };
        r.event_ns.insert(name.into(), l.summary());
        r
    }

    #[test]
    fn a_sweep_over_s_draws_throughput_latency_and_exits_per_kib() {
        let runs = vec![
            disk_run(Mode::Paravirt, "blk-virtio", 512, Some(4), 7, 1),
            disk_run(Mode::Paravirt, "blk-virtio", 65536, Some(4), 7, 4),
            disk_run(Mode::TrapEmulate, "blk-emulated", 512, None, 100, 8),
            disk_run(Mode::TrapEmulate, "blk-emulated", 65536, None, 9000, 800),
        ];
        let r = report(runs);
        let mut charts = Charts::default();
        let html = section(&r, &mut charts).into_string();
        assert!(html.contains("I/O: where the bytes go"));
        let ids: Vec<&str> = charts.0.iter().map(|c| c.id.as_str()).collect();
        for id in [
            "chart-io-blk-virtio-q4-throughput",
            "chart-io-blk-virtio-q4-latency",
            "chart-io-blk-virtio-q4-exits",
            "chart-io-blk-emulated-throughput",
        ] {
            assert!(ids.contains(&id), "{id}: {ids:?}");
        }
        // 2·4·65536 bytes in 4 ms: 125 MiB/s.
        let p = series(&r.records.iter().collect::<Vec<_>>(), throughput);
        let virtio = p.iter().find(|(m, _)| *m == Mode::Paravirt).unwrap();
        assert_eq!(virtio.1[1].0, 65536.0);
        assert!((virtio.1[1].1.median - 125.0).abs() < 1e-9);
        // The latency chart is the device's completion time, p50: 4 µs here (HDR's
        // three digits: within 0.1 %).
        let latency = charts
            .0
            .iter()
            .find(|c| c.id == "chart-io-blk-virtio-q4-latency")
            .unwrap();
        assert!(
            latency.svg.contains("Latency per request"),
            "{}",
            latency.svg
        );
        let l = series(&r.records.iter().collect::<Vec<_>>(), completion_p50_us);
        let virtio = l.iter().find(|(m, _)| *m == Mode::Paravirt).unwrap();
        assert!((virtio.1[1].1.median - 4.0).abs() < 0.004, "{:?}", virtio.1);
        // Without a sweep over S, no section at all.
        let single = report(vec![disk_run(
            Mode::Paravirt,
            "blk-virtio",
            512,
            Some(4),
            7,
            1,
        )]);
        assert!(section(&single, &mut Charts::default())
            .into_string()
            .is_empty());
    }
}
