//! INVLPG and WBINVD/INVD. INVLPG must make the guest's page-table change visible, so the
//! VMM invalidates the address on the real vCPU (see `Platform::invlpg`); the cache instructions
//! have no architectural effect to reproduce on coherent guest RAM.

use iced_x86::Instruction;

use super::{Cx, Fault, InstructionHandler, Step};

/// INVLPG.
#[derive(Debug)]
pub struct Invlpg;

impl InstructionHandler for Invlpg {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        // The operand is an address, not a memory access.
        let gva = cx.mem_addr(insn, 0)?;
        cx.p.invlpg(gva).map_err(Fault::Unhandled)?;
        Ok(Step::Next)
    }
}

/// WBINVD and INVD.
#[derive(Debug)]
pub struct Wbinvd;

impl InstructionHandler for Wbinvd {
    fn emulate(&self, _insn: &Instruction, _cx: &mut Cx<'_>) -> Result<Step, Fault> {
        Ok(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE};

    #[test]
    fn invlpg_flushes_and_wbinvd_is_a_no_op() {
        let mut b = Bench::new(&[0x0F, 0x01, 0x3E, 0x0F, 0x09]);
        b.regs.gpr[6] = 0x3FC0_0000;
        assert_eq!(b.trap().name, "invlpg");
        assert_eq!(b.mock.invlpgs, vec![0x3FC0_0000]);
        assert_eq!(b.trap().name, "wbinvd");
        assert_eq!(b.regs.rip, CODE + 5);
        assert_eq!(b.mock.invlpgs.len(), 1);
    }
}
