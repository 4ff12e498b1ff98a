//! Direct paging's hypercalls: `mmu_update` of the guest's own four-level page tables,
//! `mmuext_op` (pin, unpin) and `new_baseptr` to a pinned root, through the validation
//! model of [`crate::direct_paging`].
//!
//! The model validates; this file keeps the VMM's side of the invariant: a frame that
//! becomes a page table turns read-only in the VMM's own map of RAM (so the guest, at
//! CPL 3, reads its tables there, as Xen's PV guests read theirs, but cannot write them),
//! and gets its entry back when it stops being one. Both the table
//! writes and those entries are stores of the monitor's CPL 0 routine, inside the guest,
//! with a TLB flush.

use std::collections::BTreeMap;

use contract::abi::hypercall::{callback, errno, mmuext};
use contract::abi::layout;
use machine::setup::pte;
use vm_memory::GuestMemoryMmap;

use super::{ram_pte_address, Check, Hypervisor};
use crate::direct_paging::{DirectPaging, Level, VMM_SLOT};

impl Hypervisor {
    /// `mmu_update` requests for the guest's own tables.
    pub(super) fn direct_update(
        &mut self,
        mem: &GuestMemoryMmap,
        updates: &[(u64, u64)],
        flush: bool,
    ) -> Check<i64> {
        self.share_types();
        let saved = self.direct.clone();
        let writes = self
            .direct
            .update_batch(mem, updates)
            .map_err(|(_, r)| r.errno())?;
        self.commit(mem, saved, writes, flush)?;
        Ok(updates.len() as i64)
    }

    /// `mmuext_op(op, frame, level)`.
    pub(super) fn mmuext_op(
        &mut self,
        mem: &GuestMemoryMmap,
        op: u64,
        frame: u64,
        level: u64,
    ) -> Check<i64> {
        self.share_types();
        let saved = self.direct.clone();
        match op {
            mmuext::PIN => {
                let level = Level::from_number(level).ok_or(errno::EINVAL)?;
                self.direct.pin(mem, frame, level).map_err(|r| r.errno())?;
            }
            mmuext::UNPIN => {
                if level != 0 {
                    return Err(errno::EINVAL);
                }
                // Xen refuses to unpin the table in use.
                if frame == self.root || Some(frame) == self.user_root {
                    return Err(errno::EPERM);
                }
                self.direct.unpin(frame).map_err(|r| r.errno())?;
            }
            mmuext::NEW_USER_BASEPTR => {
                if level != 0 {
                    return Err(errno::EINVAL);
                }
                if frame == 0 {
                    self.user_root = None;
                    return Ok(0);
                }
                // A pinned root whose VMM slot is the user one: user mode then reaches
                // neither the kernel's memory nor the monitor's shared pages.
                if !self.direct.is_pinned(frame)
                    || self.direct.level_of(frame) != Some(Level::L4)
                    || self.direct.entry(frame, VMM_SLOT).map(|e| e & pte::FRAME)
                        != Some(layout::PDPT_USER)
                {
                    return Err(errno::EPERM);
                }
                self.user_root = Some(frame);
                return Ok(0);
            }
            mmuext::INVLPG => {
                if level != 0 {
                    return Err(errno::EINVAL);
                }
                // The monitor reloads CR3: the whole TLB goes, this entry with it.
                self.mmu_sync.flush = true;
                return Ok(0);
            }
            _ => return Err(errno::EINVAL),
        }
        self.commit(mem, saved, Vec::new(), false)?;
        Ok(0)
    }

    /// Tells the model what the scratch page table holds: the frames it maps writable,
    /// and the roots pinned through the older `new_baseptr` rule (neither becomes a table
    /// of the model, and those roots are never mapped writable by it).
    fn share_types(&mut self) {
        self.direct
            .set_foreign_writable(self.types.writable.clone());
        self.direct.set_reserved_tables(self.types.pinned.clone());
    }

    /// `new_baseptr` to a root pinned as an L4: it must hold the VMM's table in the VMM's
    /// slot (where guest RAM and the monitor's region, the IDT included, are mapped).
    pub(super) fn direct_baseptr(&mut self, root: u64) -> Check<i64> {
        if self.direct.level_of(root) != Some(Level::L4) {
            return Err(errno::EPERM);
        }
        match self.direct.entry(root, VMM_SLOT) {
            Some(e) if e & pte::P != 0 && e & pte::FRAME == layout::PDPT => {}
            _ => return Err(errno::EPERM),
        }
        self.mmu_sync.new_root = Some(root);
        self.root = root;
        Ok(0)
    }

    /// Hands `writes` and the protection changes of the frames that changed type to the
    /// monitor; if the routine cannot take them all in one entry the operation is undone
    /// (`saved` restored, the counters kept) and refused with `E2BIG`.
    fn commit(
        &mut self,
        mem: &GuestMemoryMmap,
        saved: DirectPaging,
        mut writes: Vec<(u64, u64)>,
        flush: bool,
    ) -> Check {
        let mut net = BTreeMap::new();
        for (frame, typed) in self.direct.take_type_changes() {
            net.insert(frame, typed);
        }
        let mut protect = Vec::new();
        for (&frame, &typed) in &net {
            // Every page of RAM has a 4 KiB entry in this mode.
            let at = ram_pte_address(frame).ok_or(errno::EFAULT)?;
            match (typed, self.protected.get(&frame)) {
                (true, None) => {
                    let original = Self::read_u64(mem, at)?;
                    protect.push((frame, Some(original)));
                    writes.push((at, (original & !pte::RW) | pte::US | pte::P));
                }
                (false, Some(&original)) => {
                    protect.push((frame, None));
                    writes.push((at, original));
                }
                _ => {}
            }
        }
        if self.mmu_sync.writes.len() + writes.len() > ::monitor::routine::MAX_STORES {
            let counters = std::mem::take(&mut self.direct.counters);
            self.direct = saved;
            self.direct.counters = counters;
            return Err(errno::E2BIG);
        }
        for (frame, original) in protect {
            match original {
                Some(e) => self.protected.insert(frame, e),
                None => self.protected.remove(&frame),
            };
        }
        if flush || !net.is_empty() {
            self.mmu_sync.flush = true;
        }
        self.mmu_sync.writes.extend(writes);
        Ok(())
    }

    /// `set_callback(kind, address)`: the guest kernel's system-call entry.
    pub(super) fn set_callback(&mut self, kind: u64, address: u64) -> Check<i64> {
        if kind != callback::SYSCALL {
            return Err(errno::EINVAL);
        }
        // A canonical lower-half address (the kernel may enter through its user half).
        if address >= 1 << 47 {
            return Err(errno::EINVAL);
        }
        self.syscall_callback = Some(address);
        Ok(0)
    }

    /// The system-call entry the guest kernel registered.
    pub fn syscall_callback(&self) -> Option<u64> {
        self.syscall_callback
    }

    /// The guest kernel's user root, if it registered one.
    pub fn user_root(&self) -> Option<u64> {
        self.user_root
    }

    /// The root the guest runs on (its kernel's).
    pub fn kernel_root(&self) -> u64 {
        self.root
    }
}
