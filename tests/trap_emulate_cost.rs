//! What a trap costs on this host, and what trap-and-emulate costs per workload compared
//! with hw-assisted. Prints a table; asserts nothing about times (they are the host's).
//!
//! `cargo test --release --test trap_emulate_cost -- --ignored --nocapture`

mod common;

use contract::{ExitKind, Flavour, RunOptions};
use guests::WORKLOADS;
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
        if guests::unsupported(w.name, contract::Mode::TrapEmulate).is_some() {
            continue;
        }
        let n = common::iterations(w.name);
        let img = common::workload_image(w.name, Flavour::Native, common::params(w.name));
        // Warm-up runs, discarded.
        let _ = common::run(&HwAssisted, &img, &opts);
        let _ = common::run(&TrapEmulate, &img, &opts);
        let hw = common::run(&HwAssisted, &img, &opts);
        let te = common::run(&TrapEmulate, &img, &opts);
        let rt = te.round_trip_ns.get(&ExitKind::Trap).map_or(0, |l| l.p50);
        let h = te.handler_ns.get(&ExitKind::Trap).map_or(0, |l| l.p50);
        all_p50.push((te.exit_count(ExitKind::Trap), rt));
        println!(
            "{:<11} {:>6} {:>7} {:>12.1} {:>12.1} {:>7.2} {:>13} {:>13}",
            w.name,
            n,
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
    let n = common::iterations("irq-toggle");
    let img = common::workload_image("irq-toggle", Flavour::Native, common::params("irq-toggle"));
    let te = common::run(&TrapEmulate, &img, &opts);
    let l = &te.round_trip_ns[&ExitKind::Trap];
    let h = &te.handler_ns[&ExitKind::Trap];
    println!(
        "\nper-trap cost (irq-toggle n={n}, {} traps): KVM_RUN round trip p50 {} ns (p90 {}, p99 {}), VMM handler p50 {} ns",
        l.count,
        l.p50,
        l.p90,
        l.p99,
        h.p50
    );
}
