//! One small unit per emulated instruction, each implementing [`InstructionHandler`]
//! against a [`Cx`] (the guest registers, the virtual CPU and a [`Platform`]), so that
//! each is tested against an in-memory platform without KVM.
//!
//! Trap names (the keys of `RunRecord::traps`) are the lowercase mnemonic (`cli`, `sti`,
//! `hlt`, `in`, `out`, `outsb`, `lidt`, `invlpg`, `iretq`, `cpuid`, `rdmsr`, …), with
//! `rep ` in front of a repeated string instruction, `mov to crN` / `mov from crN` for
//! control-register moves, and `pte write` / `pte read` for MOVs that touch the
//! write-protected page table.

pub mod control_regs;
pub mod cpuid;
pub mod descriptor_tables;
pub mod hlt;
pub mod interrupt_flag;
pub mod iretq;
pub mod msr;
pub mod page_table;
pub mod port_io;
pub mod soft_int;
pub mod string_io;
pub mod syscall;
pub mod tlb;

use contract::Outcome;
use iced_x86::{Code, Instruction, Mnemonic};

use crate::platform::{MemError, Platform};
use crate::vcpu::{GuestRegs, VirtualCpu};

/// What an emulated instruction asks the dispatcher to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Resume after the instruction.
    Next,
    /// Resume where the handler pointed RIP (IRETQ, INT n).
    Jump,
    /// Resume at the same instruction (an interrupted REP, a HLT cut by the deadline).
    Retry,
    /// End the run.
    Stop(Outcome),
}

/// Why an instruction cannot complete normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The instruction (or this use of it) is not emulated.
    Unhandled(String),
    /// The guest reached for the monitor.
    Monitor(String),
    /// A memory operand is outside guest RAM or not mapped.
    BadMemory(String),
    /// No device at that port.
    BadDevice(String),
    /// The guest has no handler for an exception it raised.
    NoHandler(String),
    /// Deliver this exception to the guest (it is the guest's own fault).
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, for vectors that push one.
        error_code: Option<u64>,
        /// What caused it, for the record if it cannot be delivered.
        context: String,
    },
}

/// The emulation context of one trap.
#[derive(Debug)]
pub struct Cx<'a> {
    /// Guest registers (RIP at the trapping instruction).
    pub regs: &'a mut GuestRegs,
    /// The virtual CPU.
    pub cpu: &'a mut VirtualCpu,
    /// The machine.
    pub p: &'a mut dyn Platform,
    /// Incremented for every event reflected into the guest.
    pub injections: &'a mut u64,
    /// The shadow MMU, when the engine does shadow paging.
    pub shadow: Option<&'a mut crate::shadow::ShadowMmu>,
}

impl std::fmt::Debug for dyn Platform + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Platform")
    }
}

impl Cx<'_> {
    /// The effective address of memory operand `op`.
    pub fn mem_addr(&self, insn: &Instruction, op: u32) -> Result<u64, Fault> {
        let regs = *self.regs;
        insn.virtual_address(op, 0, |r, _, _| regs.get(r))
            .ok_or_else(|| {
                Fault::Unhandled(format!(
                    "cannot address the operand of `{}`",
                    monitor::text_of(insn)
                ))
            })
    }

    /// Reads `N` bytes of guest memory.
    pub fn read_bytes<const N: usize>(&mut self, gva: u64, what: &str) -> Result<[u8; N], Fault> {
        let mut b = [0u8; N];
        self.p.read(gva, &mut b).map_err(|e| mem_fault(e, what))?;
        Ok(b)
    }

    /// Whether a shadow is active (the guest runs on its own page tables).
    pub fn shadowing(&self) -> bool {
        self.shadow.as_ref().is_some_and(|s| s.active().is_some())
    }

    /// Runs `f` on the shadow MMU with a reader of guest-physical memory, then applies the
    /// effects it asks for on the real CPU.
    pub fn with_shadow<T>(
        &mut self,
        f: impl FnOnce(
            &mut crate::shadow::ShadowMmu,
            &mut dyn FnMut(u64) -> Option<u64>,
            &mut crate::shadow::Effects,
        ) -> Result<T, crate::shadow::ShadowError>,
    ) -> Result<T, Fault> {
        let Some(mmu) = self.shadow.as_deref_mut() else {
            return Err(Fault::Unhandled("this engine has no shadow MMU".into()));
        };
        let p = &mut *self.p;
        let mut fx = crate::shadow::Effects::default();
        let result = {
            let mut read = |gpa: u64| {
                let mut b = [0u8; 8];
                p.read_phys(gpa, &mut b)
                    .ok()
                    .map(|()| u64::from_le_bytes(b))
            };
            f(mmu, &mut read, &mut fx)
        };
        if !fx.is_empty() {
            p.apply_shadow(fx).map_err(Fault::Unhandled)?;
        }
        let out = result.map_err(shadow_fault)?;
        let walk = mmu
            .active()
            .map(|(_, prv)| prv == crate::shadow::Privilege::Kernel);
        p.set_walk(walk.map(|_| self.cpu.cr3), walk.unwrap_or(false));
        Ok(out)
    }

    /// Writes guest memory.
    pub fn write_bytes(&mut self, gva: u64, data: &[u8], what: &str) -> Result<(), Fault> {
        self.p.write(gva, data).map_err(|e| mem_fault(e, what))
    }
}

/// A shadow-paging refusal as the fault that ends the run.
pub fn shadow_fault(e: crate::shadow::ShadowError) -> Fault {
    if e.is_monitor_violation() {
        Fault::Monitor(e.to_string())
    } else {
        Fault::BadMemory(e.to_string())
    }
}

/// Turns a memory error into the fault that ends the run.
pub fn mem_fault(e: MemError, what: &str) -> Fault {
    match e {
        MemError::Supervisor { addr } => Fault::Monitor(format!(
            "{what} at {addr:#x} reaches the monitor's memory ({})",
            crate::dispatch::monitor_region(addr)
        )),
        MemError::ReadOnly { addr } => {
            Fault::BadMemory(format!("{what} at {addr:#x}: the page is read-only"))
        }
        MemError::NotMapped { addr } => {
            Fault::BadMemory(format!("{what} at {addr:#x}: the page is not mapped"))
        }
        MemError::NotRam { addr } => {
            Fault::BadMemory(format!("{what} at {addr:#x}: not guest RAM"))
        }
    }
}

/// An emulated instruction.
pub trait InstructionHandler: Sync {
    /// Name of the trap in the record (default: the lowercase mnemonic).
    fn name(&self, insn: &Instruction) -> String {
        crate::dispatch::mnemonic_name(insn)
    }
    /// Emulates `insn` (RIP still points at it).
    fn emulate(&self, insn: &Instruction, cx: &mut Cx<'_>) -> Result<Step, Fault>;
}

/// The handler for an instruction, if this engine emulates it.
pub fn handler_for(insn: &Instruction) -> Option<&'static dyn InstructionHandler> {
    Some(match insn.mnemonic() {
        Mnemonic::Cli => &interrupt_flag::Cli,
        Mnemonic::Sti => &interrupt_flag::Sti,
        Mnemonic::Hlt => &hlt::Hlt,
        Mnemonic::In => &port_io::In,
        Mnemonic::Out => &port_io::Out,
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => &string_io::Ins,
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => &string_io::Outs,
        Mnemonic::Mov => match insn.code() {
            Code::Mov_cr_r64 | Code::Mov_cr_r32 => &control_regs::MovToCr,
            Code::Mov_r64_cr | Code::Mov_r32_cr => &control_regs::MovFromCr,
            _ => return None,
        },
        Mnemonic::Rdmsr => &msr::Rdmsr,
        Mnemonic::Wrmsr => &msr::Wrmsr,
        Mnemonic::Lgdt => &descriptor_tables::Lgdt,
        Mnemonic::Lidt => &descriptor_tables::Lidt,
        Mnemonic::Sgdt => &descriptor_tables::Sgdt,
        Mnemonic::Sidt => &descriptor_tables::Sidt,
        Mnemonic::Sldt => &descriptor_tables::Sldt,
        Mnemonic::Str => &descriptor_tables::Str,
        Mnemonic::Smsw => &descriptor_tables::Smsw,
        Mnemonic::Invlpg => &tlb::Invlpg,
        Mnemonic::Wbinvd | Mnemonic::Invd => &tlb::Wbinvd,
        Mnemonic::Iretq => &iretq::Iretq,
        Mnemonic::Cpuid => &cpuid::Cpuid,
        Mnemonic::Int | Mnemonic::Int3 => &soft_int::SoftInt,
        Mnemonic::Syscall => &syscall::Syscall,
        Mnemonic::Sysretq => &syscall::Sysretq,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod mock;
