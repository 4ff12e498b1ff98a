//! RDMSR and WRMSR against the virtual CPU's MSRs. The known ones are kept virtually (none
//! reaches the real vCPU); EFER may change only SCE and NXE; an MSR the virtual CPU does
//! not know ends the run as not emulated, naming it.

use iced_x86::{Instruction, Register};

use super::{Cx, Fault, InstructionHandler, Step};
use crate::vcpu::msr;

/// EFER bits the guest may change: SCE and NXE.
const EFER_MUTABLE: u64 = 1 | (1 << 11);

fn index(cx: &Cx<'_>) -> u32 {
    cx.regs.get(Register::ECX).unwrap_or(0) as u32
}

/// RDMSR.
#[derive(Debug)]
pub struct Rdmsr;

impl InstructionHandler for Rdmsr {
    fn emulate(&self, _insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let i = index(cx);
        let v = if i == msr::EFER {
            cx.cpu.efer
        } else {
            *cx.cpu.msrs.get(&i).ok_or_else(|| {
                Fault::Unhandled(format!(
                    "rdmsr of MSR {i:#x}, which the virtual CPU does not have"
                ))
            })?
        };
        cx.regs.set(Register::EAX, v & 0xFFFF_FFFF);
        cx.regs.set(Register::EDX, v >> 32);
        Ok(Step::Next)
    }
}

/// WRMSR.
#[derive(Debug)]
pub struct Wrmsr;

impl InstructionHandler for Wrmsr {
    fn emulate(&self, _insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let i = index(cx);
        let v = (cx.regs.get(Register::EDX).unwrap_or(0) << 32)
            | cx.regs.get(Register::EAX).unwrap_or(0);
        match i {
            msr::EFER => {
                let changed = (v ^ cx.cpu.efer) & !EFER_MUTABLE;
                if changed != 0 {
                    return Err(Fault::Unhandled(format!(
                        "wrmsr to EFER changing bits {changed:#x} (long mode is not virtualised)"
                    )));
                }
                cx.cpu.efer = v;
            }
            msr::APIC_BASE | msr::FS_BASE | msr::GS_BASE => {
                return Err(Fault::Unhandled(format!(
                    "wrmsr to MSR {i:#x}: its effect on the real CPU is not emulated"
                )))
            }
            _ => match cx.cpu.msrs.get_mut(&i) {
                Some(slot) => *slot = v,
                None => {
                    return Err(Fault::Unhandled(format!(
                        "wrmsr to MSR {i:#x}, which the virtual CPU does not have"
                    )))
                }
            },
        }
        Ok(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::Bench;
    use crate::vcpu::msr;
    use contract::{FaultKind, Outcome};

    #[test]
    fn wrmsr_then_rdmsr_round_trips_virtually() {
        let mut b = Bench::new(&[0x0F, 0x30, 0x0F, 0x32]);
        b.regs.gpr[1] = u64::from(msr::LSTAR);
        b.regs.gpr[0] = 0x89AB_CDEF;
        b.regs.gpr[2] = 0x1234_5678;
        assert_eq!(b.trap().name, "wrmsr");
        assert_eq!(b.emu.cpu.msrs[&msr::LSTAR], 0x1234_5678_89AB_CDEF);
        b.regs.gpr[0] = 0;
        b.regs.gpr[2] = 0;
        assert_eq!(b.trap().name, "rdmsr");
        assert_eq!((b.regs.gpr[0], b.regs.gpr[2]), (0x89AB_CDEF, 0x1234_5678));
    }

    #[test]
    fn efer_reads_and_unknown_msrs_are_named() {
        let mut b = Bench::new(&[0x0F, 0x32, 0x0F, 0x32]);
        b.regs.gpr[1] = u64::from(msr::EFER);
        b.trap();
        assert_eq!(b.regs.gpr[0], 0x500);
        b.regs.gpr[1] = 0x1234;
        match b.trap().stop {
            Some(Outcome::GuestFault { kind, detail, .. }) => {
                assert_eq!(kind, FaultKind::UnhandledInstruction);
                assert!(detail.contains("0x1234"), "{detail}");
            }
            o => panic!("{o:?}"),
        }
    }
}
