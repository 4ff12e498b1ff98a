//! CPUID, trapped through CPUID faulting (MSR 0x140 bit 0 on the real vCPU): the guest
//! sees the virtual CPU's table (the one KVM was given), not the host's.

use iced_x86::{Instruction, Register};

use super::{Cx, Fault, InstructionHandler, Step};

/// CPUID.
#[derive(Debug)]
pub struct Cpuid;

impl InstructionHandler for Cpuid {
    fn emulate(&self, _insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let leaf = cx.regs.get(Register::EAX).unwrap_or(0) as u32;
        let sub = cx.regs.get(Register::ECX).unwrap_or(0) as u32;
        let [a, b, c, d] = cx.p.cpuid(leaf, sub);
        for (r, v) in [
            (Register::EAX, a),
            (Register::EBX, b),
            (Register::ECX, c),
            (Register::EDX, d),
        ] {
            cx.regs.set(r, u64::from(v));
        }
        Ok(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::Bench;

    #[test]
    fn cpuid_returns_the_virtual_table_zero_extended() {
        let mut b = Bench::new(&[0x0F, 0xA2]);
        b.regs.gpr = [u64::MAX; 16];
        b.regs.gpr[0] = 7;
        b.regs.gpr[1] = 1;
        assert_eq!(b.trap().name, "cpuid");
        // RAX, RCX, RDX, RBX = EAX, ECX, EDX, EBX of the mock (leaf, 0x1234, 0x5678, subleaf).
        assert_eq!(&b.regs.gpr[..4], &[7, 0x1234, 0x5678, 1]);
    }
}
