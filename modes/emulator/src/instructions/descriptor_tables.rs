//! LGDT/LIDT (privileged: always trap) and SGDT/SIDT/SLDT/SMSW/STR (sensitive but not
//! privileged: they trap only when CR4.UMIP is set on the real vCPU).
//!
//! LGDT/LIDT only record the table in the virtual CPU — the real CPU keeps the monitor's
//! tables — and a table that overlaps the monitor's pages is refused as a monitor
//! violation. The stores return the *virtual* values.

use contract::abi::layout;
use iced_x86::{Instruction, OpKind};

use super::{Cx, Fault, InstructionHandler, Step};
use crate::paging::canonical;
use crate::vcpu::TableReg;

fn load_pseudo_descriptor(
    insn: &Instruction,
    cx: &mut Cx<'_>,
    what: &str,
) -> Result<TableReg, Fault> {
    let addr = cx.mem_addr(insn, 0)?;
    let raw: [u8; 10] = cx.read_bytes(addr, what)?;
    let t = TableReg {
        limit: u16::from_le_bytes([raw[0], raw[1]]),
        base: u64::from_le_bytes(raw[2..10].try_into().unwrap_or_default()),
    };
    let monitor_end = layout::MONITOR_BASE + layout::MONITOR_SIZE;
    if !canonical(t.base) || t.overlaps(layout::MONITOR_BASE, monitor_end) {
        return Err(Fault::Monitor(format!(
            "{what} of a table at {:#x} (limit {:#x}): it overlaps the monitor's memory \
             ({:#x}..{monitor_end:#x}); refused",
            t.base,
            t.limit,
            layout::MONITOR_BASE
        )));
    }
    Ok(t)
}

fn store_pseudo_descriptor(
    insn: &Instruction,
    cx: &mut Cx<'_>,
    t: TableReg,
    what: &str,
) -> Result<Step, Fault> {
    let addr = cx.mem_addr(insn, 0)?;
    let mut raw = [0u8; 10];
    raw[..2].copy_from_slice(&t.limit.to_le_bytes());
    raw[2..].copy_from_slice(&t.base.to_le_bytes());
    cx.write_bytes(addr, &raw, what)?;
    Ok(Step::Next)
}

/// Stores a 16-bit value to a register (zero-extended for 32/64-bit destinations) or to a
/// 16-bit memory operand.
fn store_selector(insn: &Instruction, cx: &mut Cx<'_>, v: u64, what: &str) -> Result<Step, Fault> {
    if insn.op0_kind() == OpKind::Register {
        let r = insn.op0_register();
        if r.size() == 2 {
            cx.regs.set(r, v & 0xFFFF);
        } else {
            cx.regs.set(r.full_register(), v);
        }
    } else {
        let addr = cx.mem_addr(insn, 0)?;
        cx.write_bytes(addr, &(v as u16).to_le_bytes(), what)?;
    }
    Ok(Step::Next)
}

/// LGDT.
#[derive(Debug)]
pub struct Lgdt;

impl InstructionHandler for Lgdt {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        cx.cpu.gdtr = load_pseudo_descriptor(insn, cx, "lgdt")?;
        Ok(Step::Next)
    }
}

/// LIDT: the guest's handlers, used for reflection; never loaded into the real CPU.
#[derive(Debug)]
pub struct Lidt;

impl InstructionHandler for Lidt {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        cx.cpu.idtr = load_pseudo_descriptor(insn, cx, "lidt")?;
        cx.cpu.guest_idt = true;
        Ok(Step::Next)
    }
}

/// SGDT (traps only under UMIP).
#[derive(Debug)]
pub struct Sgdt;

impl InstructionHandler for Sgdt {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let t = cx.cpu.gdtr;
        store_pseudo_descriptor(insn, cx, t, "sgdt")
    }
}

/// SIDT (traps only under UMIP).
#[derive(Debug)]
pub struct Sidt;

impl InstructionHandler for Sidt {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let t = cx.cpu.idtr;
        store_pseudo_descriptor(insn, cx, t, "sidt")
    }
}

/// SLDT (traps only under UMIP).
#[derive(Debug)]
pub struct Sldt;

impl InstructionHandler for Sldt {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let v = u64::from(cx.cpu.ldtr);
        store_selector(insn, cx, v, "sldt")
    }
}

/// STR (traps only under UMIP).
#[derive(Debug)]
pub struct Str;

impl InstructionHandler for Str {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let v = u64::from(cx.cpu.tr);
        store_selector(insn, cx, v, "str")
    }
}

/// SMSW (traps only under UMIP): the low bits of the virtual CR0.
#[derive(Debug)]
pub struct Smsw;

impl InstructionHandler for Smsw {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        if insn.op0_kind() == OpKind::Register {
            let v = cx.cpu.cr0;
            cx.regs.set(insn.op0_register(), v);
            return Ok(Step::Next);
        }
        let v = cx.cpu.cr0 & 0xFFFF;
        store_selector(insn, cx, v, "smsw")
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, STACK};
    use contract::{FaultKind, Outcome};

    fn pseudo(limit: u16, base: u64) -> Vec<u8> {
        let mut v = limit.to_le_bytes().to_vec();
        v.extend_from_slice(&base.to_le_bytes());
        v
    }

    #[test]
    fn lidt_records_the_virtual_idtr_and_sidt_returns_it() {
        // lidt [rsp] ; sidt [rax]
        let mut b = Bench::new(&[0x0F, 0x01, 0x1C, 0x24, 0x0F, 0x01, 0x08]);
        b.mock.put(STACK, &pseudo(0x20F, 0x3_0000));
        assert_eq!(b.trap().name, "lidt");
        assert_eq!(b.emu.cpu.idtr.base, 0x3_0000);
        assert_eq!(b.emu.cpu.idtr.limit, 0x20F);
        assert!(b.emu.cpu.guest_idt);
        b.regs.gpr[0] = 0x5_0000;
        assert_eq!(b.trap().name, "sidt");
        assert_eq!(
            &b.mock.mem[0x5_0000..0x5_000A],
            &pseudo(0x20F, 0x3_0000)[..]
        );
    }

    #[test]
    fn lidt_into_the_monitor_is_refused() {
        let mut b = Bench::new(&[0x0F, 0x01, 0x1C, 0x24]);
        b.mock
            .put(STACK, &pseudo(0xFFF, contract::abi::layout::IDT));
        match b.trap().stop {
            Some(Outcome::GuestFault { kind, .. }) => assert_eq!(kind, FaultKind::MonitorViolation),
            o => panic!("{o:?}"),
        }
        assert!(!b.emu.cpu.guest_idt);
        // A table that merely ends inside the monitor is refused too.
        b.regs.rip = crate::instructions::mock::CODE;
        b.mock.put(
            STACK,
            &pseudo(0xFFFF, contract::abi::layout::MONITOR_BASE - 0x100),
        );
        assert!(matches!(
            b.trap().stop,
            Some(Outcome::GuestFault {
                kind: FaultKind::MonitorViolation,
                ..
            })
        ));
    }

    #[test]
    fn lgdt_sgdt_smsw_str_sldt() {
        // lgdt [rsp]; sgdt [rax]; smsw ecx; str edx; sldt esi
        let code = [
            0x0F, 0x01, 0x14, 0x24, 0x0F, 0x01, 0x00, 0x0F, 0x01, 0xE1, 0x0F, 0x00, 0xCA, 0x0F,
            0x00, 0xC6,
        ];
        let mut b = Bench::new(&code);
        b.mock.put(STACK, &pseudo(0x37, 0x4_0000));
        assert_eq!(b.trap().name, "lgdt");
        b.regs.gpr[0] = 0x5_0000;
        assert_eq!(b.trap().name, "sgdt");
        assert_eq!(&b.mock.mem[0x5_0000..0x5_000A], &pseudo(0x37, 0x4_0000)[..]);
        b.regs.gpr[6] = 0xFFFF;
        assert_eq!(b.trap().name, "smsw");
        assert_eq!(b.regs.gpr[1], 0x8005_0033);
        assert_eq!(b.trap().name, "str");
        assert_eq!(b.regs.gpr[2], 0x28);
        assert_eq!(b.trap().name, "sldt");
        assert_eq!(b.regs.gpr[6], 0);
    }
}
