//! Trap counts of single workloads in trap-emulate (every workload in every engine is
//! `tests/engines.rs` at the root).

mod common;

use contract::{Engine, ExitKind, Flavour, RunOptions, RunRecord};
use guests::{build, Params};
use trap_emulate::TrapEmulate;

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
    let cpuid_traps = if machine::caps::probe().unwrap().cpuid_faulting.is_present() {
        n + 1
    } else {
        0
    };
    assert_eq!(r.traps.get("cpuid").copied().unwrap_or(0), cpuid_traps);
}
