//! The KVM machine all engines share: a VM with guest memory, one vCPU in 64-bit long
//! mode, the standard devices, and the exit loop that counts and times every exit in one
//! place.
//!
//! Engines differ only in their [`ExitHandler`] and in how they configure the vCPU
//! ([`MachineConfig::privilege`], open I/O ports).

pub mod devices;
pub mod setup;
pub mod watchdog;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use kvm_bindings::{kvm_interrupt, kvm_regs, kvm_sregs, KVMIO};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::abi::{self, boot_info, layout, port};
use crate::engine::{Limits, RunOptions};
use crate::error::{kvm, Error, Result};
use crate::host::HostInfo;
use crate::image::{Flavour, GuestImage};
use crate::kvm_stats::{StatsSnapshot, VcpuStats};
use crate::metrics::ExitMetrics;
use crate::record::{
    Ending, ExitKind, FaultKind, GuestMeasurement, Limit, Mode, Outcome, RunRecord,
};
use crate::state::{FinalRegs, Peek, PeekRequest, RegsView};
use crate::trace::{TraceEvent, TraceNote};
use devices::{le_value, Console, MmioDevice, Timer};
pub use setup::GuestPrivilege;

ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// How to build the machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Guest RAM size (a multiple of 2 MiB, at most [`layout::MAX_RAM_SIZE`]).
    pub ram_size: u64,
    /// CPL the guest starts at.
    pub privilege: GuestPrivilege,
    /// Set CR4.UMIP.
    pub umip: bool,
    /// Ports CPL 3 code may use directly (opened in the TSS I/O bitmap).
    pub open_ports: Vec<u16>,
    /// Values for the boot-info page.
    pub boot_info: setup::BootInfo,
}

impl MachineConfig {
    /// The configuration for running `image` with `opts` at `privilege`.
    pub fn for_image(image: &GuestImage, opts: &RunOptions, privilege: GuestPrivilege) -> Self {
        MachineConfig {
            ram_size: opts.ram_size,
            privilege,
            umip: opts.umip,
            open_ports: Vec::new(),
            boot_info: setup::BootInfo {
                ram_size: opts.ram_size,
                flavour: match image.flavour {
                    Flavour::Native => abi::flavour::NATIVE,
                    Flavour::Paravirt => abi::flavour::PARAVIRT,
                },
                ..Default::default()
            },
        }
    }
}

/// The two memory slots of a machine: the guest's RAM from 0, and the monitor's region
/// above it.
pub fn memory_slots(ram_size: u64) -> [(u64, u64); 2] {
    [(0, ram_size), (layout::MONITOR_BASE, layout::MONITOR_SIZE)]
}

/// Guest memory of a machine with `ram_size` bytes of RAM, with the monitor's region
/// (unit tests build the VMM's structures in it without KVM).
pub fn guest_memory(ram_size: u64) -> Result<GuestMemoryMmap> {
    GuestMemoryMmap::<()>::from_ranges(
        &memory_slots(ram_size).map(|(base, size)| (GuestAddress(base), size as usize)),
    )
    .map_err(|e| Error::GuestMemoryAlloc(e.to_string()))
}

/// A VM with one vCPU and its guest memory.
#[derive(Debug)]
pub struct Machine {
    // Fields drop in declaration order: every descriptor that keeps the VM alive (the VM,
    // the vCPU, its statistics) goes before the guest memory is unmapped.
    _kvm: Kvm,
    vm: VmFd,
    vcpu: VcpuFd,
    stats: Option<VcpuStats>,
    host: HostInfo,
    privilege: GuestPrivilege,
    ram_size: u64,
    mem: GuestMemoryMmap,
}

impl Machine {
    /// Creates the VM, its memory and its vCPU, and writes the VMM's structures.
    pub fn new(cfg: &MachineConfig) -> Result<Self> {
        let ram = cfg.ram_size;
        if ram < 4 << 20 || ram % (2 << 20) != 0 || ram > layout::MAX_RAM_SIZE {
            return Err(Error::InvalidOption(format!(
                "guest RAM must be a multiple of 2 MiB between 4 MiB and {} MiB, not {ram:#x}",
                layout::MAX_RAM_SIZE >> 20
            )));
        }
        let kvm_fd = Kvm::new().map_err(Error::KvmUnavailable)?;
        let mut host = HostInfo::gather(&kvm_fd);
        let vm = kvm_fd.create_vm().map_err(kvm("KVM_CREATE_VM"))?;
        let mem = guest_memory(ram)?;
        for (slot, (base, size)) in (0u32..).zip(memory_slots(ram)) {
            let host_addr = mem
                .get_host_address(GuestAddress(base))
                .map_err(|e| Error::GuestMemoryAlloc(e.to_string()))?;
            let region = kvm_bindings::kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: base,
                memory_size: size,
                userspace_addr: host_addr as u64,
            };
            // SAFETY: the region describes `size` bytes of memory mapped by `mem` (one of
            // its regions starts at `base`), which the Machine owns and keeps mapped for
            // as long as the VM exists.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm("KVM_SET_USER_MEMORY_REGION"))?;
        }
        let vcpu = vm.create_vcpu(0).map_err(kvm("KVM_CREATE_VCPU"))?;
        let cpuid = kvm_fd
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;
        host.tsc_khz = vcpu.get_tsc_khz().ok();

        let bad = |e: String| Error::InvalidOption(format!("building guest structures: {e}"));
        setup::write_page_tables(&mem, ram).map_err(bad)?;
        setup::write_descriptor_tables(&mem).map_err(bad)?;
        for p in &cfg.open_ports {
            setup::open_io_port(&mem, *p).map_err(bad)?;
        }
        let mut info = cfg.boot_info;
        info.tsc_khz = host.tsc_khz.map_or(0, u64::from);
        setup::write_boot_info(&mem, &info).map_err(bad)?;

        let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        setup::long_mode_sregs(&mut sregs, cfg.privilege, cfg.umip);
        vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        let stats = match VcpuStats::open(&vcpu) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("KVM statistics unavailable: {e}");
                None
            }
        };
        Ok(Machine {
            _kvm: kvm_fd,
            vm,
            vcpu,
            mem,
            stats,
            host,
            privilege: cfg.privilege,
            ram_size: ram,
        })
    }

    /// Copies the image into guest memory and points the vCPU at its entry.
    pub fn load(&mut self, image: &GuestImage) -> Result<()> {
        image.validate(self.mem_size())?;
        self.mem
            .write_slice(&image.bytes, GuestAddress(image.load_addr))
            .map_err(|e| Error::InvalidImage(e.to_string()))?;
        let regs = kvm_regs {
            rip: image.entry,
            rsp: image.stack_top,
            rdi: layout::BOOT_INFO,
            rflags: 0x2,
            ..Default::default()
        };
        self.vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))
    }

    /// Guest RAM size (the monitor's region is not guest RAM).
    pub fn mem_size(&self) -> u64 {
        self.ram_size
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The vCPU.
    pub fn vcpu(&mut self) -> &mut VcpuFd {
        &mut self.vcpu
    }

    /// The VM.
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// The host this machine runs on.
    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// Runs the guest until the handler stops it or a limit ends it.
    pub fn run<H: ExitHandler>(&mut self, handler: &mut H, limits: &Limits) -> Result<RunSummary> {
        watchdog::install_kick_handler()?;
        let before = self.snapshot();
        let start = Instant::now();
        let deadline = start.checked_add(limits.wall).ok_or_else(|| {
            Error::InvalidOption(format!("wall-clock limit {:?} is too large", limits.wall))
        })?;
        let fired = AtomicBool::new(false);
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let me = watchdog::ThreadHandle::current();
        let (outcome, metrics, trace) = std::thread::scope(|s| {
            // The sender lives in this closure: however it is left, by return or by a
            // panic unwinding, dropping it tells the watchdog the run is over, so the scope
            // can join it.
            let done_tx = done_tx;
            let fired = &fired;
            std::thread::Builder::new()
                .name("virtlab-watchdog".into())
                .spawn_scoped(s, move || watchdog::watch(me, deadline, fired, done_rx))
                .map_err(|e| Error::Watchdog(format!("cannot start the watchdog thread: {e}")))?;
            let r = exit_loop(&mut self.vcpu, &self.mem, handler, limits, deadline, fired);
            drop(done_tx);
            Ok::<_, Error>(r)
        })?;
        let wall_ns = start.elapsed().as_nanos() as u64;
        let after = self.snapshot();
        let kvm_stats = match (&self.stats, before, after) {
            (Some(s), Some(b), Some(a)) => s.delta(&b, &a),
            _ => Default::default(),
        };
        let guest = self.guest_measurement();
        Ok(RunSummary {
            outcome,
            metrics,
            kvm_stats,
            wall_ns,
            guest,
            trace,
        })
    }

    /// The vCPU's registers as they are now (engines that deprivilege the guest replace
    /// what the guest sees differently).
    fn final_regs(&self) -> Option<FinalRegs> {
        let r = self.vcpu.get_regs().ok()?;
        let s = self.vcpu.get_sregs().ok()?;
        Some(FinalRegs {
            gpr: [
                r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags,
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            view: RegsView::Real,
        })
    }

    /// Reads guest memory for a peek (guest RAM or the monitor's region).
    fn peek(&self, p: &PeekRequest) -> Peek {
        let mut buf = vec![0u8; p.len.min(crate::state::MAX_PEEK_LEN) as usize];
        match self.mem.read_slice(&mut buf, GuestAddress(p.addr)) {
            Ok(()) => Peek::of(p.addr, &buf),
            Err(e) => Peek {
                addr: p.addr,
                len: p.len,
                hex: String::new(),
                error: Some(format!(
                    "{:#x}..{:#x} is not guest memory ({e})",
                    p.addr,
                    p.addr.saturating_add(p.len)
                )),
            },
        }
    }

    fn snapshot(&self) -> Option<StatsSnapshot> {
        self.stats.as_ref().and_then(|s| s.snapshot().ok())
    }

    fn guest_measurement(&self) -> Option<GuestMeasurement> {
        let read = |off: u64| -> u64 {
            self.mem
                .read_obj(GuestAddress(layout::BOOT_INFO + off))
                .unwrap_or(0)
        };
        let (cycles, ops) = (
            read(boot_info::MEASURED_CYCLES),
            read(boot_info::MEASURED_OPS),
        );
        (ops > 0).then(|| {
            let cycles_per_op = cycles as f64 / ops as f64;
            GuestMeasurement {
                cycles,
                ops,
                cycles_per_op,
                ns_per_op: self
                    .host
                    .tsc_khz
                    .map(|k| cycles_per_op * 1e6 / f64::from(k)),
            }
        })
    }

    /// Turns a finished run into a record (traps, hypercalls and injections are the
    /// engine's to fill in), then judges it against the image's expectations.
    pub fn record(
        &self,
        mode: Mode,
        image: &GuestImage,
        opts: &RunOptions,
        summary: RunSummary,
        console: String,
        fill: impl FnOnce(&mut RunRecord),
    ) -> RunRecord {
        let mut r = RunRecord {
            mode,
            workload: image.name.clone(),
            params: image.params.clone(),
            repeat: opts.repeat,
            host: HostInfo {
                capabilities: crate::caps::probe().ok().cloned(),
                ..self.host.clone()
            },
            options: Default::default(),
            outcome: summary.outcome,
            exits: summary.metrics.counts().clone(),
            io_ports: summary.metrics.ports().clone(),
            traps: Default::default(),
            hypercalls: Default::default(),
            injections: 0,
            event_ns: Default::default(),
            expected: Default::default(),
            mismatches: Default::default(),
            round_trip_ns: summary.metrics.round_trip_summaries(),
            handler_ns: summary.metrics.handler_summaries(),
            guest: summary.guest,
            kvm_stats: summary.kvm_stats,
            wall_ns: summary.wall_ns,
            console,
            console_ok: None,
            notes: Vec::new(),
            trace: summary.trace,
            kernel_code_emulated: false,
            final_regs: opts.show_regs.then(|| self.final_regs()).flatten(),
            peeks: opts.peeks.iter().map(|p| self.peek(p)).collect(),
        };
        fill(&mut r);
        if self.host.backend.emulates_kernel_code() && self.privilege == GuestPrivilege::Kernel {
            // Reports explain it (with KVM's insn_emulation count from `kvm_stats`).
            r.kernel_code_emulated = true;
        }
        image.judge(&mut r);
        r
    }
}

/// What the exit loop hands back.
#[derive(Debug)]
pub struct RunSummary {
    /// How the run ended (before judging).
    pub outcome: Outcome,
    /// Exit counts and latencies.
    pub metrics: ExitMetrics,
    /// KVM statistics delta.
    pub kvm_stats: std::collections::BTreeMap<String, u64>,
    /// Wall time.
    pub wall_ns: u64,
    /// What the guest measured.
    pub guest: Option<GuestMeasurement>,
    /// The traced exits (empty unless `Limits::trace_events` > 0).
    pub trace: Vec<TraceEvent>,
}

/// What a handler tells the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-enter the guest.
    Continue,
    /// End the run.
    Stop(Outcome),
}

/// The vCPU and memory, handed to handlers between exits.
#[derive(Debug)]
pub struct Vcpu<'a> {
    /// The vCPU.
    pub fd: &'a mut VcpuFd,
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// When the watchdog will end the run.
    pub deadline: Instant,
}

impl Vcpu<'_> {
    /// General-purpose registers.
    pub fn regs(&self) -> Result<kvm_regs> {
        self.fd.get_regs().map_err(kvm("KVM_GET_REGS"))
    }

    /// Sets general-purpose registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd.set_regs(regs).map_err(kvm("KVM_SET_REGS"))
    }

    /// Special registers.
    pub fn sregs(&self) -> Result<kvm_sregs> {
        self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))
    }

    /// Whether KVM says an interrupt can be injected now.
    pub fn can_inject(&mut self) -> bool {
        let run = self.fd.get_kvm_run();
        run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    /// Asks KVM to exit as soon as the guest can take an interrupt.
    pub fn request_interrupt_window(&mut self, on: bool) {
        self.fd.get_kvm_run().request_interrupt_window = u8::from(on);
    }

    /// Injects an external interrupt (userspace interrupt controller).
    pub fn inject(&self, vector: u8) -> Result<()> {
        let irq = kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads a `kvm_interrupt` from the pointer, which is valid
        // for the call; the fd is an open vCPU.
        let ret = unsafe { ioctl_with_ref(&*self.fd, KVM_INTERRUPT(), &irq) };
        if ret < 0 {
            return Err(Error::Kvm {
                op: "KVM_INTERRUPT",
                source: kvm_ioctls::Error::last(),
            });
        }
        Ok(())
    }

    /// Reads a u64 of guest memory at a guest-physical address.
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.mem.read_obj(GuestAddress(gpa)).ok()
    }

    /// Reads the exception frame the VMM's fault stub left on the stack.
    pub fn fault_frame(&self) -> Result<Option<FaultFrame>> {
        Ok(FaultFrame::read(self.mem, self.regs()?.rsp))
    }
}

/// An exception frame as the fault stub leaves it: vector, error code, then the CPU's
/// 64-bit interrupt frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultFrame {
    /// RSP inside the stub (address of `vector`).
    pub stub_rsp: u64,
    /// Exception vector.
    pub vector: u8,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// Faulting RIP.
    pub rip: u64,
    /// CS at the fault.
    pub cs: u16,
    /// RFLAGS at the fault.
    pub rflags: u64,
    /// RSP at the fault.
    pub rsp: u64,
    /// SS at the fault.
    pub ss: u16,
}

impl FaultFrame {
    /// Reads the frame at `stub_rsp` (the stub's RSP at its `out`): vector, error code,
    /// then the CPU's frame. `None` if it is not in guest RAM.
    pub fn read(mem: &GuestMemoryMmap, stub_rsp: u64) -> Option<FaultFrame> {
        let mut raw = [0u8; 56];
        mem.read_slice(&mut raw, GuestAddress(stub_rsp)).ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Some(FaultFrame {
            stub_rsp,
            vector: word(0) as u8,
            error_code: word(1),
            rip: word(2),
            cs: word(3) as u16,
            rflags: word(4),
            rsp: word(5),
            ss: word(6) as u16,
        })
    }

    /// One sentence describing the fault.
    pub fn describe(&self) -> String {
        format!(
            "{} at rip {:#x} (error code {:#x}, cs {:#x}, rsp {:#x})",
            abi::vector_name(self.vector),
            self.rip,
            self.error_code,
            self.cs,
            self.rsp
        )
    }
}

/// An engine's reaction to exits. The loop counts and times every exit around these
/// calls; the handlers only decide.
pub trait ExitHandler {
    /// The exit kind an I/O exit on `port` counts as (a hypercall port, a trap port…).
    fn io_kind(&self, port: u16, write: bool) -> ExitKind {
        let _ = port;
        if write {
            ExitKind::IoOut
        } else {
            ExitKind::IoIn
        }
    }
    /// Called before every entry into the guest (for example to inject an interrupt).
    fn before_entry(&mut self, vcpu: &mut Vcpu<'_>) -> Action;
    /// `out` to `port` with `data`.
    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, port: u16, data: &[u8]) -> Action;
    /// `in` from `port`: fill `data`.
    fn io_in(&mut self, port: u16, data: &mut [u8]) -> Action;
    /// Read from MMIO: fill `data`.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Action;
    /// Write to MMIO.
    fn mmio_write(&mut self, vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Action;
    /// `hlt` reached user space.
    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Action;
    /// KVM reports an open interrupt window.
    fn interrupt_window(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        vcpu.request_interrupt_window(false);
        Action::Continue
    }
    /// When tracing, called after each handled exit: what the handler just did.
    fn trace_note(&mut self) -> Option<TraceNote> {
        None
    }
}

/// An exit whose data has been copied out of `kvm_run`, so the handler may use the vCPU.
enum Pending {
    Done(ExitKind, Action),
    IoOut(u16),
    MmioWrite(u64),
    Halt,
    Window,
}

fn rip_of(vcpu: &VcpuFd) -> Option<u64> {
    vcpu.get_regs().ok().map(|r| r.rip)
}

/// Ends the run with a classified guest fault (the loop fills in the RIP when `None`).
pub fn fault(kind: FaultKind, rip: Option<u64>, detail: impl Into<String>) -> Action {
    Action::Stop(Outcome::GuestFault {
        kind,
        rip,
        detail: detail.into(),
    })
}

/// Ends the run because the guest used a port where no device is.
pub fn no_such_port(port: u16, write: bool) -> Action {
    fault(FaultKind::BadDeviceAccess, None, no_device(port, write))
}

/// What a guest did when it used a port where no device is, in one sentence: a
/// paravirtual build's hypercall outside paravirt is named as such.
pub fn no_device(port: u16, write: bool) -> String {
    let dir = if write { "out to" } else { "in from" };
    let gate = abi::hypercall::PORT..abi::hypercall::PORT + abi::hypercall::PORT_SPAN;
    if gate.contains(&port) {
        format!(
            "{dir} port {port:#x}, the paravirtual hypercall gate, in a mode without a \
             hypervisor interface: this is a paravirtual build; run it with --mode paravirt \
             (or build the guest without its pv-ops)"
        )
    } else {
        format!("{dir} port {port:#x}, where there is no device")
    }
}

/// Counts one handled exit: its kind and latencies, and its port when the exit *is* port
/// I/O. A trap's or a hypercall's `out` counts as the trap or the hypercall alone, not as
/// port I/O too.
fn account(
    metrics: &mut ExitMetrics,
    kind: ExitKind,
    io_port: Option<(u16, bool)>,
    round_trip_ns: u64,
    handler_ns: u64,
) {
    if let Some((port, write)) = io_port {
        if kind == ExitKind::IoOut || kind == ExitKind::IoIn {
            metrics.record_port(port, write);
        }
    }
    metrics.record(kind, round_trip_ns, handler_ns);
}

/// The exit loop: one place where every exit is counted and timed.
fn exit_loop<H: ExitHandler>(
    fd: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    handler: &mut H,
    limits: &Limits,
    deadline: Instant,
    fired: &AtomicBool,
) -> (Outcome, ExitMetrics, Vec<TraceEvent>) {
    // From here on a kick sets immediate_exit: it cannot slip in before KVM_RUN unseen.
    let _armed = watchdog::arm(fd.get_kvm_run());
    let mut metrics = ExitMetrics::default();
    let mut trace = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if fired.load(Ordering::SeqCst) {
            let rip = rip_of(fd);
            return (
                Outcome::TimedOut {
                    limit: Limit::WallClock,
                    rip,
                },
                metrics,
                trace,
            );
        }
        if metrics.total() >= limits.max_exits {
            let rip = rip_of(fd);
            return (
                Outcome::TimedOut {
                    limit: Limit::ExitCount,
                    rip,
                },
                metrics,
                trace,
            );
        }
        if let Action::Stop(o) = handler.before_entry(&mut Vcpu { fd, mem, deadline }) {
            return (o, metrics, trace);
        }
        let t0 = Instant::now();
        let exit = fd.run();
        let t1 = Instant::now();
        let mut io_port = None;
        let pending = match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                buf.clear();
                buf.extend_from_slice(data);
                Pending::IoOut(port)
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                io_port = Some((port, false));
                Pending::Done(handler.io_kind(port, false), handler.io_in(port, data))
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                Pending::Done(ExitKind::MmioRead, handler.mmio_read(addr, data))
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                buf.clear();
                buf.extend_from_slice(data);
                Pending::MmioWrite(addr)
            }
            Ok(VcpuExit::Hlt) => Pending::Halt,
            Ok(VcpuExit::IrqWindowOpen) => Pending::Window,
            Ok(VcpuExit::Shutdown) => Pending::Done(
                ExitKind::Shutdown,
                fault(
                    FaultKind::Shutdown,
                    None,
                    "triple fault: the guest shut down",
                ),
            ),
            Ok(VcpuExit::FailEntry(reason, _)) => Pending::Done(
                ExitKind::EntryFailure,
                fault(
                    FaultKind::EntryFailure,
                    None,
                    format!("KVM could not enter the guest (hardware reason {reason:#x})"),
                ),
            ),
            Ok(VcpuExit::InternalError) => {
                let run = fd.get_kvm_run();
                // SAFETY: exit_reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active union member.
                let sub = unsafe { run.__bindgen_anon_1.internal.suberror };
                Pending::Done(
                    ExitKind::EntryFailure,
                    fault(
                        FaultKind::KvmInternalError,
                        None,
                        format!(
                            "KVM internal error (suberror {sub}{})",
                            if sub == 1 {
                                ": an instruction KVM cannot emulate"
                            } else {
                                ""
                            }
                        ),
                    ),
                )
            }
            Ok(other) => Pending::Done(
                ExitKind::Other,
                fault(
                    FaultKind::KvmInternalError,
                    None,
                    format!("unexpected exit from KVM: {other:?}"),
                ),
            ),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Pending::Done(ExitKind::Interrupted, Action::Continue)
            }
            Err(e) => Pending::Done(
                ExitKind::EntryFailure,
                fault(
                    FaultKind::EntryFailure,
                    None,
                    format!("KVM_RUN failed: {e}"),
                ),
            ),
        };
        let mut vcpu = Vcpu { fd, mem, deadline };
        let (kind, action) = match pending {
            Pending::Done(kind, action) => (kind, action),
            Pending::IoOut(port) => {
                io_port = Some((port, true));
                (
                    handler.io_kind(port, true),
                    handler.io_out(&mut vcpu, port, &buf),
                )
            }
            Pending::MmioWrite(addr) => (
                ExitKind::MmioWrite,
                handler.mmio_write(&mut vcpu, addr, &buf),
            ),
            Pending::Halt => (ExitKind::Halt, handler.halt(&mut vcpu)),
            Pending::Window => (
                ExitKind::InterruptWindow,
                handler.interrupt_window(&mut vcpu),
            ),
        };
        let t2 = Instant::now();
        let (round_trip_ns, handler_ns) =
            ((t1 - t0).as_nanos() as u64, (t2 - t1).as_nanos() as u64);
        if trace.len() < limits.trace_events {
            trace.push(TraceEvent {
                seq: metrics.total(),
                kind,
                exit_rip: rip_of(fd),
                note: handler.trace_note(),
                round_trip_ns,
                handler_ns,
            });
        }
        account(&mut metrics, kind, io_port, round_trip_ns, handler_ns);
        if let Action::Stop(mut outcome) = action {
            if let Outcome::GuestFault {
                rip: rip @ None, ..
            }
            | Outcome::TimedOut {
                rip: rip @ None, ..
            } = &mut outcome
            {
                *rip = rip_of(fd);
            }
            return (outcome, metrics, trace);
        }
    }
}

/// The standard devices and their port/MMIO semantics, shared by every engine's handler.
#[derive(Debug)]
pub struct Devices {
    /// Debug console.
    pub console: Console,
    /// One-shot timer.
    pub timer: Timer,
    /// MMIO device page.
    pub mmio: MmioDevice,
    /// Interrupts injected so far.
    pub injections: u64,
}

impl Devices {
    /// Devices for a run with these limits.
    pub fn new(limits: &Limits) -> Self {
        Devices {
            console: Console::new(limits.max_console_bytes),
            timer: Timer::default(),
            mmio: MmioDevice::default(),
            injections: 0,
        }
    }

    /// Handles an `out` to a standard port; `None` if the port is not one of them.
    pub fn io_out(&mut self, vcpu: &mut Vcpu<'_>, port: u16, data: &[u8]) -> Option<Action> {
        Some(match port {
            port::CONSOLE => {
                if self.console.write(data) {
                    Action::Continue
                } else {
                    Action::Stop(Outcome::TimedOut {
                        limit: Limit::ConsoleBytes,
                        rip: None,
                    })
                }
            }
            port::EXIT => self.exit(vcpu, le_value(data) as u32),
            port::TIMER => {
                self.timer.arm(le_value(data) as u32);
                Action::Continue
            }
            _ => return None,
        })
    }

    /// Ends the run with `exit_code`; the result is RBX.
    pub fn exit(&mut self, vcpu: &mut Vcpu<'_>, exit_code: u32) -> Action {
        match vcpu.regs() {
            Ok(r) => Action::Stop(Outcome::Completed {
                exit_code,
                result: r.rbx,
                ending: Ending::ExitPort,
            }),
            Err(e) => fault(
                FaultKind::EntryFailure,
                None,
                format!("reading RBX at exit: {e}"),
            ),
        }
    }

    /// Handles an `in` from a standard port; `None` if the port is not one of them.
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) -> Option<Action> {
        match port {
            port::TIMER => {
                let v = self.timer.fired().to_le_bytes();
                let n = data.len().min(8);
                data[..n].copy_from_slice(&v[..n]);
                Some(Action::Continue)
            }
            _ => None,
        }
    }

    /// Handles an MMIO read.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Action {
        match self.mmio.read(addr, data) {
            Ok(()) => Action::Continue,
            Err(e) => fault(FaultKind::BadDeviceAccess, None, e.to_string()),
        }
    }

    /// Handles an MMIO write.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> Action {
        match self.mmio.write(addr, data) {
            Ok(()) => Action::Continue,
            Err(e) => fault(FaultKind::BadDeviceAccess, None, e.to_string()),
        }
    }

    /// Injects the timer's vector if it is due and the guest can take it.
    pub fn deliver_timer(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        if self.timer.armed() && self.timer.due(Instant::now()) && vcpu.can_inject() {
            if let Err(e) = vcpu.inject(abi::TIMER_VECTOR) {
                return fault(FaultKind::EntryFailure, None, format!("injecting: {e}"));
            }
            self.timer.fire();
            self.injections += 1;
        }
        Action::Continue
    }

    /// `hlt`: wait for the timer if it is armed and interrupts are enabled; otherwise
    /// nothing can wake the guest (`cli; hlt` is how a program stops the CPU), so it is
    /// done.
    pub fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        let interrupts_on = vcpu.fd.get_kvm_run().if_flag != 0;
        match self.timer.deadline().filter(|_| interrupts_on) {
            Some(d) => {
                let until = d.min(vcpu.deadline);
                let now = Instant::now();
                if until > now {
                    std::thread::sleep(until - now);
                }
                Action::Continue
            }
            None => match vcpu.regs() {
                Ok(r) => Action::Stop(Outcome::Completed {
                    exit_code: 0,
                    result: r.rbx,
                    ending: Ending::Halted,
                }),
                Err(e) => fault(FaultKind::EntryFailure, None, format!("reading regs: {e}")),
            },
        }
    }
}

/// Reads the guest's fault frame and ends the run with it.
pub fn unhandled_exception(vcpu: &Vcpu<'_>) -> Action {
    match vcpu.fault_frame() {
        Ok(Some(f)) => Action::Stop(Outcome::GuestFault {
            kind: FaultKind::Exception,
            rip: Some(f.rip),
            detail: format!("unhandled exception {}", f.describe()),
        }),
        Ok(None) => fault(
            FaultKind::Exception,
            None,
            "unhandled exception; its frame is outside guest RAM",
        ),
        Err(e) => fault(
            FaultKind::Exception,
            None,
            format!("unhandled exception: {e}"),
        ),
    }
}

/// An open `/dev/kvm`.
pub type KvmHandle = Kvm;

/// Opens `/dev/kvm`.
pub fn open_kvm() -> std::result::Result<Kvm, kvm_ioctls::Error> {
    Kvm::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_counts_once_under_what_it_is() {
        let mut m = ExitMetrics::default();
        account(
            &mut m,
            ExitKind::IoOut,
            Some((abi::port::CONSOLE, true)),
            10,
            1,
        );
        account(
            &mut m,
            ExitKind::IoIn,
            Some((abi::port::TIMER, false)),
            10,
            1,
        );
        // The monitor's fault port and the hypercall gate are traps and hypercalls.
        account(
            &mut m,
            ExitKind::Trap,
            Some((abi::port::FAULT, true)),
            10,
            1,
        );
        account(
            &mut m,
            ExitKind::Hypercall,
            Some((abi::hypercall::PORT, true)),
            10,
            1,
        );
        account(&mut m, ExitKind::Halt, None, 10, 1);
        assert_eq!(m.total(), 5);
        for k in [
            ExitKind::IoOut,
            ExitKind::IoIn,
            ExitKind::Trap,
            ExitKind::Hypercall,
            ExitKind::Halt,
        ] {
            assert_eq!(m.count(k), 1, "{k}");
        }
        let ports: Vec<u16> = m.ports().keys().copied().collect();
        assert_eq!(ports, [abi::port::CONSOLE, abi::port::TIMER]);
        assert_eq!(m.ports()[&abi::port::CONSOLE].writes, 1);
        assert_eq!(m.ports()[&abi::port::TIMER].reads, 1);
    }
}
