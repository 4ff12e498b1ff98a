//! The records, digested for every report: grouped by workload, parameters and mode;
//! counters by key; costs over repeats; latency pooled per exit kind; sweeps and their
//! fits. The terminal table, the HTML report and the comparisons all read these.

use std::collections::{BTreeMap, BTreeSet};

use contract::{CountKey, ExitKind, Mode, Outcome, RunRecord};

use crate::stats::{least_squares, Fit, Pooled, Spread};
use crate::verdict::{Tally, Verdict};

/// Parameters of a run (`n`, `b`, …).
pub type Params = BTreeMap<String, u64>;

/// The runs of one workload with one set of parameters in one mode (its repeats).
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// Workload name.
    pub workload: String,
    /// Its parameters.
    pub params: Params,
    /// The mode.
    pub mode: Mode,
    /// Where the disk's device model ran (runs with a disk).
    pub backend: Option<contract::BlockBackend>,
    /// The repeats, in order.
    pub runs: Vec<&'a RunRecord>,
}

impl Group<'_> {
    /// `pio (b=16, n=200)`; a disk backend other than the default inline one is named:
    /// `blk-virtio (n=16, q=32, s=65536) on kernel-notify`.
    pub fn label(&self) -> String {
        let label = crate::format::workload_label(&self.workload, &self.params);
        match self.backend {
            Some(b) if b != contract::BlockBackend::Inline => format!("{label} on {b}"),
            _ => label,
        }
    }

    /// The verdicts of its runs.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for r in &self.runs {
            t.add(Verdict::of(r));
        }
        t
    }
}

/// Groups records by workload, parameters, disk backend and mode, in the order they
/// first appear.
pub fn groups(records: &[RunRecord]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in records {
        match out.iter_mut().find(|g| {
            g.workload == r.workload
                && g.params == r.params
                && g.mode == r.mode
                && g.backend == r.block_backend
        }) {
            Some(g) => g.runs.push(r),
            None => out.push(Group {
                workload: r.workload.clone(),
                params: r.params.clone(),
                mode: r.mode,
                backend: r.block_backend,
                runs: vec![r],
            }),
        }
    }
    out
}

/// The workloads in the order they first appear.
pub fn workloads(records: &[RunRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if !out.contains(&r.workload) {
            out.push(r.workload.clone());
        }
    }
    out
}

/// The modes present, in report order.
pub fn modes(records: &[RunRecord]) -> Vec<Mode> {
    let set: BTreeSet<Mode> = records.iter().map(|r| r.mode).collect();
    set.into_iter().collect()
}

/// Whether the run reached its end (completed or diverged): its counts are whole.
pub fn finished(r: &RunRecord) -> bool {
    matches!(
        r.outcome,
        Outcome::Completed { .. } | Outcome::Diverged { .. }
    )
}

/// Every count a run made or was expected to make, by key: exits by kind, traps,
/// hypercalls, port accesses and injections. Counts that are zero and not expected are
/// left out, so two runs compare equal when they did the same things.
pub fn counters(r: &RunRecord) -> BTreeMap<CountKey, u64> {
    let mut out = BTreeMap::new();
    for (k, n) in &r.exits {
        out.insert(CountKey::Exits(*k), *n);
    }
    for (k, n) in &r.traps {
        out.insert(CountKey::Traps(k.clone()), *n);
    }
    for (k, n) in &r.hypercalls {
        out.insert(CountKey::Hypercalls(k.clone()), *n);
    }
    for (k, n) in &r.translation {
        out.insert(CountKey::Translation(k.clone()), *n);
    }
    for (k, n) in &r.shadow {
        out.insert(CountKey::Shadow(k.clone()), *n);
    }
    for (p, c) in &r.io_ports {
        if c.writes > 0 {
            out.insert(CountKey::PortWrites(*p), c.writes);
        }
        if c.reads > 0 {
            out.insert(CountKey::PortReads(*p), c.reads);
        }
    }
    if r.injections > 0 {
        out.insert(CountKey::Injections, r.injections);
    }
    for k in r.expected.keys() {
        out.entry(k.clone()).or_insert_with(|| k.measure(r));
    }
    out.retain(|k, v| *v > 0 || r.expected.contains_key(k));
    out
}

/// Total traps and hypercalls of a run.
pub fn traps(r: &RunRecord) -> u64 {
    r.traps.values().sum()
}

/// Total hypercalls of a run: the calls themselves (refused ones and multicall entries
/// included), not the counters of what they did that the record keeps beside them
/// (`direct_paging:*`, `mode:*`).
pub fn hypercalls(r: &RunRecord) -> u64 {
    r.hypercalls
        .iter()
        .filter(|(name, _)| !contract::abi::hypercall::is_counter(name))
        .map(|(_, n)| n)
        .sum()
}

/// The exit kind that dominates a set of runs: the most exits, counting only runs where
/// the kind exited at least twice (a lone exit is the run's end, not a cost of the work).
pub fn main_exit_kind(runs: &[&RunRecord]) -> Option<ExitKind> {
    let mut by_kind: BTreeMap<ExitKind, u64> = BTreeMap::new();
    for r in runs {
        for (k, l) in &r.round_trip_ns {
            if l.count >= 2 {
                *by_kind.entry(*k).or_default() += l.count;
            }
        }
    }
    by_kind.into_iter().max_by_key(|(_, n)| *n).map(|(k, _)| k)
}

/// What a group of repeats cost, each as a spread over the runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Costs {
    /// Wall time of a run, ns.
    pub wall_ns: Option<Spread>,
    /// The guest's TSC cycles per operation.
    pub cycles_per_op: Option<Spread>,
    /// The guest's time per operation, ns (from the TSC frequency).
    pub ns_per_op: Option<Spread>,
    /// The main exit kind and the spread of its per-run median round trip, ns.
    pub exit_p50: Option<(ExitKind, Spread)>,
    /// Same kind, per-run 99th percentile, ns.
    pub exit_p99: Option<(ExitKind, Spread)>,
}

/// The costs of the finished runs among `runs`.
pub fn costs(runs: &[&RunRecord]) -> Costs {
    let done: Vec<&RunRecord> = runs.iter().copied().filter(|r| finished(r)).collect();
    let spread = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
        Spread::of(&done.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let kind = main_exit_kind(&done);
    let per_kind = |q: fn(&contract::LatencySummary) -> u64| {
        kind.and_then(|k| {
            spread(&|r| {
                r.round_trip_ns
                    .get(&k)
                    .filter(|l| l.count >= 2)
                    .map(|l| q(l) as f64)
            })
            .map(|s| (k, s))
        })
    };
    Costs {
        wall_ns: spread(&|r| Some(r.wall_ns as f64)),
        cycles_per_op: spread(&|r| r.guest.map(|g| g.cycles_per_op)),
        ns_per_op: spread(&|r| r.guest.and_then(|g| g.ns_per_op)),
        exit_p50: per_kind(|l| l.p50),
        exit_p99: per_kind(|l| l.p99),
    }
}

/// One exit kind's round-trip latency pooled over runs, with the lone exits kept apart.
///
/// A run's exits of a kind are pooled only when the run made at least two of them. A
/// kind's lone exit in a run is nearly always the run's final exit (the exit-port write),
/// whose round trip spans everything the guest did since its previous exit — the whole
/// measured loop in a workload without other exits — so it is shown apart. The record
/// keeps latency as one histogram per kind, so where a run made several exits of the
/// kind, its final exit is among them (one of many, which moves no quantile).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindLatency {
    /// The pooled distribution of the runs with at least two exits of the kind.
    pub pooled: Pooled,
    /// How many runs it pools.
    pub runs: usize,
    /// The round trips of the lone exits, ns.
    pub lone: Vec<f64>,
}

/// Pools the round trips of `kind` over `runs`.
pub fn pooled_latency(runs: &[&RunRecord], kind: ExitKind) -> KindLatency {
    let mut out = KindLatency::default();
    for r in runs.iter().filter(|r| finished(r)) {
        match r.round_trip_ns.get(&kind) {
            Some(l) if l.count >= 2 => {
                out.pooled.add(&l.buckets);
                out.runs += 1;
            }
            Some(l) if l.count == 1 => out.lone.push(l.max as f64),
            _ => {}
        }
    }
    out
}

/// Runs of one workload that differ only in one parameter (`n` or `b`), grouped by the
/// others.
#[derive(Debug, Clone)]
pub struct Sweep<'a> {
    /// Workload.
    pub workload: String,
    /// The swept parameter.
    pub key: String,
    /// The parameters other than the swept one.
    pub rest: Params,
    /// The finished runs.
    pub runs: Vec<&'a RunRecord>,
}

impl Sweep<'_> {
    /// `pio (n=1024)`.
    pub fn label(&self) -> String {
        crate::format::workload_label(&self.workload, &self.rest)
    }

    /// The distinct values of the swept parameter, ascending.
    pub fn values(&self) -> Vec<u64> {
        let set: BTreeSet<u64> = self.runs.iter().map(|r| r.params[&self.key]).collect();
        set.into_iter().collect()
    }

    /// For one mode: (x, spread of y) for each distinct x, ascending.
    pub fn points(&self, mode: Mode, y: impl Fn(&RunRecord) -> Option<f64>) -> Vec<(f64, Spread)> {
        let mut by_x: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for r in self.runs.iter().filter(|r| r.mode == mode) {
            if let Some(v) = y(r) {
                by_x.entry(r.params[&self.key]).or_default().push(v);
            }
        }
        by_x.into_iter()
            .filter_map(|(x, v)| Spread::of(&v).map(|s| (x as f64, s)))
            .collect()
    }

    /// The modes in it, in report order.
    pub fn modes(&self) -> Vec<Mode> {
        let set: BTreeSet<Mode> = self.runs.iter().map(|r| r.mode).collect();
        set.into_iter().collect()
    }

    /// Whether a mode makes hypercalls here (its monitor events are hypercalls).
    pub fn uses_hypercalls(&self, mode: Mode) -> bool {
        self.runs
            .iter()
            .any(|r| r.mode == mode && !r.hypercalls.is_empty())
    }
}

/// The sweeps of `key` among the finished records: at least two distinct values in some
/// mode.
pub fn sweeps<'a>(records: &'a [RunRecord], key: &str) -> Vec<Sweep<'a>> {
    let mut out: Vec<Sweep<'a>> = Vec::new();
    for r in records.iter().filter(|r| finished(r)) {
        if !r.params.contains_key(key) {
            continue;
        }
        let mut rest = r.params.clone();
        rest.remove(key);
        match out
            .iter_mut()
            .find(|s| s.workload == r.workload && s.rest == rest)
        {
            Some(s) => s.runs.push(r),
            None => out.push(Sweep {
                workload: r.workload.clone(),
                key: key.to_string(),
                rest,
                runs: vec![r],
            }),
        }
    }
    out.retain(|s| {
        s.modes().iter().any(|m| {
            s.runs
                .iter()
                .filter(|r| r.mode == *m)
                .map(|r| r.params[key])
                .collect::<BTreeSet<_>>()
                .len()
                >= 2
        })
    });
    out
}

/// Monitor events of a run as a batching sweep counts them: hypercalls where the mode
/// makes them, otherwise VM exits.
pub fn monitor_events(r: &RunRecord, hypercall_mode: bool) -> f64 {
    if hypercall_mode {
        hypercalls(r) as f64
    } else {
        r.total_exits() as f64
    }
}

/// Fewest distinct N a scaling fit needs: through two points any line fits perfectly.
pub const MIN_FIT_POINTS: usize = 3;

/// The least-squares fit of one mode's median wall time (ns) against N in one sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingFit {
    /// The mode.
    pub mode: Mode,
    /// Wall time against N, in ns: slope = ns per iteration.
    pub wall: Fit,
    /// Exits against N: slope = exits per iteration.
    pub exits: Option<Fit>,
    /// Distinct N values it fits.
    pub points: usize,
}

/// The scaling fits of one N sweep, per mode with at least [`MIN_FIT_POINTS`] values.
pub fn scaling_fits(s: &Sweep) -> Vec<ScalingFit> {
    s.modes()
        .into_iter()
        .filter_map(|m| {
            let wall = s.points(m, |r| Some(r.wall_ns as f64));
            if wall.len() < MIN_FIT_POINTS {
                return None;
            }
            let medians: Vec<(f64, f64)> = wall.iter().map(|(x, p)| (*x, p.median)).collect();
            let exits: Vec<(f64, f64)> = s
                .points(m, |r| Some(r.total_exits() as f64))
                .iter()
                .map(|(x, p)| (*x, p.median))
                .collect();
            Some(ScalingFit {
                mode: m,
                wall: least_squares(&medians)?,
                exits: least_squares(&exits),
                points: medians.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::rec;

    #[test]
    fn groups_keep_disk_backends_apart_and_name_all_but_inline() {
        use contract::BlockBackend;
        let mut runs = Vec::new();
        for b in [
            BlockBackend::Inline,
            BlockBackend::KernelNotify,
            BlockBackend::Inline,
            BlockBackend::DriverDomain,
        ] {
            let mut r = rec(Mode::Paravirt, "blk-virtio", 4, 7, ExitKind::MmioWrite);
            r.block_backend = Some(b);
            runs.push(r);
        }
        let g = groups(&runs);
        assert_eq!(g.len(), 3);
        assert_eq!(
            g.iter().map(|g| g.runs.len()).collect::<Vec<_>>(),
            [2, 1, 1]
        );
        assert_eq!(g[0].label(), "blk-virtio (n=4)");
        assert_eq!(g[1].label(), "blk-virtio (n=4) on kernel-notify");
        assert_eq!(g[2].label(), "blk-virtio (n=4) on driver-domain");
    }

    #[test]
    fn counters_cover_every_kind_and_skip_unexpected_zeros() {
        let mut r = rec(Mode::HwAssisted, "pio", 10, 11, ExitKind::IoOut);
        r.io_ports.insert(
            0xe9,
            contract::PortCounts {
                reads: 0,
                writes: 10,
            },
        );
        r.expected.insert(CountKey::Traps("cli".into()), 0);
        let c = counters(&r);
        assert_eq!(c[&CountKey::Exits(ExitKind::IoOut)], 11);
        assert_eq!(c[&CountKey::PortWrites(0xe9)], 10);
        assert_eq!(c[&CountKey::Traps("cli".into())], 0);
        assert!(!c.contains_key(&CountKey::Injections));
    }

    #[test]
    fn lone_exits_are_kept_apart_from_the_pooled_latency() {
        let many = rec(Mode::HwAssisted, "pio", 100, 100, ExitKind::IoOut);
        let mut lone = rec(Mode::HwAssisted, "compute", 100, 1, ExitKind::IoOut);
        lone.round_trip_ns
            .insert(ExitKind::IoOut, crate::testdata::latency(1_500_000, 1));
        let l = pooled_latency(&[&many, &lone], ExitKind::IoOut);
        assert_eq!(l.runs, 1);
        assert_eq!(l.pooled.total(), 100);
        assert_eq!(l.lone, [1_500_000.0]);
        assert_eq!(main_exit_kind(&[&many, &lone]), Some(ExitKind::IoOut));
        assert_eq!(main_exit_kind(&[&lone]), None);
    }

    #[test]
    fn a_scaling_fit_needs_three_n_and_keeps_its_intercept() {
        let mut records = Vec::new();
        for n in [100u64, 200, 400] {
            let mut r = rec(Mode::HwAssisted, "pio", n, n + 1, ExitKind::IoOut);
            r.wall_ns = 1500 * n - 50_000;
            records.push(r);
        }
        let s = sweeps(&records, "n");
        assert_eq!(s.len(), 1);
        let f = scaling_fits(&s[0]);
        assert_eq!(f.len(), 1);
        assert!((f[0].wall.slope - 1500.0).abs() < 1e-9);
        assert!((f[0].wall.intercept + 50_000.0).abs() < 1e-6);
        assert!(scaling_fits(&sweeps(&records[..2], "n")[0]).is_empty());
    }
}
