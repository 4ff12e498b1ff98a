//! SYSCALL and SYSRETQ, with a virtual CPL. The real EFER.SCE is 0, so SYSCALL raises #UD
//! at the real CPL 3 and SYSRETQ raises #GP (it needs CPL 0): both trap. The VMM does what
//! the CPU would with the *virtual* EFER, STAR, LSTAR and SFMASK, and moves the real CPU
//! between the two shadows of the current root ([`crate::shadow::Privilege`]): the guest
//! kernel's, which maps its supervisor pages, and the user's, which does not.

use contract::x86::{rflags, vector};
use iced_x86::{Code, Instruction, Register};

use super::{Cx, Fault, InstructionHandler, Step};
use crate::paging::canonical;
use crate::shadow::Privilege;
use crate::vcpu::{msr, RFLAGS_RESTORABLE};

/// EFER.SCE: SYSCALL/SYSRET enabled.
const EFER_SCE: u64 = 1;

/// Moves the guest to virtual CPL `cpl` and the real CPU to the matching shadow.
pub fn set_cpl(cx: &mut Cx<'_>, cpl: u8) -> Result<(), Fault> {
    cx.cpu.cpl = cpl;
    if cx.shadowing() {
        let prv = if cpl == 3 {
            Privilege::User
        } else {
            Privilege::Kernel
        };
        cx.with_shadow(|m, read, fx| m.set_privilege(prv, read, fx).map(|_| ()))?;
    }
    Ok(())
}

fn gp0(context: String) -> Fault {
    Fault::Exception {
        vector: vector::GP,
        error_code: Some(0),
        context,
    }
}

/// SYSCALL.
#[derive(Debug)]
pub struct Syscall;

impl InstructionHandler for Syscall {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        landed(cx, insn.next_ip())?;
        Ok(Step::Jump)
    }
}

/// SYSCALL's effect, with `next` the address after the instruction (RIP at the SYSCALL,
/// the real RFLAGS the guest's).
pub fn landed(cx: &mut Cx<'_>, next: u64) -> Result<(), Fault> {
    {
        if cx.cpu.efer & EFER_SCE == 0 {
            return Err(Fault::Exception {
                vector: vector::UD,
                error_code: None,
                context: "syscall with EFER.SCE clear".into(),
            });
        }
        let lstar = cx.cpu.msrs.get(&msr::LSTAR).copied().unwrap_or(0);
        let fmask = cx.cpu.msrs.get(&msr::FMASK).copied().unwrap_or(0);
        if !canonical(lstar) || contract::abi::layout::is_monitor(lstar) {
            return Err(Fault::Monitor(format!(
                "syscall to LSTAR {lstar:#x}: inside the monitor or non-canonical"
            )));
        }
        let guest_rflags = cx.cpu.guest_rflags(cx.regs.rflags);
        cx.regs.set(Register::RCX, next);
        cx.regs.set(Register::R11, guest_rflags & !rflags::RF);
        if fmask & rflags::IF != 0 {
            cx.cpu.vif = false;
        }
        cx.regs.rflags = (cx.regs.rflags & !(fmask & RFLAGS_RESTORABLE)) | rflags::IF;
        cx.regs.rip = lstar;
        set_cpl(cx, 0)?;
        Ok(())
    }
}

/// SYSRETQ (the 64-bit form; the 32-bit one is not emulated).
#[derive(Debug)]
pub struct Sysretq;

impl InstructionHandler for Sysretq {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        if insn.code() != Code::Sysretq {
            return Err(Fault::Unhandled(format!(
                "`{}`: only the 64-bit SYSRETQ is emulated",
                monitor::text_of(insn)
            )));
        }
        if cx.cpu.efer & EFER_SCE == 0 {
            return Err(Fault::Exception {
                vector: vector::UD,
                error_code: None,
                context: "sysretq with EFER.SCE clear".into(),
            });
        }
        if cx.cpu.cpl != 0 {
            return Err(gp0("sysretq from user mode".into()));
        }
        let rip = cx.regs.get(Register::RCX).unwrap_or(0);
        if !canonical(rip) {
            return Err(gp0(format!("sysretq to non-canonical {rip:#x}")));
        }
        let r11 = cx.regs.get(Register::R11).unwrap_or(0);
        cx.cpu.vif = r11 & rflags::IF != 0;
        cx.regs.rflags = (r11 & RFLAGS_RESTORABLE) | rflags::IF | rflags::FIXED;
        cx.regs.rip = rip;
        set_cpl(cx, 3)?;
        Ok(Step::Jump)
    }
}
