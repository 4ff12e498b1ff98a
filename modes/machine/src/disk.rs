//! Attaching a run's disk to the device bus, with its backend, and recording what its
//! devices did.
//!
//! - `inline`: the vCPU thread handles the doorbell's MMIO exit and serves the queue.
//! - `kernel-notify`: the doorbell's address is a KVM ioeventfd, so the guest's write is
//!   absorbed by KVM and signals an eventfd; a backend thread blocked on it serves the
//!   queue. Where the guest runs at CPL 0 (hw-assisted) and the irqfd probe says an
//!   irqfd reaches a halted guest, completion is an interrupt too: the machine gets an
//!   in-kernel irqchip, the backend's completion eventfd is a KVM irqfd routed to an MSI
//!   ([`crate::irqfd`]), and the guest waits in `hlt` — neither the doorbell nor the
//!   completion returns to the vCPU's loop. Elsewhere the guest polls the used ring and
//!   the record says why ([`completion`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use contract::abi::blk::{COMPLETION_VECTOR, QUEUE_NOTIFY, VIRTIO_BASE};
use contract::record::{FaultKind, Mode, Outcome, RunRecord};
use contract::{BlockBackend, DiskOptions, Error, Result};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::lifecycle::Policy;
use crate::setup::GuestPrivilege;

/// How the guest learns that its virtio requests are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// An interrupt at [`COMPLETION_VECTOR`]: the backend thread's completion eventfd is a
    /// KVM irqfd routed to an MSI for the in-kernel local APIC.
    Interrupt,
    /// The guest polls the used ring, for the reason given.
    Polled(String),
}

impl Completion {
    /// One phrase for the record's note.
    pub fn describe(&self) -> String {
        match self {
            Completion::Interrupt => format!(
                "completion: interrupt (the backend's eventfd is a KVM irqfd on GSI {}, an MSI \
                 for vector {COMPLETION_VECTOR:#x} through the in-kernel local APIC; the guest \
                 waits in hlt, which KVM handles)",
                crate::irqfd::COMPLETION_GSI
            ),
            Completion::Polled(why) => format!("completion: polled ({why})"),
        }
    }
}

/// How a run's virtio completions reach a guest at `privilege` under `backend`: an
/// interrupt where the backend is `kernel-notify`, the guest owns its CPL 0 (so its own
/// IDT and local APIC take the interrupt) and the irqfd probe found that an irqfd reaches
/// a halted guest on this host; polling, with the reason, everywhere else.
pub fn completion(privilege: GuestPrivilege, backend: BlockBackend) -> Completion {
    let polled = |why: &str| Completion::Polled(why.to_string());
    match backend {
        BlockBackend::Inline => polled(
            "the inline backend has put the batch on the used ring when the doorbell's exit \
             returns",
        ),
        BlockBackend::DriverDomain => {
            polled("the driver domain's process raises no interrupt; the guest reads the used ring")
        }
        BlockBackend::KernelNotify if privilege == GuestPrivilege::User => polled(
            "the guest runs at CPL 3 under the monitor's IDT, whose interrupts the VMM \
             injects itself; an in-kernel local APIC would take them from it",
        ),
        BlockBackend::KernelNotify => match crate::caps::probe() {
            Ok(caps) if caps.irqfd.is_present() => Completion::Interrupt,
            Ok(caps) => Completion::Polled(format!(
                "no irqfd completion on this host: {}",
                caps.irqfd.detail
            )),
            Err(e) => Completion::Polled(format!("the host could not be probed: {e}")),
        },
    }
}

/// The backend thread of `kernel-notify`: woken by the doorbell's eventfd, and raising
/// the completion interrupt through an irqfd where the run has one.
#[derive(Debug)]
pub struct NotifyThread {
    wake: EventFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifyThread {
    /// Registers the doorbell as an ioeventfd on `vm` and starts the thread serving
    /// `server`; with [`Completion::Interrupt`] it also routes the completion interrupt
    /// and registers the eventfd the thread writes after each pass that completed
    /// requests as its irqfd.
    fn start(
        vm: &VmFd,
        server: blk::QueueServer,
        completion: &Completion,
    ) -> std::io::Result<Self> {
        let wake = EventFd::new(0)?;
        vm.register_ioevent(
            &wake,
            &IoEventAddress::Mmio(VIRTIO_BASE + QUEUE_NOTIFY),
            NoDatamatch,
        )
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        let irq = match completion {
            Completion::Interrupt => {
                let irq = EventFd::new(0)?;
                crate::irqfd::route(vm, &irq, COMPLETION_VECTOR).map_err(std::io::Error::other)?;
                Some(irq)
            }
            Completion::Polled(_) => None,
        };
        let efd = wake.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("blk-backend".into())
            .spawn(move || {
                // Each read returns how many doorbells rang since the last one.
                while let Ok(signals) = efd.read() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let completed = server.notified(signals);
                    // One interrupt per pass that put requests on the used ring (written
                    // before this), as a virtio device interrupts per used-buffer batch.
                    if let (true, Some(irq)) = (completed > 0, irq.as_ref()) {
                        if irq.write(1).is_ok() {
                            server.interrupted();
                        }
                    }
                }
            })?;
        Ok(NotifyThread {
            wake,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (idempotent).
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            // Wakes the thread even if no doorbell is pending; it sees the flag.
            let _ = self.wake.write(1);
            let _ = t.join();
        }
    }
}

impl Drop for NotifyThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why `backend` cannot run on this host, from the probed `ioeventfd` capability
/// (`None` when it can): `kernel-notify` and `driver-domain` are both woken by a KVM
/// ioeventfd on the doorbell.
pub fn backend_unavailable(backend: BlockBackend) -> Option<String> {
    if backend == BlockBackend::Inline {
        return None;
    }
    let why = match crate::caps::probe() {
        Ok(caps) if caps.ioeventfd.is_present() => return None,
        Ok(caps) => caps.ioeventfd.detail.clone(),
        Err(e) => e.to_string(),
    };
    Some(format!(
        "the {} backend is unavailable on this host: it needs a KVM ioeventfd on the \
         doorbell, and the ioeventfd probe found: {why}",
        backend.name()
    ))
}

/// Why the run with `disk` cannot have its backend here (`None` when it can): the
/// host's probe ([`backend_unavailable`]), or ioeventfd switched off for the run.
pub fn unavailable(disk: &DiskOptions) -> Option<String> {
    if disk.no_ioeventfd && disk.backend != BlockBackend::Inline {
        return Some(format!(
            "the {} backend is unavailable for this run: it needs a KVM ioeventfd on the \
             doorbell, and ioeventfd is switched off (--no-ioeventfd)",
            disk.backend.name()
        ));
    }
    backend_unavailable(disk.backend)
}

/// Opens the image and attaches both device models to the handler's devices, with the
/// backend asked for.
pub fn attach<P: Policy>(
    mode: Mode,
    disk: &DiskOptions,
    completion: &Completion,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    handler: &mut P,
) -> Result<()> {
    let devices = handler.devices().ok_or_else(|| Error::Unsupported {
        mode,
        why: "this engine has no device bus to attach a disk to".into(),
    })?;
    if let Some(why) = unavailable(disk) {
        return Err(Error::Unsupported { mode, why });
    }
    let path = disk
        .path
        .as_ref()
        .ok_or_else(|| Error::InvalidOption("a disk without an image file".into()))?;
    let image = blk::DiskImage::open(path).map_err(|e| Error::InvalidOption(e.to_string()))?;
    let block = blk::BlockDevices::new(image, mem)
        .ok_or_else(|| Error::GuestMemoryAlloc("no guest RAM at address 0".into()))?;
    if disk.backend == BlockBackend::KernelNotify {
        let thread = NotifyThread::start(vm, block.virtio.server(), completion).map_err(|e| {
            Error::Unsupported {
                mode,
                why: format!(
                    "the kernel-notify backend needs a KVM ioeventfd on the doorbell \
                     (and, for its completion interrupt, an irqfd): {e}"
                ),
            }
        })?;
        devices.block_backend = Some(thread);
        devices.in_kernel_irqchip = *completion == Completion::Interrupt;
    }
    if disk.backend == BlockBackend::DriverDomain {
        let domain = crate::driver_domain::DriverDomain::start(vm, &block.virtio).map_err(|e| {
            Error::Unsupported {
                mode,
                why: format!("the driver-domain backend could not start its process: {e}"),
            }
        })?;
        devices.block_domain = Some(domain);
    }
    devices.block = Some(block);
    Ok(())
}

/// Stops the backend, copies the devices' counters into the record with a note on the
/// disk, and names a chain the backend thread refused (the guest, polling for it, ran
/// into a limit instead).
pub fn report<P: Policy>(
    disk: &DiskOptions,
    completion: &Completion,
    handler: &mut P,
    record: &mut RunRecord,
) {
    let Some(devices) = handler.devices() else {
        return;
    };
    if let Some(t) = devices.block_backend.as_mut() {
        t.stop();
    }
    let domain = devices.block_domain.as_mut().map(|d| (d.pid(), d.finish()));
    let Some(block) = devices.block.as_ref() else {
        return;
    };
    record.device = block.counters();
    for (name, l) in [
        ("virtio:request", block.virtio.service_latency()),
        ("virtio:completion", block.virtio.completion_latency()),
        ("virtio:batch", block.virtio.batch_latency()),
        ("ata:completion", block.ata.completion_latency()),
    ] {
        if l.count > 0 {
            record.event_ns.insert(name.into(), l);
        }
    }
    if let Some((pid, d)) = &domain {
        driver_domain_report(*pid, d, record);
    }
    record.notes.push(format!(
        "disk: an image of {} sectors, device model {}",
        block.disk.sectors(),
        match disk.backend {
            BlockBackend::Inline => "inline (in the vCPU thread)",
            BlockBackend::KernelNotify =>
                "kernel-notify (virtio doorbell = KVM ioeventfd, a backend thread serves \
                 the queue)",
            BlockBackend::DriverDomain =>
                "driver-domain (a separate process on the memfd-shared guest RAM serves \
                 the virtio queue, woken by the doorbell's ioeventfd; the ATA disk stays \
                 inline)",
        }
    ));
    record.notes.push(completion.describe());
    if let Some(e) = block.virtio.broken() {
        if matches!(record.outcome, Outcome::TimedOut { .. }) {
            record.outcome = Outcome::GuestFault {
                kind: FaultKind::BadDeviceAccess,
                rip: None,
                detail: format!(
                    "{e} (refused by the backend thread; the guest waited for the request \
                     until the run's limit)"
                ),
            };
        } else {
            record
                .notes
                .push(format!("the backend thread refused a request: {e}"));
        }
    }
}

/// The driver domain's counters (its virtio device's, and its context switches) in the
/// record, and how it ended: a process that died ends a run that waited for it as a bad
/// device access that says so.
fn driver_domain_report(
    pid: libc::pid_t,
    d: &crate::driver_domain::DomainReport,
    record: &mut RunRecord,
) {
    record.device.retain(|k, _| !k.starts_with("virtio:"));
    record.event_ns.retain(|k, _| !k.starts_with("virtio:"));
    for (name, l) in [
        ("virtio:request", &d.service),
        ("virtio:completion", &d.completion),
        ("virtio:batch", &d.batch),
    ] {
        if l.count > 0 {
            record.event_ns.insert(name.into(), l.clone());
        }
    }
    if d.stats != blk::BlockStats::default() {
        record
            .device
            .extend(d.stats.named("virtio", "notifications"));
    }
    if d.died.is_none() {
        record
            .device
            .insert("domain:voluntary_switches".into(), d.voluntary_switches);
        record
            .device
            .insert("domain:involuntary_switches".into(), d.involuntary_switches);
    }
    let why = match (&d.died, &d.broken) {
        (Some(died), _) => Some(format!(
            "the driver domain (pid {pid}) died ({died}): the device stopped answering"
        )),
        (None, Some(b)) => Some(format!("{b} (refused by the driver domain, pid {pid})")),
        _ => None,
    };
    if let Some(why) = why {
        if matches!(record.outcome, Outcome::TimedOut { .. }) {
            record.outcome = Outcome::GuestFault {
                kind: FaultKind::BadDeviceAccess,
                rip: None,
                detail: format!("{why}; the guest waited for its request until the run's limit"),
            };
        } else {
            record.notes.push(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_is_an_interrupt_only_for_kernel_notify_at_cpl0_where_the_probe_says_so() {
        for p in [GuestPrivilege::Kernel, GuestPrivilege::User] {
            for b in [BlockBackend::Inline, BlockBackend::DriverDomain] {
                assert!(
                    matches!(completion(p, b), Completion::Polled(_)),
                    "{p:?} {b}"
                );
            }
        }
        let user = completion(GuestPrivilege::User, BlockBackend::KernelNotify);
        assert!(
            user.describe()
                .starts_with("completion: polled (the guest runs at CPL 3"),
            "{user:?}"
        );
        if crate::open_kvm().is_err() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        let here = crate::caps::probe().unwrap().irqfd.is_present();
        match completion(GuestPrivilege::Kernel, BlockBackend::KernelNotify) {
            Completion::Interrupt => assert!(here),
            Completion::Polled(why) => {
                assert!(!here, "{why}");
                assert!(why.starts_with("no irqfd completion on this host"), "{why}");
            }
        }
    }

    #[test]
    fn a_backend_is_unavailable_exactly_where_the_ioeventfd_probe_says_so() {
        assert_eq!(backend_unavailable(BlockBackend::Inline), None);
        if crate::open_kvm().is_err() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        let here = crate::caps::probe().unwrap().ioeventfd.is_present();
        for backend in BlockBackend::ALL {
            let off = DiskOptions {
                path: None,
                backend,
                no_ioeventfd: true,
            };
            match unavailable(&off) {
                None => assert_eq!(backend, BlockBackend::Inline),
                Some(why) => assert!(
                    why.starts_with(&format!(
                        "the {backend} backend is unavailable for this run"
                    )) && why.ends_with("(--no-ioeventfd)"),
                    "{why}"
                ),
            }
        }
        for b in [BlockBackend::KernelNotify, BlockBackend::DriverDomain] {
            match backend_unavailable(b) {
                None => assert!(here, "{b}"),
                Some(why) => {
                    assert!(!here, "{b}: {why}");
                    assert!(
                        why.starts_with(&format!("the {b} backend is unavailable on this host")),
                        "{why}"
                    );
                }
            }
        }
    }
}
