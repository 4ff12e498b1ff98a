//! Batching, blocking and unported instructions in paravirt, with the parameters the
//! every-engine suite (`tests/engines.rs`) leaves at their defaults: the batch size B (of
//! console writes, device reads and ptemod's page-table updates), the timer's delay, and
//! a native image run in the paravirtual engine.

mod common;

use contract::abi::hypercall::Hypercall;
use contract::{ExitKind, FaultKind, Flavour, Outcome, RunOptions, RunRecord};
use guests::Params;
use hw_assisted::HwAssisted;
use paravirt::Paravirt;

fn assert_verdict(r: &RunRecord) {
    assert!(
        r.verdict_ok(),
        "{} on {}: outcome {:?}, mismatches {:?}, console_ok {:?}, hypercalls {:?}, exits {:?}",
        r.workload,
        r.mode,
        r.outcome,
        r.mismatches,
        r.console_ok,
        r.hypercalls,
        r.exits
    );
}

/// The B sweep: console writes and device reads are ⌈N/B⌉ exactly, each one hypercall
/// exit, no port I/O but the hypercalls. Prints the guest's cycles per operation
/// (`cargo test --release --test paravirt_batching sweep -- --nocapture`).
#[test]
fn sweep_over_b_batches_exactly() {
    if !common::kvm_or_skip("sweep_over_b_batches_exactly") {
        return;
    }
    for name in ["pio", "mmio"] {
        let hw = common::run_workload(&HwAssisted, name, common::params(name));
        let g = hw.guest.expect("the guest measures its loop");
        println!(
            "hw-assisted {name}: {} exits, {:.0} guest cycles/op",
            hw.total_exits(),
            g.cycles_per_op
        );
    }
    println!(
        "workload   B  hypercalls  exits  guest cycles/op  ns/op  exit p50 ns  handler p50 ns"
    );
    for name in ["pio", "mmio"] {
        let n = common::iterations(name);
        for b in [1, 4, 16, 64, 256] {
            let r = common::run_workload(
                &Paravirt,
                name,
                Params {
                    b,
                    ..common::params(name)
                },
            );
            let what = format!("{name} N={n} B={b}");
            assert_verdict(&r);
            let key = if name == "pio" {
                Hypercall::ConsoleWrite
            } else {
                Hypercall::DeviceRead
            };
            let batches = n.div_ceil(b);
            assert_eq!(r.hypercalls[key.name()], batches, "{what}");
            assert_eq!(r.event_ns[key.name()].count, batches, "{what}");
            assert_eq!(r.hypercalls[Hypercall::Exit.name()], 1, "{what}");
            assert_eq!(r.exit_count(ExitKind::Hypercall), batches + 1, "{what}");
            assert_eq!(r.exit_count(ExitKind::IoOut), 0, "{what}");
            if name == "pio" {
                // The text hw-assisted writes byte by byte (`tests/engines.rs`), whatever B.
                assert_eq!(r.console, guests::workloads::pio_text(n), "{what}");
                assert_eq!(r.console.len() as u64, n, "{what}");
            }
            let g = r.guest.expect("the guest measures its loop");
            println!(
                "{name:<8} {b:>3}  {:>10}  {:>5}  {:>15.0}  {:>5.0}  {:>11}  {:>14}",
                r.hypercalls[key.name()],
                r.total_exits(),
                g.cycles_per_op,
                g.ns_per_op.unwrap_or(f64::NAN),
                r.round_trip_ns[&ExitKind::Hypercall].p50,
                r.handler_ns[&ExitKind::Hypercall].p50,
            );
        }
    }
}

/// ptemod's B sweep: the guest kernel's PTE changes go in rounds of B, each round's
/// stores one `mmu_update` (one per 128 when B is larger: the kernel's queue holds 128),
/// then one `mmuext_op(INVLPG)` per change. Against a run with N = 0 and the same B
/// (the same kernel, the same window), the N changes add exactly their batches, N
/// requests and N INVLPGs, whatever B is.
#[test]
fn ptemod_sweep_over_b_batches_exactly() {
    if !common::kvm_or_skip("ptemod_sweep_over_b_batches_exactly") {
        return;
    }
    let n = common::iterations("ptemod");
    let count = |r: &RunRecord, key: &str| r.hypercalls.get(key).copied().unwrap_or(0);
    println!("ptemod     B  mmu_update  entries  mmuext_op  guest cycles/op");
    for b in [1, 4, 16, 64, 256] {
        let run = |n: u64| {
            let r = common::run_workload(
                &Paravirt,
                "ptemod",
                Params {
                    n,
                    b,
                    ..common::params("ptemod")
                },
            );
            assert_verdict(&r);
            r
        };
        let (r, r0) = (run(n), run(0));
        let what = format!("ptemod N={n} B={b}");
        let rounds: Vec<u64> = (0..n).step_by(b as usize).map(|i| b.min(n - i)).collect();
        let batches: u64 = rounds.iter().map(|r| r.div_ceil(128)).sum();
        let mmu = Hypercall::MmuUpdate.name();
        let ext = Hypercall::MmuextOp.name();
        assert_eq!(count(&r, mmu) - count(&r0, mmu), batches, "{what}");
        assert_eq!(
            count(&r, "direct_paging:entries") - count(&r0, "direct_paging:entries"),
            n,
            "{what}"
        );
        assert_eq!(
            count(&r, ext) - count(&r0, ext),
            n,
            "{what}: one INVLPG a change"
        );
        assert_eq!(
            count(&r, "direct_paging:validations"),
            count(&r0, "direct_paging:validations"),
            "{what}: no table changes type"
        );
        let g = r.guest.expect("the guest measures its loop");
        println!(
            "ptemod   {b:>3}  {:>10}  {:>7}  {:>9}  {:>15.0}",
            count(&r, mmu),
            count(&r, "direct_paging:entries"),
            count(&r, ext),
            g.cycles_per_op
        );
    }
}

#[test]
fn hlt_timer_with_a_delay_blocks_until_the_event() {
    if !common::kvm_or_skip("hlt_timer_with_a_delay_blocks_until_the_event") {
        return;
    }
    let delay_us = 200;
    let p = Params {
        delay_us,
        ..common::params("hlt-timer")
    };
    let r = common::run_workload(&Paravirt, "hlt-timer", p);
    assert_verdict(&r);
    assert_eq!(r.hypercalls["block"], p.n);
    assert_eq!(r.injections, p.n);
    // N waits of at least the delay each.
    assert!(
        r.wall_ns >= p.n * u64::from(delay_us) * 1000,
        "{}",
        r.wall_ns
    );
}

#[test]
fn a_native_image_ends_as_unported() {
    if !common::kvm_or_skip("a_native_image_ends_as_unported") {
        return;
    }
    let image = common::workload_image("irq-toggle", Flavour::Native, common::params("irq-toggle"));
    let r = common::run(&Paravirt, &image, &RunOptions::default());
    match &r.outcome {
        Outcome::GuestFault { kind, detail, rip } => {
            assert_eq!(*kind, FaultKind::UnportedPrivilegedInstruction);
            assert!(detail.starts_with("`cli`"), "{detail}");
            assert!(rip.is_some());
        }
        other => panic!("{other:?}"),
    }
}
