//! INT n and INT3. The monitor's gates are DPL 0, so a software interrupt at CPL 3 raises
//! #GP; the VMM delivers the vector through the guest's virtual IDT with the return
//! address after the instruction, as the CPU would for the guest's CPL 0.

use iced_x86::{Instruction, Mnemonic};

use super::{Cx, Fault, InstructionHandler, Step};
use crate::interrupts;

/// INT n / INT3.
#[derive(Debug)]
pub struct SoftInt;

impl InstructionHandler for SoftInt {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let vector = if insn.mnemonic() == Mnemonic::Int3 {
            3
        } else {
            insn.immediate8()
        };
        if cx.cpu.cpl == 3 {
            // From user mode only through a gate of DPL 3.
            let at = cx.cpu.idtr.base.wrapping_add(u64::from(vector) * 16);
            let raw: [u8; 16] = cx.read_bytes(at, "reading the guest's IDT gate")?;
            if (raw[5] >> 5) & 3 != 3 {
                return Err(Fault::Exception {
                    vector: contract::x86::vector::GP,
                    error_code: Some(u64::from(vector) * 8 + 2),
                    context: format!("int {vector:#x} from user mode through a DPL 0 gate"),
                });
            }
        }
        cx.regs.rip = insn.next_ip();
        interrupts::reflect(cx, vector, None, "software interrupt")?;
        Ok(Step::Jump)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE, STACK};

    #[test]
    fn int_n_goes_through_the_virtual_idt() {
        let mut b = Bench::new(&[0xCD, 0x03]);
        b.guest_idt(0x4_0000, &[(3, 0x3_0000)]);
        assert_eq!(b.trap().name, "int");
        assert_eq!(b.regs.rip, 0x3_0000);
        assert_eq!(b.regs.rsp(), STACK - 40);
        assert_eq!(b.mock.u64_at(STACK - 40), CODE + 2);
        assert_eq!(b.mock.u64_at(STACK - 32), 0x08);
        assert_eq!(b.mock.u64_at(STACK - 8), 0x10);
        assert_eq!(b.emu.injections, 1);
    }
}
