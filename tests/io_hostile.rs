//! Hostile drivers against the disk, on KVM: each run ends classified, the image is never
//! written outside its bounds or by a refused request, what completed before an attack
//! stays on the disk, and other runs keep their results.

mod common;

use std::path::PathBuf;

use contract::abi::blk::*;
use contract::abi::port;
use contract::{
    BlockBackend, DiskOptions, FaultKind, GuestImage, Limit, Mode, Outcome, RunOptions, RunRecord,
};
use hw_assisted::HwAssisted;
use iced_x86::code_asm::*;

const DESC: u64 = 0x20_0000;
const AVAIL: u64 = 0x20_1000;
const USED: u64 = 0x20_2000;
const HDR: u64 = 0x20_3000;
const STATUS: u64 = 0x20_3800;
const BUF: u64 = 0x30_0000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// An image file removed at the end of the test.
struct Disk(PathBuf);

impl Disk {
    fn new(tag: &str, sectors: u64) -> Self {
        let path =
            std::env::temp_dir().join(format!("virtlab-hostile-{tag}-{}.img", std::process::id()));
        blk::DiskImage::create(&path, sectors * SECTOR_SIZE).unwrap();
        Disk(path)
    }

    fn opts(&self) -> RunOptions {
        RunOptions {
            disk: Some(DiskOptions {
                path: Some(self.0.clone()),
                backend: BlockBackend::Inline,
                no_ioeventfd: false,
            }),
            ..common::short()
        }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The queue's five setup writes (RSI = the register page).
fn setup(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rsi, VIRTIO_BASE)?;
    a.mov(qword_ptr(rsi + QUEUE_SIZE as i32), 16)?;
    a.mov(qword_ptr(rsi + QUEUE_DESC as i32), DESC as i32)?;
    a.mov(qword_ptr(rsi + QUEUE_AVAIL as i32), AVAIL as i32)?;
    a.mov(qword_ptr(rsi + QUEUE_USED as i32), USED as i32)?;
    a.mov(qword_ptr(rsi + QUEUE_READY as i32), 1)
}

fn store(a: &mut CodeAssembler, addr: u64, value: u64) -> Result<(), IcedError> {
    a.mov(rax, value)?;
    a.mov(rdx, addr)?;
    a.mov(qword_ptr(rdx), rax)
}

/// Descriptor `i` = {addr, len, flags, next}.
fn desc(
    a: &mut CodeAssembler,
    i: u64,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) -> Result<(), IcedError> {
    store(a, DESC + 16 * i, addr)?;
    let tail = u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48;
    store(a, DESC + 16 * i + 8, tail)
}

/// Fills the 512-byte buffer with `byte` and posts a header for `kind` at `sector`.
fn request(a: &mut CodeAssembler, kind: u32, sector: u64, byte: u8) -> Result<(), IcedError> {
    let word = u64::from_le_bytes([byte; 8]);
    for k in 0..64 {
        store(a, BUF + 8 * k, word)?;
    }
    store(a, HDR, u64::from(kind))?;
    store(a, HDR + 8, sector)?;
    store(a, STATUS, 0xFF)
}

/// Puts head 0 on the available ring as entry `n` and rings the doorbell once.
fn submit(a: &mut CodeAssembler, n: u16) -> Result<(), IcedError> {
    a.mov(rdx, AVAIL + 4 + 2 * u64::from(n))?;
    a.mov(word_ptr(rdx), 0)?;
    a.mov(rdx, AVAIL + 2)?;
    a.mov(word_ptr(rdx), u32::from(n + 1))?;
    a.mov(rsi, VIRTIO_BASE)?;
    a.mov(qword_ptr(rsi + QUEUE_NOTIFY as i32), 0)
}

/// Exits with the status byte in RBX.
fn exit_with_status(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rdx, STATUS)?;
    a.movzx(ebx, byte_ptr(rdx))?;
    a.xor(eax, eax)?;
    a.out(port::EXIT as u32, eax)
}

fn guest(name: &str, body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestImage {
    common::assemble(name, |a| {
        setup(a)?;
        body(a)?;
        exit_with_status(a)
    })
}

fn run(img: &GuestImage, disk: &Disk) -> RunRecord {
    common::run(&HwAssisted, img, &disk.opts())
}

fn refused(r: &RunRecord, what: &str) {
    assert!(
        matches!(&r.outcome, Outcome::GuestFault { kind: FaultKind::BadDeviceAccess, detail, .. }
            if detail.starts_with("virtio-blk: ") && detail.contains(what)),
        "{:?}",
        r.outcome
    );
}

#[test]
fn a_good_request_then_a_looping_chain_leaves_the_first_on_the_disk() {
    if !common::kvm_or_skip("looping_chain") {
        return;
    }
    let disk = Disk::new("loop", 8);
    let img = guest("loop", |a| {
        request(a, T_OUT, 1, 0xAB)?;
        desc(a, 0, HDR, 16, NEXT, 1)?;
        desc(a, 1, BUF, 512, NEXT, 2)?;
        desc(a, 2, STATUS, 1, WRITE, 0)?;
        submit(a, 0)?;
        // Then a chain whose data descriptor points back at the header.
        request(a, T_OUT, 2, 0xCD)?;
        desc(a, 1, BUF, 512, NEXT, 0)?;
        submit(a, 1)
    });
    let r = run(&img, &disk);
    refused(&r, "does not end");
    let bytes = disk.bytes();
    assert_eq!(bytes.len(), 4096, "the image never grows");
    assert_eq!(&bytes[512..1024], &[0xAB; 512][..], "the completed request");
    assert!(!bytes.contains(&0xCD), "nothing of the refused one");
    assert_eq!(r.device["virtio:requests"], 1);
}

#[test]
fn buffers_outside_guest_ram_and_in_the_monitor_are_refused() {
    if !common::kvm_or_skip("outside_ram") {
        return;
    }
    let disk = Disk::new("outside", 8);
    for (tag, addr, len) in [
        ("monitor", contract::abi::layout::MONITOR_BASE, 512u32),
        (
            "past ram",
            contract::abi::layout::DEFAULT_RAM_SIZE - 256,
            512,
        ),
        ("huge", BUF, u32::MAX - 511),
    ] {
        let img = guest(tag, |a| {
            request(a, T_IN, 0, 0)?;
            desc(a, 0, HDR, 16, NEXT, 1)?;
            desc(a, 1, addr, len, NEXT | WRITE, 2)?;
            desc(a, 2, STATUS, 1, WRITE, 0)?;
            submit(a, 0)
        });
        let r = run(&img, &disk);
        refused(&r, "are not guest RAM");
    }
    assert_eq!(disk.bytes(), vec![0; 4096]);
}

#[test]
fn a_read_into_a_read_only_buffer_is_refused() {
    if !common::kvm_or_skip("read_only") {
        return;
    }
    let disk = Disk::new("read-only", 8);
    let img = guest("read-only", |a| {
        request(a, T_IN, 0, 0x11)?;
        desc(a, 0, HDR, 16, NEXT, 1)?;
        desc(a, 1, BUF, 512, NEXT, 2)?;
        desc(a, 2, STATUS, 1, WRITE, 0)?;
        submit(a, 0)
    });
    refused(&run(&img, &disk), "read-only to the device");
}

#[test]
fn a_request_past_the_end_of_the_disk_completes_with_an_io_error() {
    if !common::kvm_or_skip("past_end") {
        return;
    }
    let disk = Disk::new("past-end", 8);
    let img = guest("past-end", |a| {
        request(a, T_OUT, 8, 0xEE)?;
        desc(a, 0, HDR, 16, NEXT, 1)?;
        desc(a, 1, BUF, 512, NEXT, 2)?;
        desc(a, 2, STATUS, 1, WRITE, 0)?;
        submit(a, 0)
    });
    let r = run(&img, &disk);
    assert!(
        matches!(r.outcome, Outcome::Completed { result, .. } if result == u64::from(S_IOERR)),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.device["virtio:io_errors"], 1);
    assert_eq!(disk.bytes(), vec![0; 4096]);
}

#[test]
fn a_doorbell_flood_ends_at_the_exit_limit() {
    if !common::kvm_or_skip("doorbell_flood") {
        return;
    }
    let disk = Disk::new("flood", 8);
    let img = guest("flood", |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.mov(qword_ptr(rsi + QUEUE_NOTIFY as i32), 0)?;
        a.jmp(top)
    });
    let mut opts = disk.opts();
    opts.limits.max_exits = 2_000;
    let r = common::run(&HwAssisted, &img, &opts);
    assert!(
        matches!(
            r.outcome,
            Outcome::TimedOut {
                limit: Limit::ExitCount | Limit::WallClock,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(r.device["virtio:notifications"] > 0);
    assert_eq!(r.device["virtio:requests"], 0);
}

#[test]
fn a_hostile_run_does_not_take_the_next_one_with_it() {
    if !common::kvm_or_skip("hostile_then_good") {
        return;
    }
    // The user's image for both: the hostile binary's, then blk-virtio's.
    let disk = Disk::new("shared", 64);
    let hostile = guest("hostile", |a| {
        request(a, T_IN, 0, 0)?;
        desc(a, 0, HDR, 16, NEXT, 1)?;
        desc(
            a,
            1,
            contract::abi::layout::MONITOR_BASE,
            512,
            NEXT | WRITE,
            2,
        )?;
        desc(a, 2, STATUS, 1, WRITE, 0)?;
        submit(a, 0)
    });
    let p = guests::Params {
        n: 4,
        s: 4096,
        q: 2,
        ..guests::Params::default()
    };
    let jobs = [
        virtlab::harness::Job {
            guest: virtlab::harness::Guest::Binary(hostile),
            mode: Mode::HwAssisted,
            repeat: 0,
            warmup: false,
            backend: None,
        },
        virtlab::harness::Job {
            guest: virtlab::harness::Guest::Workload(guests::find("blk-virtio").unwrap(), p),
            mode: Mode::Paravirt,
            repeat: 0,
            warmup: false,
            backend: None,
        },
    ];
    let (records, failures) = virtlab::harness::run_jobs(&jobs, &disk.opts(), |_, _| {});
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(records.len(), 2);
    refused(&records[0], "are not guest RAM");
    assert!(records[1].verdict_ok(), "{:?}", records[1].outcome);
    assert!(records[1]
        .notes
        .iter()
        .any(|n| n.starts_with("disk image verified on the host")));
}

#[test]
fn a_chain_the_backend_thread_refuses_ends_the_run_as_a_bad_device_access() {
    if !common::kvm_or_skip("kernel_notify_refusal") {
        return;
    }
    let disk = Disk::new("kn-loop", 8);
    let img = guest("kn-loop", |a| {
        request(a, T_OUT, 0, 0x77)?;
        desc(a, 0, HDR, 16, NEXT, 1)?;
        desc(a, 1, BUF, 512, NEXT, 0)?; // loops back to the header
        submit(a, 0)?;
        // Wait for a completion that never comes.
        let mut poll = a.create_label();
        a.set_label(&mut poll)?;
        a.mov(rdx, USED + 2)?;
        a.cmp(word_ptr(rdx), 0)?;
        a.je(poll)
    });
    let mut opts = disk.opts();
    opts.disk.as_mut().unwrap().backend = BlockBackend::KernelNotify;
    // The run ends at `common::short()`'s wall limit (from `disk.opts()`); the refusal,
    // made long before under any load, is what names how it ended.
    if !ioeventfd_here() {
        return declared_unavailable(&img, &opts, &disk, "kernel-notify");
    }
    let r = common::run(&HwAssisted, &img, &opts);
    refused(&r, "refused by the backend thread");
    assert_eq!(r.device["virtio:notifications"], 1);
    assert_eq!(r.exit_count(contract::ExitKind::MmioWrite), 5);
    assert_eq!(disk.bytes(), vec![0; 4096]);
}

/// Whether this host's kernel-notify backend completes by irqfd for a CPL 0 guest.
fn irqfd_here() -> bool {
    let caps = machine::caps::probe().unwrap();
    caps.ioeventfd.is_present() && caps.irqfd.is_present()
}

#[test]
fn a_guest_halted_for_an_irqfd_completion_that_never_comes_ends_classified() {
    if !common::kvm_or_skip("irqfd_never") {
        return;
    }
    if !irqfd_here() {
        eprintln!("skipped: no irqfd completion on this host (io_irqfd checks the polled path)");
        return;
    }
    let disk = Disk::new("irq-loop", 8);
    let img = guest("irq-loop", |a| {
        request(a, T_OUT, 0, 0x66)?;
        desc(a, 0, HDR, 16, NEXT, 1)?;
        desc(a, 1, BUF, 512, NEXT, 0)?; // loops back to the header
        submit(a, 0)?;
        // Wait in hlt for an interrupt the refused chain never raises: the local APIC is
        // in the kernel, so the hlt never leaves it; only the watchdog ends the run.
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.sti()?;
        a.hlt()?;
        a.jmp(wait)
    });
    let mut opts = disk.opts();
    opts.disk.as_mut().unwrap().backend = BlockBackend::KernelNotify;
    let r = common::run(&HwAssisted, &img, &opts);
    refused(&r, "refused by the backend thread");
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("completion: interrupt")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.exit_count(contract::ExitKind::Halt), 0);
    assert_eq!(r.device.get("virtio:interrupts"), None);
    assert_eq!(disk.bytes(), vec![0; 4096]);
}

#[test]
fn the_timer_is_refused_on_a_machine_whose_local_apic_is_in_the_kernel() {
    if !common::kvm_or_skip("irqfd_timer") {
        return;
    }
    if !irqfd_here() {
        eprintln!("skipped: no irqfd completion on this host, so no in-kernel irqchip");
        return;
    }
    let disk = Disk::new("irq-timer", 8);
    let img = guest("irq-timer", |a| {
        a.mov(eax, 100)?;
        a.out(port::TIMER as u32, eax)
    });
    let mut opts = disk.opts();
    opts.disk.as_mut().unwrap().backend = BlockBackend::KernelNotify;
    let r = common::run(&HwAssisted, &img, &opts);
    assert!(
        matches!(&r.outcome, Outcome::GuestFault { kind: FaultKind::BadDeviceAccess, detail, .. }
            if detail.starts_with("the timer was armed on a machine whose local APIC is in the kernel")),
        "{:?}",
        r.outcome
    );
    // The same guest with the inline backend has no irqchip: the timer arms, the run ends.
    let r = common::run(&HwAssisted, &img, &disk.opts());
    assert!(
        matches!(r.outcome, Outcome::Completed { .. }),
        "{:?}",
        r.outcome
    );
}

/// Children of this process named `name` (any thread's).
fn children_named(name: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == name {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn a_driver_domain_killed_mid_run_ends_it_classified_with_the_completed_request_on_disk() {
    if !common::kvm_or_skip("driver_domain_killed") {
        return;
    }
    let disk = Disk::new("dd-killed", 8);
    let img = guest("dd-killed", |a| {
        // One request, waited for; then a second that nobody will serve.
        request(a, T_OUT, 1, 0xAB)?;
        desc(a, 0, HDR, 16, NEXT, 1)?;
        desc(a, 1, BUF, 512, NEXT, 2)?;
        desc(a, 2, STATUS, 1, WRITE, 0)?;
        submit(a, 0)?;
        let mut first = a.create_label();
        a.set_label(&mut first)?;
        a.mov(rdx, USED + 2)?;
        a.cmp(word_ptr(rdx), 1)?;
        a.jne(first)?;
        let mut forever = a.create_label();
        a.set_label(&mut forever)?;
        a.pause()?;
        a.jmp(forever)
    });
    let mut opts = disk.opts();
    opts.disk.as_mut().unwrap().backend = BlockBackend::DriverDomain;
    // Long enough that, under load, the domain is found, serves the first request and is
    // killed before the run's limit; the run waits for the second request until then.
    opts.limits.wall = std::time::Duration::from_secs(10);
    if !ioeventfd_here() {
        return declared_unavailable(&img, &opts, &disk, "driver-domain");
    }
    let image = disk.0.clone();
    let killer = std::thread::spawn(move || {
        // Generous deadlines: the domain's process appears, then the first request's
        // bytes reach the image; only then is the domain killed, mid-run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
        let pid = loop {
            if let Some(pid) = children_named("blk-domain").first() {
                break *pid;
            }
            if std::time::Instant::now() > deadline {
                return Err("the driver domain was never found");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        loop {
            let bytes = std::fs::read(&image).unwrap_or_default();
            if bytes.get(512..1024) == Some(&[0xAB; 512][..]) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err("the first request never reached the image");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        Ok(())
    });
    let r = common::run(&HwAssisted, &img, &opts);
    killer.join().unwrap().unwrap();
    refused_as(&r, "died (killed by signal 9)");
    let bytes = disk.bytes();
    assert_eq!(bytes.len(), 4096);
    assert_eq!(&bytes[512..1024], &[0xAB; 512][..], "the completed request");
    assert!(children_named("blk-domain").is_empty(), "reaped");
}

fn refused_as(r: &RunRecord, what: &str) {
    assert!(
        matches!(&r.outcome, Outcome::GuestFault { kind: FaultKind::BadDeviceAccess, detail, .. }
            if detail.contains(what)),
        "{:?}",
        r.outcome
    );
}

/// Whether this host's KVM does ioeventfd (probed), which the kernel-notify and
/// driver-domain backends need.
fn ioeventfd_here() -> bool {
    machine::caps::probe().unwrap().ioeventfd.is_present()
}

/// Where the probe found no ioeventfd, a run with `backend` is refused before the guest
/// runs, saying the backend is unavailable here and why, and the disk is untouched.
fn declared_unavailable(img: &GuestImage, opts: &RunOptions, disk: &Disk, backend: &str) {
    let e = common::try_run(&HwAssisted, img, opts).unwrap_err();
    assert!(
        matches!(&e, contract::Error::Unsupported { why, .. }
            if why.contains(&format!("the {backend} backend is unavailable on this host"))),
        "{e}"
    );
    assert!(disk.bytes().iter().all(|&b| b == 0));
}
