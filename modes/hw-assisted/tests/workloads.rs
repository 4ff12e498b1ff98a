//! Exits of single workloads in hw-assisted mode (every workload in every engine is
//! `tests/engines.rs` at the root).

use contract::abi::port;
use contract::{Engine, ExitKind, Flavour, Mode, Outcome, RunOptions, RunRecord};
use hw_assisted::HwAssisted;

fn run(name: &str, n: u64) -> RunRecord {
    let image = guests::build(
        name,
        Flavour::Native,
        guests::Params {
            n,
            ..Default::default()
        },
    )
    .expect("workload builds");
    HwAssisted
        .run(&image, &RunOptions::default())
        .expect("the VMM runs")
}

/// Asserts completion with the expected result and console, and an exact oracle match.
fn assert_exact(r: &RunRecord) {
    let img = guests::build(
        &r.workload,
        Flavour::Native,
        guests::Params {
            n: r.params["n"],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.mode, Mode::HwAssisted);
    match &r.outcome {
        Outcome::Completed {
            exit_code: 0,
            result,
            ..
        } => {
            assert_eq!(Some(*result), img.expected.result, "{} result", r.workload)
        }
        other => panic!("{}: {other:?}", r.workload),
    }
    assert!(
        r.mismatches.is_empty(),
        "{}: {:?}",
        r.workload,
        r.mismatches
    );
    assert_eq!(
        r.console_ok,
        Some(true),
        "{}: console {:?}",
        r.workload,
        r.console
    );
    assert!(r.verdict_ok());
    // The oracle was really applied: every listed key appears as expected.
    let oracle = &img.expected.oracles[&Mode::HwAssisted];
    for key in oracle.counts.keys() {
        assert!(r.expected.contains_key(key), "{}: {key}", r.workload);
    }
}

#[test]
fn pio_1000_bytes_is_exactly_1000_console_exits() {
    if !machine::testing::kvm_or_skip("pio_1000_bytes_is_exactly_1000_console_exits") {
        return;
    }
    let r = run("pio", 1000);
    assert_exact(&r);
    assert_eq!(r.port_writes(port::CONSOLE), 1000);
    assert_eq!(
        r.exit_count(ExitKind::IoOut),
        1001,
        "1000 bytes + the exit port"
    );
    assert_eq!(r.port_writes(port::EXIT), 1);
    assert_eq!(r.console, guests::workloads::pio_text(1000));
    assert_eq!(r.total_exits(), 1001);
}

#[test]
fn irq_toggle_makes_no_exits() {
    if !machine::testing::kvm_or_skip("irq_toggle_makes_no_exits") {
        return;
    }
    let r = run("irq-toggle", 1000);
    assert_exact(&r);
    assert_eq!(r.total_exits(), 1, "only the exit port");
    assert_eq!(r.outcome.result(), Some(1000 * 999 / 2));
}

#[test]
fn compute_and_call_ret_make_no_exits() {
    if !machine::testing::kvm_or_skip("compute_and_call_ret_make_no_exits") {
        return;
    }
    for name in ["compute", "call-ret"] {
        let r = run(name, 500);
        assert_exact(&r);
        assert_eq!(r.total_exits(), 1, "{name}");
    }
}

#[test]
fn cpuid_popf_cr8_divzero_ptemod_are_handled_in_the_kernel() {
    if !machine::testing::kvm_or_skip("cpuid_popf_cr8_divzero_ptemod_are_handled_in_the_kernel") {
        return;
    }
    for (name, n, result) in [
        ("cpuid", 100, 100),
        ("popf", 100, 300),
        ("cr8wr", 100, 99 & 15),
        ("divzero", 100, 100),
        ("ptemod", 101, 51 * 0xA + 50 * 0xB),
    ] {
        let r = run(name, n);
        assert_exact(&r);
        assert_eq!(r.total_exits(), 1, "{name}: {:?}", r.exits);
        assert_eq!(r.outcome.result(), Some(result), "{name}");
    }
}

#[test]
fn mmio_reads_exit_one_by_one() {
    if !machine::testing::kvm_or_skip("mmio_reads_exit_one_by_one") {
        return;
    }
    let r = run("mmio", 300);
    assert_exact(&r);
    assert_eq!(r.exit_count(ExitKind::MmioRead), 300);
    assert_eq!(r.exit_count(ExitKind::MmioWrite), 0);
    assert_eq!(r.outcome.result(), Some(300 * 301 / 2));
}

#[test]
fn hlt_timer_halts_and_injects_n_times() {
    if !machine::testing::kvm_or_skip("hlt_timer_halts_and_injects_n_times") {
        return;
    }
    let r = run("hlt-timer", 200);
    assert_exact(&r);
    assert_eq!(r.exit_count(ExitKind::Halt), 200);
    assert_eq!(r.injections, 200);
    assert_eq!(r.port_writes(port::TIMER), 200);
    assert_eq!(r.exit_count(ExitKind::InterruptWindow), 0);
}
