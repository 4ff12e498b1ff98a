//! INS and OUTS (bytes, words, dwords), with or without REP. A repeated instruction is
//! emulated in one trap, up to [`MAX_REPEATS`] elements; a longer one resumes at the same
//! instruction (string instructions are interruptible on real CPUs too), so a guest cannot
//! keep the VMM busy forever inside one trap.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::port_io::port_step;
use super::{Cx, Fault, InstructionHandler, Step};

/// Elements handled per trap before the instruction is resumed.
pub const MAX_REPEATS: u64 = 65_536;

fn element_size(insn: &Instruction) -> u64 {
    match insn.mnemonic() {
        Mnemonic::Insb | Mnemonic::Outsb => 1,
        Mnemonic::Insw | Mnemonic::Outsw => 2,
        _ => 4,
    }
}

fn name(insn: &Instruction) -> String {
    let m = crate::dispatch::mnemonic_name(insn);
    if insn.has_rep_prefix() {
        format!("rep {m}")
    } else {
        m
    }
}

/// The index and count registers of the instruction's address size.
fn regs_for(insn: &Instruction, index64: Register) -> (Register, Register) {
    let addr32 = matches!(insn.op0_kind(), OpKind::MemorySegESI | OpKind::MemoryESDI)
        || matches!(insn.op1_kind(), OpKind::MemorySegESI | OpKind::MemoryESDI);
    match (addr32, index64) {
        (true, Register::RSI) => (Register::ESI, Register::ECX),
        (true, _) => (Register::EDI, Register::ECX),
        (false, r) => (r, Register::RCX),
    }
}

/// Runs the string loop; `one` moves one element at the given address.
fn run(
    insn: &Instruction,
    cx: &mut Cx<'_>,
    index: Register,
    mut one: impl FnMut(&mut Cx<'_>, u64, u64) -> Result<Option<contract::Outcome>, Fault>,
) -> Result<Step, Fault> {
    let size = element_size(insn);
    let (index, count) = regs_for(insn, index);
    let rep = insn.has_rep_prefix();
    let mut left = if rep {
        cx.regs.get(count).unwrap_or(0)
    } else {
        1
    };
    let mut done = 0;
    while left > 0 {
        if done == MAX_REPEATS {
            return Ok(Step::Retry);
        }
        let addr = cx.regs.get(index).unwrap_or(0);
        let stop = one(cx, addr, size)?;
        let next = if cx.regs.df() {
            addr.wrapping_sub(size)
        } else {
            addr.wrapping_add(size)
        };
        cx.regs.set(index, next);
        left -= 1;
        done += 1;
        if rep {
            cx.regs.set(count, left);
        }
        if let Some(o) = stop {
            return Ok(Step::Stop(o));
        }
    }
    Ok(Step::Next)
}

/// OUTSB/OUTSW/OUTSD: from `[RSI]` to port DX.
#[derive(Debug)]
pub struct Outs;

impl InstructionHandler for Outs {
    fn name(&self, insn: &Instruction) -> String {
        name(insn)
    }
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let port = cx.regs.get(Register::DX).unwrap_or(0) as u16;
        run(insn, cx, Register::RSI, |cx, addr, size| {
            let mut b = [0u8; 4];
            cx.p.read(addr, &mut b[..size as usize])
                .map_err(|e| super::mem_fault(e, "outs source"))?;
            port_step(cx.p.port_out(port, &b[..size as usize]), port, true)
        })
    }
}

/// INSB/INSW/INSD: from port DX to `[RDI]`.
#[derive(Debug)]
pub struct Ins;

impl InstructionHandler for Ins {
    fn name(&self, insn: &Instruction) -> String {
        name(insn)
    }
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let port = cx.regs.get(Register::DX).unwrap_or(0) as u16;
        run(insn, cx, Register::RDI, |cx, addr, size| {
            let mut b = [0u8; 4];
            let r = port_step(cx.p.port_in(port, &mut b[..size as usize]), port, false)?;
            cx.write_bytes(addr, &b[..size as usize], "ins destination")?;
            Ok(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE};
    use contract::{FaultKind, Outcome};

    #[test]
    fn rep_outsb_writes_the_whole_string_in_one_trap() {
        let mut b = Bench::new(&[0xF3, 0x6E, 0x6E]);
        b.mock.put(0x5_0000, b"hello");
        b.regs.gpr[6] = 0x5_0000; // rsi
        b.regs.gpr[1] = 4; // rcx
        b.regs.gpr[2] = 0xE9;
        assert_eq!(b.trap().name, "rep outsb");
        assert_eq!(b.regs.gpr[1], 0);
        assert_eq!(b.regs.gpr[6], 0x5_0004);
        assert_eq!(b.regs.rip, CODE + 2);
        assert_eq!(b.trap().name, "outsb");
        let text: Vec<u8> = b.mock.outs.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(text, b"hello");
    }

    #[test]
    fn outsd_backwards_with_df() {
        let mut b = Bench::new(&[0xF3, 0x6F]);
        b.mock.put(0x5_0000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        b.regs.gpr[6] = 0x5_0004;
        b.regs.gpr[1] = 2;
        b.regs.gpr[2] = 0xE9;
        b.regs.rflags |= 1 << 10;
        b.trap();
        assert_eq!(b.mock.outs[0].1, vec![5, 6, 7, 8]);
        assert_eq!(b.mock.outs[1].1, vec![1, 2, 3, 4]);
        assert_eq!(b.regs.gpr[6], 0x4_FFFC);
    }

    #[test]
    fn rep_insd_fills_memory_and_long_repeats_resume() {
        let mut b = Bench::new(&[0xF3, 0x6D]);
        b.regs.gpr[7] = 0x5_0000;
        b.regs.gpr[1] = 2;
        b.regs.gpr[2] = 0xF0;
        assert_eq!(b.trap().name, "rep insd");
        assert_eq!(b.mock.u64_at(0x5_0000), 0x1122_3344_1122_3344);
        assert_eq!(b.regs.gpr[7], 0x5_0008);
        // A huge count is cut into resumable slices.
        b.regs.rip = CODE;
        b.regs.gpr[7] = 0x6_0000;
        b.regs.gpr[1] = u64::MAX;
        b.regs.gpr[2] = 0xF0;
        let h = b.trap();
        assert_eq!(h.stop, None);
        assert_eq!(b.regs.rip, CODE, "resumes at the same REP INSD");
        assert_eq!(b.regs.gpr[1], u64::MAX - super::MAX_REPEATS);
        assert_eq!(b.regs.gpr[7], 0x6_0000 + 4 * super::MAX_REPEATS);
    }

    #[test]
    fn outs_from_the_monitor_is_a_violation() {
        let mut b = Bench::new(&[0x6E]);
        b.regs.gpr[6] = contract::abi::layout::IDT;
        b.regs.gpr[2] = 0xE9;
        assert!(matches!(
            b.trap().stop,
            Some(Outcome::GuestFault {
                kind: FaultKind::MonitorViolation,
                ..
            })
        ));
    }
}
