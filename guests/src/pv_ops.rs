//! The paravirtual flavour of the pv-ops: every sensitive operation becomes a hypercall
//! (`out` to [`hypercall::PORT`]) or an access to the shared-info page, and the operations
//! that can wait are batched B at a time.
//!
//! | operation | paravirtual flavour | hypercalls |
//! |---|---|---|
//! | `irq_disable` / `irq_enable` | event mask byte in the shared-info page; re-enabling checks the pending flag | 0 (1 `event_check` if an event waits) |
//! | `save_flags` / `restore_flags` | real RFLAGS with bit 9 taken from the event mask | 0 |
//! | `safe_halt` | `block` (enables events and waits, atomically) | 1 |
//! | `console_putc` / `console_flush` | bytes buffered, `console_write` every B bytes and at the flush | ⌈N/B⌉ |
//! | `cpuid` | `cpuid` hypercall | 1 |
//! | `write_cr8` / `read_cr8` | `set_tpr` (the VMM must know the priority at once: it gates event delivery) / read of the shared-info mirror | 1 / 0 |
//! | `mmio_read` | `device_read` of up to B values ahead, never past the end of the counted loop (R13 − R12) | ⌈N/B⌉ per loop |
//! | `set_pte` | `mmu_update` of one request with a TLB flush (a flat guest that reads through the new mapping at once cannot let the update wait; the guest kernel's `pte_store` batches instead) | 1 |
//! | `arm_timer` | `set_timer` | 1 |
//! | `load_idt` | `set_trap_table` with the guest's IDT | 1 |
//! | `iret` | `iret` (the saved RAX is pushed first, as in Xen) | 1 |
//! | `exit` | `exit` | 1 |
//!
//! The guest kernel's operations (`KernelOps`, below the table's) speak Xen's interface
//! too: `set_callback`, `set_trap_table`, queued `mmu_update` batches, `mmuext_op` pins,
//! unpins and user roots, `new_baseptr`, `iret` into user mode (`docs/guest-abi.md`, "In
//! paravirt").
//!
//! The ops keep their state and buffers in guest RAM below the image ([`PV_DATA`] to
//! [`CONSOLE_BUF`] + 4 KiB, and the kernel's update queue [`PTE_QUEUE`]), which the guest
//! ABI leaves free. Every operation saves and
//! restores the registers it uses beyond its contract; the arithmetic flags may change.

use contract::abi::hypercall::{self, callback, mmu, mmuext, shared_info, Hypercall};
use contract::abi::{layout, selector};
use contract::x86::pte;
use contract::Flavour;
use iced_x86::code_asm::*;

use crate::ops::{AsmResult, GuestOps};

/// State words of the paravirtual ops (console count, device-read index and fill).
pub const PV_DATA: u64 = 0x1_5000;
/// Bytes buffered for the next `console_write`.
const CONSOLE_COUNT: u64 = PV_DATA;
/// Next value to hand out from the device-read buffer.
const MMIO_INDEX: u64 = PV_DATA + 0x08;
/// Values in the device-read buffer.
const MMIO_FILL: u64 = PV_DATA + 0x10;
/// Output of the `cpuid` hypercall (4 × u32).
const CPUID_OUT: u64 = PV_DATA + 0x20;
/// The one `mmu_update` request of `set_pte`.
const MMU_REQUEST: u64 = PV_DATA + 0x40;
/// Entries waiting in the guest kernel's page-table update queue.
const PTE_QUEUED: u64 = PV_DATA + 0x48;
/// The frame the guest kernel's return to user mode hands to `iret`:
/// `{rax, rip, cs, rflags, rsp, ss}`.
const IRET_FRAME: u64 = PV_DATA + 0x80;
/// The guest kernel's page-table update queue: `{ptr, val}` requests for one
/// `mmu_update` ([`PTE_QUEUE_LEN`] of them).
pub const PTE_QUEUE: u64 = 0x1_8000;
/// Requests the queue holds: a full queue is submitted at once. Half the most one
/// `mmu_update` may carry, so that the VMM's own stores for the tables it validates
/// (one per table that changes type) fit in the same entry of its routine.
pub const PTE_QUEUE_LEN: u64 = 128;
/// Device-read buffer ([`MAX_B`] × u64).
pub const MMIO_BUF: u64 = 0x1_6000;
/// Console buffer (4 KiB).
pub const CONSOLE_BUF: u64 = 0x1_7000;

/// Largest batch size the paravirtual ops accept (the device-read buffer holds 512 values).
pub const MAX_B: u64 = hypercall::MAX_BATCH;

const MASK: u64 = hypercall::SHARED_INFO + shared_info::UPCALL_MASK;
const PENDING: u64 = hypercall::SHARED_INFO + shared_info::UPCALL_PENDING;
const TPR: u64 = hypercall::SHARED_INFO + shared_info::TPR;

/// The paravirtual flavour, with batch size `b` for the batched operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParavirtOps {
    b: u64,
}

impl ParavirtOps {
    /// Ops that batch `b` operations per hypercall (1 ≤ b ≤ [`MAX_B`]).
    pub fn new(b: u64) -> Option<Self> {
        (1..=MAX_B).contains(&b).then_some(ParavirtOps { b })
    }

    /// The batch size.
    pub fn batch(&self) -> u64 {
        self.b
    }
}

/// Ops with B = 1 (what [`crate::ops_for`] hands out without parameters).
pub static UNBATCHED: ParavirtOps = ParavirtOps { b: 1 };

/// An absolute address in the low 2 GiB as a memory operand.
fn abs(addr: u64) -> AsmMemoryOperand {
    qword_ptr(addr)
}

/// `mov eax, nr; out PORT, eax`: the hypercall itself (arguments already in place).
fn call(a: &mut CodeAssembler, nr: Hypercall) -> AsmResult {
    a.mov(eax, nr.number() as u32)?;
    a.out(u32::from(hypercall::PORT), eax)
}

/// Clears the event mask, then takes a pending event (flags clobbered).
fn enable_events(a: &mut CodeAssembler) -> AsmResult {
    let mut done = a.create_label();
    a.mov(byte_ptr(MASK), 0)?;
    a.cmp(byte_ptr(PENDING), 0)?;
    a.je(done)?;
    a.push(rax)?;
    call(a, Hypercall::EventCheck)?;
    a.pop(rax)?;
    a.set_label(&mut done)
}

/// Sends the buffered console bytes (count in RCX); clobbers nothing else.
fn console_send(a: &mut CodeAssembler) -> AsmResult {
    a.push(rax)?;
    a.push(rdi)?;
    a.push(rsi)?;
    a.mov(edi, CONSOLE_BUF as u32)?;
    a.mov(rsi, rcx)?;
    call(a, Hypercall::ConsoleWrite)?;
    a.mov(abs(CONSOLE_COUNT), 0)?;
    a.pop(rsi)?;
    a.pop(rdi)?;
    a.pop(rax)
}

impl GuestOps for ParavirtOps {
    fn flavour(&self) -> Flavour {
        Flavour::Paravirt
    }

    fn irq_disable(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(byte_ptr(MASK), 1)
    }

    fn irq_enable(&self, a: &mut CodeAssembler) -> AsmResult {
        enable_events(a)
    }

    fn safe_halt(&self, a: &mut CodeAssembler) -> AsmResult {
        // `block` clears the mask and waits in one step, so no event slips in between.
        a.push(rax)?;
        call(a, Hypercall::Block)?;
        a.pop(rax)
    }

    fn console_putc(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut done = a.create_label();
        a.push(rcx)?;
        a.mov(rcx, abs(CONSOLE_COUNT))?;
        a.mov(byte_ptr(rcx + CONSOLE_BUF as i32), al)?;
        a.inc(rcx)?;
        a.mov(abs(CONSOLE_COUNT), rcx)?;
        a.cmp(rcx, self.b as i32)?;
        a.jb(done)?;
        console_send(a)?;
        a.set_label(&mut done)?;
        a.pop(rcx)
    }

    fn console_flush(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut done = a.create_label();
        a.push(rcx)?;
        a.mov(rcx, abs(CONSOLE_COUNT))?;
        a.test(rcx, rcx)?;
        a.jz(done)?;
        console_send(a)?;
        a.set_label(&mut done)?;
        a.pop(rcx)
    }

    fn cpuid(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rdi)?;
        a.push(rsi)?;
        a.mov(edi, eax)?;
        a.mov(esi, ecx)?;
        a.mov(edx, CPUID_OUT as u32)?;
        call(a, Hypercall::Cpuid)?;
        a.mov(eax, dword_ptr(CPUID_OUT))?;
        a.mov(ebx, dword_ptr(CPUID_OUT + 4))?;
        a.mov(ecx, dword_ptr(CPUID_OUT + 8))?;
        a.mov(edx, dword_ptr(CPUID_OUT + 12))?;
        a.pop(rsi)?;
        a.pop(rdi)
    }

    fn write_cr8(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rdi)?;
        a.push(rax)?;
        a.mov(rdi, rax)?;
        call(a, Hypercall::SetTpr)?;
        a.pop(rax)?;
        a.pop(rdi)
    }

    fn read_cr8(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(rax, abs(TPR))
    }

    fn mmio_read(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut have = a.create_label();
        let mut capped = a.create_label();
        let mut nonzero = a.create_label();
        a.push(rcx)?;
        a.push(rdx)?;
        a.push(rdi)?;
        a.mov(rcx, abs(MMIO_INDEX))?;
        a.cmp(rcx, abs(MMIO_FILL))?;
        a.jb(have)?;
        // Refill: min(B, iterations left in the counted loop), at least 1.
        a.mov(rdx, r13)?;
        a.sub(rdx, r12)?;
        a.mov(ecx, self.b as u32)?;
        a.cmp(rdx, rcx)?;
        a.jbe(capped)?;
        a.mov(rdx, rcx)?;
        a.set_label(&mut capped)?;
        a.test(rdx, rdx)?;
        a.jnz(nonzero)?;
        a.mov(edx, 1)?;
        a.set_label(&mut nonzero)?;
        a.mov(abs(MMIO_FILL), rdx)?;
        a.push(rsi)?;
        a.mov(rdi, rsi)?;
        a.mov(rsi, rdx)?;
        a.mov(edx, MMIO_BUF as u32)?;
        call(a, Hypercall::DeviceRead)?;
        a.pop(rsi)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut have)?;
        a.mov(rax, qword_ptr(rcx * 8 + MMIO_BUF as i32))?;
        a.inc(rcx)?;
        a.mov(abs(MMIO_INDEX), rcx)?;
        a.pop(rdi)?;
        a.pop(rdx)?;
        a.pop(rcx)
    }

    fn set_pte(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rdx)?;
        a.push(rdi)?;
        a.push(rsi)?;
        a.push(rax)?;
        a.mov(abs(MMU_REQUEST), rdi)?;
        a.mov(abs(MMU_REQUEST + 8), rax)?;
        a.mov(edi, MMU_REQUEST as u32)?;
        a.mov(esi, 1)?;
        a.mov(edx, mmu::FLUSH_TLB as u32)?;
        call(a, Hypercall::MmuUpdate)?;
        a.pop(rax)?;
        a.pop(rsi)?;
        a.pop(rdi)?;
        a.pop(rdx)
    }

    fn arm_timer(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rdi)?;
        a.push(rax)?;
        a.mov(edi, eax)?;
        call(a, Hypercall::SetTimer)?;
        a.pop(rax)?;
        a.pop(rdi)
    }

    fn load_idt(&self, a: &mut CodeAssembler) -> AsmResult {
        // The pseudo-descriptor is at [RSP]: limit (u16), then base (u64).
        a.push(rdi)?;
        a.push(rsi)?;
        a.push(rdx)?;
        a.movzx(esi, word_ptr(rsp + 24))?;
        a.inc(esi)?;
        a.mov(rdi, qword_ptr(rsp + 26))?;
        call(a, Hypercall::SetTrapTable)?;
        a.pop(rdx)?;
        a.pop(rsi)?;
        a.pop(rdi)
    }

    fn iret(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rax)?;
        call(a, Hypercall::Iret)
    }

    fn exit(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(edi, eax)?;
        call(a, Hypercall::Exit)
    }

    fn kernel(&self) -> Option<&dyn crate::kernel::KernelOps> {
        Some(self)
    }

    fn save_flags(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut masked = a.create_label();
        a.pushfq()?;
        a.pop(rax)?;
        a.and(rax, !(1i32 << 9))?;
        a.test(byte_ptr(MASK), 1)?;
        a.jnz(masked)?;
        a.or(rax, 1i32 << 9)?;
        a.set_label(&mut masked)
    }

    fn restore_flags(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut disable = a.create_label();
        let mut done = a.create_label();
        a.bt(rax, 9)?;
        a.jnc(disable)?;
        enable_events(a)?;
        a.jmp(done)?;
        a.set_label(&mut disable)?;
        a.mov(byte_ptr(MASK), 1)?;
        a.set_label(&mut done)?;
        // The arithmetic flags; at CPL 3 the CPU leaves the real IF alone.
        a.push(rax)?;
        a.popfq()
    }
}

/// `mmuext_op(op, RSI-holding value, level)` with RAX, RDI, RSI, RDX kept: `frame` is
/// moved into RSI by `load` first.
fn mmuext(
    a: &mut CodeAssembler,
    op: u64,
    level: u64,
    load: impl FnOnce(&mut CodeAssembler) -> AsmResult,
) -> AsmResult {
    a.push(rax)?;
    a.push(rdi)?;
    a.push(rsi)?;
    a.push(rdx)?;
    load(a)?;
    a.mov(edi, op as u32)?;
    a.mov(edx, level as u32)?;
    call(a, Hypercall::MmuextOp)?;
    a.pop(rdx)?;
    a.pop(rsi)?;
    a.pop(rdi)?;
    a.pop(rax)
}

/// Submits the queued page-table updates as one `mmu_update` (the queue is not empty).
/// Clobbers nothing.
fn pte_submit(a: &mut CodeAssembler) -> AsmResult {
    a.push(rax)?;
    a.push(rdi)?;
    a.push(rsi)?;
    a.push(rdx)?;
    a.mov(edi, PTE_QUEUE as u32)?;
    a.mov(rsi, abs(PTE_QUEUED))?;
    a.xor(edx, edx)?;
    call(a, Hypercall::MmuUpdate)?;
    a.mov(abs(PTE_QUEUED), 0)?;
    a.pop(rdx)?;
    a.pop(rsi)?;
    a.pop(rdi)?;
    a.pop(rax)
}

/// The guest kernel's paravirtual flavour: Xen's interface. SYSCALL from user mode and
/// the kernel's traps reach it as callbacks (`set_callback`, `set_trap_table`); its page
/// tables are the real ones, read-only to it, changed by `mmu_update` batches (PTE stores
/// queue up and a flush submits them, as Linux's lazy MMU mode does: the kernel reads
/// no table entry it stored before flushing); each process has a kernel root and a user
/// root (`new_baseptr`, `mmuext_op(NEW_USER_BASEPTR)`), and user mode is entered with
/// `iret`; the faulting address is in the shared-info page.
impl crate::kernel::KernelOps for ParavirtOps {
    fn set_syscall_entry(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rdi)?;
        a.push(rsi)?;
        a.mov(rsi, rax)?;
        a.mov(edi, callback::SYSCALL as u32)?;
        call(a, Hypercall::SetCallback)?;
        a.pop(rsi)?;
        a.pop(rdi)
    }

    fn install_traps(
        &self,
        a: &mut CodeAssembler,
        idt: CodeLabel,
        page_fault: CodeLabel,
        user_trap: CodeLabel,
    ) -> AsmResult {
        crate::asm::set_gate(a, idt, contract::x86::vector::PF, page_fault)?;
        crate::asm::set_gate(a, idt, crate::kernel::ops::TRAP_ENTRY, user_trap)?;
        a.push(rdi)?;
        a.push(rsi)?;
        a.lea(rdi, ptr(idt))?;
        a.mov(esi, crate::kernel::ops::IDT_GATES * 16)?;
        call(a, Hypercall::SetTrapTable)?;
        a.pop(rsi)?;
        a.pop(rdi)
    }

    fn switch_address_space(&self, a: &mut CodeAssembler) -> AsmResult {
        mmuext(a, mmuext::NEW_USER_BASEPTR, 0, |a| a.mov(rsi, rdx))?;
        a.push(rdi)?;
        a.push(rax)?;
        a.mov(rdi, rax)?;
        call(a, Hypercall::NewBaseptr)?;
        a.pop(rax)?;
        a.pop(rdi)
    }

    fn new_root(&self, a: &mut CodeAssembler) -> AsmResult {
        mmuext(a, mmuext::PIN, 4, |a| a.mov(rsi, rax))
    }

    fn release_root(&self, a: &mut CodeAssembler) -> AsmResult {
        mmuext(a, mmuext::UNPIN, 0, |a| a.mov(rsi, rax))
    }

    fn pte_store(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut queued = a.create_label();
        a.push(rcx)?;
        a.mov(rcx, abs(PTE_QUEUED))?;
        a.shl(rcx, 4)?;
        a.mov(qword_ptr(rcx + PTE_QUEUE as i32), rdi)?;
        a.mov(qword_ptr(rcx + PTE_QUEUE as i32 + 8), rax)?;
        a.shr(rcx, 4)?;
        a.inc(rcx)?;
        a.mov(abs(PTE_QUEUED), rcx)?;
        a.cmp(rcx, PTE_QUEUE_LEN as i32)?;
        a.jb(queued)?;
        pte_submit(a)?;
        a.set_label(&mut queued)?;
        a.pop(rcx)
    }

    fn pte_flush(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut empty = a.create_label();
        a.push(rax)?;
        a.cmp(abs(PTE_QUEUED), 0)?;
        a.je(empty)?;
        pte_submit(a)?;
        a.set_label(&mut empty)?;
        a.pop(rax)
    }

    fn invlpg(&self, a: &mut CodeAssembler) -> AsmResult {
        mmuext(a, mmuext::INVLPG, 0, |_| Ok(()))
    }

    fn return_to_user(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(abs(IRET_FRAME), rax)?;
        a.mov(abs(IRET_FRAME + 8), rcx)?;
        a.mov(abs(IRET_FRAME + 16), i32::from(selector::USER_CODE))?;
        a.mov(abs(IRET_FRAME + 24), r11)?;
        a.mov(abs(IRET_FRAME + 32), rsp)?;
        a.mov(abs(IRET_FRAME + 40), i32::from(selector::USER_DATA))?;
        a.mov(esp, IRET_FRAME as u32)?;
        call(a, Hypercall::Iret)
    }

    fn read_fault_address(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(rax, abs(hypercall::SHARED_INFO + shared_info::FAULT_ADDR))
    }

    fn fault_return(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rax)?;
        call(a, Hypercall::Iret)
    }

    fn kernel_map_flags(&self) -> u64 {
        // The kernel half is the VMM's ([`KernelOps::kernel_half`]): the kernel maps
        // nothing of its own there.
        pte::P | pte::RW | pte::US
    }

    fn kernel_half(&self) -> Option<u64> {
        Some(layout::PDPT)
    }

    fn user_slot(&self) -> Option<u64> {
        Some(layout::PDPT_USER)
    }

    fn trap_table_template(&self) -> Vec<u8> {
        // No gate but the kernel's own: a trap it does not handle ends the run.
        vec![0; crate::kernel::ops::IDT_GATES as usize * 16]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn listing(f: impl Fn(&mut CodeAssembler) -> AsmResult) -> String {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(0x10_0000).unwrap();
        let mut d = Decoder::with_ip(64, &bytes, 0x10_0000, DecoderOptions::NONE);
        let mut fmt = IntelFormatter::new();
        let mut out = String::new();
        for i in d.iter() {
            fmt.format(&i, &mut out);
            out.push('\n');
        }
        out
    }

    #[test]
    fn every_workload_builds_in_the_paravirtual_flavour() {
        for w in crate::WORKLOADS {
            if crate::unsupported(w.name, contract::Mode::Paravirt).is_some() {
                // Refused, with the flavour named, rather than built wrong.
                let e = w.image(Flavour::Paravirt, crate::Params::default());
                assert!(
                    matches!(e, Err(crate::Error::FlavourUnavailable { .. })),
                    "{}",
                    w.name
                );
                continue;
            }
            for b in [1, MAX_B] {
                let p = crate::Params {
                    n: 10,
                    b,
                    ..crate::Params::default()
                };
                let img = w.image(Flavour::Paravirt, p).unwrap();
                assert_eq!(img.flavour, Flavour::Paravirt);
                assert!(img.expected.oracles.contains_key(&contract::Mode::Paravirt));
                let native = w.image(Flavour::Native, p).unwrap();
                assert_ne!(img.bytes, native.bytes, "{}", w.name);
            }
            let too_big = crate::Params {
                n: 10,
                b: MAX_B + 1,
                ..crate::Params::default()
            };
            // One limit in every flavour: a B means the same in every mode.
            assert!(w.image(Flavour::Paravirt, too_big).is_err());
            assert!(w.image(Flavour::Native, too_big).is_err());
        }
    }

    #[test]
    fn batch_size_is_bounded() {
        assert!(ParavirtOps::new(0).is_none());
        assert!(ParavirtOps::new(MAX_B + 1).is_none());
        assert_eq!(ParavirtOps::new(64).unwrap().batch(), 64);
    }

    #[test]
    fn absolute_operands_are_absolute() {
        let ops = ParavirtOps::new(4).unwrap();
        let text = listing(|a| ops.irq_disable(a));
        assert_eq!(text.trim(), "mov byte ptr [40015000h],1");
        let text = listing(|a| ops.exit(a));
        assert!(text.contains("out 0FCh,eax"), "{text}");
    }

    #[test]
    fn no_privileged_instruction_in_any_op() {
        let ops = ParavirtOps::new(8).unwrap();
        let all: [fn(&ParavirtOps, &mut CodeAssembler) -> AsmResult; 17] = [
            |o, a| o.irq_disable(a),
            |o, a| o.irq_enable(a),
            |o, a| o.safe_halt(a),
            |o, a| o.console_putc(a),
            |o, a| o.console_flush(a),
            |o, a| o.cpuid(a),
            |o, a| o.write_cr8(a),
            |o, a| o.read_cr8(a),
            |o, a| o.mmio_read(a),
            |o, a| o.set_pte(a),
            |o, a| o.arm_timer(a),
            |o, a| o.load_idt(a),
            |o, a| o.iret(a),
            |o, a| o.exit(a),
            |o, a| o.save_flags(a),
            |o, a| o.restore_flags(a),
            |o, a| o.console_flush(a),
        ];
        for (i, op) in all.iter().enumerate() {
            let mut a = CodeAssembler::new(64).unwrap();
            op(&ops, &mut a).unwrap();
            a.nop().unwrap(); // a label may end an op
            let bytes = a.assemble(0x10_0000).unwrap();
            for ins in Decoder::with_ip(64, &bytes, 0x10_0000, DecoderOptions::NONE).iter() {
                // The hypercall `out` to the open port is the one I/O instruction allowed.
                let is_gate = ins.mnemonic() == iced_x86::Mnemonic::Out
                    && ins.immediate8() == hypercall::PORT as u8;
                assert!(
                    !ins.is_privileged() || is_gate,
                    "op {i} emits {:?}",
                    ins.mnemonic()
                );
                assert_ne!(ins.mnemonic(), iced_x86::Mnemonic::Cpuid, "op {i}");
            }
        }
    }
}
