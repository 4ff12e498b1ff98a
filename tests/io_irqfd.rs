//! Completion by interrupt: under `kernel-notify`, where the guest owns CPL 0
//! (hw-assisted) and the irqfd probe says an irqfd reaches a halted guest, the backend
//! thread's completion eventfd is a KVM irqfd and the driver waits in `hlt` for one
//! interrupt per batch. Neither the doorbell nor the completion is an exit of the vCPU's
//! loop; the data is the inline backend's, byte for byte.

mod common;

use std::path::PathBuf;

use contract::{BlockBackend, CountKey, DiskOptions, ExitKind, Mode, Outcome, RunRecord};
use guests::Params;
use virtlab::harness::{run_jobs, Guest, Job};

/// Runs blk-virtio in `mode` under `backend`, on the image file `path` (kept: the test
/// compares and removes it).
fn run(mode: Mode, backend: BlockBackend, p: Params, path: Option<PathBuf>) -> RunRecord {
    let job = Job {
        guest: Guest::Workload(guests::find("blk-virtio").unwrap(), p),
        mode,
        repeat: 0,
        warmup: false,
        backend: None,
    };
    let mut opts = common::short();
    opts.disk = Some(DiskOptions {
        path,
        backend,
        no_ioeventfd: false,
    });
    let (mut records, failures) = run_jobs(&[job], &opts, |_, _| {});
    assert!(failures.is_empty(), "{mode} {backend}: {failures:?}");
    records.remove(0)
}

/// Whether the host does ioeventfd and irqfd completion (both probed).
fn probed() -> (bool, bool) {
    let caps = machine::caps::probe().unwrap();
    (caps.ioeventfd.is_present(), caps.irqfd.is_present())
}

fn assert_done(r: &RunRecord, p: &Params) {
    let what = format!("{} under {:?}", r.mode, r.notes);
    assert!(
        matches!(r.outcome, Outcome::Completed { exit_code: 0, result, .. } if result == p.n * p.s / 8),
        "{what}: {:?}",
        r.outcome
    );
    assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
    assert!(r.verdict_ok(), "{what}");
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("disk image verified on the host")),
        "{what}"
    );
}

fn temp_image(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("virtlab-irqfd-{}-{tag}.img", std::process::id()))
}

#[test]
fn hw_assisted_kernel_notify_completes_each_batch_with_one_irqfd_interrupt() {
    if !common::kvm_or_skip("irqfd_completion") {
        return;
    }
    let (ioeventfd, irqfd) = probed();
    if !ioeventfd {
        eprintln!("skipped: no ioeventfd on this host (kernel-notify is refused; io_blk tests it)");
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
            n: 5,
            s: 512,
            q: 1,
            ..Params::default()
        },
    ] {
        let b = p.n.div_ceil(p.q);
        let r = run(Mode::HwAssisted, BlockBackend::KernelNotify, p, None);
        assert_done(&r, &p);
        // The doorbells reached the backend thread, none as an exit.
        assert_eq!(r.device["virtio:notifications"], 2 * b);
        assert_eq!(r.device["virtio:requests"], 2 * p.n);
        if !irqfd {
            assert!(
                r.notes
                    .iter()
                    .any(|n| n.starts_with("completion: polled (no irqfd completion on this host:")),
                "{:?}",
                r.notes
            );
            assert_eq!(r.device.get("virtio:interrupts"), None);
            continue;
        }
        assert!(
            r.notes
                .iter()
                .any(|n| n
                    .starts_with("completion: interrupt (the backend's eventfd is a KVM irqfd")),
            "{:?}",
            r.notes
        );
        // One completion interrupt per batch, raised by the backend thread, in the oracle.
        assert_eq!(r.device["virtio:interrupts"], 2 * b, "{p:?}");
        assert_eq!(
            r.expected[&CountKey::Device("virtio:interrupts".into())],
            2 * b
        );
        // The vCPU's loop saw the device's magic, the queue's five setup writes and the
        // exit port: no doorbell, no completion, no hlt.
        assert_eq!(r.exit_count(ExitKind::MmioRead), 1);
        assert_eq!(r.exit_count(ExitKind::MmioWrite), 5);
        assert_eq!(r.exit_count(ExitKind::IoOut), 1);
        assert_eq!(r.exit_count(ExitKind::Halt), 0);
        assert_eq!(r.total_exits(), 7, "{:?}", r.exits);
        // KVM injected those interrupts itself (its own statistic, which also counts a
        // re-injection when an event's delivery was cut short, so it is a lower bound),
        // and its halts waited in the kernel, at most one per batch (an interrupt that
        // arrives before the hlt needs none).
        if let Some(&injected) = r.kvm_stats.get("irq_injections") {
            assert!(injected >= 2 * b, "{:?}", r.kvm_stats);
        }
        if let Some(&halts) = r.kvm_stats.get("halt_exits") {
            assert!(halts <= 2 * b, "{:?}", r.kvm_stats);
        }
    }
}

#[test]
fn the_interrupt_path_reads_back_what_the_inline_path_does() {
    if !common::kvm_or_skip("irqfd_same_data") {
        return;
    }
    if !probed().0 {
        eprintln!("skipped: no ioeventfd on this host");
        return;
    }
    let p = Params {
        n: 6,
        s: 4096,
        q: 4,
        ..Params::default()
    };
    let mut images = Vec::new();
    let mut results = Vec::new();
    for backend in [BlockBackend::Inline, BlockBackend::KernelNotify] {
        let path = temp_image(backend.name());
        let _ = std::fs::remove_file(&path);
        let r = run(Mode::HwAssisted, backend, p, Some(path.clone()));
        assert_done(&r, &p);
        results.push((
            r.device["virtio:bytes_read"],
            r.device["virtio:bytes_written"],
        ));
        images.push(std::fs::read(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], (p.n * p.s, p.n * p.s));
    assert_eq!(images[0], images[1]);
    assert_eq!(images[0], guests::blk::expected_image(&p));
}

#[test]
fn the_deprivileged_modes_poll_and_say_why() {
    if !common::kvm_or_skip("irqfd_polled") {
        return;
    }
    if !probed().0 {
        eprintln!("skipped: no ioeventfd on this host");
        return;
    }
    let p = Params {
        n: 4,
        s: 1024,
        q: 2,
        ..Params::default()
    };
    for mode in [Mode::TrapEmulate, Mode::Paravirt, Mode::BinaryTranslation] {
        let r = run(mode, BlockBackend::KernelNotify, p, None);
        assert_done(&r, &p);
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("completion: polled (the guest runs at CPL 3")),
            "{mode}: {:?}",
            r.notes
        );
        assert_eq!(r.device.get("virtio:interrupts"), None, "{mode}");
        assert_eq!(r.exit_count(ExitKind::MmioWrite), 5, "{mode}");
    }
}

#[test]
fn the_oracle_counts_an_interrupt_per_batch_only_where_the_irqfd_is() {
    let p = Params {
        n: 10,
        s: 512,
        q: 4,
        ..Params::default()
    };
    let key = CountKey::Device("virtio:interrupts".into());
    let img = guests::build("blk-virtio", contract::Flavour::Native, p).unwrap();
    for backend in BlockBackend::ALL {
        for irqfd in [false, true] {
            let mut e = img.expected.clone();
            guests::blk::for_backend(&mut e, "blk-virtio", backend, &p, irqfd);
            for (mode, o) in &e.oracles {
                let want = if irqfd
                    && backend == BlockBackend::KernelNotify
                    && *mode == Mode::HwAssisted
                {
                    2 * 3
                } else {
                    0
                };
                assert_eq!(o.counts[&key], want, "{mode} {backend} irqfd={irqfd}");
            }
        }
    }
}
