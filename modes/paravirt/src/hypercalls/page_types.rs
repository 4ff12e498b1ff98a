//! Page types: which frames are page tables, and how many writable mappings each frame
//! has.

use std::collections::{BTreeMap, BTreeSet};

use contract::abi::{layout, PAGE_SIZE};
use machine::setup::pte;

use super::PTE_FRAME;

/// Xen's invariant, kept by the VMM: a frame is never a page table (pinned) and writable
/// by the guest at once. The guest's only way to map a frame is its scratch page table,
/// which it changes through `mmu_update` alone; the VMM keeps its own copy of that table as
/// validated, and from it the number of writable mappings of every frame. (The identity
/// map of RAM is the VMM's: pinning a frame makes its entry there read-only.)
#[derive(Debug, Clone)]
pub(super) struct PageTypes {
    /// Page-table frames the guest may not write (nor have the VMM write for it).
    pub(super) pinned: BTreeSet<u64>,
    /// The scratch page table, as validated (what the monitor routine wrote into it).
    pub(super) scratch: Vec<u64>,
    /// Writable mappings of each frame through the scratch page table.
    pub(super) writable: BTreeMap<u64, u32>,
}

impl PageTypes {
    pub(super) fn new(scratch: Vec<u64>) -> Self {
        let mut t = PageTypes {
            pinned: BTreeSet::from([layout::SCRATCH_PT]),
            scratch: vec![0; 512],
            writable: BTreeMap::new(),
        };
        for (i, e) in scratch.into_iter().enumerate().take(512) {
            t.set(i, e);
        }
        t
    }

    pub(super) fn writable_frame(pte: u64) -> Option<u64> {
        (pte & pte::P != 0 && pte & pte::RW != 0).then_some(pte & PTE_FRAME)
    }

    /// Records a validated write of scratch entry `index`.
    pub(super) fn set(&mut self, index: usize, pte: u64) {
        if let Some(old) = Self::writable_frame(self.scratch[index]) {
            if let Some(n) = self.writable.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.writable.remove(&old);
                }
            }
        }
        self.scratch[index] = pte;
        if let Some(new) = Self::writable_frame(pte) {
            *self.writable.entry(new).or_default() += 1;
        }
    }

    /// Writable mappings of `frame` the guest holds.
    pub(super) fn writable_mappings(&self, frame: u64) -> u32 {
        self.writable.get(&frame).copied().unwrap_or(0)
    }

    pub(super) fn is_pinned(&self, frame: u64) -> bool {
        self.pinned.contains(&frame)
    }

    /// Whether `[addr, addr + len)` touches a pinned page table.
    pub(super) fn touches_pinned(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        self.pinned.iter().any(|&p| addr < p + PAGE_SIZE && p < end)
    }
}
