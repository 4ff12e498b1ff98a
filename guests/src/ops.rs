//! The pv-ops interface: every workload is written once against [`GuestOps`], and the
//! flavour decides what each sensitive operation becomes — the real instruction for a
//! native guest, a hypercall or a shared-page access for a paravirtual one (the idea of
//! Linux's `paravirt_ops`).
//!
//! Register contracts are stated per operation; an operation may clobber only what it
//! says, and the arithmetic flags (the paravirtual flavour tests and branches).

use contract::abi::port;
use contract::Flavour;
use iced_x86::code_asm::*;

/// Result of emitting code.
pub type AsmResult = Result<(), IcedError>;

/// The sensitive operations a workload may perform.
pub trait GuestOps {
    /// Which flavour these ops build.
    fn flavour(&self) -> Flavour;

    /// Disables interrupts (native: `cli`).
    fn irq_disable(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Enables interrupts (native: `sti`).
    fn irq_enable(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Enables interrupts and waits for one (native: `sti; hlt`, Linux's safe_halt).
    fn safe_halt(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Writes the byte in AL to the console (native: `out 0xE9, al`).
    fn console_putc(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Makes every byte written so far visible (native: nothing to do).
    fn console_flush(&self, a: &mut CodeAssembler) -> AsmResult;

    /// CPUID: leaf in EAX, subleaf in ECX; results in EAX, EBX, ECX, EDX.
    fn cpuid(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Sets the task-priority register from RAX (native: `mov cr8, rax`).
    fn write_cr8(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Reads the task-priority register into RAX (native: `mov rax, cr8`).
    fn read_cr8(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Reads the 8-byte device register at the address in RSI into RAX.
    fn mmio_read(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Writes the PTE at the guest-physical address in RDI with the value in RAX and
    /// flushes the TLB entry of the virtual address in RSI (native: `mov [rdi], rax;
    /// invlpg [rsi]`).
    fn set_pte(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Arms the one-shot timer to fire after EAX microseconds (native: `out 0xF0, eax`).
    fn arm_timer(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Loads the interrupt descriptor table whose 10-byte pseudo-descriptor is at \[RSP\]
    /// (native: `lidt [rsp]`).
    fn load_idt(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Returns from an interrupt or exception handler (native: `iretq`).
    fn iret(&self, a: &mut CodeAssembler) -> AsmResult;

    /// Reads RFLAGS into RAX, with the (virtual) interrupt flag in bit 9 (native:
    /// `pushfq; pop rax`, Linux's `save_fl`).
    fn save_flags(&self, a: &mut CodeAssembler) -> AsmResult {
        a.pushfq()?;
        a.pop(rax)
    }

    /// Loads RFLAGS from RAX, including the interrupt flag in bit 9 (native:
    /// `push rax; popfq`, Linux's `restore_fl`).
    fn restore_flags(&self, a: &mut CodeAssembler) -> AsmResult {
        a.push(rax)?;
        a.popfq()
    }

    /// Ends the run with the exit code in EAX; the result is in RBX (native: `out 0xF4, eax`).
    fn exit(&self, a: &mut CodeAssembler) -> AsmResult;

    /// The operations of the guest kernel ([`crate::kernel`]): its MMU, system calls and
    /// traps; `None` for a flavour that has no kernel yet.
    fn kernel(&self) -> Option<&dyn crate::kernel::KernelOps> {
        None
    }
}

/// The native flavour: the real instructions.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeOps;

impl GuestOps for NativeOps {
    fn flavour(&self) -> Flavour {
        Flavour::Native
    }
    fn irq_disable(&self, a: &mut CodeAssembler) -> AsmResult {
        a.cli()
    }
    fn irq_enable(&self, a: &mut CodeAssembler) -> AsmResult {
        a.sti()
    }
    fn safe_halt(&self, a: &mut CodeAssembler) -> AsmResult {
        a.sti()?;
        a.hlt()
    }
    fn console_putc(&self, a: &mut CodeAssembler) -> AsmResult {
        a.out(u32::from(port::CONSOLE), al)
    }
    fn console_flush(&self, _a: &mut CodeAssembler) -> AsmResult {
        Ok(())
    }
    fn cpuid(&self, a: &mut CodeAssembler) -> AsmResult {
        a.cpuid()
    }
    fn write_cr8(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(cr8, rax)
    }
    fn read_cr8(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(rax, cr8)
    }
    fn mmio_read(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(rax, qword_ptr(rsi))
    }
    fn set_pte(&self, a: &mut CodeAssembler) -> AsmResult {
        a.mov(qword_ptr(rdi), rax)?;
        a.invlpg(byte_ptr(rsi))
    }
    fn arm_timer(&self, a: &mut CodeAssembler) -> AsmResult {
        a.out(u32::from(port::TIMER), eax)
    }
    fn load_idt(&self, a: &mut CodeAssembler) -> AsmResult {
        a.lidt(ptr(rsp))
    }
    fn iret(&self, a: &mut CodeAssembler) -> AsmResult {
        a.iretq()
    }
    fn exit(&self, a: &mut CodeAssembler) -> AsmResult {
        a.out(u32::from(port::EXIT), eax)
    }
    fn kernel(&self) -> Option<&dyn crate::kernel::KernelOps> {
        Some(self)
    }
}
