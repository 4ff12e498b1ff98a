//! HLT: waits for the timer like the hardware-assisted engine does. With nothing armed, or
//! with the virtual IF clear (`cli; hlt`: a maskable interrupt cannot wake the CPU),
//! nothing can ever wake the guest, so the run ends (as `Halted`).

use iced_x86::Instruction;

use super::{Cx, Fault, InstructionHandler, Step};
use crate::platform::Wake;

/// HLT.
#[derive(Debug)]
pub struct Hlt;

impl InstructionHandler for Hlt {
    fn emulate(&self, _insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        if !cx.cpu.vif {
            let rbx = cx.regs.gpr[3];
            return Ok(Step::Stop(cx.p.halted(rbx)));
        }
        Ok(match cx.p.wait_for_timer() {
            // The interrupt itself is delivered by the dispatcher after this step, if the
            // virtual IF allows it; the frame then returns after the HLT.
            Wake::TimerDue => Step::Next,
            Wake::NothingArmed => {
                let rbx = cx.regs.gpr[3];
                Step::Stop(cx.p.halted(rbx))
            }
            Wake::Deadline => Step::Retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE};
    use contract::{Ending, Outcome};

    #[test]
    fn sti_hlt_wakes_on_the_timer_and_returns_after_the_hlt() {
        let mut b = Bench::new(&[0xFB, 0xF4]);
        b.guest_idt(0x4_0000, &[(0x20, 0x3_0000)]);
        b.mock.timer_armed = true;
        b.trap(); // sti
        let h = b.trap(); // hlt
        assert_eq!((h.name.as_str(), h.stop), ("hlt", None));
        assert_eq!(b.regs.rip, 0x3_0000);
        assert_eq!(b.mock.u64_at(b.regs.rsp()), CODE + 2);
        assert_eq!(b.mock.timer_fired, 1);
        assert_eq!(b.emu.injections, 1);
    }

    #[test]
    fn cli_hlt_ends_the_run_even_with_the_timer_armed() {
        let mut b = Bench::new(&[0xFA, 0xF4]);
        b.mock.timer_armed = true;
        b.regs.gpr[3] = 7;
        b.trap(); // cli
        let h = b.trap(); // hlt
        assert_eq!(
            h.stop,
            Some(Outcome::Completed {
                exit_code: 0,
                result: 7,
                ending: Ending::Halted
            })
        );
        assert_eq!(b.mock.timer_fired, 0);
    }

    #[test]
    fn hlt_with_nothing_armed_ends_the_run() {
        let mut b = Bench::new(&[0xFB, 0xF4]);
        b.trap(); // sti
        b.regs.gpr[3] = 99;
        let h = b.trap();
        assert_eq!(
            h.stop,
            Some(Outcome::Completed {
                exit_code: 0,
                result: 99,
                ending: Ending::Halted
            })
        );
    }
}
