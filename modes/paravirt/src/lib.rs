//! The paravirtual engine: the guest kernel is *modified* so that it never executes a
//! sensitive instruction. It runs at CPL 3 (as Xen PV guests did on x86-64) and asks the
//! VMM for everything privileged through hypercalls — an `out` to a port the TSS I/O
//! bitmap opens to CPL 3, so it exits straight to this VMM — batching what can wait and
//! keeping cheap state, such as the virtual interrupt flag, in a shared-info page.
//!
//! ```
//! use contract::abi::hypercall::{Hypercall, PORT};
//! use contract::{Engine, GuestImage, RunOptions};
//! use paravirt::Paravirt;
//!
//! // "hi" in one console_write, then exit(0):
//! //   mov edi, msg; mov esi, 2; mov eax, 1; out 0xFC, eax
//! //   xor edi, edi; mov eax, 2; out 0xFC, eax
//! //   msg: db "hi"
//! let mut code = vec![0xBF];
//! code.extend_from_slice(&0x10_001Au32.to_le_bytes());
//! code.extend_from_slice(&[0xBE, 2, 0, 0, 0, 0xB8]);
//! code.extend_from_slice(&(Hypercall::ConsoleWrite.number() as u32).to_le_bytes());
//! code.extend_from_slice(&[0xE7, PORT as u8, 0x31, 0xFF, 0xB8]);
//! code.extend_from_slice(&(Hypercall::Exit.number() as u32).to_le_bytes());
//! code.extend_from_slice(&[0xE7, PORT as u8, b'h', b'i']);
//! let mut image = GuestImage::flat("hi", code, 0x10_0000, 0x10_0000);
//! image.flavour = contract::Flavour::Paravirt;
//! let record = Paravirt.run(&image, &RunOptions::default())?;
//! assert_eq!(record.console, "hi");
//! assert_eq!(record.hypercalls["console_write"], 1);
//! # Ok::<(), contract::Error>(())
//! ```
//!
//! A native-flavour image runs too, unchanged: its first privileged instruction ends the
//! run as [`FaultKind::UnportedPrivilegedInstruction`], naming the instruction — which is
//! what a paravirtual hypervisor does to a guest that was not ported to it.

pub mod direct_paging;
pub mod hypercalls;
pub mod monitor;
pub mod unported;

use std::time::Instant;

use contract::abi::{self, hypercall, port, selector};
use contract::record::{Ending, FaultKind, Outcome};
use contract::x86::{rflags, vector};
use contract::{Engine, Error, Flavour, GuestImage, Mode, RunOptions, RunRecord, TraceNote};
use kvm_bindings::kvm_regs;
use machine::{
    fault, unhandled_exception, Action, ExitHandler, GuestMemory, GuestPrivilege, Handled,
    MachineConfig, Policy, Vcpu,
};

use hypercalls::{Effect, Hypervisor};
use unported::ExitRip;

/// The paravirtual engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct Paravirt;

/// `IA32_LSTAR`.
const MSR_LSTAR: u32 = 0xC000_0082;

/// Where LSTAR points: a page of the monitor's region that no root maps (between the
/// pages in use and the event stack; binary translation's code cache in that mode).
pub const SYSCALL_LANDING: u64 = abi::layout::EVENT_STACK - abi::PAGE_SIZE;

/// Exit policy of the paravirtual engine.
#[derive(Debug)]
struct Handler {
    hv: Hypervisor,
    /// Where this backend leaves RIP at an I/O exit, once a hypercall has shown it.
    exit_rip: Option<ExitRip>,
    /// Whether the run is traced (`Limits::trace_events` > 0).
    tracing: bool,
    /// What the last exception did, for the trace.
    last: Option<TraceNote>,
    /// Whether the image is native-flavour (not ported to this interface).
    native_image: bool,
}

fn vmm_fault(what: &str, e: impl std::fmt::Display) -> Action {
    Action::Fail(format!("{what}: {e}"))
}

impl Handler {
    /// One hypercall: decode, validate, run, count and time it, then resume the guest
    /// after its `out` (delivering a pending event on the way if one can be delivered).
    fn hypercall(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        if self.hv.in_user {
            return self.user_hypercall(vcpu);
        }
        let mem = vcpu.mem;
        // KVM copied the registers into `kvm_run` at the exit (sync regs): no ioctl.
        let mut regs = vcpu.synced_regs();
        // Resume past the `out` ourselves, wherever KVM left RIP.
        let next_rip = match (self.exit_rip, unported::explain_exit_rip(mem, regs.rip)) {
            (Some(ExitRip::OnInstruction), (true, _)) => regs.rip + 2,
            (Some(ExitRip::PastInstruction), (_, true)) => regs.rip,
            (None, (true, false)) => {
                self.exit_rip = Some(ExitRip::OnInstruction);
                regs.rip + 2
            }
            (None, (false, true)) => {
                self.exit_rip = Some(ExitRip::PastInstruction);
                regs.rip
            }
            _ => {
                return Handled::hypercall(
                    "unknown",
                    fault(
                        FaultKind::BadDeviceAccess,
                        Some(regs.rip),
                        "an I/O exit on the hypercall port not made by the hypercall \
                         instruction `out 0xFC, eax`",
                    ),
                )
            }
        };
        self.hv.poll_timer(mem);
        let args = [regs.rdi, regs.rsi, regs.rdx];
        let number = regs.rax;
        let (name, effect) = match hypercall::Hypercall::try_from(regs.rax) {
            Ok(h) => (h.name(), self.hv.call(mem, h, args)),
            Err(_) => ("unknown", Effect::Return(hypercall::errno::ENOSYS)),
        };
        let (ok, action) = match effect {
            Effect::Return(v) => {
                regs.rax = v as u64;
                regs.rip = next_rip;
                (v >= 0, self.resume(vcpu, regs))
            }
            Effect::Exit(code) => (
                true,
                Action::Stop(Outcome::Completed {
                    exit_code: code,
                    result: regs.rbx,
                    ending: Ending::ExitPort,
                }),
            ),
            Effect::Stop(o) => (true, Action::Stop(o)),
            Effect::Iret => {
                let r = self.hv.iret(mem, &mut regs);
                if let Err(e) = r {
                    regs.rax = e as u64;
                    regs.rip = next_rip;
                }
                (r.is_ok(), self.resume(vcpu, regs))
            }
            Effect::Block => {
                regs.rax = 0;
                regs.rip = next_rip;
                (true, self.block(vcpu, &mut regs))
            }
        };
        let handled = if ok {
            Handled::hypercall(name, action)
        } else {
            Handled::hypercall(format!("rejected:{name}"), action)
        };
        if vcpu.tracing() {
            let call = hypercall::Hypercall::try_from(number).ok();
            let rax = vcpu.synced_regs().rax as i64;
            let result = match (&handled.action, call) {
                (Action::Stop(_) | Action::Fail(_), _) => "the run ends".to_string(),
                (Action::Continue, Some(hypercall::Hypercall::Iret)) if ok => {
                    "back to the interrupted code".to_string()
                }
                (Action::Continue, Some(hypercall::Hypercall::Block)) if ok => {
                    "waited; the event's callback runs next".to_string()
                }
                (Action::Continue, _) if ok => format!("→ {rax}"),
                (Action::Continue, _) => format!("rejected → {rax}"),
            };
            let shown = call.map_or(3, |c| c.arity());
            let args: Vec<String> = args[..shown].iter().map(|a| format!("{a:#x}")).collect();
            return handled.noted(Some(TraceNote {
                rip: Some(next_rip - 2),
                instruction: Some("out 0FCh,eax".into()),
                event: format!("{name}({})", args.join(", ")),
                action: result,
            }));
        }
        handled
    }

    /// Delivers a pending event if it can, applies the MMU work the hypercall asked for
    /// (through the monitor routine when there are PTE writes or a flush), and writes the
    /// registers back.
    fn resume(&mut self, vcpu: &mut Vcpu<'_>, mut regs: kvm_regs) -> Action {
        // First the event: delivered from user mode, it loads the kernel's root.
        if let Err(o) = self.hv.deliver_pending(vcpu.mem, &mut regs) {
            return Action::Stop(o);
        }
        // The monitor routine makes its writes below, before the guest runs again (a
        // failure stops the run).
        let sync = self.hv.take_mmu_sync();
        if sync.new_root.is_some() || !sync.writes.is_empty() || sync.flush {
            let mut sregs = match vcpu.sregs() {
                Ok(s) => s,
                Err(e) => return vmm_fault("reading special registers", e),
            };
            if let Some(root) = sync.new_root {
                // A new CR3 through KVM_SET_SREGS: KVM rebuilds its translations.
                sregs.cr3 = root;
            }
            if !sync.writes.is_empty() || sync.flush {
                // Stores into guest RAM go through the routine's window on it.
                let ram = self.hv.ram_size();
                let writes: Vec<(u64, u64)> = sync
                    .writes
                    .iter()
                    .map(|&(p, v)| {
                        if p < ram {
                            (p + hypercalls::RAM_WINDOW, v)
                        } else {
                            (p, v)
                        }
                    })
                    .collect();
                if let Err(e) = monitor::enter(vcpu.mem, &mut regs, &mut sregs, &writes, sync.flush)
                {
                    return vmm_fault("entering the monitor routine", e);
                }
            }
            if let Err(e) = vcpu.set_sregs(&sregs) {
                return vmm_fault("setting special registers", e);
            }
        }
        // KVM loads them from `kvm_run` at the next entry.
        vcpu.set_synced_regs(regs);
        Action::Continue
    }

    /// `block`: enable events and wait until one is delivered; with nothing that could
    /// wake the guest, it is done (as `hlt` with nothing armed).
    fn block(&mut self, vcpu: &mut Vcpu<'_>, regs: &mut kvm_regs) -> Action {
        let mem = vcpu.mem;
        self.hv.set_mask(mem, false);
        loop {
            self.hv.poll_timer(mem);
            if self.hv.deliverable(mem) {
                return self.resume(vcpu, *regs);
            }
            if self.hv.pending(mem) {
                return fault(
                    FaultKind::Exception,
                    Some(regs.rip),
                    format!(
                        "blocked with an event pending but no callback for vector {:#x} \
                         (register one with set_trap_table) or with the task priority \
                         masking it",
                        abi::TIMER_VECTOR
                    ),
                );
            }
            let Some(deadline) = self.hv.devices.timer.deadline() else {
                return Action::Stop(Outcome::Completed {
                    exit_code: 0,
                    result: regs.rbx,
                    ending: Ending::Halted,
                });
            };
            if Instant::now() >= vcpu.deadline || !vcpu.wait_until(deadline) {
                // The watchdog ends the run at the next entry.
                return self.resume(vcpu, *regs);
            }
        }
    }

    /// An exception at CPL 3, reported by the monitor's stub: a privileged instruction
    /// ends the run as unported; otherwise it is reflected to the guest's callback, if it
    /// registered one.
    fn exception(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        let mem = vcpu.mem;
        let f = match vcpu.fault_frame() {
            Ok(Some(f)) => f,
            _ => return unhandled_exception(vcpu),
        };
        if f.cs != selector::USER_CODE {
            return unhandled_exception(vcpu);
        }
        if self.hv.in_user {
            return self.user_exception(vcpu, &f);
        }
        if matches!(f.vector, vector::UD | vector::GP) {
            if let Some(insn) = unported::privileged_at(mem, f.rip) {
                if self.tracing {
                    self.last = Some(TraceNote {
                        rip: Some(f.rip),
                        instruction: Some(insn.clone()),
                        event: abi::vector_name(f.vector).to_lowercase(),
                        action: "unported privileged instruction: the run ends".into(),
                    });
                }
                return fault(
                    FaultKind::UnportedPrivilegedInstruction,
                    Some(f.rip),
                    format!(
                        "`{insn}` at rip {:#x} ({}): a privileged instruction in a \
                         paravirtual guest, which must call the hypervisor instead",
                        f.rip,
                        abi::vector_name(f.vector)
                    ),
                );
            }
        }
        let Some(handler) = self.hv.callback(f.vector) else {
            return unhandled_exception(vcpu);
        };
        if f.vector == vector::PF {
            if let Ok(s) = vcpu.sregs() {
                self.hv.set_fault_addr(mem, s.cr2);
            }
        }
        // Build the guest's frame on its own stack, then point the stub's frame (which
        // its `iretq` will use) at the callback.
        let (mut regs, error_code) = interrupted(&f);
        if let Err(o) = self
            .hv
            .push_callback_frame(mem, &mut regs, handler, error_code)
        {
            return Action::Stop(o);
        }
        if let Err(e) = f.set_return(mem, regs.rip, f.rflags, regs.rsp) {
            return Action::Fail(e);
        }
        if self.tracing {
            self.last = Some(TraceNote {
                rip: Some(f.rip),
                instruction: unported::instruction_at(mem, f.rip),
                event: abi::vector_name(f.vector).to_lowercase(),
                action: format!("reflected to the guest's callback at {handler:#x}"),
            });
        }
        Action::Continue
    }
}

impl Handler {
    /// A hypercall from guest user mode: a user process of the guest kernel has none (Xen
    /// refuses them from guest user mode; only its kernel talks to the VMM), so it gets
    /// `EPERM` and goes on after its `out`, found through its own page tables (RIP is a
    /// virtual address of its user half).
    fn user_hypercall(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        let mem = vcpu.mem;
        let mut regs = vcpu.synced_regs();
        let cr3 = match vcpu.sregs() {
            Ok(s) => s.cr3,
            Err(e) => {
                return Handled::hypercall("unknown", vmm_fault("reading special registers", e))
            }
        };
        let gate = |va: u64| user_bytes(mem, cr3, va) == Some([0xE7, hypercall::PORT as u8]);
        let next_rip = match self.exit_rip {
            Some(ExitRip::OnInstruction) => Some(regs.rip.wrapping_add(2)),
            Some(ExitRip::PastInstruction) => Some(regs.rip),
            None if gate(regs.rip) => Some(regs.rip.wrapping_add(2)),
            None if gate(regs.rip.wrapping_sub(2)) => Some(regs.rip),
            None => None,
        };
        let Some(next_rip) = next_rip else {
            return Handled::hypercall(
                "unknown",
                fault(
                    FaultKind::BadDeviceAccess,
                    Some(regs.rip),
                    "an I/O exit on the hypercall port from guest user mode, not made by \
                     the hypercall instruction `out 0xFC, eax`",
                ),
            );
        };
        let name = hypercall::Hypercall::try_from(regs.rax).map_or("unknown", |h| h.name());
        self.hv.count_mode("refused_from_user");
        regs.rax = hypercall::errno::EPERM as u64;
        regs.rip = next_rip;
        vcpu.set_synced_regs(regs);
        Handled::hypercall(format!("rejected:{name}"), Action::Continue)
    }

    /// An exception of guest user mode: SYSCALL (a #UD here: EFER.SCE is clear in this
    /// mode, so the instruction traps) is bounced to the kernel's system-call entry with
    /// SYSCALL's state (RCX the return address, R11 RFLAGS, the user's RSP); any other
    /// exception to the kernel's callback for its vector, on the event stack, with CR2 in
    /// the shared-info page for a page fault. Both load the kernel's root.
    fn user_exception(&mut self, vcpu: &mut Vcpu<'_>, f: &machine::FaultFrame) -> Action {
        let mem = vcpu.mem;
        let mut sregs = match vcpu.sregs() {
            Ok(s) => s,
            Err(e) => return vmm_fault("reading special registers", e),
        };
        // SYSCALL that jumped to LSTAR at CPL 3: RCX and R11 are already SYSCALL's.
        let landed = f.vector == vector::PF && f.rip == SYSCALL_LANDING;
        // SYSCALL that raised #UD: the VMM does what the instruction would have done.
        let trapped =
            f.vector == vector::UD && user_bytes(mem, sregs.cr3, f.rip) == Some([0x0F, 0x05]);
        let syscall = landed || trapped;
        let mut flags = f.rflags;
        let (target, rsp, what) = match (syscall, self.hv.syscall_callback()) {
            (true, Some(entry)) => {
                let mut regs = vcpu.synced_regs();
                if trapped {
                    regs.rcx = f.rip.wrapping_add(2);
                    regs.r11 = f.rflags;
                    vcpu.set_synced_regs(regs);
                }
                flags = syscall_flags(regs.r11);
                self.hv.enter_kernel();
                (entry, f.rsp, "syscalls_bounced")
            }
            _ => {
                let Some(handler) = self.hv.callback(f.vector) else {
                    return unhandled_exception(vcpu);
                };
                if f.vector == vector::PF {
                    self.hv.set_fault_addr(mem, sregs.cr2);
                }
                let (mut regs, error_code) = interrupted(f);
                if let Err(o) = self
                    .hv
                    .bounce_from_user(mem, &mut regs, handler, error_code)
                {
                    return Action::Stop(o);
                }
                let what = if f.vector == vector::PF {
                    "faults_bounced"
                } else {
                    "traps_bounced"
                };
                (handler, regs.rsp, what)
            }
        };
        self.hv.count_mode(what);
        // SYSCALL clears TF, DF and AC (the kernel's SFMASK); so does the delivery here.
        let flags = flags & !(rflags::TF | rflags::DF | rflags::AC);
        if let Err(e) = f.set_return(mem, target, flags, rsp) {
            return Action::Fail(e);
        }
        if let Some(root) = std::mem::take(&mut self.hv.mmu_sync.new_root) {
            sregs.cr3 = root;
            if let Err(e) = vcpu.set_sregs(&sregs) {
                return vmm_fault("setting special registers", e);
            }
        }
        if self.tracing {
            self.last = Some(TraceNote {
                rip: Some(f.rip),
                instruction: syscall.then(|| "syscall".to_string()),
                event: abi::vector_name(f.vector).to_lowercase(),
                action: format!("bounced from user mode to the kernel at {target:#x}"),
            });
        }
        Action::Continue
    }
}

/// The registers of the code an exception interrupted (RIP, RSP, RFLAGS from the stub's
/// frame) and the error code its vector pushes, if any: what a bounce to a callback
/// starts from.
fn interrupted(f: &machine::FaultFrame) -> (kvm_regs, Option<u64>) {
    let regs = kvm_regs {
        rip: f.rip,
        rsp: f.rsp,
        rflags: f.rflags,
        ..Default::default()
    };
    (
        regs,
        abi::pushes_error_code(f.vector).then_some(f.error_code),
    )
}

/// The RFLAGS a SYSCALL of guest user mode hands its kernel's entry, from R11: the
/// user's RFLAGS, or — when the process jumped to the landing page itself — whatever it
/// put there. Only what user mode's POPF can set is taken from it, with IF and the
/// reserved bit 1 as user mode always runs; never IOPL, VM, RF, VIF or VIP, which the
/// monitor's stub would load with IRETQ at CPL 0.
fn syscall_flags(r11: u64) -> u64 {
    const NT: u64 = 1 << 14;
    const POPF: u64 = rflags::ARITHMETIC | rflags::TF | rflags::DF | rflags::AC | rflags::ID | NT;
    (r11 & POPF) | rflags::IF | 0x2
}

/// The two bytes at the virtual address `va` of the address space whose root is `root`
/// (a walk of the guest's tables in guest memory; `None` if they are not mapped).
fn user_bytes(mem: &GuestMemory, root: u64, va: u64) -> Option<[u8; 2]> {
    use vm_memory::{Bytes, GuestAddress};
    let walk = |va: u64| -> Option<u64> {
        let mut table = root & contract::x86::pte::FRAME;
        for shift in [39u32, 30, 21, 12] {
            let e: u64 = mem
                .read_obj(GuestAddress(table + ((va >> shift) & 511) * 8))
                .ok()?;
            if e & contract::x86::pte::P == 0 {
                return None;
            }
            if shift != 12 && shift != 39 && e & contract::x86::pte::PS != 0 {
                let size = 1u64 << shift;
                return Some((e & contract::x86::pte::FRAME & !(size - 1)) + (va & (size - 1)));
            }
            table = e & contract::x86::pte::FRAME;
        }
        Some(table + (va & 0xFFF))
    };
    let mut out = [0u8; 2];
    for (i, b) in out.iter_mut().enumerate() {
        let pa = walk(va.wrapping_add(i as u64))?;
        *b = mem.read_obj(GuestAddress(pa)).ok()?;
    }
    Some(out)
}

impl ExitHandler for Handler {
    fn before_entry(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        // Only mark the event pending: the guest takes it at its next hypercall or when
        // it re-enables events and sees the flag.
        self.hv.poll_timer(vcpu.mem);
        Action::Continue
    }

    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, p: u16, data: &[u8]) -> Handled {
        match p {
            hypercall::PORT => self.hypercall(vcpu),
            p if blk::AtaDisk::claims(p) => self
                .hv
                .devices
                .io_out(vcpu, p, data)
                .unwrap_or_else(|| machine::no_such_port(p, true))
                .into(),
            port::FAULT => Handled::unnamed_trap(self.exception(vcpu)).noted(self.last.take()),
            _ => fault(
                FaultKind::BadDeviceAccess,
                None,
                format!("out to port {p:#x}, which a paravirtual guest cannot reach"),
            )
            .into(),
        }
    }

    fn io_in(&mut self, p: u16, data: &mut [u8]) -> Handled {
        if blk::AtaDisk::claims(p) {
            return self
                .hv
                .devices
                .io_in(p, data)
                .unwrap_or_else(|| machine::no_such_port(p, false))
                .into();
        }
        fault(
            FaultKind::BadDeviceAccess,
            None,
            format!("in from port {p:#x}: paravirtual guests read devices with hypercalls"),
        )
        .into()
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Handled {
        self.hv.devices.mmio_read(addr, data).into()
    }

    fn mmio_write(&mut self, _vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Handled {
        self.hv.devices.mmio_write(addr, data).into()
    }

    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        // `hlt` at CPL 3 raises #GP; this exit cannot come from the guest's own code.
        fault(
            FaultKind::UnportedPrivilegedInstruction,
            vcpu.regs().ok().map(|r| r.rip),
            "`hlt` reached the VMM: a paravirtual guest blocks with the block hypercall",
        )
        .into()
    }
}

impl Policy for Handler {
    fn devices(&mut self) -> Option<&mut machine::Devices> {
        Some(&mut self.hv.devices)
    }

    fn finish(self, r: &mut RunRecord, mem: &GuestMemory) {
        let hv = self.hv;
        r.console = hv.devices.console.text();
        // The guest's IF is the shared-info page's event mask.
        let masked = hv.masked(mem);
        if let Some(f) = r.final_regs.as_mut() {
            f.rflags = (f.rflags & !rflags::IF) | if masked { 0 } else { rflags::IF };
            f.view = contract::state::RegsView::Paravirtual;
        }
        // The entries of multicall batches, by name (the machine counted the batches).
        r.hypercalls.extend(hv.counters.counts().clone());
        // Direct paging's counters (`direct_paging:entries`, `…:refused:loop`, …).
        r.hypercalls.extend(hv.direct.counters.named());
        // The kernel/user split (`mode:syscalls_bounced`, `mode:root_switches`, …).
        for (name, n) in &hv.mode_counters {
            r.hypercalls.insert(format!("mode:{name}"), *n);
        }
        r.event_ns.extend(hv.counters.summaries());
        r.injections = hv.injections;
        let unported = matches!(
            r.outcome,
            Outcome::GuestFault {
                kind: FaultKind::UnportedPrivilegedInstruction,
                ..
            }
        );
        if self.native_image && unported {
            r.notes.push(
                "a native-flavour image on the paravirtual engine: its privileged \
                 instructions are not ported and end the run (build it with its pv-ops; \
                 a C guest: -DVIRTLAB_PARAVIRT with examples/c/virtlab.h)"
                    .into(),
            );
        }
    }
}

impl Paravirt {
    /// The machine configuration: CPL 3, the hypercall port open, the shared-info page
    /// and the port announced in the boot-info page, registers handed over in `kvm_run`,
    /// the monitor's MMU routine, and the hypervisor's initial memory.
    pub fn machine_config(
        image: &GuestImage,
        opts: &RunOptions,
    ) -> contract::Result<MachineConfig> {
        let mut cfg = MachineConfig::for_image(image, opts, GuestPrivilege::User);
        cfg.open_ports = (hypercall::PORT..hypercall::PORT + hypercall::PORT_SPAN).collect();
        if opts.disk.is_some() {
            // The disk's ATA ports, granted to the guest as Xen grants a driver domain
            // its device's I/O ports: each access exits straight to the device model.
            cfg.open_ports
                .extend(contract::abi::blk::ATA_DATA..=contract::abi::blk::ATA_COMMAND);
        }
        cfg.boot_info.shared_info = hypercall::SHARED_INFO;
        cfg.boot_info.hypercall_port = u64::from(hypercall::PORT);
        cfg.sync_regs = true;
        let setup_err =
            |e| Error::InvalidOption(format!("setting up the paravirtual machine: {e}"));
        cfg.monitor_code
            .extend(::monitor::routine::code().map_err(setup_err)?);
        // SYSCALL of guest user mode must reach this VMM. Where it raises #UD (EFER.SCE
        // is clear) the exception does; where the backend lets it jump to LSTAR anyway
        // (kvm_pvm), LSTAR is a page no guest root maps, so the jump faults there.
        cfg.msrs.push(machine::Msr {
            index: MSR_LSTAR,
            value: SYSCALL_LANDING,
            what: "LSTAR (where a SYSCALL of guest user mode faults into the VMM)",
        });
        let init = Hypervisor::initial_memory(opts.ram_size);
        cfg.memory.extend(init.writes);
        cfg.page_flags.extend(init.page_flags);
        Ok(cfg)
    }
}

impl Engine for Paravirt {
    fn mode(&self) -> Mode {
        Mode::Paravirt
    }

    fn flavour(&self) -> Flavour {
        Flavour::Paravirt
    }

    fn run(&self, image: &GuestImage, opts: &RunOptions) -> contract::Result<RunRecord> {
        let cfg = Self::machine_config(image, opts)?;
        machine::launch(Mode::Paravirt, image, opts, &cfg, |boot| {
            let mut hv = Hypervisor::new(opts.ram_size, &opts.limits, boot.cpuid.clone());
            hv.learn(boot.mem).map_err(|e| {
                Error::InvalidOption(format!("setting up the paravirtual machine: {e}"))
            })?;
            Ok(Handler {
                hv,
                // Measured once per process (`machine::caps`): where this backend leaves
                // RIP at an I/O exit from CPL 3. Learnt from the first unambiguous
                // hypercall otherwise (`out 0xFC, eax` twice in a row is ambiguous: both
                // addresses hold one).
                exit_rip: machine::caps::probe()
                    .ok()
                    .and_then(|c| c.io_exit_rip_past)
                    .map(|past| {
                        if past {
                            ExitRip::PastInstruction
                        } else {
                            ExitRip::OnInstruction
                        }
                    }),
                tracing: opts.limits.trace_events > 0,
                last: None,
                native_image: image.flavour == Flavour::Native,
            })
        })
    }
}
