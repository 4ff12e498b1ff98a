//! CLI and STI: the virtual interrupt flag. At CPL 3 with IOPL 0 both raise #GP; the real
//! IF stays 1 so that the monitor can always take interrupts.

use iced_x86::Instruction;

use super::{Cx, Fault, InstructionHandler, Step};

/// CLI: clears the virtual IF.
#[derive(Debug)]
pub struct Cli;

impl InstructionHandler for Cli {
    fn emulate(&self, _insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        cx.cpu.vif = false;
        Ok(Step::Next)
    }
}

/// STI: sets the virtual IF; the next instruction runs in the interrupt shadow, so a
/// pending interrupt is delivered after it (this is what makes `sti; hlt` atomic).
#[derive(Debug)]
pub struct Sti;

impl InstructionHandler for Sti {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        if !cx.cpu.vif {
            cx.cpu.sti_shadow = Some(insn.next_ip());
        }
        cx.cpu.vif = true;
        Ok(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE};

    #[test]
    fn cli_and_sti_flip_only_the_virtual_if() {
        let mut b = Bench::new(&[0xFB, 0xFA]);
        let h = b.trap();
        assert_eq!((h.name.as_str(), h.stop), ("sti", None));
        assert!(b.emu.cpu.vif);
        assert_eq!(b.regs.rip, CODE + 1);
        assert_eq!(b.emu.cpu.sti_shadow, Some(CODE + 1));
        let h = b.trap();
        assert_eq!(h.name, "cli");
        assert!(!b.emu.cpu.vif);
        assert_eq!(b.regs.rip, CODE + 2);
        assert_eq!(b.regs.rflags & 0x200, 0x200, "the real IF stays set");
    }

    #[test]
    fn a_pending_interrupt_waits_for_the_sti_window() {
        // cli; sti; nop; cli — timer due all along, handler at 0x30000.
        let mut b = Bench::new(&[0xFA, 0xFB, 0x90, 0xFA]);
        b.guest_idt(0x4_0000, &[(0x20, 0x3_0000)]);
        b.mock.timer_due = true;
        b.emu.cpu.vif = true;
        // A trap while vIF = 1 and the timer due delivers first (the CLI re-executes later).
        let h = b.trap();
        assert_eq!(h.name, "irq");
        assert_eq!(b.regs.rip, 0x3_0000);
        assert_eq!(b.emu.injections, 1);
        // Now with vIF = 0: CLI, then STI keeps it pending across its shadow.
        b.regs.rip = CODE;
        b.mock.timer_due = true;
        b.trap(); // cli
        assert_eq!(b.emu.injections, 1);
        b.trap(); // sti
        assert_eq!(b.regs.rip, CODE + 2, "not delivered inside the STI shadow");
        assert_eq!(b.emu.injections, 1);
        // The NOP runs natively; the next trap (the CLI) takes the interrupt first.
        b.regs.rip = CODE + 3;
        let h = b.trap();
        assert_eq!(h.name, "irq");
        assert_eq!(b.emu.injections, 2);
        assert_eq!(b.regs.rip, 0x3_0000);
        // The frame's return address is the CLI, which has not run yet.
        assert_eq!(b.mock.u64_at(b.regs.rsp()), CODE + 3);
        assert!(!b.emu.cpu.vif, "interrupt gate clears the virtual IF");
    }
}
