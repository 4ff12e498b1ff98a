//! A scenario keeps every run's result when some runs fail.

mod common;

use contract::abi::layout;
use contract::{FaultKind, GuestImage, Mode, Outcome};
use virtlab::harness::{run_jobs, Guest, Job};

#[test]
fn a_failing_run_does_not_lose_the_others() {
    if !common::kvm_or_skip("a_failing_run_does_not_lose_the_others") {
        return;
    }
    let garbage = GuestImage::flat(
        "garbage",
        vec![0x0F, 0x0B],
        layout::DEFAULT_LOAD,
        layout::DEFAULT_LOAD,
    );
    // In the monitor's region, not in guest RAM.
    let misplaced = GuestImage::flat(
        "misplaced",
        vec![0xF4],
        layout::BOOT_INFO,
        layout::BOOT_INFO,
    );
    let pio = guests::find("pio").unwrap();
    let params = common::params("pio");
    let jobs = vec![
        Job {
            guest: Guest::Binary(garbage),
            mode: Mode::HwAssisted,
            repeat: 0,
            warmup: false,
            backend: None,
        },
        Job {
            guest: Guest::Binary(misplaced),
            mode: Mode::HwAssisted,
            repeat: 0,
            warmup: false,
            backend: None,
        },
        Job {
            guest: Guest::Workload(pio, params),
            mode: Mode::HwAssisted,
            repeat: 0,
            warmup: false,
            backend: None,
        },
    ];
    let mut seen = 0;
    let (records, failures) = run_jobs(&jobs, &contract::RunOptions::default(), |_, _| seen += 1);
    assert_eq!(seen, 3);
    assert_eq!(records.len(), 2);
    assert!(matches!(
        records[0].outcome,
        Outcome::GuestFault {
            kind: FaultKind::Exception,
            ..
        }
    ));
    assert!(records[1].verdict_ok());
    assert_eq!(records[1].console, guests::workloads::pio_text(params.n));
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].workload, "misplaced");
    assert!(
        failures[0]
            .error
            .contains("does not fit in 16 MiB of guest RAM"),
        "{}",
        failures[0].error
    );
}
