//! The monitor's own CPL 0 routine: it applies validated `mmu_update` requests inside
//! the guest and flushes the TLB, then `iretq`s back to the guest at CPL 3.
//!
//! Why not write the PTEs from the VMM's side of guest memory? Because KVM may shadow the
//! guest's page tables (it does on backends without EPT/NPT): it learns about PTE changes
//! by write-protecting the page-table pages against *guest* writes. A write through the
//! VMM's mapping bypasses that, and the shadow keeps the old translation even across a
//! TLB flush. So the monitor does what Xen's ring-0 hypervisor did: the validated writes
//! happen at CPL 0, in the guest's address space, followed by a CR3 reload.

use contract::abi::{layout, selector};
use iced_x86::code_asm::*;
use kvm_bindings::{kvm_regs, kvm_sregs};
use machine::setup::{long_mode_sregs, GuestPrivilege};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Address of the routine: in the VMM's supervisor-only region, after the TSS and its
/// I/O bitmap (0x7000–0x9069) and before the fault stubs (0xA000).
pub const ROUTINE: u64 = layout::PARAVIRT_ROUTINE;
/// The requests the routine applies, copied here by the VMM after validation: the
/// bottom 8 KiB of the monitor stack, which the fault stubs (one frame at a time at its
/// top) never reach.
pub const REQUESTS: u64 = layout::MONITOR_STACK_BOTTOM;
/// Capacity of [`REQUESTS`] in `{ptr, val}` pairs.
pub const MAX_REQUESTS: u64 = 512;
/// Where the VMM puts the routine's frame: `{rip, cs, rflags, rsp, ss}` for its `iretq`,
/// then the request count and the flush flag.
pub const FRAME: u64 = layout::MONITOR_STACK_TOP - 0x100;

// The routine sits after the TSS and its I/O bitmap; the requests stay below the frame.
const _: () = assert!(ROUTINE >= layout::TSS + machine::setup::TSS_SIZE);
const _: () = assert!(REQUESTS + MAX_REQUESTS * 16 <= FRAME);

use contract::x86::rflags::TF as RFLAGS_TF;

/// The routine's machine code, assembled for [`ROUTINE`].
pub fn routine_code() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut lp = a.create_label();
    let mut flush = a.create_label();
    let mut out = a.create_label();
    for r in [rcx, rsi, rdi, r8] {
        a.push(r)?;
    }
    a.mov(rsi, qword_ptr(rsp + 32 + 40))?; // count
    a.mov(edi, REQUESTS as u32)?;
    a.test(rsi, rsi)?;
    a.jz(flush)?;
    a.set_label(&mut lp)?;
    a.mov(rcx, qword_ptr(rdi))?;
    a.mov(r8, qword_ptr(rdi + 8))?;
    a.mov(qword_ptr(rcx), r8)?;
    a.add(rdi, 16)?;
    a.dec(rsi)?;
    a.jnz(lp)?;
    a.set_label(&mut flush)?;
    a.cmp(qword_ptr(rsp + 32 + 48), 0)?; // flush flag
    a.je(out)?;
    a.mov(rcx, cr3)?;
    a.mov(cr3, rcx)?;
    a.set_label(&mut out)?;
    for r in [r8, rdi, rsi, rcx] {
        a.pop(r)?;
    }
    a.iretq()?;
    a.assemble(ROUTINE)
}

/// Writes the routine into guest memory.
pub fn install(mem: &GuestMemoryMmap) -> Result<(), String> {
    let code = routine_code().map_err(|e| e.to_string())?;
    if ROUTINE + code.len() as u64 > layout::STUBS {
        return Err(format!(
            "the monitor routine is {} bytes, too long",
            code.len()
        ));
    }
    mem.write_slice(&code, GuestAddress(ROUTINE))
        .map_err(|e| e.to_string())
}

/// Points the vCPU at the routine: copies `writes` to [`REQUESTS`], builds the frame
/// that returns to the guest context in `regs`, and switches `regs`/`sregs` to CPL 0.
pub fn enter(
    mem: &GuestMemoryMmap,
    regs: &mut kvm_regs,
    sregs: &mut kvm_sregs,
    writes: &[(u64, u64)],
    flush: bool,
) -> Result<(), String> {
    if writes.len() as u64 > MAX_REQUESTS {
        return Err(format!(
            "{} requests exceed the monitor's buffer",
            writes.len()
        ));
    }
    let mut buf = Vec::with_capacity(writes.len() * 16);
    for (ptr, val) in writes {
        buf.extend_from_slice(&ptr.to_le_bytes());
        buf.extend_from_slice(&val.to_le_bytes());
    }
    mem.write_slice(&buf, GuestAddress(REQUESTS))
        .map_err(|e| e.to_string())?;
    let frame = [
        regs.rip,
        u64::from(selector::USER_CODE),
        regs.rflags,
        regs.rsp,
        u64::from(selector::USER_DATA),
        writes.len() as u64,
        u64::from(flush),
    ];
    for (i, w) in frame.iter().enumerate() {
        mem.write_obj(*w, GuestAddress(FRAME + i as u64 * 8))
            .map_err(|e| e.to_string())?;
    }
    regs.rip = ROUTINE;
    regs.rsp = FRAME;
    // The routine runs without the guest's trap flag; its `iretq` restores the guest's.
    regs.rflags &= !RFLAGS_TF;
    let mut kernel = *sregs;
    long_mode_sregs(&mut kernel, GuestPrivilege::Kernel, false);
    sregs.cs = kernel.cs;
    sregs.ss = kernel.ss;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routine_fits_before_the_fault_stubs() {
        let code = routine_code().unwrap();
        assert!(ROUTINE + code.len() as u64 <= layout::STUBS);
        assert_eq!(*code.last().unwrap(), 0xCF); // iretq
    }
}
