//! The kernel's sensitive operations: what the guest kernel of [`super`] does to its MMU,
//! its system-call entry and its traps, written once and given a body per flavour (the
//! native flavour's are the real instructions; see `docs/guest-abi.md`, "The guest
//! kernel").
//!
//! Register contracts are stated per operation; an operation may clobber only what it
//! says, and the arithmetic flags.

use contract::abi::layout;
use contract::x86::pte;
use iced_x86::code_asm::*;

use crate::ops::{AsmResult, NativeOps};

/// `IA32_EFER`; bit 0 (SCE) enables SYSCALL/SYSRET.
pub const MSR_EFER: u32 = 0xC000_0080;
/// `IA32_STAR`: the selectors SYSCALL loads (bits 47:32) and SYSRET derives (63:48).
pub const MSR_STAR: u32 = 0xC000_0081;
/// `IA32_LSTAR`: the 64-bit SYSCALL entry point.
pub const MSR_LSTAR: u32 = 0xC000_0082;
/// `IA32_FMASK`: the RFLAGS bits SYSCALL clears.
pub const MSR_SFMASK: u32 = 0xC000_0084;

/// STAR as the kernel sets it: SYSCALL enters with CS 0x08 / SS 0x10; SYSRET returns
/// with CS 0x23 (0x10 + 16, RPL 3) and SS 0x1b (0x10 + 8, RPL 3), the ABI's user
/// selectors.
pub const STAR: u64 = (0x10 << 48) | (0x08 << 32);

/// RFLAGS bits SYSCALL clears on entry: TF, IF, DF, AC.
pub const SFMASK: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 18);

/// The operations of the guest kernel that differ between flavours.
pub trait KernelOps {
    /// Enables SYSCALL and makes the address in RAX its entry point (native:
    /// `rdmsr`/`wrmsr` of EFER.SCE, STAR, LSTAR and SFMASK). Clobbers RAX, RCX, RDX.
    fn set_syscall_entry(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Installs the kernel's trap table at `idt` (256 gates, those of the VMM's stubs
    /// already in it) with `page_fault` as the handler of vector 14 and `user_trap` as
    /// the handler of vector 3, which user mode may raise with `int3` (native: the gates
    /// are written, then `lidt`). Clobbers RAX, RDX.
    fn install_traps(
        &self,
        a: &mut CodeAssembler,
        idt: CodeLabel,
        page_fault: CodeLabel,
        user_trap: CodeLabel,
    ) -> AsmResult;

    /// Switches to the address space whose root is in RAX, with RDX its user root (0:
    /// none; see [`KernelOps::user_slot`]) (native: `mov cr3, rax`, RDX unused).
    /// Clobbers nothing else.
    fn switch_address_space(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Makes the zeroed frame in RAX a page-table root, before the kernel fills it
    /// (native: nothing to do). Clobbers nothing.
    fn new_root(&self, _a: &mut CodeAssembler) -> AsmResult {
        Ok(())
    }

    /// Gives up the root in RAX before the kernel frees its address space: its tables
    /// are ordinary frames again afterwards (native: nothing to do; the kernel calls it
    /// for both roots where the flavour has user roots). Clobbers nothing.
    fn release_root(&self, _a: &mut CodeAssembler) -> AsmResult {
        Ok(())
    }

    /// The page-directory-pointer table the kernel half of every root points at, when
    /// the hypervisor provides it (paravirtual: the VMM's own, which maps RAM and the
    /// monitor's region); `None`: the kernel builds its own (native: RAM supervisor-only
    /// in 2 MiB pages, and the monitor's region).
    fn kernel_half(&self) -> Option<u64> {
        None
    }

    /// The table the kernel half of a process's *user root* points at, for a kernel that
    /// runs user mode on a second root per process (paravirtual, Xen x86-64 PV's pair:
    /// the kernel and its user processes run at the same CPU privilege, so user mode
    /// gets a root that maps the kernel half unreachable); `None`: one root per process
    /// (native).
    fn user_slot(&self) -> Option<u64> {
        None
    }

    /// The kernel's trap table as assembled, before it points the gates it handles at
    /// its own code (native: [`stub_idt`], every gate leading to the VMM's stub).
    fn trap_table_template(&self) -> Vec<u8> {
        stub_idt()
    }

    /// Stores RAX into the page-table entry at the guest-physical address in RDI
    /// (native: `mov [rdi], rax`; the kernel maps RAM at its guest-physical address).
    /// Clobbers nothing else.
    fn pte_store(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Makes every PTE store so far take effect before the kernel reads a table again
    /// (native: nothing to do). Clobbers nothing.
    fn pte_flush(&self, _a: &mut CodeAssembler) -> AsmResult {
        Ok(())
    }

    /// Flushes the TLB entry of the virtual address in RSI (native: `invlpg [rsi]`).
    fn invlpg(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Returns to user mode at RCX with RFLAGS from R11 and the user's RSP already in
    /// RSP (native: `sysretq`).
    fn return_to_user(&self, a: &mut CodeAssembler) -> AsmResult;

    /// In the page-fault handler: the faulting address into RAX (native: `mov rax, cr2`).
    fn read_fault_address(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Returns from the page-fault handler, the error code already popped (native:
    /// `iretq`).
    fn fault_return(&self, a: &mut CodeAssembler) -> AsmResult;

    /// The flags of the kernel's own mappings of RAM (native: present, writable,
    /// supervisor-only).
    fn kernel_map_flags(&self) -> u64;
}

impl KernelOps for NativeOps {
    fn set_syscall_entry(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rax)?;
        a.mov(ecx, MSR_EFER)?;
        a.rdmsr()?;
        a.or(eax, 1)?;
        a.wrmsr()?;
        write_msr(a, MSR_STAR, |a| a.mov(rax, STAR))?;
        write_msr(a, MSR_LSTAR, |a| a.pop(rax))?;
        write_msr(a, MSR_SFMASK, |a| a.mov(rax, SFMASK))
    }

    fn install_traps(
        &self,
        a: &mut CodeAssembler,
        idt: CodeLabel,
        page_fault: CodeLabel,
        user_trap: CodeLabel,
    ) -> AsmResult {
        crate::asm::set_gate(a, idt, contract::x86::vector::PF, page_fault)?;
        crate::asm::set_gate(a, idt, TRAP_ENTRY, user_trap)?;
        // Present, DPL 3, 64-bit interrupt gate: user mode may raise it.
        a.lea(rdx, ptr(idt))?;
        a.mov(word_ptr(rdx + i32::from(TRAP_ENTRY) * 16 + 4), 0xEE00)?;
        a.sub(rsp, 16)?;
        a.mov(word_ptr(rsp), (IDT_GATES * 16 - 1) as i32)?;
        a.lea(rax, ptr(idt))?;
        a.mov(qword_ptr(rsp + 2), rax)?;
        a.lidt(ptr(rsp))?;
        a.add(rsp, 16)
    }

    fn switch_address_space(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(cr3, rax)
    }

    fn pte_store(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(qword_ptr(rdi), rax)
    }

    fn invlpg(&self, a: &mut CodeAssembler) -> AsmResult {
        a.invlpg(byte_ptr(rsi))
    }

    fn return_to_user(&self, a: &mut CodeAssembler) -> AsmResult {
        a.sysretq()
    }

    fn read_fault_address(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(rax, cr2)
    }

    fn fault_return(&self, a: &mut CodeAssembler) -> AsmResult {
        a.iretq()
    }

    fn kernel_map_flags(&self) -> u64 {
        pte::P | pte::RW
    }
}

/// `wrmsr` of the 64-bit value `value` leaves in RAX (clobbers RAX, RCX, RDX).
fn write_msr(
    a: &mut CodeAssembler,
    msr: u32,
    value: impl FnOnce(&mut CodeAssembler) -> AsmResult,
) -> AsmResult {
    value(a)?;
    a.mov(rdx, rax)?;
    a.shr(rdx, 32)?;
    a.mov(ecx, msr)?;
    a.wrmsr()
}

/// The vector user mode raises with `int3` to enter the kernel where SYSCALL does not
/// (see [`super::sys::DETECT`]).
pub const TRAP_ENTRY: u8 = contract::x86::vector::BP;

/// Gates in the kernel's IDT: all 256, so that every vector the kernel does not handle
/// still reaches the VMM's stub for it.
pub const IDT_GATES: u32 = 256;

/// The kernel's IDT as it is assembled: every gate leads to the VMM's stub for its vector
/// (`STUBS + 16 × vector`, DPL 0), exactly as the boot IDT does; the kernel then points
/// the gates it handles at its own code.
pub fn stub_idt() -> Vec<u8> {
    let mut idt = Vec::with_capacity(IDT_GATES as usize * 16);
    for v in 0..IDT_GATES as u64 {
        let (low, high) = contract::x86::interrupt_gate(
            layout::STUBS + v * 16,
            contract::abi::selector::KERNEL_CODE,
            0,
        );
        idt.extend_from_slice(&low.to_le_bytes());
        idt.extend_from_slice(&high.to_le_bytes());
    }
    idt
}
