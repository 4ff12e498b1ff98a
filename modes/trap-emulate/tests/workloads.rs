//! Every workload of the catalog in trap-emulate, against its exact oracle and against
//! hw-assisted's result and console.

mod common;

use guests::{build, Params, WORKLOADS};
use hw_assisted::HwAssisted;
use modes::{CountKey, Engine, ExitKind, Flavour, Mode, Outcome, RunOptions, RunRecord};
use trap_emulate::TrapEmulate;

fn n_for(workload: &str) -> u64 {
    match workload {
        "irq-toggle" => 1000,
        "hlt-timer" | "divzero" | "popf" => 50,
        _ => 100,
    }
}

fn run(engine: &dyn Engine, workload: &str, n: u64) -> RunRecord {
    let img = build(
        workload,
        Flavour::Native,
        Params {
            n,
            ..Params::default()
        },
    )
    .unwrap();
    engine.run(&img, &RunOptions::default()).unwrap()
}

#[test]
fn every_workload_matches_its_oracle_and_hw_assisted() {
    if !common::kvm_or_skip("every_workload_matches_its_oracle_and_hw_assisted") {
        return;
    }
    for w in WORKLOADS {
        let n = n_for(w.name);
        let te = run(&TrapEmulate, w.name, n);
        let hw = run(&HwAssisted, w.name, n);
        assert!(
            te.mismatches.is_empty(),
            "{}: oracle mismatches {:?} (traps {:?})",
            w.name,
            te.mismatches,
            te.traps
        );
        // The trap names are exactly the oracle's: no unexpected kind of trap.
        let img = build(
            w.name,
            Flavour::Native,
            Params {
                n,
                ..Params::default()
            },
        )
        .unwrap();
        // The oracle the run was judged by: the mode's own, or the variant the host's
        // capabilities selected (CPUID faulting without effect).
        let variant = img
            .expected
            .variants
            .iter()
            .find(|v| v.mode == Mode::TrapEmulate && v.when.holds(&te).is_some());
        let oracle = variant.map_or(&img.expected.oracles[&Mode::TrapEmulate], |v| &v.oracle);
        let expected_traps: Vec<(String, u64)> = oracle
            .counts
            .iter()
            .filter_map(|(k, v)| match k {
                CountKey::Traps(m) => Some((m.clone(), *v)),
                _ => None,
            })
            .collect();
        let got: Vec<(String, u64)> = expected_traps
            .iter()
            .map(|(k, _)| (k.clone(), te.traps.get(k).copied().unwrap_or(0)))
            .collect();
        assert!(
            te.traps
                .keys()
                .all(|k| oracle.counts.contains_key(&CountKey::Traps(k.clone()))),
            "{}: a trap the oracle does not name: {:?}",
            w.name,
            te.traps
        );
        assert_eq!(got, expected_traps, "{}", w.name);
        assert_eq!(
            te.exit_count(ExitKind::Trap),
            te.traps.values().sum::<u64>(),
            "{}: one Trap exit per trap",
            w.name
        );
        assert!(hw.verdict_ok(), "{}: hw-assisted {:?}", w.name, hw.outcome);
        assert_eq!(te.console, hw.console, "{}", w.name);
        if w.name == "popf" {
            match &te.outcome {
                Outcome::Diverged {
                    expected, got, why, ..
                } => {
                    assert_eq!(expected, &(3 * n).to_string());
                    assert_eq!(got, &n.to_string());
                    assert!(why.contains("PUSHF") && why.contains("POPF"), "{why}");
                }
                o => panic!("popf should diverge, got {o:?}"),
            }
        } else if w.name == "cpuid" && !modes::caps::probe().unwrap().cpuid_faulting.is_present() {
            match &te.outcome {
                Outcome::Diverged {
                    declared: true,
                    host_caused: true,
                    why,
                    got,
                    ..
                } => {
                    assert!(why.contains("not effective on this host"), "{why}");
                    assert_eq!(got, "CPUID ran natively at CPL 3 (0 cpuid traps)");
                }
                o => panic!("cpuid without faulting should be a host divergence, got {o:?}"),
            }
            assert!(te.went_as_expected(false));
        } else {
            assert!(te.verdict_ok(), "{}: {:?}", w.name, te.outcome);
            assert_eq!(te.outcome.result(), hw.outcome.result(), "{}", w.name);
        }
    }
}

#[test]
fn irq_toggle_traps_exactly_once_per_cli_and_sti() {
    if !common::kvm_or_skip("irq_toggle_traps_exactly_once_per_cli_and_sti") {
        return;
    }
    let r = run(&TrapEmulate, "irq-toggle", 1000);
    assert_eq!(r.traps["cli"], 1000);
    assert_eq!(r.traps["sti"], 1000);
    assert_eq!(r.traps["out"], 1);
    assert_eq!(r.exit_count(ExitKind::Trap), 2001);
    assert_eq!(r.total_exits() - r.exit_count(ExitKind::Interrupted), 2001);
    assert_eq!(r.event_ns["cli"].count, 1000);
    assert_eq!(r.injections, 0);
    assert_eq!(r.outcome.result(), Some(1000 * 999 / 2));
}

#[test]
fn key_counts_of_the_classic_nanobenchmarks() {
    if !common::kvm_or_skip("key_counts_of_the_classic_nanobenchmarks") {
        return;
    }
    let n = 40;
    let r = run(&TrapEmulate, "hlt-timer", n);
    for m in ["sti", "hlt", "iretq", "cli"] {
        assert_eq!(r.traps[m], n, "{m}");
    }
    assert_eq!(r.traps["out"], n + 1);
    assert_eq!(r.traps["lidt"], 1);
    assert_eq!(r.injections, n);
    let r = run(&TrapEmulate, "divzero", n);
    assert_eq!((r.traps["#de"], r.traps["iretq"], r.injections), (n, n, n));
    let r = run(&TrapEmulate, "ptemod", n);
    assert_eq!((r.traps["pte write"], r.traps["invlpg"]), (n + 1, n + 1));
    assert!(r.verdict_ok(), "{:?}", r.outcome);
    let r = run(&TrapEmulate, "cr8wr", n);
    assert_eq!((r.traps["mov to cr8"], r.traps["mov from cr8"]), (n + 1, 1));
    let r = run(&TrapEmulate, "mmio", n);
    assert_eq!(
        r.exit_count(ExitKind::MmioRead),
        n,
        "MMIO exits directly, no trap"
    );
    assert_eq!(r.exit_count(ExitKind::Trap), 1);
    let r = run(&TrapEmulate, "cpuid", n);
    let cpuid_traps = if modes::caps::probe().unwrap().cpuid_faulting.is_present() {
        n + 1
    } else {
        0
    };
    assert_eq!(r.traps.get("cpuid").copied().unwrap_or(0), cpuid_traps);
}
