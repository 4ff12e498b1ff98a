//! virtlab's KVM machine: one VM with guest memory and the monitor's region, one vCPU in
//! 64-bit long mode per the guest ABI, the standard devices, and the exit loop that counts
//! and times every exit in one place. Engines differ only in the setup they describe and
//! in their [`ExitHandler`]; this crate runs the lifecycle and builds the record.
//!
//! The shortest run — a guest that prints `hi` and exits with code 7, on the bare
//! machine with a minimal policy (engines do the same with more):
//!
//! ```
//! use contract::{GuestImage, Mode, Outcome, RunOptions, RunRecord};
//! use machine::{
//!     Devices, ExitHandler, GuestMemory, GuestPrivilege, Handled, MachineConfig, Policy, Vcpu,
//! };
//!
//! // mov al,'h'; out 0xe9,al; mov al,'i'; out 0xe9,al; mov eax,7; out 0xf4,eax
//! let code = vec![0xB0, b'h', 0xE6, 0xE9, 0xB0, b'i', 0xE6, 0xE9,
//!                 0xB8, 7, 0, 0, 0, 0xE7, 0xF4];
//! let image = GuestImage::flat("hi", code, 0x10_0000, 0x10_0000);
//! let opts = RunOptions::default();
//!
//! struct Minimal(Devices);
//! impl ExitHandler for Minimal {
//!     fn io_out(&mut self, v: &mut Vcpu<'_>, port: u16, data: &[u8]) -> Handled {
//!         self.0.io_out(v, port, data).unwrap_or(machine::no_such_port(port, true)).into()
//!     }
//!     fn io_in(&mut self, port: u16, _: &mut [u8]) -> Handled {
//!         machine::no_such_port(port, false).into()
//!     }
//!     fn mmio_read(&mut self, a: u64, d: &mut [u8]) -> Handled { self.0.mmio_read(a, d).into() }
//!     fn mmio_write(&mut self, _: &mut Vcpu<'_>, a: u64, d: &[u8]) -> Handled {
//!         self.0.mmio_write(a, d).into()
//!     }
//!     fn halt(&mut self, v: &mut Vcpu<'_>) -> Handled { self.0.halt(v).into() }
//! }
//! impl Policy for Minimal {
//!     fn finish(self, r: &mut RunRecord, _: &GuestMemory) { r.console = self.0.console.text(); }
//! }
//!
//! # if machine::open_kvm().is_err() { return Ok(()); } // no /dev/kvm: nothing to show
//! let cfg = MachineConfig::for_image(&image, &opts, GuestPrivilege::Kernel);
//! let r = machine::launch(Mode::HwAssisted, &image, &opts, &cfg, |_| {
//!     Ok(Minimal(Devices::new(&opts.limits)))
//! })?;
//! assert_eq!(r.console, "hi");
//! assert!(matches!(r.outcome, Outcome::Completed { exit_code: 7, .. }));
//! assert_eq!(r.port_writes(0xE9), 2);
//! # Ok::<(), contract::Error>(())
//! ```

pub mod caps;
pub mod config;
pub mod devices;
pub mod disk;
pub mod driver_domain;
pub mod exit_loop;
pub mod host;
pub mod irqfd;
pub mod kvm_stats;
pub mod lifecycle;
pub mod overcommit;
pub mod sched;
pub mod setup;
pub mod shared_ram;
pub mod testing;
pub mod vcpu;
pub mod watchdog;

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Instant;

use kvm_bindings::kvm_regs;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use contract::abi::{boot_info, layout};
use contract::host::HostInfo;
use contract::image::GuestImage;
use contract::metrics::{ExitMetrics, NamedCounters};
use contract::record::{GuestMeasurement, Mode, Outcome, RunRecord};
use contract::state::{FinalRegs, Peek, PeekRequest, RegsView};
use contract::trace::TraceEvent;
use contract::{Error, Gate, Limits, Result, RunOptions};

use crate::kvm_stats::{StatsSnapshot, VcpuStats};
pub use config::{Boot, MachineConfig, Msr};
pub use devices::Devices;
pub use exit_loop::{
    fault, no_device, no_such_port, unhandled_exception, Action, Event, ExitHandler, Handled,
};
pub use lifecycle::{launch, Policy};
pub use setup::GuestPrivilege;
pub use vcpu::{FaultFrame, Vcpu};
/// Guest memory as engines see it: RAM from 0 and the monitor's region.
pub use vm_memory::GuestMemoryMmap as GuestMemory;

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
    _vm: VmFd,
    vcpu: VcpuFd,
    stats: Option<VcpuStats>,
    host: HostInfo,
    privilege: GuestPrivilege,
    ram_size: u64,
    rflags: u64,
    sync_regs: bool,
    // Before `mem`: its swap handler stops before the mapping goes.
    memory: overcommit::MemoryManager,
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
        let kvm_fd = Kvm::new().map_err(unavailable)?;
        let mut host = HostInfo::gather(kvm_fd.get_api_version());
        let vm = kvm_fd.create_vm().map_err(kvm("KVM_CREATE_VM"))?;
        let mem = if cfg.shared_ram {
            shared_ram::guest_memory(ram)?
        } else {
            guest_memory(ram)?
        };
        // Before anything touches guest RAM: host swapping must see every first touch.
        let memory = overcommit::MemoryManager::new(&mem, ram, &cfg.overcommit, cfg.shared_ram)?;
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
        if cfg.irqchip {
            // Before the vCPU: its local APIC is created in the kernel with it.
            vm.create_irq_chip().map_err(kvm("KVM_CREATE_IRQCHIP"))?;
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
        for p in contract::overcommit::port::OPEN
            .collect::<Vec<_>>()
            .iter()
            .chain(&cfg.open_ports)
        {
            setup::open_io_port(&mem, *p).map_err(bad)?;
        }
        for (page, flags) in &cfg.page_flags {
            setup::set_page_flags(&mem, *page, *flags).map_err(bad)?;
        }
        for (addr, code) in &cfg.monitor_code {
            let end = addr.checked_add(code.len() as u64);
            if *addr < layout::MONITOR_BASE || end.is_none_or(|e| e > layout::MONITOR_PRIVATE_END) {
                return Err(bad(format!(
                    "monitor code at {addr:#x} ({} bytes) is outside the monitor's private pages",
                    code.len()
                )));
            }
            mem.write_slice(code, GuestAddress(*addr))
                .map_err(|e| bad(e.to_string()))?;
        }
        for (addr, bytes) in &cfg.memory {
            mem.write_slice(bytes, GuestAddress(*addr))
                .map_err(|e| bad(format!("{addr:#x}: {e}")))?;
        }
        let mut info = cfg.boot_info;
        info.tsc_khz = host.tsc_khz.map_or(0, u64::from);
        setup::write_boot_info(&mem, &info).map_err(bad)?;

        let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        setup::long_mode_sregs(&mut sregs, cfg.privilege, cfg.umip);
        vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        lifecycle::set_msrs(&vcpu, &cfg.msrs)?;
        let stats = match VcpuStats::open(&vcpu) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("KVM statistics unavailable: {e}");
                None
            }
        };
        Ok(Machine {
            _kvm: kvm_fd,
            _vm: vm,
            vcpu,
            mem,
            memory,
            stats,
            host,
            privilege: cfg.privilege,
            ram_size: ram,
            rflags: cfg.rflags,
            sync_regs: cfg.sync_regs,
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
            rflags: self.rflags,
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

    /// The raw vCPU: the machine's own probes drive it directly, and the benchmark that
    /// measures the floor under the exit loop runs `KVM_RUN` bare. Engines never use it:
    /// they describe their setup in [`MachineConfig`] and reach the vCPU through [`Vcpu`]
    /// between exits.
    pub fn vcpu(&mut self) -> &mut VcpuFd {
        &mut self.vcpu
    }

    /// The vCPU's CPUID table.
    pub fn cpuid(&self) -> Result<contract::cpuid::CpuidTable> {
        let c = self
            .vcpu
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_CPUID2"))?;
        Ok(cpuid_table(c.as_slice()))
    }

    /// The host this machine runs on.
    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// Runs the guest until the handler stops it or a limit ends it.
    pub fn run<H: ExitHandler>(&mut self, handler: &mut H, limits: &Limits) -> Result<RunSummary> {
        self.run_gated(handler, limits, None)
    }

    /// [`Machine::run`] under a scheduler's [`Gate`]: the exit loop asks it before every
    /// entry, the halted guest's wait tells it, and its kicks are not counted as exits.
    /// Without a gate this is [`Machine::run`], at the same cost.
    pub fn run_gated<H: ExitHandler>(
        &mut self,
        handler: &mut H,
        limits: &Limits,
        gate: Option<&dyn Gate>,
    ) -> Result<RunSummary> {
        watchdog::install_kick_handler()?;
        // Kicks reach this thread from here until the guard drops, however the run ends.
        let _attached = gate.map(Attached::new);
        let before = self.snapshot();
        let start = Instant::now();
        let deadline = start.checked_add(limits.wall).ok_or_else(|| {
            Error::InvalidOption(format!("wall-clock limit {:?} is too large", limits.wall))
        })?;
        let fired = AtomicBool::new(false);
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let me = watchdog::ThreadHandle::current();
        let mut tally = exit_loop::Tally::default();
        let ended = std::thread::scope(|s| {
            // The sender lives in this closure: however it is left, by return or by a
            // panic unwinding, dropping it tells the watchdog the run is over, so the scope
            // can join it.
            let done_tx = done_tx;
            let fired = &fired;
            std::thread::Builder::new()
                .name("virtlab-watchdog".into())
                .spawn_scoped(s, move || watchdog::watch(me, deadline, fired, done_rx))
                .map_err(|e| Error::Watchdog(format!("cannot start the watchdog thread: {e}")))?;
            let r = exit_loop::exit_loop(
                &mut self.vcpu,
                &self.mem,
                handler,
                limits,
                deadline,
                fired,
                self.sync_regs,
                &mut tally,
                gate,
                Some(&self.memory),
            );
            drop(done_tx);
            Ok::<_, Error>(r)
        })?;
        let outcome = ended.map_err(Error::Vmm)?;
        let wall_ns = start.elapsed().as_nanos() as u64;
        let after = self.snapshot();
        let kvm_stats = match (&self.stats, before, after) {
            (Some(s), Some(b), Some(a)) => s.delta(&b, &a),
            _ => Default::default(),
        };
        let guest = self.guest_measurement();
        Ok(RunSummary {
            outcome,
            metrics: tally.metrics,
            traps: tally.traps,
            hypercalls: tally.hypercalls,
            kvm_stats,
            wall_ns,
            guest,
            trace: tally.trace,
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
        let mut buf = vec![0u8; p.len.min(contract::state::MAX_PEEK_LEN) as usize];
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

    /// Turns a finished run into a record: everything the machine counted and measured.
    /// The engine's handler adds what only it knows ([`ExitHandler`]'s owner does, in
    /// [`launch`]); the harness judges it against the image's oracle.
    pub fn record(
        &self,
        mode: Mode,
        image: &GuestImage,
        opts: &RunOptions,
        summary: RunSummary,
    ) -> RunRecord {
        let mut event_ns = summary.traps.summaries();
        event_ns.extend(summary.hypercalls.summaries());
        RunRecord {
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
            traps: summary.traps.counts().clone(),
            hypercalls: summary.hypercalls.counts().clone(),
            injections: 0,
            event_ns,
            expected: Default::default(),
            mismatches: Default::default(),
            round_trip_ns: summary.metrics.round_trip_summaries(),
            handler_ns: summary.metrics.handler_summaries(),
            guest: summary.guest,
            kvm_stats: summary.kvm_stats,
            wall_ns: summary.wall_ns,
            console: String::new(),
            console_ok: None,
            notes: Vec::new(),
            trace: summary.trace,
            translation: std::collections::BTreeMap::new(),
            device: std::collections::BTreeMap::new(),
            shadow: std::collections::BTreeMap::new(),
            block_backend: None,
            // Reports explain it (with KVM's insn_emulation count from `kvm_stats`).
            kernel_code_emulated: self.host.backend.emulates_kernel_code()
                && self.privilege == GuestPrivilege::Kernel,
            final_regs: opts.show_regs.then(|| self.final_regs()).flatten(),
            peeks: opts.peeks.iter().map(|p| self.peek(p)).collect(),
            memory: Some(self.memory.record()),
        }
    }
}

/// A gate attached to the calling thread, detached when dropped.
struct Attached<'a>(&'a dyn Gate);

impl<'a> Attached<'a> {
    fn new(gate: &'a dyn Gate) -> Self {
        gate.attach();
        Attached(gate)
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// What the exit loop hands back.
#[derive(Debug)]
pub struct RunSummary {
    /// How the run ended (before judging).
    pub outcome: Outcome,
    /// Exit counts and latencies.
    pub metrics: ExitMetrics,
    /// Traps by name, with the handler's time.
    pub traps: NamedCounters,
    /// Hypercalls by name, with the handler's time.
    pub hypercalls: NamedCounters,
    /// KVM statistics delta.
    pub kvm_stats: std::collections::BTreeMap<String, u64>,
    /// Wall time.
    pub wall_ns: u64,
    /// What the guest measured.
    pub guest: Option<GuestMeasurement>,
    /// The traced exits (empty unless `Limits::trace_events` > 0).
    pub trace: Vec<TraceEvent>,
}

/// An open `/dev/kvm`.
pub type KvmHandle = Kvm;

/// Opens `/dev/kvm`.
pub fn open_kvm() -> std::result::Result<Kvm, kvm_ioctls::Error> {
    Kvm::new()
}

/// Maps a kvm-ioctls error of `op` to [`Error::Kvm`].
pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// `/dev/kvm` could not be opened.
pub(crate) fn unavailable(e: kvm_ioctls::Error) -> Error {
    Error::KvmUnavailable(std::io::Error::from_raw_os_error(e.errno()))
}

/// The vCPU's CPUID table from KVM's entries (`KVM_GET_CPUID2`).
pub fn cpuid_table(entries: &[kvm_bindings::kvm_cpuid_entry2]) -> contract::cpuid::CpuidTable {
    contract::cpuid::CpuidTable(
        entries
            .iter()
            .map(|e| contract::cpuid::CpuidLeaf {
                function: e.function,
                index: e.index,
                indexed: e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
                regs: [e.eax, e.ebx, e.ecx, e.edx],
            })
            .collect(),
    )
}
