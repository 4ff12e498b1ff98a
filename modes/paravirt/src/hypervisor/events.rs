//! Events: the trap table (`set_trap_table`), the timer (`set_timer`), callback frames,
//! delivery of pending events and `iret`.

use contract::abi::hypercall::{errno, shared_info, MAX_TRAP_TABLE};
use contract::abi::{selector, TIMER_VECTOR};
use contract::record::{FaultKind, Outcome};
use kvm_bindings::kvm_regs;
use vm_memory::GuestMemoryMmap;

use super::*;

impl Hypervisor {
    /// `set_timer(micros)`: arms the one-shot timer.
    pub(super) fn set_timer(&mut self, micros: u64) -> Check<i64> {
        let micros = u32::try_from(micros).map_err(|_| errno::EINVAL)?;
        self.devices.timer.arm(micros);
        Ok(0)
    }

    pub(super) fn set_trap_table(
        &mut self,
        mem: &GuestMemoryMmap,
        table: u64,
        bytes: u64,
    ) -> Check<i64> {
        if bytes == 0 {
            self.trap_table.clear();
            return Ok(0);
        }
        if bytes % 16 != 0 {
            return Err(errno::EINVAL);
        }
        self.guest_range(table, bytes, MAX_TRAP_TABLE)?;
        let mut callbacks = BTreeMap::new();
        for v in 0..bytes / 16 {
            let low = Self::read_u64(mem, table + v * 16)?;
            let high = Self::read_u64(mem, table + v * 16 + 8)?;
            // Only present interrupt or trap gates register a callback.
            let Some(gate) = contract::x86::decode_gate(low, high) else {
                continue;
            };
            let handler = gate.handler;
            if handler >= self.ram_size {
                return Err(errno::EINVAL);
            }
            callbacks.insert(v as u8, handler);
        }
        let n = callbacks.len() as i64;
        self.trap_table = callbacks;
        Ok(n)
    }

    // ------------------------------------------------------------ events

    /// Pushes a callback frame `{[error code], rip, cs, rflags, rsp, ss}` on the guest
    /// stack at `regs.rsp` (aligned down to 16 bytes, as the CPU does), masks events and
    /// points `regs` at `handler`. The saved RFLAGS carry the virtual IF.
    pub fn push_callback_frame(
        &mut self,
        mem: &GuestMemoryMmap,
        regs: &mut kvm_regs,
        handler: u64,
        error_code: Option<u64>,
    ) -> Result<(), Outcome> {
        let virtual_if = if self.masked(mem) { 0 } else { RFLAGS_IF };
        let mut frame = Vec::with_capacity(6);
        frame.extend(error_code);
        frame.extend([
            regs.rip,
            u64::from(selector::USER_CODE),
            (regs.rflags & !RFLAGS_IF) | virtual_if,
            regs.rsp,
            u64::from(selector::USER_DATA),
        ]);
        let size = frame.len() as u64 * 8;
        let top = regs.rsp & !0xF;
        let base = top.wrapping_sub(size);
        if self.writable_range(base, size, size).is_err() {
            return Err(Outcome::GuestFault {
                kind: FaultKind::BadMemoryAccess,
                rip: Some(regs.rip),
                detail: format!(
                    "cannot deliver an event: the guest stack at {:#x} is not writable guest RAM",
                    regs.rsp
                ),
            });
        }
        for (i, w) in frame.iter().enumerate() {
            let _ = Self::write_u64(mem, base + i as u64 * 8, *w);
        }
        self.set_mask(mem, true);
        regs.rsp = base;
        regs.rip = handler;
        self.injections += 1;
        Ok(())
    }

    /// Delivers the pending timer event to its callback if it can be delivered now.
    pub fn deliver_pending(
        &mut self,
        mem: &GuestMemoryMmap,
        regs: &mut kvm_regs,
    ) -> Result<bool, Outcome> {
        if !self.deliverable(mem) {
            return Ok(false);
        }
        let handler = self.trap_table[&TIMER_VECTOR];
        self.push_callback_frame(mem, regs, handler, None)?;
        Self::set_shared(mem, shared_info::UPCALL_PENDING, 0u8);
        Ok(true)
    }

    /// `iret`: pops `{rax, rip, cs, rflags, rsp, ss}` at `regs.rsp` into `regs` and sets
    /// the event mask from the saved IF. `Err` is the error code for a bad frame.
    pub fn iret(&mut self, mem: &GuestMemoryMmap, regs: &mut kvm_regs) -> Check {
        self.guest_range(regs.rsp, 48, 48)?;
        let w = |i: u64| Self::read_u64(mem, regs.rsp + i * 8);
        let (rax, rip, cs, rflags, rsp, ss) = (w(0)?, w(1)?, w(2)?, w(3)?, w(4)?, w(5)?);
        if cs != u64::from(selector::USER_CODE) || ss != u64::from(selector::USER_DATA) {
            return Err(errno::EINVAL);
        }
        if rip >= self.ram_size {
            return Err(errno::EFAULT);
        }
        regs.rax = rax;
        regs.rip = rip;
        regs.rsp = rsp;
        regs.rflags = (regs.rflags & !RFLAGS_USER) | (rflags & RFLAGS_USER);
        self.set_mask(mem, rflags & RFLAGS_IF == 0);
        Ok(())
    }

    /// Records where the last page fault happened, for the guest's handler.
    pub fn set_fault_addr(&self, mem: &GuestMemoryMmap, cr2: u64) {
        Self::set_shared(mem, shared_info::FAULT_ADDR, cr2);
    }
}
