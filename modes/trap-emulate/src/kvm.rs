//! The engine on real KVM: the exit handler that turns each FAULT-port exit into one
//! emulation step, and the [`Platform`] over the live vCPU and guest memory.

use std::time::Instant;

use modes::abi::port;
use modes::machine::{no_such_port, Action, Devices, ExitHandler, FaultFrame, Vcpu};
use modes::{ExitKind, FaultKind, NamedCounters, Outcome, TraceNote};
use vm_memory::{Bytes, GuestAddress};

use crate::emulator::{Emulator, TrapInfo, PF};
use crate::paging::{check, translate};
use crate::platform::{MemError, Platform, PortResult, Wake};
use crate::vcpu::{GuestRegs, VirtualCpu};

/// Where the monitor helpers live: the monitor's spare page above its stack.
pub(crate) const HELPERS: u64 = modes::abi::layout::TRAP_HELPERS;
/// The helpers' operands, written by the VMM before it enters one.
const MAILBOX: u64 = HELPERS + 0x800;

/// Monitor helpers: tiny CPL 0 routines the VMM enters *instead of the rest of the fault
/// stub* when a privileged effect must happen inside the guest so that KVM sees it. A
/// page-table store written by the VMM from user space bypasses KVM's tracking of guest
/// page tables (its shadow MMU would keep the old translation, whatever INVLPG or CR3
/// reload follows), so the validated store and the INVLPG are executed by the monitor at
/// CPL 0 on the guest's behalf. Each helper ends like the stub (`add rsp, 16; iretq`), so
/// the fault frame the VMM edited still decides where the guest resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Helper {
    /// `mov [mailbox[0]], mailbox[1]`.
    StorePte = 0,
    /// `invlpg [mailbox[0]]`.
    Invlpg = 1,
    /// `mov rax, cr3; mov cr3, rax`.
    ReloadCr3 = 2,
}

impl Helper {
    /// Every helper.
    pub(crate) const ALL: [Helper; 3] = [Helper::StorePte, Helper::Invlpg, Helper::ReloadCr3];

    /// Entry address.
    pub(crate) fn addr(self) -> u64 {
        HELPERS + self as u64 * 64
    }

    /// Machine code, assembled for its address.
    pub(crate) fn code(self) -> Result<Vec<u8>, iced_x86::IcedError> {
        use iced_x86::code_asm::*;
        let mut a = CodeAssembler::new(64)?;
        a.push(rax)?;
        match self {
            Helper::StorePte => {
                a.push(rdx)?;
                a.mov(rax, MAILBOX)?;
                a.mov(rdx, qword_ptr(rax + 8))?;
                a.mov(rax, qword_ptr(rax))?;
                a.mov(qword_ptr(rax), rdx)?;
                a.pop(rdx)?;
            }
            Helper::Invlpg => {
                a.mov(rax, MAILBOX)?;
                a.mov(rax, qword_ptr(rax))?;
                a.invlpg(byte_ptr(rax))?;
            }
            Helper::ReloadCr3 => {
                a.mov(rax, cr3)?;
                a.mov(cr3, rax)?;
            }
        }
        a.pop(rax)?;
        a.add(rsp, 16)?;
        a.iretq()?;
        a.assemble(self.addr())
    }
}

/// The trap-and-emulate exit policy.
#[derive(Debug)]
pub(crate) struct Handler {
    pub devices: Devices,
    pub emu: Emulator,
    pub traps: NamedCounters,
    pub cpuid: modes::cpuid::CpuidTable,
    /// The real CR3 (the page walks use it).
    pub cr3: u64,
    pub ram: u64,
    /// Whether the run is traced (`Limits::trace_events` > 0).
    pub tracing: bool,
    /// What the last trap did, for the trace.
    pub last: Option<TraceNote>,
    /// The guest's registers after the last trap was handled (what it sees at the end).
    pub last_regs: Option<GuestRegs>,
}

fn stop(kind: FaultKind, rip: Option<u64>, detail: String) -> Action {
    Action::Stop(Outcome::GuestFault { kind, rip, detail })
}

impl Handler {
    fn trap(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        let t0 = Instant::now();
        // One KVM_GET_REGS serves both the guest's GPRs (the stub only pushes) and the
        // stub's RSP, which locates the frame.
        let kregs = match vcpu.regs() {
            Ok(r) => r,
            Err(e) => {
                return stop(
                    FaultKind::EntryFailure,
                    None,
                    format!("reading registers: {e}"),
                )
            }
        };
        let Some(frame) = FaultFrame::read(vcpu.mem, kregs.rsp) else {
            return stop(
                FaultKind::Exception,
                None,
                "the monitor's fault frame is outside guest RAM".into(),
            );
        };
        if frame.cs & 3 != 3 {
            // Only guest (CPL 3) faults are expected; a fault at CPL 0 is inside the monitor.
            return stop(
                FaultKind::Exception,
                Some(frame.rip),
                format!("fault inside the monitor: {}", frame.describe()),
            );
        }
        let cr2 = if frame.vector == PF {
            match vcpu.sregs() {
                Ok(s) => s.cr2,
                Err(e) => return stop(FaultKind::EntryFailure, None, format!("reading CR2: {e}")),
            }
        } else {
            0
        };
        let mut regs = GuestRegs {
            gpr: [
                kregs.rax, kregs.rcx, kregs.rdx, kregs.rbx, frame.rsp, kregs.rbp, kregs.rsi,
                kregs.rdi, kregs.r8, kregs.r9, kregs.r10, kregs.r11, kregs.r12, kregs.r13,
                kregs.r14, kregs.r15,
            ],
            rip: frame.rip,
            rflags: frame.rflags,
            fs_base: 0,
            gs_base: 0,
        };
        let before = regs;
        let info = TrapInfo {
            vector: frame.vector,
            error_code: frame.error_code,
            cr2,
        };
        let traced = self.tracing.then(|| {
            (
                self.emu.cpu.clone(),
                self.emu.injections,
                self.devices.console.len(),
                self.devices.timer.armed(),
            )
        });
        let mut helper = None;
        let handled = {
            let mut p = KvmPlatform {
                vcpu,
                devices: &mut self.devices,
                cpuid: &self.cpuid,
                cr3: self.cr3,
                ram: self.ram,
                helper: &mut helper,
            };
            self.emu.handle(&info, &mut regs, &mut p)
        };
        let stopped = handled.stop.is_some();
        self.last_regs = Some(regs);
        let action = match handled.stop {
            Some(o) => Action::Stop(o),
            None => match write_back(vcpu, &frame, &kregs, &before, &regs, helper) {
                Ok(()) => Action::Continue,
                Err(e) => stop(FaultKind::EntryFailure, Some(frame.rip), e),
            },
        };
        self.traps
            .record(&handled.name, t0.elapsed().as_nanos() as u64);
        if let Some((cpu, injections, console_len, armed)) = traced {
            let mut changes = describe_changes(&cpu, &self.emu.cpu);
            let written = &self.devices.console.bytes()[console_len..];
            if !written.is_empty() {
                changes.push(format!("console ← {:?}", String::from_utf8_lossy(written)));
            }
            let decoded = decode_at(vcpu, frame.rip);
            let next = decoded.as_ref().map(|(_, len)| frame.rip + *len as u64);
            if !armed && self.devices.timer.armed() {
                changes.push("timer armed".into());
            }
            if self.emu.injections > injections {
                changes.push(format!(
                    "reflected through the guest's IDT to {:#x}",
                    regs.rip
                ));
            } else if Some(regs.rip) != next && !stopped {
                changes.push(format!("resume at {:#x}", regs.rip));
            }
            if changes.is_empty() {
                changes.push(
                    if stopped {
                        "the run ends"
                    } else {
                        "emulated; no virtual-CPU change"
                    }
                    .into(),
                );
            }
            self.last = Some(TraceNote {
                rip: Some(frame.rip),
                instruction: decoded.map(|(text, _)| text),
                event: handled.name.clone(),
                action: changes.join(", "),
            });
        }
        action
    }
}

/// The virtual-CPU fields that changed, as `vIF 1 → 0`, `CR8 0x3 → 0x4`, ….
fn describe_changes(a: &VirtualCpu, b: &VirtualCpu) -> Vec<String> {
    let mut out = Vec::new();
    if a.vif != b.vif {
        out.push(format!("vIF {} → {}", u8::from(a.vif), u8::from(b.vif)));
    }
    let regs = [
        ("CR0", a.cr0, b.cr0),
        ("CR2", a.cr2, b.cr2),
        ("CR3", a.cr3, b.cr3),
        ("CR4", a.cr4, b.cr4),
        ("CR8", a.cr8, b.cr8),
        ("EFER", a.efer, b.efer),
        ("IDTR.base", a.idtr.base, b.idtr.base),
        ("GDTR.base", a.gdtr.base, b.gdtr.base),
        ("vCPL", u64::from(a.cpl), u64::from(b.cpl)),
    ];
    for (name, x, y) in regs {
        if x != y {
            out.push(format!("{name} {x:#x} → {y:#x}"));
        }
    }
    out
}

/// The instruction at a guest RIP, decoded (Intel syntax), and its length.
fn decode_at(vcpu: &Vcpu<'_>, rip: u64) -> Option<(String, usize)> {
    monitor::decode_at(vcpu.mem, rip).map(|i| (monitor::text_of(&i), i.len()))
}

/// Writes the emulated state back: changed GPRs into the vCPU (whose RIP/RSP/RFLAGS are
/// the stub's), and RIP, RFLAGS and RSP into the fault frame the stub's IRETQ pops.
fn write_back(
    vcpu: &mut Vcpu<'_>,
    frame: &FaultFrame,
    kregs: &kvm_bindings::kvm_regs,
    before: &GuestRegs,
    after: &GuestRegs,
    helper: Option<Helper>,
) -> Result<(), String> {
    let mut gprs_before = before.gpr;
    let mut gprs_after = after.gpr;
    gprs_before[4] = 0;
    gprs_after[4] = 0;
    if gprs_before != gprs_after || helper.is_some() {
        let g = &after.gpr;
        let mut k = *kregs;
        if let Some(h) = helper {
            k.rip = h.addr();
        }
        (k.rax, k.rcx, k.rdx, k.rbx, k.rbp, k.rsi, k.rdi) =
            (g[0], g[1], g[2], g[3], g[5], g[6], g[7]);
        (k.r8, k.r9, k.r10, k.r11, k.r12, k.r13, k.r14, k.r15) =
            (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        vcpu.set_regs(&k).map_err(|e| e.to_string())?;
    }
    let base = frame.stub_rsp;
    for (off, v) in [(16, after.rip), (32, after.rflags), (40, after.rsp())] {
        vcpu.mem
            .write_obj(v, GuestAddress(base + off))
            .map_err(|e| format!("writing the fault frame: {e}"))?;
    }
    Ok(())
}

impl ExitHandler for Handler {
    fn io_kind(&self, p: u16, write: bool) -> ExitKind {
        match (p, write) {
            (port::FAULT, true) => ExitKind::Trap,
            (_, true) => ExitKind::IoOut,
            (_, false) => ExitKind::IoIn,
        }
    }

    fn before_entry(&mut self, _vcpu: &mut Vcpu<'_>) -> Action {
        // Interrupts are reflected by the VMM when it handles a trap (see the emulator);
        // nothing is injected through KVM.
        Action::Continue
    }

    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, p: u16, _data: &[u8]) -> Action {
        if p == port::FAULT {
            self.trap(vcpu)
        } else {
            // The I/O bitmap denies every port to CPL 3, so only the monitor does I/O.
            no_such_port(p, true)
        }
    }

    fn io_in(&mut self, p: u16, _data: &mut [u8]) -> Action {
        no_such_port(p, false)
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Action {
        self.devices.mmio_read(addr, data)
    }

    fn mmio_write(&mut self, _vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Action {
        self.devices.mmio_write(addr, data)
    }

    fn trace_note(&mut self) -> Option<TraceNote> {
        self.last.take()
    }

    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        // HLT at CPL 3 faults; a real halt exit can only come from the monitor.
        self.devices.halt(vcpu)
    }
}

/// The platform over the live vCPU.
struct KvmPlatform<'a, 'b> {
    vcpu: &'a mut Vcpu<'b>,
    devices: &'a mut Devices,
    cpuid: &'a modes::cpuid::CpuidTable,
    cr3: u64,
    ram: u64,
    helper: &'a mut Option<Helper>,
}

impl KvmPlatform<'_, '_> {
    fn mailbox(&self, words: &[u64]) -> Result<(), String> {
        for (i, w) in words.iter().enumerate() {
            self.vcpu
                .mem
                .write_obj(*w, GuestAddress(MAILBOX + 8 * i as u64))
                .map_err(|e| format!("writing the monitor mailbox: {e}"))?;
        }
        Ok(())
    }

    fn walk(&self, gva: u64, write: bool) -> Result<u64, MemError> {
        let mem = self.vcpu.mem;
        let t = translate(self.cr3, gva, |gpa| {
            mem.read_obj::<u64>(GuestAddress(gpa)).ok()
        })?;
        check(&t, gva, write)
    }

    /// Splits an access at page boundaries and runs `f` on each (gpa, offset, len).
    fn each_page(
        &self,
        gva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), MemError>,
    ) -> Result<(), MemError> {
        let mut done = 0;
        while done < len {
            let va = gva.wrapping_add(done as u64);
            let in_page = (0x1000 - (va & 0xFFF)) as usize;
            let n = in_page.min(len - done);
            let gpa = self.walk(va, write)?;
            if gpa.saturating_add(n as u64) > self.ram {
                return Err(MemError::NotRam { addr: va });
            }
            f(gpa, done, n)?;
            done += n;
        }
        Ok(())
    }
}

impl Platform for KvmPlatform<'_, '_> {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mem = self.vcpu.mem;
        let len = buf.len();
        self.each_page(gva, len, false, |gpa, off, n| {
            mem.read_slice(&mut buf[off..off + n], GuestAddress(gpa))
                .map_err(|_| MemError::NotRam { addr: gva })
        })
    }

    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemError> {
        let mem = self.vcpu.mem;
        self.each_page(gva, data.len(), true, |gpa, off, n| {
            mem.write_slice(&data[off..off + n], GuestAddress(gpa))
                .map_err(|_| MemError::NotRam { addr: gva })
        })
    }

    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.vcpu
            .mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| MemError::NotRam { addr: gpa })
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.vcpu
            .mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| MemError::NotRam { addr: gpa })
    }

    fn ram_size(&self) -> u64 {
        self.ram
    }

    fn port_out(&mut self, p: u16, data: &[u8]) -> PortResult {
        match self.devices.io_out(self.vcpu, p, data) {
            None => PortResult::NoDevice,
            Some(Action::Continue) => PortResult::Done,
            Some(Action::Stop(o)) => PortResult::Stop(o),
        }
    }

    fn port_in(&mut self, p: u16, data: &mut [u8]) -> PortResult {
        match self.devices.io_in(p, data) {
            None => PortResult::NoDevice,
            Some(Action::Continue) => PortResult::Done,
            Some(Action::Stop(o)) => PortResult::Stop(o),
        }
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid.lookup(leaf, subleaf)
    }

    fn invlpg(&mut self, gva: u64) -> Result<(), String> {
        self.mailbox(&[gva])?;
        *self.helper = Some(Helper::Invlpg);
        Ok(())
    }

    fn flush_tlb(&mut self) -> Result<(), String> {
        *self.helper = Some(Helper::ReloadCr3);
        Ok(())
    }

    fn write_pte(&mut self, gpa: u64, value: u64) -> Result<(), String> {
        self.mailbox(&[gpa, value])?;
        *self.helper = Some(Helper::StorePte);
        Ok(())
    }

    fn timer_due(&self) -> bool {
        self.devices.timer.due(Instant::now())
    }

    fn ack_timer(&mut self) {
        self.devices.timer.fire();
    }

    fn wait_for_timer(&mut self) -> Wake {
        let Some(due) = self.devices.timer.deadline() else {
            return Wake::NothingArmed;
        };
        let until = due.min(self.vcpu.deadline);
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
        if Instant::now() >= due {
            Wake::TimerDue
        } else {
            Wake::Deadline
        }
    }
}
