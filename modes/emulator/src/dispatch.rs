//! The trap dispatcher: what the VMM does with one fault the monitor stub forwarded.
//!
//! ```text
//! vector ──► #GP/#UD ─► fetch bytes at RIP ─► iced Decoder ─► handler_for(insn)
//!        │                                         ├─ emulate ─► Step (advance RIP…)
//!        │                                         ├─ privileged, no handler ─► UnhandledInstruction
//!        │                                         └─ not privileged ─► the guest's own fault: reflect
//!        ├─► #PF ─► on the write-protected page table ─► emulate the MOV (validated)
//!        │        ├─ on a monitor page ─► MonitorViolation
//!        │        └─ else the guest's own #PF ─► reflect (virtual CR2)
//!        └─► anything else (#DE, #BP…) ─► reflect through the virtual IDT
//! ```
//!
//! After an emulated instruction, a due timer interrupt is reflected when the virtual IF
//! allows it and no STI shadow covers the next instruction.

use contract::abi::{self, layout};
use contract::x86::vector::{GP, PF, UD};
use contract::{FaultKind, Outcome};
use iced_x86::Instruction;
use monitor::MAX_INSN;

use crate::classify;
use crate::instructions::{self, Cx, Fault, InstructionHandler, Step};
use crate::interrupts;
use crate::platform::Platform;
use crate::shadow::Resolution;
use crate::vcpu::{GuestRegs, VirtualCpu};

/// One fault as the monitor stub reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrapInfo {
    /// Exception vector.
    pub vector: u8,
    /// Error code (0 when the CPU pushes none).
    pub error_code: u64,
    /// CR2 for a #PF.
    pub cr2: u64,
}

/// What the VMM did with a trap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The trap's name in `RunRecord::traps` (an instruction mnemonic, `#de`, …).
    pub name: String,
    /// The run ends with this outcome.
    pub stop: Option<Outcome>,
}

/// The trap-and-emulate core: the virtual CPU and the count of reflected events.
#[derive(Debug, Clone)]
pub struct Emulator {
    /// Virtual CPU state.
    pub cpu: VirtualCpu,
    /// Interrupts and exceptions reflected into the guest.
    pub injections: u64,
    /// The shadow MMU, for an engine that runs the guest's own page tables (`None`: the
    /// guest stays on the boot tables and a CR3 switch is not emulated).
    pub shadow: Option<crate::shadow::ShadowMmu>,
}

/// Reads the instruction bytes at `rip` (fewer near the end of the mapping).
fn fetch(rip: u64, p: &mut dyn Platform) -> Result<Vec<u8>, Fault> {
    let mut buf = vec![0u8; MAX_INSN];
    let mut n = MAX_INSN;
    loop {
        match p.read(rip, &mut buf[..n]) {
            Ok(()) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if n == 1 => return Err(instructions::mem_fault(e, "instruction fetch")),
            Err(_) => n = (n - 1).min((0x1000 - (rip & 0xFFF)) as usize).max(1),
        }
    }
}

/// Decodes the instruction at guest-virtual `rip`, read with the guest's rights (an
/// invalid instruction if the bytes do not decode).
pub fn decode_at(rip: u64, p: &mut dyn Platform) -> Result<Instruction, Fault> {
    let bytes = fetch(rip, p)?;
    Ok(monitor::decode(&bytes, rip).unwrap_or_default())
}

/// Lowercase mnemonic, the trap name of an instruction.
pub fn mnemonic_name(insn: &Instruction) -> String {
    format!("{:?}", insn.mnemonic()).to_lowercase()
}

fn vector_trap_name(vector: u8) -> String {
    abi::vector_name(vector).to_lowercase()
}

/// Which monitor structure an address in the VMM region belongs to.
pub fn monitor_region(addr: u64) -> &'static str {
    match addr {
        a if (layout::PML4..layout::GDT).contains(&a) => "page tables",
        a if (layout::MONITOR_ROUTINE..layout::MONITOR_PRIVATE_END).contains(&a) => {
            "monitor routine"
        }
        a if layout::is_shared_page(a) => "shared pages",
        a if (layout::SHADOW_BASE..layout::SHADOW_BASE + layout::SHADOW_SIZE).contains(&a) => {
            "shadow page tables"
        }
        a if (layout::GDT..layout::IDT).contains(&a) => "GDT",
        a if (layout::IDT..layout::TSS).contains(&a) => "IDT",
        a if (layout::TSS..layout::STUBS).contains(&a) => "TSS and I/O bitmap",
        a if (layout::STUBS..layout::MONITOR_STACK_BOTTOM).contains(&a) => "fault stubs",
        a if (layout::MONITOR_STACK_BOTTOM..layout::MONITOR_STACK_TOP).contains(&a) => {
            "monitor stack"
        }
        _ => "monitor",
    }
}

fn outcome_of(fault: Fault, rip: u64) -> Outcome {
    let (kind, detail) = match fault {
        Fault::Unhandled(d) => (FaultKind::UnhandledInstruction, d),
        Fault::Monitor(d) => (FaultKind::MonitorViolation, d),
        Fault::BadMemory(d) => (FaultKind::BadMemoryAccess, d),
        Fault::BadDevice(d) => (FaultKind::BadDeviceAccess, d),
        Fault::NoHandler(d) => (FaultKind::Exception, d),
        Fault::Exception {
            vector, error_code, ..
        } => (
            FaultKind::Exception,
            format!(
                "{} (error code {:#x}) that could not be reflected",
                abi::vector_name(vector),
                error_code.unwrap_or(0)
            ),
        ),
    };
    Outcome::GuestFault {
        kind,
        rip: Some(rip),
        detail,
    }
}

impl Emulator {
    /// An emulator for a guest booting with `cpu`.
    pub fn new(cpu: VirtualCpu) -> Self {
        Emulator {
            cpu,
            injections: 0,
            shadow: None,
        }
    }

    /// The same, with shadow paging: a guest CR3 load of its own tables selects a shadow.
    pub fn with_shadow(mut self, mmu: crate::shadow::ShadowMmu) -> Self {
        self.shadow = Some(mmu);
        self
    }

    /// Handles one trap: emulates, reflects or ends the run. `regs` holds the guest's
    /// registers at the fault and receives the state to resume with.
    pub fn handle(&mut self, t: &TrapInfo, regs: &mut GuestRegs, p: &mut dyn Platform) -> Handled {
        let rip = regs.rip;
        let in_shadow = self.cpu.sti_shadow.take() == Some(rip);
        if t.vector >= 32 {
            return Handled {
                name: "irq".into(),
                stop: Some(outcome_of(
                    Fault::NoHandler(format!(
                        "unexpected external interrupt {} reached the monitor",
                        abi::vector_name(t.vector)
                    )),
                    rip,
                )),
            };
        }
        // An interrupt that became deliverable while the guest ran natively is taken
        // before the trapping instruction, which re-executes after the handler's IRETQ.
        if self.cpu.vif && !in_shadow && p.timer_due() {
            let stop = self.deliver_timer(regs, p).err();
            return Handled {
                name: "irq".into(),
                stop,
            };
        }
        let mut injections = 0;
        let (name, result, len) = {
            let mut cx = Cx {
                regs,
                cpu: &mut self.cpu,
                p,
                injections: &mut injections,
                shadow: self.shadow.as_mut(),
            };
            match t.vector {
                GP | UD => instruction_trap(t, &mut cx),
                PF => page_fault(t, &mut cx),
                v => (
                    vector_trap_name(v),
                    Err(Fault::Exception {
                        vector: v,
                        error_code: abi::pushes_error_code(v).then_some(t.error_code),
                        context: String::new(),
                    }),
                    0,
                ),
            }
        };
        self.injections += injections;
        let stop = match result {
            Ok(Step::Next) => {
                regs.rip = rip.wrapping_add(len as u64);
                None
            }
            Ok(Step::Jump | Step::Retry) => None,
            Ok(Step::Stop(o)) => Some(o),
            Err(Fault::Exception {
                vector,
                error_code,
                context,
            }) => {
                let mut cx = Cx {
                    regs,
                    cpu: &mut self.cpu,
                    p,
                    injections: &mut self.injections,
                    shadow: self.shadow.as_mut(),
                };
                interrupts::reflect(&mut cx, vector, error_code, &context)
                    .err()
                    .map(|f| outcome_of(f, rip))
            }
            Err(f) => Some(outcome_of(f, rip)),
        };
        if stop.is_some() {
            return Handled { name, stop };
        }
        let stop = if self.cpu.vif && self.cpu.sti_shadow.is_none() && p.timer_due() {
            self.deliver_timer(regs, p).err()
        } else {
            None
        };
        Handled { name, stop }
    }

    /// Reflects the timer's vector into the guest and marks it delivered.
    fn deliver_timer(&mut self, regs: &mut GuestRegs, p: &mut dyn Platform) -> Result<(), Outcome> {
        let rip = regs.rip;
        let mut cx = Cx {
            regs,
            cpu: &mut self.cpu,
            p,
            injections: &mut self.injections,
            shadow: self.shadow.as_mut(),
        };
        interrupts::reflect(&mut cx, abi::TIMER_VECTOR, None, "timer interrupt")
            .map_err(|f| outcome_of(f, rip))?;
        p.ack_timer();
        Ok(())
    }
}

/// #GP or #UD: decode and emulate, or classify.
fn instruction_trap(t: &TrapInfo, cx: &mut Cx<'_>) -> (String, Result<Step, Fault>, usize) {
    let vname = vector_trap_name(t.vector);
    let reflect = |context: String| Fault::Exception {
        vector: t.vector,
        error_code: (t.vector == GP).then_some(t.error_code),
        context,
    };
    let insn = match decode_at(cx.regs.rip, cx.p) {
        Ok(i) => i,
        Err(f) => return (vname, Err(f), 0),
    };
    if insn.is_invalid() {
        return (vname, Err(reflect("invalid instruction bytes".into())), 0);
    }
    let len = insn.len();
    // Guest user mode (virtual CPL 3) may only make system calls, software interrupts
    // (the gate's DPL decides) and CPUID: any other privileged instruction is the
    // guest's own #GP, for its kernel.
    if cx.cpu.cpl == 3
        && !matches!(
            insn.mnemonic(),
            iced_x86::Mnemonic::Syscall
                | iced_x86::Mnemonic::Int
                | iced_x86::Mnemonic::Int3
                | iced_x86::Mnemonic::Cpuid
        )
        && (instructions::handler_for(&insn).is_some()
            || classify::classify(&insn, true, false) == classify::Class::Privileged)
    {
        let text = monitor::text_of(&insn);
        let f = Fault::Exception {
            vector: GP,
            error_code: Some(0),
            context: format!("`{text}` in user mode"),
        };
        return (mnemonic_name(&insn), Err(f), len);
    }
    if let Some(h) = instructions::handler_for(&insn) {
        return (h.name(&insn), h.emulate(&insn, cx), len);
    }
    let text = monitor::text_of(&insn);
    if classify::classify(&insn, true, false) == classify::Class::Privileged {
        let f = Fault::Unhandled(format!(
            "{} (`{text}`) is privileged and this engine does not emulate it",
            mnemonic_name(&insn)
        ));
        return (mnemonic_name(&insn), Err(f), len);
    }
    (vname, Err(reflect(format!("`{text}`"))), len)
}

/// #PF: the write-protected page table, the monitor, or the guest's own fault.
fn page_fault(t: &TrapInfo, cx: &mut Cx<'_>) -> (String, Result<Step, Fault>, usize) {
    const PROTECTION: u64 = 1;
    const WRITE: u64 = 1 << 1;
    const FETCH: u64 = 1 << 4;
    let addr = t.cr2;
    let protection = t.error_code & PROTECTION != 0;
    // The I/D bit is only reported with NX or SMEP on; a fault at RIP itself is a fetch.
    let fetch = t.error_code & FETCH != 0 || addr == cx.regs.rip;
    let access = if fetch {
        "execute"
    } else if t.error_code & WRITE != 0 {
        "write"
    } else {
        "read"
    };
    if addr == monitor::routine::SYSCALL_LANDING && cx.regs.rip == addr {
        // SYSCALL ran at CPL 3 and jumped to the VMM's LSTAR: RCX and R11 hold what
        // SYSCALL saved; the VMM does the rest with the virtual MSRs.
        let next = cx.regs.get(iced_x86::Register::RCX).unwrap_or(0);
        cx.regs.rip = next.wrapping_sub(2);
        return (
            "syscall".into(),
            instructions::syscall::landed(cx, next).map(|()| Step::Jump),
            0,
        );
    }
    if cx.shadowing() && cx.cpu.cpl == 3 && protection && layout::is_monitor(addr) {
        // Guest user mode reaching the monitor's private pages: supervisor-only in every
        // shadow, as in the boot tables the guest kernel keeps: its own protection fault.
        if let Some(m) = cx.shadow.as_deref_mut() {
            m.count_true_fault();
        }
        cx.cpu.cr2 = addr;
        let error_code = t.error_code | 0b101;
        return (
            "#pf".into(),
            Err(Fault::Exception {
                vector: PF,
                error_code: Some(error_code),
                context: format!("{access} at {addr:#x}"),
            }),
            0,
        );
    }
    if cx.shadowing() && !(protection && layout::is_monitor(addr)) {
        let ec = t.error_code;
        return match cx.with_shadow(|m, read, fx| m.page_fault(addr, ec, read, fx)) {
            Err(f) => ("#pf".into(), Err(f), 0),
            Ok(Resolution::Hidden) => ("#pf hidden".into(), Ok(Step::Retry), 0),
            Ok(Resolution::True { error_code }) => {
                cx.cpu.cr2 = addr;
                (
                    "#pf".into(),
                    Err(Fault::Exception {
                        vector: PF,
                        error_code: Some(error_code),
                        context: format!("{access} at {addr:#x}"),
                    }),
                    0,
                )
            }
            Ok(Resolution::PageTableWrite { gpa }) => shadow_pt_store(cx, addr, gpa),
        };
    }
    let pt = layout::SCRATCH_PT..layout::SCRATCH_PT + abi::PAGE_SIZE;
    if protection && pt.contains(&addr) && !fetch {
        let insn = match decode_at(cx.regs.rip, cx.p) {
            Ok(i) => i,
            Err(f) => return ("#pf".into(), Err(f), 0),
        };
        let h = &instructions::page_table::PageTableAccess;
        return (h.name(&insn), h.emulate(&insn, cx), insn.len());
    }
    if protection && layout::is_monitor(addr) {
        return (
            "#pf".into(),
            Err(Fault::Monitor(format!(
                "the guest tried to {access} {addr:#x}, a page of the monitor ({})",
                monitor_region(addr)
            ))),
            0,
        );
    }
    cx.cpu.cr2 = addr;
    (
        "#pf".into(),
        Err(Fault::Exception {
            vector: PF,
            error_code: Some(t.error_code),
            context: format!("{access} at {addr:#x}"),
        }),
        0,
    )
}

/// A guest store into one of its own page tables (write-protected in the shadows): a
/// whole, aligned part of one entry written by a plain MOV, emulated, and the shadows told.
fn shadow_pt_store(cx: &mut Cx<'_>, va: u64, gpa: u64) -> (String, Result<Step, Fault>, usize) {
    use iced_x86::{Mnemonic, OpKind};
    let name = "pte write".to_string();
    let insn = match decode_at(cx.regs.rip, cx.p) {
        Ok(i) => i,
        Err(f) => return (name, Err(f), 0),
    };
    let len = insn.len();
    let text = monitor::text_of(&insn);
    let size = insn.memory_size().size() as u64;
    let ea = cx.mem_addr(&insn, 0).ok();
    if insn.mnemonic() != Mnemonic::Mov && !insn.is_invalid() {
        // Not a PTE update: the guest reuses the table's frame (zeroes it, copies into
        // it). The shadows give the table up and the instruction runs natively.
        let r = cx.with_shadow(|m, read, fx| m.unprotect(gpa, read, fx));
        return ("pt unshadow".into(), r.map(|()| Step::Retry), 0);
    }
    if insn.mnemonic() != Mnemonic::Mov
        || insn.op0_kind() != OpKind::Memory
        || !matches!(size, 1 | 2 | 4 | 8)
        || gpa % size != 0
        || ea != Some(va)
    {
        return (
            name,
            Err(Fault::Unhandled(format!(
                "`{text}` writes the guest's page table at {gpa:#x}: only a MOV of a whole, \
                 aligned part of one entry is emulated there"
            ))),
            len,
        );
    }
    let value = if insn.op1_kind() == OpKind::Register {
        cx.regs.get(insn.op1_register()).unwrap_or(0)
    } else {
        insn.immediate(1)
    };
    let slot = gpa & !7;
    let mut raw = [0u8; 8];
    if let Err(e) = cx.p.read_phys(slot, &mut raw) {
        return (name, Err(instructions::mem_fault(e, "page table")), len);
    }
    let off = (gpa - slot) as usize;
    raw[off..off + size as usize].copy_from_slice(&value.to_le_bytes()[..size as usize]);
    if let Err(e) = cx.p.write_phys(slot, &raw) {
        return (name, Err(instructions::mem_fault(e, "page table")), len);
    }
    let r = cx.with_shadow(|m, read, fx| m.pt_write(slot, read, fx));
    (name, r.map(|()| Step::Next), len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::mock::{Bench, CODE, STACK};

    fn fault_kind(h: &Handled) -> FaultKind {
        match &h.stop {
            Some(Outcome::GuestFault { kind, .. }) => *kind,
            o => panic!("expected a fault, got {o:?}"),
        }
    }

    #[test]
    fn a_guest_exception_is_reflected_through_the_virtual_idt() {
        let mut b = Bench::new(&[0xF7, 0xF1]); // div ecx
        b.guest_idt(0x4_0000, &[(0, 0x3_0000)]);
        b.emu.cpu.vif = true;
        let h = b.trap_vector(0, 0, 0);
        assert_eq!((h.name.as_str(), h.stop), ("#de", None));
        assert_eq!(b.regs.rip, 0x3_0000);
        let sp = b.regs.rsp();
        assert_eq!(sp, STACK - 40, "no error code for #DE");
        assert_eq!(
            b.mock.u64_at(sp),
            CODE,
            "a fault returns to the faulting instruction"
        );
        assert_eq!(b.mock.u64_at(sp + 8), 0x08);
        assert_eq!(
            b.mock.u64_at(sp + 16) & 0x200,
            0x200,
            "the pushed IF is the virtual one"
        );
        assert_eq!(b.mock.u64_at(sp + 24), STACK);
        assert!(!b.emu.cpu.vif);
        assert_eq!(b.emu.injections, 1);
    }

    #[test]
    fn a_guest_page_fault_sets_the_virtual_cr2_and_pushes_the_error_code() {
        let mut b = Bench::new(&[0x48, 0x8B, 0x07]);
        b.guest_idt(0x4_0000, &[(14, 0x3_0000)]);
        let h = b.trap_vector(PF, 0b100, 0xDEAD_0000);
        assert_eq!((h.name.as_str(), h.stop), ("#pf", None));
        assert_eq!(b.emu.cpu.cr2, 0xDEAD_0000);
        assert_eq!(b.regs.rsp(), STACK - 48);
        assert_eq!(b.mock.u64_at(STACK - 48), 0b100);
        assert_eq!(b.mock.u64_at(STACK - 40), CODE);
    }

    #[test]
    fn reflection_never_reaches_into_the_monitor() {
        // A gate whose handler is a monitor stub.
        let mut b = Bench::new(&[0xF7, 0xF1]);
        b.guest_idt(0x4_0000, &[(0, layout::STUBS)]);
        assert_eq!(
            fault_kind(&b.trap_vector(0, 0, 0)),
            FaultKind::MonitorViolation
        );
        // A guest stack pointing at the monitor stack.
        let mut b = Bench::new(&[0xF7, 0xF1]);
        b.guest_idt(0x4_0000, &[(0, 0x3_0000)]);
        b.regs.set_rsp(layout::MONITOR_STACK_TOP);
        assert_eq!(
            fault_kind(&b.trap_vector(0, 0, 0)),
            FaultKind::MonitorViolation
        );
    }

    #[test]
    fn unemulated_and_unhandled_are_told_apart() {
        // ud2: not privileged, so the guest's own #UD; without an IDT, an Exception.
        let mut b = Bench::new(&[0x0F, 0x0B]);
        let h = b.trap_vector(UD, 0, 0);
        assert_eq!(h.name, "#ud");
        assert_eq!(fault_kind(&h), FaultKind::Exception);
        // With an IDT it is delivered.
        let mut b = Bench::new(&[0x0F, 0x0B]);
        b.guest_idt(0x4_0000, &[(6, 0x3_0000)]);
        assert_eq!(b.trap_vector(UD, 0, 0).stop, None);
        assert_eq!(b.regs.rip, 0x3_0000);
        // clts: privileged and not emulated, named.
        let mut b = Bench::new(&[0x0F, 0x06]);
        let h = b.trap();
        assert_eq!(h.name, "clts");
        match h.stop {
            Some(Outcome::GuestFault { kind, detail, rip }) => {
                assert_eq!(kind, FaultKind::UnhandledInstruction);
                assert!(detail.starts_with("clts"), "{detail}");
                assert_eq!(rip, Some(CODE));
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn the_timer_interrupt_with_no_guest_handler_is_classified() {
        let mut b = Bench::new(&[0xFB, 0xF4]); // sti; hlt
        b.mock.timer_armed = true;
        b.trap();
        let h = b.trap();
        assert_eq!(fault_kind(&h), FaultKind::Exception);
    }
}
