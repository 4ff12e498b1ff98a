//! Building blocks every workload shares: the prologue, the RDTSC clock, counted loops,
//! interrupt gates and the exit.
//!
//! Register plan: R15 = boot-info page, R14 = TSC at the start of the measured loop,
//! R13 = N, R12 = loop index, RBX = result.

use contract::abi::{boot_info, selector};
use iced_x86::code_asm::*;

use crate::ops::{AsmResult, GuestOps};

/// Saves the boot-info pointer (RDI at entry) in R15 and zeroes the result.
pub fn prologue(a: &mut CodeAssembler) -> AsmResult {
    a.mov(r15, rdi)?;
    a.xor(ebx, ebx)
}

fn read_tsc(a: &mut CodeAssembler) -> AsmResult {
    a.lfence()?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)
}

/// Reads the TSC into R14 (clobbers RAX, RDX).
pub fn start_clock(a: &mut CodeAssembler) -> AsmResult {
    read_tsc(a)?;
    a.mov(r14, rax)
}

/// Stores the cycles since [`start_clock`] and the number of operations in the boot-info
/// page (clobbers RAX, RDX).
pub fn stop_clock(a: &mut CodeAssembler, ops: u64) -> AsmResult {
    read_tsc(a)?;
    a.sub(rax, r14)?;
    a.mov(qword_ptr(r15 + boot_info::MEASURED_CYCLES as i32), rax)?;
    a.mov(rax, ops)?;
    a.mov(qword_ptr(r15 + boot_info::MEASURED_OPS as i32), rax)
}

/// Runs `body` N times with the index in R12 (0, 1, …, N-1) and N in R13. The body must
/// preserve R12 and R13.
pub fn counted_loop(
    a: &mut CodeAssembler,
    n: u64,
    mut body: impl FnMut(&mut CodeAssembler) -> AsmResult,
) -> AsmResult {
    let mut top = a.create_label();
    let mut done = a.create_label();
    a.xor(r12d, r12d)?;
    a.mov(r13, n)?;
    a.test(r13, r13)?;
    a.jz(done)?;
    a.set_label(&mut top)?;
    body(a)?;
    a.inc(r12)?;
    a.cmp(r12, r13)?;
    a.jb(top)?;
    a.set_label(&mut done)?;
    Ok(())
}

/// Ends the run with exit code 0 (result in RBX); parks the CPU if the exit returns.
pub fn finish(a: &mut CodeAssembler, ops: &dyn GuestOps) -> AsmResult {
    let mut park = a.create_label();
    a.xor(eax, eax)?;
    ops.exit(a)?;
    a.set_label(&mut park)?;
    a.hlt()?;
    a.jmp(park)
}

/// Number of IDT entries a workload's own table has (vectors 0 to 0x20).
pub const IDT_ENTRIES: u32 = 0x21;

/// Reserves the workload's own IDT (zeroed: every gate not present), after a page of
/// padding, so that it starts in a page after the code's last: the code's pages are never
/// written (binary translation write-protects the pages it translates, and a store to
/// one of them throws its translations away).
pub fn idt_storage(a: &mut CodeAssembler, idt: &mut CodeLabel) -> AsmResult {
    idt_storage_for(a, idt, IDT_ENTRIES)
}

/// [`idt_storage`] for a table of `entries` gates (vectors 0 to `entries - 1`).
pub fn idt_storage_for(a: &mut CodeAssembler, idt: &mut CodeLabel, entries: u32) -> AsmResult {
    a.db(&[0u8; contract::abi::PAGE_SIZE as usize])?;
    a.set_label(idt)?;
    a.db(&vec![0u8; entries as usize * 16])
}

/// Writes a 64-bit interrupt gate (DPL 0, kernel code selector) for `vector` pointing at
/// `handler` into the table at `idt` (clobbers RAX, RDX).
pub fn set_gate(
    a: &mut CodeAssembler,
    idt: CodeLabel,
    vector: u8,
    handler: CodeLabel,
) -> AsmResult {
    a.lea(rdx, ptr(idt))?;
    a.add(rdx, i32::from(vector) * 16)?;
    a.lea(rax, ptr(handler))?;
    a.mov(word_ptr(rdx), ax)?;
    a.mov(word_ptr(rdx + 2), i32::from(selector::KERNEL_CODE))?;
    a.mov(word_ptr(rdx + 4), 0x8E00)?;
    a.shr(rax, 16)?;
    a.mov(word_ptr(rdx + 6), ax)?;
    a.shr(rax, 16)?;
    a.mov(dword_ptr(rdx + 8), eax)?;
    a.mov(dword_ptr(rdx + 12), 0)
}

/// Loads the workload's IDT at `idt` through the ops (clobbers RAX).
pub fn load_idt(a: &mut CodeAssembler, ops: &dyn GuestOps, idt: CodeLabel) -> AsmResult {
    load_idt_for(a, ops, idt, IDT_ENTRIES)
}

/// [`load_idt`] for a table of `entries` gates ([`idt_storage_for`]).
pub fn load_idt_for(
    a: &mut CodeAssembler,
    ops: &dyn GuestOps,
    idt: CodeLabel,
    entries: u32,
) -> AsmResult {
    a.sub(rsp, 16)?;
    a.mov(word_ptr(rsp), (entries * 16 - 1) as i32)?;
    a.lea(rax, ptr(idt))?;
    a.mov(qword_ptr(rsp + 2), rax)?;
    ops.load_idt(a)?;
    a.add(rsp, 16)
}
