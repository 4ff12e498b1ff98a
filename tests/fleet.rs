//! Many VMs at once: every VM's exact counts hold while others run beside it, under each
//! scheduler; a VM that faults or spins or floods the VMM with exits changes nobody
//! else's counts. Nothing here asserts a time: shares are measured by scenarios.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use contract::{ExitKind, Limit, Mode, Outcome, RunOptions, SchedulerKind};
use guests::Params;
use virtlab::fleet::{run_fleet, FleetDone, HostSpec, VmSpec};
use virtlab::harness::{Guest, Job};

fn vm(name: &str, guest: Guest, mode: Mode, weight: u32) -> VmSpec {
    VmSpec {
        name: name.into(),
        job: Job {
            guest,
            mode,
            repeat: 0,
            warmup: false,
            backend: None,
        },
        weight,
        cap: 0,
        wall: None,
    }
}

/// `v` with the tight wall-clock limit that ends a VM that spins or floods.
fn hostile(v: VmSpec) -> VmSpec {
    VmSpec {
        wall: Some(Duration::from_millis(1500)),
        ..v
    }
}

/// The fleet tests measure shares and pin their VMs to the first CPUs this process may
/// use: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn workload(name: &str, n: u64) -> Guest {
    Guest::Workload(
        guests::find(name).unwrap(),
        Params {
            n,
            ..Params::default()
        },
    )
}

/// The records of VM `name` (records come VM after VM, `runs` each).
fn records_of<'a>(done: &'a FleetDone, name: &str) -> &'a [contract::RunRecord] {
    let mut start = 0;
    for v in &done.host.vms {
        let n = v.runs as usize;
        if v.name == name {
            return &done.records[start..start + n];
        }
        start += n;
    }
    panic!("no VM {name}")
}

fn assert_exact(done: &FleetDone, name: &str) {
    for r in records_of(done, name) {
        assert!(
            matches!(r.outcome, Outcome::Completed { .. }),
            "{name}: {:?}",
            r.outcome
        );
        assert!(r.mismatches.is_empty(), "{name}: {:?}", r.mismatches);
        assert!(!r.expected.is_empty(), "{name} was judged");
        assert!(
            !r.exits.contains_key(&ExitKind::Interrupted),
            "{name}: a scheduler's kick counted as an exit"
        );
    }
}

/// Every scheduler, and the credit scheduler both work-conserving and not.
const SCHEDULERS: [(SchedulerKind, bool); 4] = [
    (SchedulerKind::Linux, true),
    (SchedulerKind::RoundRobin, true),
    (SchedulerKind::Credit, true),
    (SchedulerKind::Credit, false),
];

#[test]
fn every_vm_keeps_its_exact_counts_while_four_share_one_cpu() {
    if !common::kvm_or_skip("every_vm_keeps_its_exact_counts_while_four_share_one_cpu") {
        return;
    }
    let _serial = serial();
    let vms = [
        vm(
            "a",
            workload("pio", common::iterations("pio")),
            Mode::HwAssisted,
            1,
        ),
        vm(
            "b",
            workload("irq-toggle", common::iterations("irq-toggle")),
            Mode::TrapEmulate,
            1,
        ),
        vm(
            "c",
            workload("hlt-timer", common::iterations("hlt-timer")),
            Mode::HwAssisted,
            2,
        ),
        vm(
            "d",
            workload("mmio", common::iterations("mmio")),
            Mode::Paravirt,
            4,
        ),
    ];
    for (scheduler, work_conserving) in SCHEDULERS {
        let host = HostSpec {
            cpus: 1,
            scheduler,
            work_conserving,
            slice_ms: 1,
            runs: 2,
            ..HostSpec::default()
        };
        let done = run_fleet(&host, &vms, &RunOptions::default()).unwrap();
        assert!(done.failures.is_empty(), "{scheduler}: {:?}", done.failures);
        assert_eq!(done.records.len(), 8, "{scheduler}");
        for v in &vms {
            assert_exact(&done, &v.name);
        }
        let c = &done.host.vms[2];
        assert_eq!(
            c.wake_latency_ns.as_ref().map(|w| w.count),
            Some(2 * common::iterations("hlt-timer")),
            "{scheduler}: every wake-up of the halting VM is measured"
        );
        assert_eq!(done.host.scheduler, scheduler);
        assert_eq!(done.host.work_conserving, work_conserving);
    }
}

#[test]
fn a_spinning_or_flooding_or_faulting_neighbour_changes_no_one_elses_counts() {
    if !common::kvm_or_skip(
        "a_spinning_or_flooding_or_faulting_neighbour_changes_no_one_elses_counts",
    ) {
        return;
    }
    let _serial = serial();
    // jmp $: never exits, ended by the wall-clock limit.
    let spin = Guest::Binary(common::raw("spin", &[0xEB, 0xFE]));
    // mov al, 'x'; out 0xe9, al; jmp back: console exits as fast as the VMM takes them,
    // until a limit ends it.
    let flood = Guest::Binary(common::raw("flood", &[0xB0, b'x', 0xE6, 0xE9, 0xEB, 0xFC]));
    // ud2: a fault the guest does not handle.
    let dies = Guest::Binary(common::raw("dies", &[0x0F, 0x0B]));
    let vms = [
        vm(
            "quiet",
            workload("pio", common::iterations("pio")),
            Mode::HwAssisted,
            1,
        ),
        vm(
            "halts",
            workload("hlt-timer", common::iterations("hlt-timer")),
            Mode::Paravirt,
            1,
        ),
        hostile(vm("spin", spin, Mode::HwAssisted, 4)),
        hostile(vm("flood", flood, Mode::HwAssisted, 4)),
        vm(
            "busy",
            workload("irq-toggle", common::iterations("irq-toggle")),
            Mode::TrapEmulate,
            1,
        ),
        vm("dies", dies, Mode::HwAssisted, 1),
    ];
    // Only the hostile VMs get the tight limit; the quiet ones keep the default one, so a
    // loaded host slows them but never ends them.
    let opts = RunOptions::default();
    for (scheduler, work_conserving) in SCHEDULERS {
        let host = HostSpec {
            cpus: 1,
            scheduler,
            work_conserving,
            slice_ms: 2,
            runs: 1,
            ..HostSpec::default()
        };
        let done = run_fleet(&host, &vms, &opts).unwrap();
        assert!(done.failures.is_empty(), "{scheduler}: {:?}", done.failures);
        assert_exact(&done, "quiet");
        assert_exact(&done, "halts");
        assert_exact(&done, "busy");
        assert!(!matches!(
            records_of(&done, "flood")[0].outcome,
            Outcome::Completed { .. }
        ));
        let spun = &records_of(&done, "spin")[0];
        assert!(
            matches!(
                spun.outcome,
                Outcome::TimedOut {
                    limit: Limit::WallClock,
                    ..
                }
            ),
            "{scheduler}: {:?}",
            spun.outcome
        );
        let died = &records_of(&done, "dies")[0];
        assert_eq!(
            common::fault_of(died).0,
            contract::FaultKind::Exception,
            "{scheduler}"
        );
    }
}
