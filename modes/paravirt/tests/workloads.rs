//! Batching, blocking and unported instructions in paravirt, workload by workload (every
//! workload in every engine is `tests/engines.rs` at the root).

use contract::abi::hypercall::Hypercall;
use contract::{Engine, ExitKind, Flavour, Outcome, RunOptions, RunRecord};
use guests::{build, Params};
use hw_assisted::HwAssisted;
use paravirt::Paravirt;

use machine::testing::kvm_or_skip;

fn run(engine: &dyn Engine, name: &str, p: Params) -> RunRecord {
    let image = build(name, engine.flavour(), p).unwrap();
    engine.run(&image, &RunOptions::default()).unwrap()
}

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

#[test]
fn pio_1000_by_64_is_16_console_writes() {
    if !kvm_or_skip("pio_1000_by_64_is_16_console_writes") {
        return;
    }
    let p = Params {
        n: 1000,
        b: 64,
        delay_us: 0,
    };
    let pv = run(&Paravirt, "pio", p);
    assert_verdict(&pv);
    assert_eq!(pv.hypercalls[Hypercall::ConsoleWrite.name()], 16);
    assert_eq!(pv.hypercalls[Hypercall::Exit.name()], 1);
    assert_eq!(pv.exit_count(ExitKind::Hypercall), 17);
    assert_eq!(pv.exit_count(ExitKind::IoOut), 0);
    assert_eq!(pv.console, run(&HwAssisted, "pio", p).console);
    assert_eq!(pv.console.len(), 1000);
    assert_eq!(pv.event_ns[Hypercall::ConsoleWrite.name()].count, 16);
}

#[test]
fn irq_toggle_makes_no_hypercall_but_exit() {
    if !kvm_or_skip("irq_toggle_makes_no_hypercall_but_exit") {
        return;
    }
    let pv = run(
        &Paravirt,
        "irq-toggle",
        Params {
            n: 1000,
            b: 1,
            delay_us: 0,
        },
    );
    assert_verdict(&pv);
    assert_eq!(pv.hypercalls.len(), 1);
    assert_eq!(pv.hypercalls["exit"], 1);
    assert_eq!(pv.total_exits(), 1);
}

#[test]
fn hlt_timer_with_a_delay_blocks_until_the_event() {
    if !kvm_or_skip("hlt_timer_with_a_delay_blocks_until_the_event") {
        return;
    }
    let p = Params {
        n: 20,
        b: 1,
        delay_us: 200,
    };
    let pv = run(&Paravirt, "hlt-timer", p);
    assert_verdict(&pv);
    assert_eq!(pv.hypercalls["block"], 20);
    assert_eq!(pv.injections, 20);
    // 20 waits of at least 200 µs each.
    assert!(pv.wall_ns >= 20 * 200_000, "{}", pv.wall_ns);
}

/// The B sweep: console writes = ⌈N/B⌉ exactly, device reads too. Prints the guest's
/// cycles per operation (`cargo test -p paravirt --test workloads sweep -- --nocapture`).
#[test]
fn sweep_over_b_batches_exactly() {
    if !kvm_or_skip("sweep_over_b_batches_exactly") {
        return;
    }
    let n = 1000;
    for name in ["pio", "mmio"] {
        let hw = run(
            &HwAssisted,
            name,
            Params {
                n,
                b: 1,
                delay_us: 0,
            },
        );
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
        for b in [1, 4, 16, 64, 256] {
            let r = run(&Paravirt, name, Params { n, b, delay_us: 0 });
            assert_verdict(&r);
            let key = if name == "pio" {
                Hypercall::ConsoleWrite
            } else {
                Hypercall::DeviceRead
            };
            assert_eq!(r.hypercalls[key.name()], n.div_ceil(b), "{name} B={b}");
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

#[test]
fn a_native_image_ends_as_unported() {
    if !kvm_or_skip("a_native_image_ends_as_unported") {
        return;
    }
    let image = build("irq-toggle", Flavour::Native, Params::default()).unwrap();
    let r = Paravirt.run(&image, &RunOptions::default()).unwrap();
    match &r.outcome {
        Outcome::GuestFault { kind, detail, rip } => {
            assert_eq!(*kind, contract::FaultKind::UnportedPrivilegedInstruction);
            assert!(detail.starts_with("`cli`"), "{detail}");
            assert!(rip.is_some());
        }
        other => panic!("{other:?}"),
    }
}
