//! MOV to and from control registers, against the virtual CPU: CR8 and CR2 freely, CR0/CR4
//! bits that do not change paging, and CR3 — with a shadow MMU ([`crate::shadow`]) any root
//! in guest RAM (a shadow of it becomes the real CR3) or the boot tables again; without
//! one only a reload of the current tables (a TLB flush). Anything else ends the run as
//! not emulated, naming the change.

use contract::abi::layout;
use iced_x86::{Instruction, Register};

use crate::shadow::Privilege;

use super::{Cx, Fault, InstructionHandler, Step};

/// CR0 bits the guest may change: MP, EM, TS, ET, NE, AM.
const CR0_MUTABLE: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 18);
/// CR4 bits the guest may change: TSD is not (it would need RDTSC to trap), OSFXSR and
/// OSXMMEXCPT are.
const CR4_MUTABLE: u64 = (1 << 9) | (1 << 10);
const CR3_ADDR: u64 = contract::x86::pte::FRAME;

fn cr_number(r: Register) -> Option<u8> {
    let n = (r as u32).checked_sub(Register::CR0 as u32)?;
    (n < 16).then_some(n as u8)
}

fn ud(insn: &Instruction) -> Fault {
    Fault::Exception {
        vector: contract::x86::vector::UD,
        error_code: None,
        context: format!("`{}`: no such control register", monitor::text_of(insn)),
    }
}

/// MOV CRn, r64.
#[derive(Debug)]
pub struct MovToCr;

impl InstructionHandler for MovToCr {
    fn name(&self, insn: &Instruction) -> String {
        format!("mov to cr{}", cr_number(insn.op0_register()).unwrap_or(0))
    }
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let n = cr_number(insn.op0_register()).ok_or_else(|| ud(insn))?;
        let v = cx.regs.get(insn.op1_register()).unwrap_or(0);
        let refuse = |what: String| Err(Fault::Unhandled(format!("mov to cr{n}: {what}")));
        match n {
            8 => {
                if v > 15 {
                    return Err(Fault::Exception {
                        vector: contract::x86::vector::GP,
                        error_code: Some(0),
                        context: format!("mov to cr8 of {v:#x}: reserved bits"),
                    });
                }
                cx.cpu.cr8 = v;
            }
            2 => cx.cpu.cr2 = v,
            0 => {
                let changed = (v ^ cx.cpu.cr0) & !CR0_MUTABLE;
                if changed != 0 {
                    return refuse(format!(
                        "changing bits {changed:#x} (paging and protection are not virtualised)"
                    ));
                }
                cx.cpu.cr0 = v;
            }
            3 if v & !(CR3_ADDR | 0xFFF) != 0 => {
                // Bits 52–63 are reserved without PCIDE (the CPU raises #GP). Masked off
                // instead, a root far beyond RAM would silently become frame 0 of guest
                // memory.
                return refuse(format!("{v:#x} sets reserved bits"));
            }
            3 if cx.shadow.is_some() => {
                // Shadow paging: the boot tables, or a shadow of the guest's own.
                let root = v & CR3_ADDR;
                let prv = if cx.cpu.cpl == 3 {
                    Privilege::User
                } else {
                    Privilege::Kernel
                };
                cx.cpu.cr3 = v;
                if root == layout::PML4 {
                    cx.with_shadow(|m, _, fx| {
                        m.deactivate(fx);
                        Ok(())
                    })?;
                } else {
                    cx.with_shadow(|m, read, fx| m.activate(root, prv, read, fx).map(|_| ()))?;
                }
            }
            3 => {
                if v & CR3_ADDR != cx.cpu.cr3 & CR3_ADDR {
                    return refuse(format!(
                        "switching page tables to {v:#x} needs shadow paging, which this engine \
                         does not implement"
                    ));
                }
                cx.p.flush_tlb().map_err(Fault::Unhandled)?;
                cx.cpu.cr3 = v;
            }
            4 => {
                let changed = (v ^ cx.cpu.cr4) & !CR4_MUTABLE;
                if changed != 0 {
                    return refuse(format!("changing bits {changed:#x} is not virtualised"));
                }
                cx.cpu.cr4 = v;
            }
            _ => return Err(ud(insn)),
        }
        Ok(Step::Next)
    }
}

/// MOV r64, CRn.
#[derive(Debug)]
pub struct MovFromCr;

impl InstructionHandler for MovFromCr {
    fn name(&self, insn: &Instruction) -> String {
        format!("mov from cr{}", cr_number(insn.op1_register()).unwrap_or(0))
    }
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let v = match cr_number(insn.op1_register()).ok_or_else(|| ud(insn))? {
            0 => cx.cpu.cr0,
            2 => cx.cpu.cr2,
            3 => cx.cpu.cr3,
            4 => cx.cpu.cr4,
            8 => cx.cpu.cr8,
            _ => return Err(ud(insn)),
        };
        cx.regs.set(insn.op0_register(), v);
        Ok(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::Bench;
    use contract::{FaultKind, Outcome};

    #[test]
    fn cr8_round_trip_through_the_virtual_cpu() {
        // mov cr8, rax ; mov rbx, cr8
        let mut b = Bench::new(&[0x44, 0x0F, 0x22, 0xC0, 0x44, 0x0F, 0x20, 0xC3]);
        b.regs.gpr[0] = 9;
        assert_eq!(b.trap().name, "mov to cr8");
        assert_eq!(b.emu.cpu.cr8, 9);
        assert_eq!(b.trap().name, "mov from cr8");
        assert_eq!(b.regs.gpr[3], 9);
    }

    #[test]
    fn cr0_read_and_a_cr3_reload_flushes() {
        // mov rax, cr0 ; mov cr3, rax (after setting rax to the current cr3)
        let mut b = Bench::new(&[0x0F, 0x20, 0xC0, 0x0F, 0x22, 0xD8]);
        b.trap();
        assert_eq!(b.regs.gpr[0], b.emu.cpu.cr0);
        b.regs.gpr[0] = b.emu.cpu.cr3;
        assert_eq!(b.trap().name, "mov to cr3");
        assert_eq!(b.mock.flushes, 1);
    }

    #[test]
    fn switching_page_tables_is_refused_by_name() {
        let mut b = Bench::new(&[0x0F, 0x22, 0xD8]);
        b.regs.gpr[0] = 0x50_0000;
        match b.trap().stop {
            Some(Outcome::GuestFault { kind, detail, .. }) => {
                assert_eq!(kind, FaultKind::UnhandledInstruction);
                assert!(detail.starts_with("mov to cr3"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_cr3_with_reserved_bits_is_refused_not_masked() {
        for v in [1u64 << 52, 1 << 63, (1 << 62) | contract::abi::layout::PML4] {
            let mut b = Bench::new(&[0x0F, 0x22, 0xD8]);
            b.regs.gpr[0] = v;
            match b.trap().stop {
                Some(Outcome::GuestFault { kind, detail, .. }) => {
                    assert_eq!(kind, FaultKind::UnhandledInstruction);
                    assert!(detail.contains("reserved bits"), "{detail}");
                }
                o => panic!("{v:#x}: {o:?}"),
            }
        }
    }
}
