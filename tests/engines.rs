//! One suite over every engine: every workload of the catalog in every engine of this
//! build, judged by its oracle exactly, with the same result and console in every mode
//! except where a mode declares its divergence. Iteration counts come from one table.
//! Engine crates keep the tests of their own mechanisms (traps, hypercalls, isolation).

use contract::abi::{hypercall, port};
use contract::{CountKey, Engine, ExitKind, Mode, Outcome, RunOptions, RunRecord};
use guests::{Params, WORKLOADS};

/// Iterations per workload: enough for every count to mean something, few enough for a
/// host that emulates kernel code (a trap costs 20–50 µs there).
fn n_for(workload: &str) -> u64 {
    match workload {
        "compute" | "call-ret" => 1000,
        "hlt-timer" | "divzero" | "popf" => 50,
        _ => 100,
    }
}

fn run(engine: &dyn Engine, workload: &str, n: u64, opts: &RunOptions) -> RunRecord {
    let image = guests::build(
        workload,
        engine.flavour(),
        Params {
            n,
            ..Params::default()
        },
    )
    .unwrap_or_else(|e| panic!("{workload}: {e}"));
    engine
        .run(&image, opts)
        .unwrap_or_else(|e| panic!("{workload} in {}: the VMM failed: {e}", engine.mode()))
}

/// The result a run produced, divergent or not.
fn result_of(r: &RunRecord) -> Option<u64> {
    match &r.outcome {
        Outcome::Completed { result, .. } => Some(*result),
        Outcome::Diverged { result, .. } => *result,
        _ => None,
    }
}

/// Which divergence this host and these options make a mode declare for a workload.
fn declared_divergence(workload: &str, mode: Mode, opts: &RunOptions) -> Option<bool> {
    let faulting = opts.cpuid_faulting
        && machine::caps::probe()
            .expect("probe")
            .cpuid_faulting
            .is_present();
    match (workload, mode) {
        ("popf", Mode::TrapEmulate) => Some(false),
        // CPUID joins the hole where faulting is not in effect; the host is the cause when
        // faulting was asked for.
        ("cpuid", Mode::TrapEmulate) if !faulting => Some(opts.cpuid_faulting),
        _ => None,
    }
}

fn check_everywhere(opts: &RunOptions) {
    let engines = virtlab::engines::all();
    for w in WORKLOADS {
        let n = n_for(w.name);
        let mut seen: Vec<(Mode, Option<u64>, String)> = Vec::new();
        for engine in &engines {
            let mode = engine.mode();
            let r = run(*engine, w.name, n, opts);
            let what = format!("{} (n={n}) in {mode}", w.name);
            assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
            assert!(!r.expected.is_empty(), "{what}: no oracle");
            assert_ne!(r.console_ok, Some(false), "{what}: console {:?}", r.console);
            match (declared_divergence(w.name, mode, opts), &r.outcome) {
                (None, Outcome::Completed { exit_code: 0, .. }) => {}
                (
                    Some(host),
                    Outcome::Diverged {
                        declared: true,
                        host_caused,
                        ..
                    },
                ) => assert_eq!(*host_caused, host, "{what}"),
                (want, got) => panic!("{what}: expected divergence {want:?}, got {got:?}"),
            }
            assert!(r.went_as_expected(false), "{what}");
            per_mode_invariants(&r, &what);
            seen.push((mode, result_of(&r), r.console.clone()));
        }
        // The same result and console in every mode, but for popf's declared wrong answer.
        let reference = &seen[0];
        for (mode, result, console) in &seen[1..] {
            assert_eq!(console, &reference.2, "{}: console in {mode}", w.name);
            if !(w.name == "popf" && *mode == Mode::TrapEmulate) {
                assert_eq!(result, &reference.1, "{}: result in {mode}", w.name);
            }
        }
    }
}

/// What each strategy guarantees about how its exits are made up.
fn per_mode_invariants(r: &RunRecord, what: &str) {
    match r.mode {
        Mode::HwAssisted => {
            assert!(r.traps.is_empty() && r.hypercalls.is_empty(), "{what}");
            // KVM's statistics, where this host offers them (a probed capability).
            if machine::caps::probe().expect("probe").stats_fd.is_present() {
                assert!(
                    r.kvm_stats.contains_key("exits"),
                    "{what}: no KVM statistics"
                );
            }
            assert!(r.guest.is_some(), "{what}: the guest measured nothing");
        }
        Mode::TrapEmulate => {
            // One Trap exit per trap, and only the trap names the oracle states.
            assert_eq!(
                r.exit_count(ExitKind::Trap),
                r.traps.values().sum::<u64>(),
                "{what}"
            );
            for name in r.traps.keys() {
                assert!(
                    r.expected.contains_key(&CountKey::Traps(name.clone())),
                    "{what}: a trap the oracle does not name: {name}"
                );
            }
            assert_eq!(
                r.port_writes(port::FAULT),
                0,
                "{what}: a trap is not port I/O"
            );
        }
        Mode::Paravirt => {
            // Every exit is a hypercall, but the exceptions the guest causes itself, and
            // every hypercall is counted under exactly one name.
            let traps = r.exit_count(ExitKind::Trap);
            assert_eq!(
                r.total_exits(),
                r.exit_count(ExitKind::Hypercall) + traps,
                "{what}"
            );
            let named: u64 = r
                .hypercalls
                .iter()
                .filter(|(k, _)| !k.contains("multicall:"))
                .map(|(_, v)| v)
                .sum();
            assert_eq!(named, r.exit_count(ExitKind::Hypercall), "{what}");
            assert_eq!(r.port_writes(hypercall::PORT), 0, "{what}");
            assert!(r.hypercalls.keys().all(|k| !k.starts_with("rejected")));
        }
    }
}

#[test]
fn every_workload_in_every_engine_meets_its_oracle_exactly() {
    if !machine::testing::kvm_or_skip("every_workload_in_every_engine_meets_its_oracle_exactly") {
        return;
    }
    check_everywhere(&RunOptions::default());
}

#[test]
fn the_oracles_follow_cpuid_faulting_switched_off() {
    if !machine::testing::kvm_or_skip("the_oracles_follow_cpuid_faulting_switched_off") {
        return;
    }
    check_everywhere(&RunOptions {
        cpuid_faulting: false,
        ..RunOptions::default()
    });
}

#[test]
fn zero_iterations_complete_everywhere() {
    if !machine::testing::kvm_or_skip("zero_iterations_complete_everywhere") {
        return;
    }
    for engine in virtlab::engines::all() {
        for w in WORKLOADS {
            let r = run(engine, w.name, 0, &RunOptions::default());
            assert!(
                r.mismatches.is_empty(),
                "{} in {}: {:?}",
                w.name,
                engine.mode(),
                r.mismatches
            );
            assert!(
                r.went_as_expected(false),
                "{} in {}: {:?}",
                w.name,
                engine.mode(),
                r.outcome
            );
        }
    }
}
