//! IRETQ from a reflected handler. It always traps: the frames the VMM builds carry the
//! virtual kernel CS (RPL 0), and an IRETQ at CPL 3 to RPL 0 raises #GP. The VMM pops the
//! frame, restores the virtual IF from the popped RFLAGS, and resumes at CPL 3 with the
//! monitor's IF = 1 and IOPL = 0.

use contract::abi::{layout, selector};
use contract::x86::rflags;
use iced_x86::{Code, Instruction};
use monitor::frame::Frame;

use super::{mem_fault, Cx, Fault, InstructionHandler, Step};
use crate::paging::canonical;
use crate::vcpu::RFLAGS_RESTORABLE;

/// IRETQ.
#[derive(Debug)]
pub struct Iretq;

impl InstructionHandler for Iretq {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        if insn.code() != Code::Iretq {
            return Err(Fault::Unhandled(format!(
                "`{}`: only the 64-bit IRETQ is emulated",
                monitor::text_of(insn)
            )));
        }
        let Frame {
            rip,
            cs,
            rflags: popped,
            rsp,
            ..
        } = Frame::pop(cx.regs.rsp(), |at, buf| cx.p.read(at, buf))
            .map_err(|e| mem_fault(e, "iretq frame"))?;
        let to_user = cs as u16 == selector::USER_FRAME_CS || cs as u16 == selector::USER_CODE;
        if !to_user && cs as u16 != selector::KERNEL_CODE {
            return Err(Fault::Unhandled(format!(
                "iretq to cs {cs:#x}: only the kernel's and the user's code segments are emulated"
            )));
        }
        if cx.cpu.cpl == 3 && !to_user {
            // User mode cannot return to the kernel.
            return Err(Fault::Exception {
                vector: contract::x86::vector::GP,
                error_code: Some(cs & 0xFFFC),
                context: format!("iretq to cs {cs:#x} from user mode"),
            });
        }
        if !canonical(rip) || layout::is_monitor(rip) {
            return Err(Fault::Monitor(format!(
                "iretq to rip {rip:#x}: inside the monitor or non-canonical"
            )));
        }
        cx.cpu.vif = popped & rflags::IF != 0;
        cx.regs.rflags = (popped & RFLAGS_RESTORABLE) | rflags::IF | rflags::FIXED;
        cx.regs.rip = rip;
        cx.regs.set_rsp(rsp);
        if to_user {
            super::syscall::set_cpl(cx, 3)?;
        }
        Ok(Step::Jump)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE, STACK};
    use contract::abi::selector;
    use contract::{FaultKind, Outcome};

    fn frame(b: &mut Bench, rip: u64, cs: u64, rflags: u64) {
        let at = STACK - 40;
        for (i, v) in [rip, cs, rflags, STACK, 0x10].into_iter().enumerate() {
            b.mock.put(at + 8 * i as u64, &v.to_le_bytes());
        }
        b.regs.set_rsp(at);
    }

    #[test]
    fn iretq_restores_rip_rsp_flags_and_the_virtual_if() {
        let mut b = Bench::new(&[0x48, 0xCF]);
        frame(&mut b, CODE + 0x100, 0x08, 0x202 | 0x1);
        assert_eq!(b.trap().name, "iretq");
        assert_eq!(b.regs.rip, CODE + 0x100);
        assert_eq!(b.regs.rsp(), STACK);
        assert!(b.emu.cpu.vif);
        assert_eq!(b.regs.rflags, 0x203);
        // IF = 0 in the popped flags: virtual IF off, real IF still on.
        b.regs.rip = CODE;
        frame(&mut b, CODE + 0x100, 0x08, 0x2);
        b.trap();
        assert!(!b.emu.cpu.vif);
        assert_eq!(b.regs.rflags & 0x200, 0x200);
    }

    #[test]
    fn iretq_into_the_monitor_or_to_user_mode_ends_classified() {
        let mut b = Bench::new(&[0x48, 0xCF]);
        frame(&mut b, contract::abi::layout::STUBS, 0x08, 0x202);
        assert!(matches!(
            b.trap().stop,
            Some(Outcome::GuestFault {
                kind: FaultKind::MonitorViolation,
                ..
            })
        ));
        b.regs.rip = CODE;
        frame(&mut b, CODE, 0x33, 0x202);
        assert!(matches!(
            b.trap().stop,
            Some(Outcome::GuestFault {
                kind: FaultKind::UnhandledInstruction,
                ..
            })
        ));
    }

    #[test]
    fn iretq_to_user_mode_lowers_the_virtual_cpl_and_user_mode_cannot_climb_back() {
        let mut b = Bench::new(&[0x48, 0xCF]);
        frame(&mut b, CODE, u64::from(selector::USER_FRAME_CS), 0x202);
        assert_eq!(b.trap().stop, None);
        assert_eq!((b.emu.cpu.cpl, b.regs.rip), (3, CODE));
        // From user mode, an IRETQ to the kernel's CS is the guest's own #GP.
        frame(&mut b, CODE + 0x10, 0x08, 0x202);
        assert!(matches!(
            b.trap().stop,
            Some(Outcome::GuestFault {
                kind: FaultKind::Exception,
                ..
            })
        ));
        assert_eq!(b.emu.cpu.cpl, 0, "the #GP was delivered to the kernel");
    }
}
