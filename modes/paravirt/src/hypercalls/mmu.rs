//! `mmu_update` and `new_baseptr`: validated page-table updates and pinned roots, under
//! Xen's invariant (see [`super::page_types`]).

use contract::abi::hypercall::{errno, mmu, MAX_BATCH};
use contract::abi::{layout, PAGE_SIZE};
use machine::setup::pte;
use vm_memory::GuestMemoryMmap;

use super::*;

impl Hypervisor {
    pub(super) fn mmu_update(
        &mut self,
        mem: &GuestMemoryMmap,
        reqs: u64,
        count: u64,
        flags: u64,
    ) -> Check<i64> {
        if flags & !mmu::FLUSH_TLB != 0 {
            return Err(errno::EINVAL);
        }
        if count > MAX_BATCH {
            return Err(errno::E2BIG);
        }
        self.guest_range(
            reqs,
            count * mmu::REQUEST_SIZE,
            MAX_BATCH * mmu::REQUEST_SIZE,
        )?;
        // One hypercall (a multicall included) applies at most MAX_BATCH requests.
        if self.mmu_sync.writes.len() as u64 + count > MAX_BATCH {
            return Err(errno::E2BIG);
        }
        let first = if count > 0 {
            Self::read_u64(mem, reqs)?
        } else {
            layout::SCRATCH_PT
        };
        if !(layout::SCRATCH_PT..layout::SCRATCH_PT + PAGE_SIZE).contains(&first) {
            // The guest's own four-level tables: direct paging.
            let updates = (0..count)
                .map(|i| {
                    let at = reqs + i * mmu::REQUEST_SIZE;
                    Ok((Self::read_u64(mem, at)?, Self::read_u64(mem, at + 8)?))
                })
                .collect::<Check<Vec<_>>>()?;
            return self.direct_update(mem, &updates, flags & mmu::FLUSH_TLB != 0);
        }
        let mut updates = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = reqs + i * mmu::REQUEST_SIZE;
            let (ptr, val) = (Self::read_u64(mem, at)?, Self::read_u64(mem, at + 8)?);
            self.check_pte_update(ptr, val)?;
            updates.push((ptr, val));
        }
        // All valid: the page types follow at once, so a later call of the same hypercall
        // (a multicall) already sees the new mappings.
        for &(ptr, val) in &updates {
            self.types
                .set(((ptr - layout::SCRATCH_PT) / 8) as usize, val);
        }
        self.mmu_sync.writes.extend(updates);
        if flags & mmu::FLUSH_TLB != 0 {
            self.mmu_sync.flush = true;
        }
        Ok(count as i64)
    }

    /// Only the guest's own page table (the scratch page table), only frames of guest
    /// RAM or the ABI's two scratch frames, never a page table mapped writable.
    pub(super) fn check_pte_update(&self, ptr: u64, val: u64) -> Check {
        let pt = layout::SCRATCH_PT;
        if !(pt..pt + PAGE_SIZE).contains(&ptr) || ptr % 8 != 0 {
            return Err(errno::EPERM);
        }
        if val & pte::P == 0 {
            return Ok(());
        }
        if val & !(PTE_FRAME | PTE_ALLOWED_FLAGS) != 0 {
            return Err(errno::EINVAL);
        }
        let frame = val & PTE_FRAME;
        let scratch = [layout::SCRATCH_FRAME_A, layout::SCRATCH_FRAME_B];
        if frame + PAGE_SIZE > self.ram_size && !scratch.contains(&frame) {
            return Err(errno::EINVAL);
        }
        let table = self.types.is_pinned(frame) || self.direct.level_of(frame).is_some();
        if table && val & pte::RW != 0 {
            return Err(errno::EPERM);
        }
        Ok(())
    }

    pub(super) fn new_baseptr(&mut self, mem: &GuestMemoryMmap, root: u64) -> Check<i64> {
        if root == layout::PML4 {
            self.mmu_sync.new_root = Some(root);
            self.root = root;
            return Ok(0);
        }
        if self.direct.is_pinned(root) {
            return self.direct_baseptr(root);
        }
        // `root >= PINNABLE_END`, not `root + PAGE_SIZE > PINNABLE_END`: the sum overflows
        // for a root in the last page of the address space (found by fuzzing).
        if root % PAGE_SIZE != 0 || root >= PINNABLE_END {
            return Err(errno::EINVAL);
        }
        self.guest_range(root, PAGE_SIZE, PAGE_SIZE)?;
        if root == layout::SCRATCH_PT {
            return Err(errno::EPERM);
        }
        // The new root may only repeat entries of the VMM's own (up to the accessed and
        // dirty bits the CPU sets): it then maps nothing the guest could not reach already.
        const AD: u64 = 0x60;
        for i in 0..512 {
            let e = Self::read_u64(mem, root + i * 8)?;
            let vmm = Self::read_u64(mem, layout::PML4 + i * 8)?;
            if e & pte::P != 0 && (e | AD) != (vmm | AD) {
                return Err(errno::EPERM);
            }
        }
        // The other half of the invariant: a frame the guest can still write through an
        // alias never becomes a page table.
        // Nor does a table of direct paging, or a frame its tables map writable: the root
        // would change under the guest's updates.
        if self.types.writable_mappings(root) > 0
            || self.direct.level_of(root).is_some()
            || self.direct.writable_mappings(root) > 0
        {
            return Err(errno::EPERM);
        }
        self.pin(mem, root).map_err(|_| errno::EFAULT)?;
        self.types.pinned.insert(root);
        self.mmu_sync.new_root = Some(root);
        self.root = root;
        Ok(0)
    }
}
