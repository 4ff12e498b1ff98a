//! What a trap costs on this host, and what trap-and-emulate costs per workload compared
//! with hw-assisted. Prints a table; asserts nothing about times (they are the host's).
//!
//! `cargo test --release -p trap-emulate --test cost -- --ignored --nocapture`

mod common;

use contract::{Engine, ExitKind, Flavour, RunOptions};
use guests::{build, Params, WORKLOADS};
use hw_assisted::HwAssisted;
use trap_emulate::TrapEmulate;

#[test]
#[ignore = "prints host timings; run by hand"]
fn per_trap_cost_and_wall_time_ratio() {
    if !common::kvm_or_skip("per_trap_cost_and_wall_time_ratio") {
        return;
    }
    let opts = RunOptions::default();
    println!(
        "{:<11} {:>6} {:>7} {:>12} {:>12} {:>7} {:>13} {:>13}",
        "workload", "n", "traps", "hw wall µs", "te wall µs", "te/hw", "trap p50 ns", "handler p50"
    );
    let mut all_p50 = Vec::new();
    for w in WORKLOADS {
        let img = build(
            w.name,
            Flavour::Native,
            Params {
                n: w.default_n,
                ..Params::default()
            },
        )
        .unwrap();
        // Warm-up runs, discarded.
        let _ = HwAssisted.run(&img, &opts).unwrap();
        let _ = TrapEmulate.run(&img, &opts).unwrap();
        let hw = HwAssisted.run(&img, &opts).unwrap();
        let te = TrapEmulate.run(&img, &opts).unwrap();
        let rt = te.round_trip_ns.get(&ExitKind::Trap).map_or(0, |l| l.p50);
        let h = te.handler_ns.get(&ExitKind::Trap).map_or(0, |l| l.p50);
        all_p50.push((te.exit_count(ExitKind::Trap), rt));
        println!(
            "{:<11} {:>6} {:>7} {:>12.1} {:>12.1} {:>7.2} {:>13} {:>13}",
            w.name,
            w.default_n,
            te.exit_count(ExitKind::Trap),
            hw.wall_ns as f64 / 1e3,
            te.wall_ns as f64 / 1e3,
            te.wall_ns as f64 / hw.wall_ns as f64,
            rt,
            h
        );
        for (m, l) in &te.event_ns {
            println!("    {m:<14} x{:<6} emulation p50 {} ns", l.count, l.p50);
        }
    }
    // The irq-toggle run is the purest trap loop: its p50 is the per-trap figure.
    let img = build(
        "irq-toggle",
        Flavour::Native,
        Params {
            n: 1000,
            ..Params::default()
        },
    )
    .unwrap();
    let te = TrapEmulate.run(&img, &opts).unwrap();
    let l = &te.round_trip_ns[&ExitKind::Trap];
    let h = &te.handler_ns[&ExitKind::Trap];
    println!(
        "\nper-trap cost (irq-toggle n=1000, {} traps): KVM_RUN round trip p50 {} ns (p90 {}, p99 {}), VMM handler p50 {} ns",
        l.count, l.p50, l.p90, l.p99, h.p50
    );
}
