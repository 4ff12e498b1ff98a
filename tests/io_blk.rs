//! The disk: blk-virtio and blk-emulated in every mode, judged by their exact oracles,
//! with the image checked on the host afterwards.

mod common;

use contract::{CountKey, FaultKind, Mode, Outcome, RunRecord};
use guests::Params;
use virtlab::harness::{run_jobs, Guest, Job};

/// Runs a catalog disk workload through the harness (which makes, checks and removes
/// its image).
fn run(workload: &str, mode: Mode, params: Params) -> RunRecord {
    let w = guests::find(workload).unwrap();
    let job = Job {
        guest: Guest::Workload(w, params),
        mode,
        repeat: 0,
        warmup: false,
        backend: None,
    };
    let (mut records, failures) = run_jobs(&[job], &common::short(), |_, _| {});
    assert!(failures.is_empty(), "{failures:?}");
    records.remove(0)
}

fn assert_exact(r: &RunRecord, p: &Params) {
    let what = format!("{} in {} with {p:?}", r.workload, r.mode);
    assert!(
        matches!(r.outcome, Outcome::Completed { exit_code: 0, result, .. } if result == p.n * p.s / 8),
        "{what}: {:?}",
        r.outcome
    );
    assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
    if r.mode == Mode::BinaryTranslation && p.s < 1024 {
        // One sector a request: the per-sector loops' back edges are never taken, so
        // the translation counts are not the oracle's shape, and the mode has none.
        assert!(r.expected.is_empty(), "{what}: {:?}", r.expected);
    } else {
        assert!(
            r.expected.keys().any(|k| matches!(k, CountKey::Device(_))),
            "{what}: the oracle names the device's counts"
        );
    }
    let verified = format!(
        "disk image verified on the host: its first {} bytes",
        p.n * p.s
    );
    assert!(
        r.notes.iter().any(|n| n.starts_with(&verified)),
        "{what}: {:?}",
        r.notes
    );
}

#[test]
fn blk_virtio_matches_its_oracle_in_every_mode_and_the_image_holds_what_it_wrote() {
    if !common::kvm_or_skip("blk_virtio") {
        return;
    }
    for p in [
        Params {
            n: 7,
            s: 2048,
            q: 3,
            ..Params::default()
        },
        Params {
            n: 9,
            s: 512,
            q: 4,
            ..Params::default()
        },
    ] {
        for mode in Mode::ALL {
            let r = run("blk-virtio", mode, p);
            assert_exact(&r, &p);
            let b = p.n.div_ceil(p.q);
            assert_eq!(r.device["virtio:notifications"], 2 * b, "{mode}");
            // One service time per request, one doorbell-to-completion time per request
            // and one per doorbell's batch.
            assert_eq!(r.event_ns["virtio:request"].count, 2 * p.n, "{mode}");
            assert_eq!(r.event_ns["virtio:completion"].count, 2 * p.n, "{mode}");
            assert_eq!(r.event_ns["virtio:batch"].count, 2 * b, "{mode}");
            // A request completes after its own service, and its batch after it.
            let (service, completion, batch) = (
                &r.event_ns["virtio:request"],
                &r.event_ns["virtio:completion"],
                &r.event_ns["virtio:batch"],
            );
            assert!(completion.max >= service.min, "{mode}");
            assert!(batch.max >= completion.min, "{mode}");
            assert!(!r.event_ns.contains_key("ata:completion"), "{mode}");
        }
    }
}

#[test]
fn blk_virtio_moves_a_mebibyte_in_paravirt_with_two_notifications() {
    if !common::kvm_or_skip("blk_virtio_mib") {
        return;
    }
    let p = Params {
        n: 16,
        s: 64 << 10,
        q: 32,
        ..Params::default()
    };
    let r = run("blk-virtio", Mode::Paravirt, p);
    assert_exact(&r, &p);
    // One doorbell writes the MiB, one reads it back.
    assert_eq!(r.device["virtio:notifications"], 2);
    assert_eq!(r.device["virtio:bytes_written"], 1 << 20);
    assert_eq!(r.device["virtio:bytes_read"], 1 << 20);
    assert_eq!(r.exit_count(contract::ExitKind::MmioWrite), 5 + 2);
}

#[test]
fn blk_emulated_matches_its_oracle_where_a_guest_has_port_io() {
    if !common::kvm_or_skip("blk_emulated") {
        return;
    }
    let p = Params {
        n: 3,
        s: 2048,
        ..Params::default()
    };
    for mode in Mode::ALL {
        let r = run("blk-emulated", mode, p);
        assert_exact(&r, &p);
        assert_eq!(r.device["ata:commands"], 2 * p.n, "{mode}");
        // One command-to-ready time per request; no virtio timings.
        assert_eq!(r.event_ns["ata:completion"].count, 2 * p.n, "{mode}");
        assert!(
            !r.event_ns.keys().any(|k| k.starts_with("virtio:")),
            "{mode}"
        );
    }
}

#[test]
fn a_paravirtual_guest_without_a_disk_has_no_ata_ports() {
    if !common::kvm_or_skip("no_ata_ports") {
        return;
    }
    let img = guests::build(
        "blk-emulated",
        contract::Flavour::Paravirt,
        Params::default(),
    )
    .unwrap();
    // Straight to the engine: no harness, so no disk.
    let r = contract::Engine::run(&paravirt::Paravirt, &img, &common::short()).unwrap();
    assert!(
        matches!(
            &r.outcome,
            Outcome::GuestFault { kind: FaultKind::UnportedPrivilegedInstruction, detail, .. }
                if detail.contains("out dx,al")
        ),
        "{:?}",
        r.outcome
    );
    assert!(r.device.is_empty());
}

#[test]
fn the_oracles_follow_the_parameters() {
    let p = Params {
        n: 100,
        s: 4096,
        q: 32,
        ..Params::default()
    };
    let img = guests::build("blk-virtio", contract::Flavour::Native, p).unwrap();
    let o = &img.expected.oracles[&Mode::HwAssisted];
    assert_eq!(
        o.counts[&CountKey::Exits(contract::ExitKind::MmioWrite)],
        5 + 2 * 4
    );
    assert_eq!(
        o.counts[&CountKey::Device("virtio:notifications".into())],
        8
    );
    let img = guests::build("blk-emulated", contract::Flavour::Native, p).unwrap();
    let o = &img.expected.oracles[&Mode::HwAssisted];
    // 8 sectors a request: 256 word exits each for a write, one for a read.
    assert_eq!(
        o.counts[&CountKey::Exits(contract::ExitKind::IoOut)],
        1 + 12 * 100 + 100 * 8 * 256
    );
    assert_eq!(
        o.counts[&CountKey::Exits(contract::ExitKind::IoIn)],
        3 * 100 * 8 + 100
    );
}

#[test]
fn the_io_paths_scenario_sweeps_request_size_and_queue_depth() {
    let s =
        virtlab::scenario::Scenario::load(std::path::Path::new("scenarios/io-paths.toml")).unwrap();
    let modes = virtlab::engines::modes().len();
    // blk-virtio: 3 sizes × 3 depths × 3 backends; blk-emulated: 3 sizes (inline); each
    // in every mode.
    assert_eq!(s.run_count(), (27 + 3) * modes);
    assert_eq!(
        s.workloads[0].backends,
        Some(contract::BlockBackend::ALL.to_vec())
    );
    assert_eq!(s.workloads[1].backends, None);
    let jobs = s.jobs();
    assert_eq!(jobs.len(), s.run_count());
    for b in contract::BlockBackend::ALL {
        assert_eq!(
            jobs.iter().filter(|j| j.backend == Some(b)).count(),
            9 * modes
        );
    }
    let virtio = guests::find("blk-virtio").unwrap();
    let all = s.workloads[0].combinations(virtio);
    assert_eq!(all.len(), 9);
    assert!(all.iter().any(|p| p.s == 65536 && p.q == 32 && p.n == 16));
    // A size that is not whole sectors is refused where it is written.
    let bad = std::fs::read_to_string("scenarios/io-paths.toml")
        .unwrap()
        .replace("s = [512, 4096, 65536]\nq", "s = [512, 1000, 65536]\nq");
    let e = virtlab::scenario::Scenario::parse(&bad, "bad.toml").unwrap_err();
    assert!(e.to_string().contains("multiple of 512"), "{e}");
}

#[test]
fn kernel_notify_takes_the_doorbell_out_of_the_vcpu_loop() {
    if !common::kvm_or_skip("kernel_notify") {
        return;
    }
    let p = Params {
        n: 7,
        s: 2048,
        q: 3,
        ..Params::default()
    };
    let w = guests::find("blk-virtio").unwrap();
    for mode in Mode::ALL {
        let job = Job {
            guest: Guest::Workload(w, p),
            mode,
            repeat: 0,
            warmup: false,
            backend: None,
        };
        let mut opts = common::short();
        opts.disk = Some(contract::DiskOptions {
            path: None,
            backend: contract::BlockBackend::KernelNotify,
            no_ioeventfd: false,
        });
        let (records, failures) = run_jobs(&[job], &opts, |_, _| {});
        if !ioeventfd_here() {
            declared_unavailable(&records, &failures, "kernel-notify");
            continue;
        }
        assert!(failures.is_empty(), "{failures:?}");
        let r = &records[0];
        assert!(r.verdict_ok(), "{mode}: {:?} {:?}", r.outcome, r.mismatches);
        assert!(r.mismatches.is_empty(), "{mode}: {:?}", r.mismatches);
        // The doorbells rang (the backend thread counted the eventfd's signals), but
        // none of them was an exit: only the queue's five setup writes were.
        let b = p.n.div_ceil(p.q);
        assert_eq!(r.device["virtio:notifications"], 2 * b, "{mode}");
        assert_eq!(r.exit_count(contract::ExitKind::MmioWrite), 5, "{mode}");
        assert_eq!(r.event_ns["virtio:request"].count, 2 * p.n, "{mode}");
        // The driver publishes a batch at once and waits for it before the next: one
        // batch per doorbell, from the backend thread's wake-up.
        assert_eq!(r.event_ns["virtio:completion"].count, 2 * p.n, "{mode}");
        assert_eq!(r.event_ns["virtio:batch"].count, 2 * b, "{mode}");
        assert!(
            r.notes.iter().any(|n| n.contains("kernel-notify")),
            "{mode}"
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("disk image verified on the host")),
            "{mode}"
        );
    }
}

#[test]
fn a_driver_domain_serves_the_queue_from_another_process() {
    if !common::kvm_or_skip("driver_domain") {
        return;
    }
    let p = Params {
        n: 7,
        s: 2048,
        q: 3,
        ..Params::default()
    };
    let w = guests::find("blk-virtio").unwrap();
    for mode in Mode::ALL {
        let job = Job {
            guest: Guest::Workload(w, p),
            mode,
            repeat: 0,
            warmup: false,
            backend: None,
        };
        let mut opts = common::short();
        opts.disk = Some(contract::DiskOptions {
            path: None,
            backend: contract::BlockBackend::DriverDomain,
            no_ioeventfd: false,
        });
        let (records, failures) = run_jobs(&[job], &opts, |_, _| {});
        if !ioeventfd_here() {
            declared_unavailable(&records, &failures, "driver-domain");
            continue;
        }
        assert!(failures.is_empty(), "{failures:?}");
        let r = &records[0];
        assert!(r.verdict_ok(), "{mode}: {:?} {:?}", r.outcome, r.mismatches);
        // The other process counted the doorbells; none was an exit of this one.
        let b = p.n.div_ceil(p.q);
        assert_eq!(r.device["virtio:notifications"], 2 * b, "{mode}");
        assert_eq!(r.device["virtio:bytes_written"], p.n * p.s, "{mode}");
        // Each request's service time, measured in the other process.
        assert_eq!(r.event_ns["virtio:request"].count, 2 * p.n, "{mode}");
        assert_eq!(r.event_ns["virtio:completion"].count, 2 * p.n, "{mode}");
        assert_eq!(r.event_ns["virtio:batch"].count, 2 * b, "{mode}");
        assert_eq!(r.exit_count(contract::ExitKind::MmioWrite), 5, "{mode}");
        // The hop: the domain sleeps in poll() for the doorbell or the VMM's pipe. Only
        // "slept at least once" is promised: a doorbell rung before the domain is back in
        // poll() is served without a sleep, and several can arrive in one wake-up, so a
        // bound per doorbell or per batch would fail under load without a bug.
        assert!(r.device["domain:voluntary_switches"] >= 1, "{mode}");
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("disk image verified on the host")),
            "{mode}"
        );
    }
}

/// Whether this host's KVM does ioeventfd (probed), which the kernel-notify and
/// driver-domain backends need.
fn ioeventfd_here() -> bool {
    machine::caps::probe().unwrap().ioeventfd.is_present()
}

/// Where the probe found no ioeventfd, a run with `backend` is not made: its record says
/// the backend is unavailable here and why, and it is not a failure.
fn declared_unavailable(records: &[RunRecord], failures: &[reports::RunFailure], backend: &str) {
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert!(
        matches!(&r.outcome, Outcome::Unavailable { why }
            if why.contains(&format!("the {backend} backend is unavailable on this host"))
                && why.contains("ioeventfd probe found")),
        "{:?}",
        r.outcome
    );
    assert!(r.went_as_expected(false));
}

#[test]
fn a_backend_switched_off_ends_each_run_with_a_declared_unavailable_record() {
    let p = Params {
        n: 3,
        s: 1024,
        q: 2,
        ..Params::default()
    };
    let virtio = guests::find("blk-virtio").unwrap();
    let pio = guests::find("pio").unwrap();
    let job = |guest, backend| Job {
        guest,
        mode: Mode::TrapEmulate,
        repeat: 0,
        warmup: false,
        backend: Some(backend),
    };
    let jobs = [
        job(
            Guest::Workload(virtio, p),
            contract::BlockBackend::KernelNotify,
        ),
        job(
            Guest::Workload(virtio, p),
            contract::BlockBackend::DriverDomain,
        ),
        job(Guest::Workload(virtio, p), contract::BlockBackend::Inline),
        // A workload without a disk is not concerned.
        job(
            Guest::Workload(pio, Params::default()),
            contract::BlockBackend::KernelNotify,
        ),
    ];
    let mut opts = common::short();
    opts.disk = Some(contract::DiskOptions {
        no_ioeventfd: true,
        ..Default::default()
    });
    let (records, failures) = run_jobs(&jobs, &opts, |_, _| {});
    // Without KVM the two runs that are made fail; the declared records are there anyway.
    let kvm = common::kvm_or_skip("unavailable_inline");
    assert_eq!(failures.len(), if kvm { 0 } else { 2 }, "{failures:?}");
    assert_eq!(records.len(), if kvm { 4 } else { 2 });
    for (r, backend) in records[..2].iter().zip(["kernel-notify", "driver-domain"]) {
        let want = format!(
            "the {backend} backend is unavailable for this run: it needs a KVM ioeventfd on \
             the doorbell, and ioeventfd is switched off (--no-ioeventfd)"
        );
        assert_eq!(
            r.outcome,
            Outcome::Unavailable { why: want.clone() },
            "{backend}"
        );
        assert_eq!(r.block_backend.map(|b| b.name()), Some(backend));
        assert_eq!(r.notes, vec![format!("unavailable: {want}")]);
        // Nothing ran: no exits, no device, no oracle to meet; declared, not a failure.
        assert!(r.exits.is_empty() && r.device.is_empty() && r.expected.is_empty());
        assert_eq!((r.workload.as_str(), r.params["s"]), ("blk-virtio", 1024));
        assert_eq!(
            reports::verdict::Verdict::of(r),
            reports::verdict::Verdict::Unavailable
        );
        assert!(!reports::verdict::Verdict::of(r).is_failure());
    }
    if kvm {
        // Inline needs no ioeventfd: it ran, and so did pio.
        assert!(records[2].verdict_ok(), "{:?}", records[2].outcome);
        assert_eq!(
            records[2].block_backend,
            Some(contract::BlockBackend::Inline)
        );
        assert!(records[3].verdict_ok(), "{:?}", records[3].outcome);
        assert_eq!(records[3].block_backend, None);
    }
}
