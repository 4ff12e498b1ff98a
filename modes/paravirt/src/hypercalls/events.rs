//! Events: the trap table (`set_trap_table`), the timer (`set_timer`), callback frames,
//! delivery of pending events and `iret`.

use ::monitor::frame::{self, Frame};
use contract::abi::hypercall::{errno, shared_info, MAX_TRAP_TABLE};
use contract::abi::{selector, TIMER_VECTOR};
use contract::record::{FaultKind, Outcome};
use contract::x86::{decode_gate, GATE_SIZE};
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
        if bytes % GATE_SIZE != 0 {
            return Err(errno::EINVAL);
        }
        self.guest_range(table, bytes, MAX_TRAP_TABLE)?;
        let mut callbacks = BTreeMap::new();
        for v in 0..bytes / GATE_SIZE {
            let low = Self::read_u64(mem, table + v * GATE_SIZE)?;
            let high = Self::read_u64(mem, table + v * GATE_SIZE + 8)?;
            // Only present interrupt or trap gates register a callback.
            let Some(gate) = decode_gate(low, high) else {
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

    /// The frame of the code `regs` describe, as a callback sees it: its RIP and RSP, the
    /// guest's selectors, and RFLAGS carrying the virtual IF (events unmasked) in place of
    /// the real one.
    fn interrupted_frame(&self, mem: &GuestMemoryMmap, regs: &kvm_regs) -> Frame {
        let virtual_if = if self.masked(mem) { 0 } else { rflags::IF };
        Frame {
            rip: regs.rip,
            cs: u64::from(selector::USER_CODE),
            rflags: (regs.rflags & !rflags::IF) | virtual_if,
            rsp: regs.rsp,
            ss: u64::from(selector::USER_DATA),
        }
    }

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
        let interrupted = self.interrupted_frame(mem, regs);
        let base = interrupted
            .push(error_code, |at, bytes| {
                let size = bytes.len() as u64;
                self.writable_range(at, size, size)?;
                mem.write_slice(bytes, GuestAddress(at))
                    .map_err(|_| errno::EFAULT)
            })
            .map_err(|_| Outcome::GuestFault {
                kind: FaultKind::BadMemoryAccess,
                rip: Some(regs.rip),
                detail: format!(
                    "cannot deliver an event: the guest stack at {:#x} is not writable guest RAM",
                    regs.rsp
                ),
            })?;
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
        if self.in_user {
            // The `iret` that just returned to user mode unmasked it: the event
            // interrupts user mode, so it enters the kernel as any event of user mode does
            // (kernel root, event stack) — never on the user's stack and root, where the
            // kernel's handler would run as user mode with its frame in the process's
            // hands. The caller loads [`MmuSync::new_root`].
            self.bounce_from_user(mem, regs, handler, None)?;
        } else {
            self.push_callback_frame(mem, regs, handler, None)?;
        }
        Self::set_shared(mem, shared_info::UPCALL_PENDING, 0u8);
        Ok(true)
    }

    /// `iret`: pops `{rax, rip, cs, rflags, rsp, ss}` at `regs.rsp` into `regs` and sets
    /// the event mask from the saved IF. A guest kernel with a user root returns to user
    /// mode: the VMM loads the user root (the frame may then lie on the event stack, where
    /// callbacks from user mode are delivered, and RIP in the user half). `Err` is the
    /// error code for a bad frame.
    pub fn iret(&mut self, mem: &GuestMemoryMmap, regs: &mut kvm_regs) -> Check {
        let size = 8 + frame::SIZE;
        let to_user = self.user_root.filter(|_| !self.in_user);
        if !(to_user.is_some() && on_event_stack(regs.rsp, size)) {
            self.guest_range(regs.rsp, size, size)?;
        }
        let rax = Self::read_u64(mem, regs.rsp)?;
        let f = Frame::pop(regs.rsp + 8, |at, buf| {
            mem.read_slice(buf, GuestAddress(at))
                .map_err(|_| errno::EFAULT)
        })?;
        if f.cs != u64::from(selector::USER_CODE) || f.ss != u64::from(selector::USER_DATA) {
            return Err(errno::EINVAL);
        }
        let rip_limit = if to_user.is_some() {
            USER_LIMIT
        } else {
            self.ram_size
        };
        if f.rip >= rip_limit {
            return Err(errno::EFAULT);
        }
        if let Some(user) = to_user {
            self.mmu_sync.new_root = Some(user);
            self.in_user = true;
            self.count_mode("root_switches");
        }
        regs.rax = rax;
        regs.rip = f.rip;
        regs.rsp = f.rsp;
        regs.rflags = (regs.rflags & !RFLAGS_USER) | (f.rflags & RFLAGS_USER);
        self.set_mask(mem, f.rflags & rflags::IF == 0);
        Ok(())
    }

    /// Bounces an exception of guest user mode to the kernel's callback `handler`: the
    /// kernel's root is loaded, the frame `{[error code], rip, cs, rflags, rsp, ss}` is
    /// pushed on the event stack (the kernel's stack for events from user mode, the
    /// virtual TSS.RSP0 of the other deprivileged modes), events are masked and `regs`
    /// point at the handler. The caller loads [`MmuSync::new_root`].
    pub fn bounce_from_user(
        &mut self,
        mem: &GuestMemoryMmap,
        regs: &mut kvm_regs,
        handler: u64,
        error_code: Option<u64>,
    ) -> Result<(), Outcome> {
        let interrupted = self.interrupted_frame(mem, regs);
        let top = Frame {
            rsp: layout::EVENT_STACK + PAGE_SIZE,
            ..interrupted
        };
        let at = top.push_address(error_code);
        let base = interrupted_push(mem, &interrupted, at, error_code);
        self.enter_kernel();
        self.set_mask(mem, true);
        regs.rsp = base;
        regs.rip = handler;
        self.injections += 1;
        Ok(())
    }

    /// Switches to virtual kernel mode: the kernel's root is loaded.
    pub fn enter_kernel(&mut self) {
        self.in_user = false;
        self.mmu_sync.new_root = Some(self.root);
        self.count_mode("root_switches");
    }

    /// Records where the last page fault happened, for the guest's handler.
    pub fn set_fault_addr(&self, mem: &GuestMemoryMmap, cr2: u64) {
        Self::set_shared(mem, shared_info::FAULT_ADDR, cr2);
    }
}

/// Addresses below this are the canonical lower half, where a guest kernel's user
/// processes live.
const USER_LIMIT: u64 = 1 << 47;

/// Whether `[addr, addr + len)` lies on the event stack page.
fn on_event_stack(addr: u64, len: u64) -> bool {
    addr >= layout::EVENT_STACK
        && addr
            .checked_add(len)
            .is_some_and(|end| end <= layout::EVENT_STACK + PAGE_SIZE)
}

/// Writes `frame` (with `error_code`) at `at` on the event stack; returns `at`.
fn interrupted_push(mem: &GuestMemoryMmap, frame: &Frame, at: u64, error_code: Option<u64>) -> u64 {
    // The event stack is a page of the monitor's region, always present.
    let _ = mem.write_slice(&frame.to_bytes(error_code), GuestAddress(at));
    at
}
