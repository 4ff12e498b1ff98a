//! Reflection: delivering an exception or interrupt to the guest through its *virtual*
//! IDT, building the frame on the guest's stack exactly as the CPU would for a CPL 0 →
//! CPL 0 interrupt in 64-bit mode.
//!
//! The frame carries the *virtual* selectors (CS = kernel code 0x08, SS = kernel data
//! 0x10), because the guest believes it runs at CPL 0. That choice also guarantees that
//! the handler's IRETQ traps: at CPL 3, an IRETQ to a code selector with RPL 0 is a
//! return to a more privileged level, which raises #GP — so IRETQ never runs natively
//! and the virtual IF is always restored by the VMM from the popped RFLAGS.

use contract::abi::{self, layout, selector};
use contract::x86::{decode_gate_bytes, gate_offset, GATE_SIZE};
use monitor::frame::Frame;

use crate::instructions::{mem_fault, Cx, Fault};
use crate::paging::canonical;

/// Delivers `vector` (with `error_code` if the exception has one) to the guest's handler:
/// pushes SS, RSP, RFLAGS, CS, RIP [, error code] on the guest stack (aligned to 16
/// bytes), points RIP at the handler and clears the virtual IF for an interrupt gate.
/// The return address is `cx.regs.rip` as it stands.
pub fn reflect(
    cx: &mut Cx<'_>,
    vector: u8,
    error_code: Option<u64>,
    context: &str,
) -> Result<(), Fault> {
    let what = if context.is_empty() {
        abi::vector_name(vector)
    } else {
        format!("{} ({context})", abi::vector_name(vector))
    };
    // From guest user mode the CPU reads the gate, and pushes the frame, as the kernel.
    let from_user = cx.cpu.cpl == 3;
    if from_user {
        crate::instructions::syscall::set_cpl(cx, 0)?;
    }
    let no_handler =
        |why: &str| Fault::NoHandler(format!("unhandled {what} at rip {:#x}: {why}", cx.regs.rip));
    let idtr = cx.cpu.idtr;
    if !cx.cpu.guest_idt {
        return Err(no_handler("the guest has not loaded an IDT"));
    }
    let offset = gate_offset(vector, idtr.limit)
        .ok_or_else(|| no_handler("the vector is beyond the guest IDT's limit"))?;
    let mut raw = [0u8; GATE_SIZE as usize];
    cx.p.read(idtr.base.wrapping_add(offset), &mut raw)
        .map_err(|e| mem_fault(e, "reading the guest's IDT gate"))?;
    let gate = decode_gate_bytes(&raw).ok_or_else(|| no_handler("its IDT gate is not present"))?;
    if gate.selector & !3 != selector::KERNEL_CODE {
        return Err(no_handler(&format!(
            "its gate's selector {:#x} is not the kernel code segment",
            gate.selector
        )));
    }
    if !canonical(gate.handler) || layout::is_monitor(gate.handler) {
        return Err(Fault::Monitor(format!(
            "{what}: the guest's gate points at {:#x}, inside the monitor or non-canonical",
            gate.handler
        )));
    }
    // From guest user mode: to the kernel, on the virtual RSP0 stack, with a user CS that
    // makes the kernel's IRETQ back trap (see `selector::USER_FRAME_CS`).
    let frame = Frame {
        rip: cx.regs.rip,
        cs: u64::from(if from_user {
            selector::USER_FRAME_CS
        } else {
            selector::KERNEL_CODE
        }),
        rflags: cx.cpu.guest_rflags(cx.regs.rflags),
        rsp: cx.regs.rsp(),
        ss: u64::from(if from_user {
            selector::USER_DATA
        } else {
            selector::KERNEL_DATA
        }),
    };
    if from_user {
        cx.regs
            .set_rsp(layout::EVENT_STACK + contract::abi::PAGE_SIZE);
    }
    let new_rsp = frame
        .push(error_code, |at, bytes| cx.p.write(at, bytes))
        .map_err(|e| mem_fault(e, &format!("pushing the {what} frame")))?;
    cx.regs.set_rsp(new_rsp);
    cx.regs.rip = gate.handler;
    if gate.clears_if {
        cx.cpu.vif = false;
    }
    *cx.injections += 1;
    Ok(())
}
