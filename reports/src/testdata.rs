//! Synthetic records for the unit tests.

use std::collections::BTreeMap;

use contract::{
    Backend, CountKey, Ending, ExitKind, GuestMeasurement, HostInfo, LatencySummary, Mode, Outcome,
    RunRecord,
};

use crate::Report;

pub fn host(backend: Backend) -> HostInfo {
    HostInfo {
        backend,
        cpu_model: "Test CPU @ 3.0GHz".into(),
        kernel: "6.1.0-test".into(),
        kvm_api_version: 12,
        tsc_khz: Some(3_000_000),
        umip: true,
        tool_version: "0.1.0".into(),
        git_revision: Some("abc123".into()),
        capabilities: None,
        guest_mmu: None,
    }
}

pub fn latency(ns: u64, count: u64) -> LatencySummary {
    LatencySummary {
        count,
        min: ns,
        p50: ns,
        p90: ns,
        p99: ns,
        max: ns,
        mean: ns as f64,
        buckets: vec![(ns.next_power_of_two() - 1, count)],
    }
}

/// A completed run with `exits` exits of `kind`.
pub fn rec(mode: Mode, workload: &str, n: u64, exits: u64, kind: ExitKind) -> RunRecord {
    let mut r = RunRecord {
        mode,
        workload: workload.into(),
        params: BTreeMap::from([("n".to_string(), n)]),
        repeat: 0,
        options: Default::default(),
        host: host(Backend::KvmIntel),
        outcome: Outcome::Completed {
            exit_code: 0,
            result: n,
            ending: Ending::ExitPort,
        },
        exits: BTreeMap::from([(kind, exits)]),
        io_ports: BTreeMap::new(),
        traps: BTreeMap::new(),
        hypercalls: BTreeMap::new(),
        injections: 0,
        event_ns: BTreeMap::new(),
        expected: BTreeMap::from([(CountKey::Exits(kind), exits)]),
        mismatches: BTreeMap::new(),
        round_trip_ns: BTreeMap::from([(kind, latency(2000, exits))]),
        handler_ns: BTreeMap::from([(kind, latency(300, exits))]),
        guest: Some(GuestMeasurement {
            cycles: 1000 * n,
            ops: n,
            cycles_per_op: 1000.0,
            ns_per_op: Some(333.0),
        }),
        kvm_stats: BTreeMap::from([("insn_emulation".to_string(), 0)]),
        wall_ns: 1_000_000,
        console: String::new(),
        console_ok: Some(true),
        notes: Vec::new(),
        trace: Vec::new(),
        translation: BTreeMap::new(),
        device: BTreeMap::new(),
        memory: None,
        shadow: BTreeMap::new(),
        block_backend: None,
        kernel_code_emulated: false,
        final_regs: None,
        peeks: Vec::new(),
    };
    if kind == ExitKind::Trap {
        r.traps.insert("out".into(), exits);
    }
    if kind == ExitKind::Hypercall {
        r.hypercalls.insert("console_write".into(), exits);
    }
    r
}

/// Two workloads in all three modes: pio exits by IoOut, traps or hypercalls.
pub fn three_modes() -> Vec<RunRecord> {
    let mut v = Vec::new();
    for (w, n) in [("pio", 100), ("cpuid", 50)] {
        v.push(rec(Mode::HwAssisted, w, n, n, ExitKind::IoOut));
        v.push(rec(Mode::TrapEmulate, w, n, n, ExitKind::Trap));
        let mut pv = rec(Mode::Paravirt, w, n, n / 10, ExitKind::Hypercall);
        pv.guest.as_mut().unwrap().cycles_per_op = 250.0;
        v.push(pv);
    }
    v
}

/// A report of these records, stamped at a fixed time.
pub fn report(records: Vec<RunRecord>) -> Report {
    let mut r = Report::new(records, Vec::new());
    r.created_unix = 1_700_000_000;
    r
}

/// Paravirt pio with B = 1, 2, 4, 8: N/B hypercalls, cycles/op falling with B.
pub fn b_sweep() -> Vec<RunRecord> {
    [1u64, 2, 4, 8]
        .into_iter()
        .map(|b| {
            let mut r = rec(Mode::Paravirt, "pio", 64, 64 / b, ExitKind::Hypercall);
            r.params.insert("b".into(), b);
            r.guest.as_mut().unwrap().cycles_per_op = 100.0 + 800.0 / b as f64;
            r
        })
        .collect()
}

/// hw-assisted pio at N = 100…800, wall = 1500 ns × N + 20 µs, 3 repeats each with the
/// middle one on the line.
pub fn n_sweep() -> Vec<RunRecord> {
    let mut v = Vec::new();
    for n in [100u64, 200, 400, 800] {
        for (repeat, jitter) in [(0u32, 0i64), (1, -5000), (2, 9000)] {
            let mut r = rec(Mode::HwAssisted, "pio", n, n + 1, ExitKind::IoOut);
            r.repeat = repeat;
            r.wall_ns = (1500 * n as i64 + 20_000 + jitter) as u64;
            v.push(r);
        }
    }
    v
}

/// Three of the paper's nanobenchmarks in hw-assisted, binary-translation and paravirt:
/// pgfault faster in binary-translation (as the paper found), divzero faster in
/// binary-translation (the paper found hardware faster), pio without binary-translation.
pub fn nanobench() -> Vec<RunRecord> {
    let mut v = Vec::new();
    for (w, cycles) in [
        ("pgfault", [9_000.0, 3_000.0, 60_000.0]),
        ("divzero", [20_000.0, 5_000.0, 250_000.0]),
        ("pio", [36_000.0, f64::NAN, 180_000.0]),
    ] {
        for (m, c) in [Mode::HwAssisted, Mode::BinaryTranslation, Mode::Paravirt]
            .into_iter()
            .zip(cycles)
        {
            if c.is_nan() {
                continue;
            }
            let mut r = rec(m, w, 100, 1, ExitKind::IoOut);
            r.guest.as_mut().unwrap().cycles_per_op = c;
            v.push(r);
        }
    }
    v
}
