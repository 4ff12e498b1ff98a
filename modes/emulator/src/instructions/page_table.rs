//! MOV to or from the guest's page table. The engine maps the scratch page table
//! supervisor-only, so a guest store to a PTE raises #PF and comes here (the first step of
//! shadow paging): the VMM checks that the new entry maps guest RAM outside the monitor
//! and not the page table itself, then writes it. Without this check a guest could point
//! its PTE at the monitor's pages and rewrite them.

use contract::abi::{layout, PAGE_SIZE};
use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Cx, Fault, InstructionHandler, Step};

const PRESENT: u64 = contract::x86::pte::P;
const ADDR: u64 = contract::x86::pte::FRAME;

/// A plain MOV whose memory operand is in the write-protected page table.
#[derive(Debug)]
pub struct PageTableAccess;

fn in_table(addr: u64, size: u64) -> bool {
    addr >= layout::SCRATCH_PT && addr.saturating_add(size) <= layout::SCRATCH_PT + PAGE_SIZE
}

impl InstructionHandler for PageTableAccess {
    fn name(&self, insn: &Instruction) -> String {
        if insn.op0_kind() == OpKind::Memory {
            "pte write".into()
        } else {
            "pte read".into()
        }
    }

    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        if insn.mnemonic() != Mnemonic::Mov {
            return Err(Fault::Unhandled(format!(
                "`{}` on the page table: only MOV is emulated there",
                monitor::text_of(insn)
            )));
        }
        let size = insn.memory_size().size() as u64;
        let write = insn.op0_kind() == OpKind::Memory;
        let addr = cx.mem_addr(insn, if write { 0 } else { 1 })?;
        if !in_table(addr, size) || !matches!(size, 1 | 2 | 4 | 8) || addr % size != 0 {
            return Err(Fault::Unhandled(format!(
                "`{}`: a {size}-byte access at {addr:#x} is not a whole, aligned part of one PTE",
                monitor::text_of(insn)
            )));
        }
        let slot = addr & !7;
        let mut raw = [0u8; 8];
        cx.p.read_phys(slot, &mut raw)
            .map_err(|e| super::mem_fault(e, "page table"))?;
        let off = (addr - slot) as usize;
        let n = size as usize;
        if !write {
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(&raw[off..off + n]);
            cx.regs.set(insn.op0_register(), u64::from_le_bytes(v));
            return Ok(Step::Next);
        }
        let value = if insn.op1_kind() == OpKind::Register {
            cx.regs.get(insn.op1_register()).unwrap_or(0)
        } else {
            insn.immediate(1)
        };
        raw[off..off + n].copy_from_slice(&value.to_le_bytes()[..n]);
        let pte = u64::from_le_bytes(raw);
        let frame = pte & ADDR;
        let ram = cx.p.ram_size();
        // Guest RAM, or the two scratch frames the ABI offers; nothing else of the
        // monitor's region, and never the page table itself.
        let scratch = [layout::SCRATCH_FRAME_A, layout::SCRATCH_FRAME_B];
        let allowed = frame.saturating_add(PAGE_SIZE) <= ram || scratch.contains(&frame);
        if pte & PRESENT != 0 && !allowed {
            return Err(Fault::Monitor(format!(
                "PTE write of {pte:#x} at {addr:#x}: it would map frame {frame:#x}, {}",
                if frame == layout::SCRATCH_PT {
                    "the page table itself"
                } else if layout::is_monitor(frame) {
                    "a page of the monitor"
                } else {
                    "outside guest RAM"
                }
            )));
        }
        cx.p.write_pte(slot, pte).map_err(Fault::Unhandled)?;
        Ok(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE};
    use contract::abi::layout;
    use contract::x86::vector::PF;
    use contract::{FaultKind, Outcome};

    const WRITE_PF: u64 = 0b111; // present, write, user

    #[test]
    fn a_validated_pte_store_is_written() {
        // mov [rdi], rax ; mov rcx, [rdi]
        let mut b = Bench::new(&[0x48, 0x89, 0x07, 0x48, 0x8B, 0x0F]);
        b.regs.gpr[7] = layout::SCRATCH_PT;
        b.regs.gpr[0] = layout::SCRATCH_FRAME_B | 7;
        let h = b.trap_vector(PF, WRITE_PF, layout::SCRATCH_PT);
        assert_eq!((h.name.as_str(), h.stop), ("pte write", None));
        assert_eq!(
            b.mock.u64_at(layout::SCRATCH_PT),
            layout::SCRATCH_FRAME_B | 7
        );
        assert_eq!(b.regs.rip, CODE + 3);
        let h = b.trap_vector(PF, 0b101, layout::SCRATCH_PT);
        assert_eq!(h.name, "pte read");
        assert_eq!(b.regs.gpr[1], layout::SCRATCH_FRAME_B | 7);
    }

    #[test]
    fn mapping_the_monitor_is_refused() {
        let mut b = Bench::new(&[0x48, 0x89, 0x07]);
        b.regs.gpr[7] = layout::SCRATCH_PT;
        for frame in [layout::IDT, layout::PML4, layout::SCRATCH_PT] {
            b.regs.rip = CODE;
            b.regs.gpr[0] = frame | 7;
            match b.trap_vector(PF, WRITE_PF, layout::SCRATCH_PT).stop {
                Some(Outcome::GuestFault { kind, .. }) => {
                    assert_eq!(kind, FaultKind::MonitorViolation)
                }
                o => panic!("{o:?}"),
            }
        }
        assert_eq!(b.mock.u64_at(layout::SCRATCH_PT), 0);
    }

    #[test]
    fn touching_other_monitor_pages_is_a_violation() {
        let mut b = Bench::new(&[0x48, 0x8B, 0x07]);
        let h = b.trap_vector(PF, 0b101, layout::IDT + 8);
        match h.stop {
            Some(Outcome::GuestFault { kind, detail, .. }) => {
                assert_eq!(kind, FaultKind::MonitorViolation);
                assert!(detail.contains("IDT"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
    }
}
