//! Direct paging's hypercalls: `mmu_update` of the guest's own four-level page tables,
//! `mmuext_op` (pin, unpin) and `new_baseptr` to a pinned root, through the validation
//! model of [`crate::direct_paging`].
//!
//! The model validates; this file keeps the VMM's side of the invariant: a frame that
//! becomes a page table turns supervisor-only in the VMM's own map of RAM (so the guest,
//! at CPL 3, can neither write it there nor read it except through the read-only mappings
//! of its own tables), and gets its entry back when it stops being one. Both the table
//! writes and those entries are stores of the monitor's CPL 0 routine, inside the guest,
//! with a TLB flush.

use std::collections::BTreeMap;

use contract::abi::hypercall::{errno, mmuext};
use machine::setup::{pte, pte_address};
use vm_memory::GuestMemoryMmap;

use super::{Check, Hypervisor};
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
                if frame == self.root {
                    return Err(errno::EPERM);
                }
                self.direct.unpin(frame).map_err(|r| r.errno())?;
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

    /// `new_baseptr` to a root pinned as an L4: it must hold one of the VMM's tables in
    /// the VMM's slot (where the monitor's region, the IDT included, is mapped).
    pub(super) fn direct_baseptr(&mut self, root: u64) -> Check<i64> {
        if self.direct.level_of(root) != Some(Level::L4) {
            return Err(errno::EPERM);
        }
        match self.direct.entry(root, VMM_SLOT) {
            Some(e) if e & pte::P != 0 => {}
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
            // Tables lie below the table end, where every page has a 4 KiB entry.
            let at = pte_address(frame).ok_or(errno::EFAULT)?;
            match (typed, self.protected.get(&frame)) {
                (true, None) => {
                    let original = Self::read_u64(mem, at)?;
                    protect.push((frame, Some(original)));
                    writes.push((at, (original | pte::RW) & !pte::US));
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
}
