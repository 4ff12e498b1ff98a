//! What this host's KVM really does, measured by running tiny guests.
//!
//! A capability a mode or a lab relies on is probed by *doing* it once, never inferred from
//! an accepted ioctl: on some hosts KVM accepts CPUID faulting (the MSR write succeeds) and
//! yet CPUID at CPL 3 runs natively. [`probe`] runs the probes once per process and caches
//! the answer; every record carries it (`RunRecord::host.capabilities`), engines take their
//! effective options from it, and `virtlab doctor` prints it.
//!
//! ```
//! # if machine::open_kvm().is_err() { return Ok(()); } // no /dev/kvm: nothing to show
//! let caps = machine::caps::probe()?;
//! for (name, cap) in caps.rows() {
//!     println!("{name}: {:?} ({})", cap.present, cap.detail);
//! }
//! # Ok::<(), contract::Error>(())
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use kvm_bindings::{kvm_msr_entry, kvm_regs, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::SyncReg;

use contract::abi::{layout, port};
pub use contract::caps::{
    Capabilities, CpuidSample, Probed, KERNEL_LOOP, MSR_MISC_FEATURES_ENABLES, PROBED_LEAVES,
};
use contract::cpuid::CpuidTable;
use contract::image::GuestImage;
use contract::record::Outcome;
use contract::{Error, Limits, Result, RunOptions};

use crate::kvm;
use crate::kvm_stats::VcpuStats;
use crate::{Action, ExitHandler, GuestPrivilege, Handled, Machine, MachineConfig, Vcpu};

static PROBED: OnceLock<std::result::Result<Capabilities, String>> = OnceLock::new();

/// The host's capabilities, probed on first use and cached for the process.
pub fn probe() -> Result<&'static Capabilities> {
    PROBED
        .get_or_init(|| probe_now().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Probe(e.clone()))
}

/// Runs every probe now (uncached).
pub fn probe_now() -> Result<Capabilities> {
    // Fail early, with the real reason, when there is no KVM at all.
    crate::open_kvm().map_err(crate::unavailable)?;
    let (cpuid_faulting, cpuid_at_cpl3) = match probe_cpuid_faulting() {
        Ok(v) => v,
        Err(e) => (
            Probed::unknown(format!("the probe failed: {e}")),
            Vec::new(),
        ),
    };
    let (kernel_code_emulated, kernel_loop_insn_emulation) = match probe_kernel_emulation() {
        Ok(v) => v,
        Err(e) => (Probed::unknown(format!("the probe failed: {e}")), None),
    };
    let (io_bitmap, io_exit_rip_past) = match probe_io_bitmap() {
        Ok(v) => v,
        Err(e) => (Probed::unknown(format!("the probe failed: {e}")), None),
    };
    Ok(Capabilities {
        cpuid_faulting,
        umip: Probed::from_result(probe_umip()),
        io_bitmap,
        io_exit_rip_past,
        sync_regs: Probed::from_result(probe_sync_regs()),
        immediate_exit: Probed::from_result(probe_immediate_exit()),
        stats_fd: Probed::from_result(probe_stats_fd()),
        kernel_code_emulated,
        kernel_loop_insn_emulation,
        cpuid_at_cpl3,
        syscall_to_kernel: Probed::from_result(probe_syscall_to_kernel()),
        ioeventfd: Probed::from_result(probe_ioeventfd()),
        irqfd: Probed::from_result(probe_irqfd()),
    })
}

/// The interrupt vector the irqfd probe routes (the virtio-blk completion vector).
const PROBE_VECTOR: u8 = contract::abi::blk::COMPLETION_VECTOR;

/// An in-kernel irqchip, a GSI routed to an MSI for the local APIC, an eventfd registered
/// as its irqfd, and a CPL 0 guest that enables its local APIC (x2APIC mode, software
/// enable), tells the VMM with an `out`, then waits with `sti; hlt`. The VMM writes the
/// eventfd at that `out`; the interrupt must reach the guest's IDT at the routed vector
/// (its stub reports the vector), with `hlt` waiting in the kernel rather than exiting.
fn probe_irqfd() -> Result<Probed> {
    irqfd_guest(true, &probe_limits())
}

/// The irqfd probe's guest, with the eventfd written at the guest's signal or (to show
/// that the probe tells the two apart) never: then nothing wakes the `hlt` and the run
/// ends at `limits`.
fn irqfd_guest(signal: bool, limits: &Limits) -> Result<Probed> {
    use vmm_sys_util::eventfd::EventFd;

    let mut code = vec![0xB9, 0x1B, 0, 0, 0]; // mov ecx, IA32_APIC_BASE
    code.extend([0x0F, 0x32]); // rdmsr
    code.extend([0x0D, 0x00, 0x0C, 0, 0]); // or eax, EN | EXTD (x2APIC)
    code.extend([0x0F, 0x30]); // wrmsr
    code.extend([0xB9, 0x0F, 0x08, 0, 0]); // mov ecx, x2APIC SVR
    code.extend([0xB8, 0xFF, 0x01, 0, 0]); // mov eax, 0x1ff (enabled, spurious 0xff)
    code.extend([0x31, 0xD2, 0x0F, 0x30]); // xor edx, edx; wrmsr
    code.extend_from_slice(&OUT_CONSOLE_AL); // "ready": the VMM writes the eventfd
    code.extend([0xFB, 0xF4]); // sti; hlt
    code.extend_from_slice(&OUT_EXIT_EAX); // woken without the interrupt
    let image = GuestImage::flat("probe", code, layout::DEFAULT_LOAD, layout::DEFAULT_LOAD);
    let mut cfg = MachineConfig::for_image(&image, &RunOptions::default(), GuestPrivilege::Kernel);
    cfg.irqchip = true;
    let mut m = match Machine::new(&cfg) {
        Ok(m) => m,
        Err(e) => return Ok(Probed::no(format!("no in-kernel irqchip: {e}"))),
    };
    m.load(&image)?;
    let efd = EventFd::new(0).map_err(|e| Error::Probe(format!("eventfd: {e}")))?;
    if let Err(e) = crate::irqfd::route(&m._vm, &efd, PROBE_VECTOR) {
        return Ok(Probed::no(e));
    }
    let mut rec = Recorder {
        signal_at_console: signal.then_some(&efd),
        ..Recorder::default()
    };
    let summary = m.run(&mut rec, limits)?;
    let halts = summary.metrics.count(contract::record::ExitKind::Halt);
    Ok(match rec.seen.as_slice() {
        [Seen::Out(p, _), Seen::Fault(v), ..] if *p == port::CONSOLE && *v == PROBE_VECTOR => {
            Probed::yes(format!(
                "an irqfd write raised an MSI through the in-kernel local APIC: a halted \
                 CPL 0 guest took vector {PROBE_VECTOR:#x} with {halts} hlt exit(s) to the VMM"
            ))
        }
        seen => Probed::no(format!(
            "the guest waiting in hlt did not take the irqfd's vector {PROBE_VECTOR:#x}: {}",
            if seen.is_empty() {
                "nothing reached the VMM".to_string()
            } else {
                describe(seen)
            }
        )),
    })
}

/// An ioeventfd on the virtio doorbell's address, and a CPL 0 guest that writes the
/// doorbell once and then exits through the exit port: the eventfd must count exactly one
/// signal and the write must not have reached the VMM as an MMIO exit.
fn probe_ioeventfd() -> Result<Probed> {
    ioeventfd_guest(true)
}

/// The ioeventfd probe's guest, with the ioeventfd registered or (to show that the probe
/// tells the two apart) not.
fn ioeventfd_guest(register: bool) -> Result<Probed> {
    use contract::abi::blk::{QUEUE_NOTIFY, VIRTIO_BASE};
    use kvm_ioctls::{IoEventAddress, NoDatamatch};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    let doorbell = VIRTIO_BASE + QUEUE_NOTIFY;
    let mut code = vec![0xB8, 0, 0, 0, 0]; // mov eax, 0
    code.extend([0x89, 0x04, 0x25]); // mov [doorbell], eax (disp32, no base)
    code.extend((doorbell as u32).to_le_bytes());
    code.extend_from_slice(&OUT_EXIT_EAX);
    let mut m = machine(code, GuestPrivilege::Kernel, false, &[])?;
    let efd = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Probe(format!("eventfd: {e}")))?;
    if register {
        if let Err(e) = m
            ._vm
            .register_ioevent(&efd, &IoEventAddress::Mmio(doorbell), NoDatamatch)
        {
            return Ok(Probed::no(format!("KVM_IOEVENTFD failed: {e}")));
        }
    }
    let mut rec = Recorder::default();
    m.run(&mut rec, &probe_limits())?;
    let signals = efd.read().unwrap_or(0);
    Ok(match (rec.seen.as_slice(), rec.mmio_writes, signals) {
        ([Seen::Out(p, _)], 0, 1) if *p == port::EXIT => Probed::yes(
            "a guest's write to an ioeventfd's MMIO address signalled the eventfd once, \
             with no exit to the VMM",
        ),
        (seen, writes, n) => Probed::no(format!(
            "a guest's write to an ioeventfd's MMIO address made {writes} MMIO exit(s) and \
             {n} eventfd signal(s) (then: {})",
            describe(seen)
        )),
    })
}

/// SYSCALL from CPL 3: does it arrive at LSTAR at CPL 0? A CPL 0 guest enables SYSCALL
/// (EFER.SCE, STAR with the ABI's selectors, LSTAR at `landing`) and SYSRETQs to user code
/// in RAM (user pages in the boot tables), which makes one SYSCALL; `landing` puts CS in
/// RBX and raises #UD, which the VMM's stub reports with RBX (on `kvm_pvm` the CPU that
/// arrives there is not in a state where port I/O works).
fn probe_syscall_to_kernel() -> Result<Probed> {
    let base = layout::DEFAULT_LOAD;
    let mut code: Vec<u8> = Vec::new();
    // mov ecx, EFER; rdmsr; or eax, 1 (SCE); wrmsr
    code.extend([
        0xB9, 0x80, 0, 0, 0xC0, 0x0F, 0x32, 0x83, 0xC8, 0x01, 0x0F, 0x30,
    ]);
    // mov ecx, STAR; xor eax, eax; mov edx, 0x0010_0008; wrmsr
    code.extend([
        0xB9, 0x81, 0, 0, 0xC0, 0x31, 0xC0, 0xBA, 0x08, 0, 0x10, 0, 0x0F, 0x30,
    ]);
    // mov ecx, LSTAR; mov eax, landing; xor edx, edx; wrmsr
    code.extend([0xB9, 0x82, 0, 0, 0xC0, 0xB8]);
    let lstar_at = code.len();
    code.extend([0, 0, 0, 0, 0x31, 0xD2, 0x0F, 0x30]);
    // mov ecx, user; mov r11d, 2; sysretq
    code.push(0xB9);
    let user_at = code.len();
    code.extend([0, 0, 0, 0, 0x41, 0xBB, 0x02, 0, 0, 0, 0x48, 0x0F, 0x07]);
    let user = code.len();
    code.extend([0x0F, 0x05, 0x0F, 0x0B]); // syscall; ud2
    let landing = code.len();
    // mov ebx, cs; ud2
    code.extend([0x8C, 0xCB, 0x0F, 0x0B]);
    let at = |off: usize| ((base + off as u64) as u32).to_le_bytes();
    code[lstar_at..lstar_at + 4].copy_from_slice(&at(landing));
    code[user_at..user_at + 4].copy_from_slice(&at(user));
    let mut m = machine(code, GuestPrivilege::Kernel, false, &[])?;
    let seen = run(&mut m)?;
    Ok(match seen.as_slice() {
        [Seen::Fault(6), Seen::FaultWithRbx(6, rbx)] => {
            let cs = rbx & 0xFFFF;
            if cs == u64::from(contract::abi::selector::KERNEL_CODE) {
                Probed::yes("SYSCALL from CPL 3 arrived at LSTAR with CS 0x08 (CPL 0)")
            } else {
                Probed::no(format!(
                    "SYSCALL from CPL 3 arrived at LSTAR with CS {cs:#x}, not at CPL 0: the \
                     guest kernel enters with int3 instead"
                ))
            }
        }
        _ => Probed::no(format!(
            "SYSCALL from CPL 3 did not reach the #UD after LSTAR: {}",
            describe(&seen)
        )),
    })
}

/// What a probe guest did, exit by exit.
#[derive(Debug, Clone)]
enum Seen {
    /// `out` to a port, with the registers at the exit.
    Out(u16, Box<kvm_regs>),
    /// An exception reached the monitor's stub.
    Fault(u8),
    /// An exception reached the monitor's stub, with RBX at the time (for the probes
    /// that report through RBX where they cannot make an exit).
    FaultWithRbx(u8, u64),
}

#[derive(Debug, Default)]
struct Recorder<'e> {
    seen: Vec<Seen>,
    /// An eventfd to write at the guest's `out` to the console (the irqfd probe's cue).
    signal_at_console: Option<&'e vmm_sys_util::eventfd::EventFd>,
    /// MMIO writes that reached the VMM (each one stops the probe).
    mmio_writes: u32,
}

impl ExitHandler for Recorder<'_> {
    fn io_out(&mut self, v: &mut Vcpu<'_>, p: u16, _: &[u8]) -> Handled {
        if p == port::FAULT {
            let vector = v.fault_frame().ok().flatten().map_or(0xFF, |f| f.vector);
            self.seen.push(Seen::Fault(vector));
            if let Ok(r) = v.regs() {
                self.seen.push(Seen::FaultWithRbx(vector, r.rbx));
            }
            return stop().into();
        }
        match v.regs() {
            Ok(r) => self.seen.push(Seen::Out(p, Box::new(r))),
            Err(_) => return stop().into(),
        }
        if let (port::CONSOLE, Some(efd)) = (p, self.signal_at_console) {
            if efd.write(1).is_err() {
                return stop().into();
            }
        }
        if p == port::EXIT {
            stop().into()
        } else {
            Action::Continue.into()
        }
    }
    fn io_in(&mut self, _: u16, _: &mut [u8]) -> Handled {
        stop().into()
    }
    fn mmio_read(&mut self, _: u64, _: &mut [u8]) -> Handled {
        stop().into()
    }
    fn mmio_write(&mut self, _: &mut Vcpu<'_>, _: u64, _: &[u8]) -> Handled {
        self.mmio_writes += 1;
        stop().into()
    }
    fn halt(&mut self, _: &mut Vcpu<'_>) -> Handled {
        stop().into()
    }
}

fn stop() -> Action {
    Action::Stop(Outcome::TimedOut {
        limit: contract::record::Limit::ExitCount,
        rip: None,
    })
}

fn probe_limits() -> Limits {
    Limits {
        wall: Duration::from_secs(5),
        max_exits: 64,
        ..Limits::default()
    }
}

/// A machine with `code` loaded at the default address.
fn machine(
    code: Vec<u8>,
    privilege: GuestPrivilege,
    umip: bool,
    open_ports: &[u16],
) -> Result<Machine> {
    let image = GuestImage::flat("probe", code, layout::DEFAULT_LOAD, layout::DEFAULT_LOAD);
    let mut cfg = MachineConfig::for_image(&image, &RunOptions::default(), privilege);
    cfg.umip = umip;
    cfg.open_ports = open_ports.to_vec();
    let mut m = Machine::new(&cfg)?;
    m.load(&image)?;
    if privilege == GuestPrivilege::User {
        // Deprivileged guests run with the real IF set, as the engines run them.
        let mut regs = m.vcpu().get_regs().map_err(kvm("KVM_GET_REGS"))?;
        regs.rflags = 0x202;
        m.vcpu().set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    }
    Ok(m)
}

fn run(m: &mut Machine) -> Result<Vec<Seen>> {
    let mut rec = Recorder::default();
    m.run(&mut rec, &probe_limits())?;
    Ok(rec.seen)
}

// Hand-assembled probe guests (this crate does not assemble code).
const OUT_CONSOLE_AL: [u8; 2] = [0xE6, port::CONSOLE as u8]; // out 0xe9, al
const OUT_EXIT_EAX: [u8; 2] = [0xE7, port::EXIT as u8]; // out 0xf4, eax

/// Runs CPUID at CPL 3 for [`PROBED_LEAVES`], with MSR 0x140 bit 0 set when
/// `faulting`: whether KVM accepted the MSR, what the guest did, and the virtual CPU's table.
fn run_cpuid_guest(faulting: bool) -> Result<(bool, Vec<Seen>, CpuidTable)> {
    let mut code = Vec::new();
    for leaf in PROBED_LEAVES {
        code.push(0xB8); // mov eax, imm32
        code.extend_from_slice(&leaf.to_le_bytes());
        code.extend_from_slice(&[0x31, 0xC9]); // xor ecx, ecx
        code.extend_from_slice(&[0x0F, 0xA2]); // cpuid
        code.extend_from_slice(&OUT_CONSOLE_AL);
    }
    code.extend_from_slice(&OUT_EXIT_EAX);
    let mut m = machine(
        code,
        GuestPrivilege::User,
        false,
        &[
            port::CONSOLE,
            port::EXIT,
            port::EXIT + 1,
            port::EXIT + 2,
            port::EXIT + 3,
        ],
    )?;
    let accepted = faulting && {
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_MISC_FEATURES_ENABLES,
            data: 1,
            ..Default::default()
        }])
        .map_err(|e| Error::Probe(format!("MSR list: {e:?}")))?;
        m.vcpu().set_msrs(&msrs).unwrap_or(0) == 1
    };
    let table = crate::cpuid_table(
        m.vcpu()
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_CPUID2"))?
            .as_slice(),
    );
    let seen = run(&mut m)?;
    Ok((accepted, seen, table))
}

/// Whether CPUID faulting really makes CPUID fault at CPL 3, and what CPUID at CPL 3
/// returns without it (the values a guest sees when CPUID does not trap).
fn probe_cpuid_faulting() -> Result<(Probed, Vec<CpuidSample>)> {
    let (accepted, seen, _) = run_cpuid_guest(true)?;
    let probed = match seen.first() {
        Some(Seen::Fault(13)) => {
            Probed::yes("MSR 0x140 bit 0 set; CPUID at CPL 3 raised #GP, so it can be emulated")
        }
        Some(Seen::Out(..)) if !accepted => Probed::no(
            "KVM refused MSR 0x140 (MISC_FEATURES_ENABLES); CPUID at CPL 3 runs without trapping",
        ),
        Some(Seen::Out(..)) => Probed::no(
            "KVM accepted MSR 0x140 bit 0, but CPUID at CPL 3 still ran without faulting",
        ),
        other => Probed::unknown(format!("unexpected probe result {other:?}")),
    };
    let (_, seen, table) = run_cpuid_guest(false)?;
    let samples = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Out(p, r) if *p == port::CONSOLE => Some(r),
            _ => None,
        })
        .zip(PROBED_LEAVES)
        .map(|(r, leaf)| CpuidSample {
            leaf,
            seen: [r.rax as u32, r.rbx as u32, r.rcx as u32, r.rdx as u32],
            virtual_cpu: table.lookup(leaf, 0),
        })
        .collect();
    Ok((probed, samples))
}

/// Sets CR4.UMIP and runs SGDT at CPL 3.
fn probe_umip() -> Result<Probed> {
    let mut code = vec![0x48, 0x83, 0xEC, 0x10]; // sub rsp, 16
    code.extend_from_slice(&[0x0F, 0x01, 0x04, 0x24]); // sgdt [rsp]
    code.extend_from_slice(&OUT_EXIT_EAX);
    let ports = [port::EXIT, port::EXIT + 1, port::EXIT + 2, port::EXIT + 3];
    let mut m = machine(code, GuestPrivilege::User, true, &ports)?;
    Ok(match run(&mut m)?.first() {
        Some(Seen::Fault(13)) => Probed::yes("CR4.UMIP set; SGDT at CPL 3 raised #GP"),
        Some(Seen::Out(..)) => Probed::no("CR4.UMIP set, but SGDT at CPL 3 ran without faulting"),
        other => Probed::unknown(format!("unexpected probe result {other:?}")),
    })
}

/// Opens port 0xE9 only; `out` to it must exit, `out` to the closed 0xF4 must raise #GP.
/// The exit also shows where this backend leaves RIP at an I/O exit from CPL 3.
fn probe_io_bitmap() -> Result<(Probed, Option<bool>)> {
    let mut code = OUT_CONSOLE_AL.to_vec();
    code.extend_from_slice(&OUT_EXIT_EAX);
    let mut m = machine(code, GuestPrivilege::User, false, &[port::CONSOLE])?;
    let seen = run(&mut m)?;
    let rip_past = match seen.first() {
        Some(Seen::Out(_, r)) if r.rip == layout::DEFAULT_LOAD => Some(false),
        Some(Seen::Out(_, r)) if r.rip == layout::DEFAULT_LOAD + 2 => Some(true),
        _ => None,
    };
    let probed = match seen.as_slice() {
        [Seen::Out(p, _), Seen::Fault(13), ..] if *p == port::CONSOLE => Probed::yes(
            "at CPL 3 an out to an open port exited to the VMM and one to a closed port raised #GP",
        ),
        other => Probed::no(format!(
            "at CPL 3 the bitmap was not honoured: {}",
            describe(other)
        )),
    };
    Ok((probed, rip_past))
}

fn describe(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| match s {
            Seen::Out(p, _) => format!("out to {p:#x}"),
            Seen::Fault(v) => format!("fault {}", contract::abi::vector_name(*v)),
            Seen::FaultWithRbx(_, rbx) => format!("RBX {rbx:#x}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `mov eax, 0x5eed; out 0xf4, eax` at CPL 0 with the register set synced through
/// `kvm_run`: RAX must come back without `KVM_GET_REGS`.
fn probe_sync_regs() -> Result<Probed> {
    let mut code = vec![0xB8, 0xED, 0x5E, 0, 0]; // mov eax, 0x5eed
    code.extend_from_slice(&OUT_EXIT_EAX);
    let mut m = machine(code, GuestPrivilege::Kernel, false, &[])?;
    m.vcpu().set_sync_valid_reg(SyncReg::Register);
    let result = m.vcpu().run().map(|_| ());
    let rax = m.vcpu().sync_regs().regs.rax;
    m.vcpu().clear_sync_valid_reg(SyncReg::Register);
    Ok(match result {
        Ok(()) if rax == 0x5EED => Probed::yes("RAX came back through kvm_run's sync area"),
        Ok(()) => Probed::no(format!("the sync area held RAX {rax:#x}, not 0x5eed")),
        Err(e) => Probed::no(format!("KVM_RUN with sync registers failed: {e}")),
    })
}

/// `KVM_RUN` with `immediate_exit` set must return EINTR without running the guest.
fn probe_immediate_exit() -> Result<Probed> {
    let mut m = machine(OUT_EXIT_EAX.to_vec(), GuestPrivilege::Kernel, false, &[])?;
    m.vcpu().set_kvm_immediate_exit(1);
    let r = m.vcpu().run().map(|_| ());
    m.vcpu().set_kvm_immediate_exit(0);
    Ok(match r {
        Err(e) if e.errno() == libc::EINTR => {
            Probed::yes("KVM_RUN returned EINTR at once with immediate_exit set")
        }
        Err(e) => Probed::no(format!("KVM_RUN failed otherwise: {e}")),
        Ok(()) => Probed::no("KVM_RUN entered the guest although immediate_exit was set"),
    })
}

/// Opens the vCPU's statistics and reads them once.
fn probe_stats_fd() -> Result<Probed> {
    let mut m = machine(OUT_EXIT_EAX.to_vec(), GuestPrivilege::Kernel, false, &[])?;
    Ok(match VcpuStats::open(m.vcpu()) {
        Ok(s) => match s.snapshot() {
            Ok(_) => Probed::yes(format!(
                "KVM_GET_STATS_FD opened; {} per-vCPU statistics",
                s.descriptors().len()
            )),
            Err(e) => Probed::no(format!("the statistics could not be read: {e}")),
        },
        Err(e) => Probed::no(format!("KVM_GET_STATS_FD failed: {e}")),
    })
}

/// A CPL 0 loop of [`KERNEL_LOOP`] iterations (`dec ecx; jnz`): KVM's `insn_emulation`
/// grows by about two per iteration when CPL 0 code is emulated, by a few otherwise.
fn probe_kernel_emulation() -> Result<(Probed, Option<u64>)> {
    let mut code = vec![0xB9];
    code.extend_from_slice(&KERNEL_LOOP.to_le_bytes()); // mov ecx, KERNEL_LOOP
    code.extend_from_slice(&[0xFF, 0xC9, 0x75, 0xFC]); // l: dec ecx; jnz l
    code.extend_from_slice(&OUT_EXIT_EAX);
    let mut m = machine(code, GuestPrivilege::Kernel, false, &[])?;
    let mut rec = Recorder::default();
    let summary = m.run(&mut rec, &probe_limits())?;
    Ok(match summary.kvm_stats.get("insn_emulation") {
        Some(&n) if n >= u64::from(KERNEL_LOOP) => (
            Probed::yes(format!(
                "a {KERNEL_LOOP}-iteration CPL 0 loop raised insn_emulation by {n}: kernel code \
                 is emulated one instruction at a time"
            )),
            Some(n),
        ),
        Some(&n) => (
            Probed::no(format!(
                "a {KERNEL_LOOP}-iteration CPL 0 loop raised insn_emulation by {n}: kernel code \
                 runs natively"
            )),
            Some(n),
        ),
        None => (
            Probed::unknown("KVM's statistics are unavailable, so insn_emulation cannot be read"),
            None,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_irqfd_probe_tells_an_interrupt_from_none() {
        if crate::open_kvm().is_err() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        // Nobody writes the eventfd: the halted guest is never woken, the probe says no.
        let short = Limits {
            wall: Duration::from_millis(300),
            ..probe_limits()
        };
        let without = irqfd_guest(false, &short).unwrap();
        assert_eq!(without.present, Some(false), "{}", without.detail);
        assert!(
            without
                .detail
                .contains("did not take the irqfd's vector 0x21: out to 0xe9"),
            "{}",
            without.detail
        );
        let with = irqfd_guest(true, &probe_limits()).unwrap();
        assert!(with.present.is_some(), "{}", with.detail);
        assert_eq!(probe().unwrap().irqfd.present, with.present);
        if with.is_present() {
            assert!(
                with.detail.contains("with 0 hlt exit(s)"),
                "{}",
                with.detail
            );
        }
    }

    #[test]
    fn the_ioeventfd_probe_tells_a_signal_from_an_exit() {
        if crate::open_kvm().is_err() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        // Without the ioeventfd the doorbell's write is an MMIO exit: the probe says no.
        let without = ioeventfd_guest(false).unwrap();
        assert_eq!(without.present, Some(false), "{}", without.detail);
        assert!(
            without
                .detail
                .contains("made 1 MMIO exit(s) and 0 eventfd signal(s)"),
            "{}",
            without.detail
        );
        // With it, the probe's answer is whatever the host does, and it is a firm one.
        let with = ioeventfd_guest(true).unwrap();
        assert!(with.present.is_some(), "{}", with.detail);
        assert_eq!(probe().unwrap().ioeventfd.present, with.present);
    }
}
