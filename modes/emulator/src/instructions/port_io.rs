//! IN and OUT in every form (port in an immediate or in DX; AL, AX or EAX). At IOPL 0 with
//! a closed I/O bitmap every one raises #GP; the VMM forwards it to the same devices the
//! other engines use.

use contract::Outcome;
use iced_x86::{Instruction, OpKind, Register};

use super::{Cx, Fault, InstructionHandler, Step};
use crate::platform::PortResult;

fn port_of(insn: &Instruction, op: u32, cx: &Cx<'_>) -> u16 {
    match insn.op_kind(op) {
        OpKind::Register => cx.regs.get(Register::DX).unwrap_or(0) as u16,
        _ => insn.immediate(op) as u16,
    }
}

/// Maps a device answer to the next step.
pub fn port_step(r: PortResult, port: u16, write: bool) -> Result<Option<Outcome>, Fault> {
    match r {
        PortResult::Done => Ok(None),
        PortResult::Stop(o) => Ok(Some(o)),
        PortResult::NoDevice => Err(Fault::BadDevice(machine::no_device(port, write))),
    }
}

/// OUT.
#[derive(Debug)]
pub struct Out;

impl InstructionHandler for Out {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let port = port_of(insn, 0, cx);
        let reg = insn.op1_register();
        let value = cx.regs.get(reg).unwrap_or(0);
        let data = &value.to_le_bytes()[..reg.size()];
        Ok(match port_step(cx.p.port_out(port, data), port, true)? {
            None => Step::Next,
            Some(o) => Step::Stop(o),
        })
    }
}

/// IN.
#[derive(Debug)]
pub struct In;

impl InstructionHandler for In {
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault> {
        let port = port_of(insn, 1, cx);
        let reg = insn.op0_register();
        let mut data = [0u8; 8];
        let n = reg.size();
        let r = cx.p.port_in(port, &mut data[..n]);
        if let Some(o) = port_step(r, port, false)? {
            return Ok(Step::Stop(o));
        }
        cx.regs.set(reg, u64::from_le_bytes(data));
        Ok(Step::Next)
    }
}

#[cfg(test)]
mod tests {
    use crate::instructions::mock::{Bench, CODE};
    use contract::{FaultKind, Outcome};

    #[test]
    fn out_in_every_form() {
        // out 0xe9, al; mov dx,0xe9 is native so set DX; out dx, al; out dx, eax
        let mut b = Bench::new(&[0xE6, 0xE9, 0xEE, 0xEF]);
        b.regs.gpr[0] = 0x4443_4241;
        b.regs.gpr[2] = 0xE9;
        assert_eq!(b.trap().name, "out");
        b.trap();
        b.trap();
        assert_eq!(b.regs.rip, CODE + 4);
        assert_eq!(
            b.mock.outs,
            vec![
                (0xE9, vec![0x41]),
                (0xE9, vec![0x41]),
                (0xE9, vec![0x41, 0x42, 0x43, 0x44])
            ]
        );
    }

    #[test]
    fn in_fills_the_register_with_partial_register_rules() {
        // in al, dx ; in eax, 0xf0
        let mut b = Bench::new(&[0xEC, 0xE5, 0xF0]);
        b.regs.gpr[0] = 0xFFFF_FFFF_FFFF_FFFF;
        b.regs.gpr[2] = 0xF0;
        assert_eq!(b.trap().name, "in");
        assert_eq!(b.regs.gpr[0], 0xFFFF_FFFF_FFFF_FF44);
        b.trap();
        assert_eq!(b.regs.gpr[0], 0x1122_3344);
    }

    #[test]
    fn exit_port_stops_and_unknown_ports_fault() {
        let mut b = Bench::new(&[0xE7, 0xF4, 0xE6, 0x80]);
        assert!(matches!(b.trap().stop, Some(Outcome::Completed { .. })));
        b.regs.rip = CODE + 2;
        match b.trap().stop {
            Some(Outcome::GuestFault { kind, detail, .. }) => {
                assert_eq!(kind, FaultKind::BadDeviceAccess);
                assert!(detail.contains("0x80"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}
