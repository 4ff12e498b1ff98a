//! What must hold after every call of a fuzzed sequence: documented results, Xen's
//! invariant, no VMM write into pinned page tables or the monitor, and PTE writes that
//! give exactly the VMM's copy of the scratch table.

use std::collections::BTreeSet;

use contract::abi::{layout, PAGE_SIZE};
use machine::setup::{pte, pte_address};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::memory::{maps_nothing_new, read_u64, table, Snapshot};
use super::{documented, RAM};
use crate::hypercalls::{Effect, Hypervisor, PageTypes, PTE_ALLOWED_FLAGS, PTE_FRAME};

/// Every property, after one call.
pub(super) fn check(
    hv: &mut Hypervisor,
    mem: &GuestMemoryMmap,
    before: &Snapshot,
    pinned_before: &BTreeSet<u64>,
) -> Result<(), TestCaseError> {
    // The VMM wrote nothing into a page table pinned before the call.
    for (p, bytes) in &before.pinned {
        let mut now = vec![0u8; PAGE_SIZE as usize];
        mem.read_slice(&mut now, GuestAddress(*p)).expect("backed");
        prop_assert!(
            &now == bytes,
            "the VMM wrote into pinned page table {:#x}",
            p
        );
    }
    // Nothing in the monitor's region changed but the shared-info page and the identity
    // map entries of frames pinned by this call (made read-only).
    let mut now = vec![0u8; before.monitor.len()];
    mem.read_slice(&mut now, GuestAddress(layout::MONITOR_BASE))
        .expect("backed");
    let newly: BTreeSet<u64> = hv.types.pinned.difference(pinned_before).copied().collect();
    let off = |a: u64| (a - layout::MONITOR_BASE) as usize;
    let (pt0, shared) = (off(layout::PT0), off(layout::SHARED_INFO));
    let page = PAGE_SIZE as usize;
    for (from, to) in [(0, pt0), (pt0 + page, shared), (shared + page, now.len())] {
        prop_assert!(
            now[from..to] == before.monitor[from..to],
            "the VMM changed the monitor's region in {:#x}..{:#x}",
            layout::MONITOR_BASE + from as u64,
            layout::MONITOR_BASE + to as u64
        );
    }
    // In the identity map of the first 2 MiB, only the entries of frames pinned now.
    for (i, (a, b)) in before.monitor[pt0..pt0 + page]
        .chunks_exact(8)
        .zip(now[pt0..pt0 + page].chunks_exact(8))
        .enumerate()
    {
        let frame = i as u64 * PAGE_SIZE;
        prop_assert!(
            a == b || newly.contains(&frame),
            "the VMM changed the identity entry of {:#x}, which it did not pin",
            frame
        );
    }
    for &f in &newly {
        if let Some(at) = pte_address(f) {
            let e = read_u64(mem, at);
            prop_assert_eq!(
                e,
                f | pte::P | pte::US,
                "the identity entry of pinned {:#x}",
                f
            );
        }
    }
    // Xen's invariant, from the VMM's own accounting and recounted.
    let mut recount = std::collections::BTreeMap::<u64, u32>::new();
    for &e in &hv.types.scratch {
        if let Some(f) = PageTypes::writable_frame(e) {
            *recount.entry(f).or_default() += 1;
        }
    }
    prop_assert_eq!(&recount, &hv.types.writable, "incremental writable counts");
    for &p in &hv.types.pinned {
        prop_assert_eq!(
            hv.types.writable_mappings(p),
            0,
            "pinned {:#x} is writable",
            p
        );
        if p < RAM {
            let e = read_u64(
                mem,
                pte_address(p).expect("pinnable frames have 4 KiB entries"),
            );
            prop_assert_eq!(
                e & pte::RW,
                0,
                "pinned {:#x} writable in the identity map",
                p
            );
            prop_assert!(
                maps_nothing_new(mem, p),
                "pinned root {:#x} maps more than the VMM's",
                p
            );
        }
    }
    // What the monitor routine will do: every write valid on its own, and the result equal
    // to the VMM's copy of the scratch table.
    let sync = hv.take_mmu_sync();
    if let Some(root) = sync.new_root {
        prop_assert!(
            root == layout::PML4 || hv.types.is_pinned(root),
            "CR3 would load an unpinned root {:#x}",
            root
        );
    }
    for &(ptr, val) in &sync.writes {
        // Direct paging's writes: into its own tables, and the VMM's map of the frames
        // that became or stopped being tables.
        if (layout::PT0..layout::PT0 + PAGE_SIZE).contains(&ptr) {
            let frame = (ptr - layout::PT0) / 8 * PAGE_SIZE;
            // (Whether it is supervisor-only is checked below, on the final entry: one
            // multicall may type and untype a frame.)
            prop_assert_eq!(val & PTE_FRAME, frame, "identity entry of {:#x}", frame);
            mem.write_obj(val, GuestAddress(ptr)).expect("backed");
            continue;
        }
        if hv.direct.level_of(ptr & !(PAGE_SIZE - 1)).is_some() {
            mem.write_obj(val, GuestAddress(ptr)).expect("backed");
            continue;
        }
        prop_assert!(
            (layout::SCRATCH_PT..layout::SCRATCH_PT + PAGE_SIZE).contains(&ptr) && ptr % 8 == 0,
            "a PTE write at {:#x}",
            ptr
        );
        if val & pte::P != 0 {
            let f = val & PTE_FRAME;
            prop_assert_eq!(
                val & !(PTE_FRAME | PTE_ALLOWED_FLAGS),
                0,
                "flags of {:#x}",
                val
            );
            prop_assert!(
                f + PAGE_SIZE <= RAM
                    || f == layout::SCRATCH_FRAME_A
                    || f == layout::SCRATCH_FRAME_B,
                "a PTE write maps frame {:#x}",
                f
            );
            prop_assert!(
                !(hv.types.is_pinned(f) && val & pte::RW != 0),
                "a PTE write maps pinned {:#x} writable",
                f
            );
        }
        mem.write_obj(val, GuestAddress(ptr)).expect("backed");
    }
    prop_assert_eq!(
        table(mem, layout::SCRATCH_PT),
        hv.types.scratch.clone(),
        "the scratch table differs from the VMM's copy"
    );
    // Direct paging: every table holds its validated copy, is mapped writable nowhere,
    // and is supervisor-only in the VMM's map.
    for (f, _) in hv.direct.typed_frames() {
        let copy: Vec<u64> = (0..512).filter_map(|i| hv.direct.entry(f, i)).collect();
        prop_assert_eq!(table(mem, f), copy, "table {:#x} differs from its copy", f);
        prop_assert_eq!(hv.direct.writable_mappings(f), 0);
        prop_assert_eq!(hv.types.writable_mappings(f), 0);
        let e = read_u64(mem, pte_address(f).expect("tables have 4 KiB entries"));
        prop_assert_eq!(e & pte::US, 0, "table {:#x} reachable at CPL 3", f);
    }
    Ok(())
}

pub(super) fn returned(e: &Effect) -> Result<(), TestCaseError> {
    match e {
        Effect::Return(v) => prop_assert!(documented(*v), "undocumented result {}", v),
        Effect::Stop(contract::Outcome::TimedOut { .. })
        | Effect::Exit(_)
        | Effect::Block
        | Effect::Iret => {}
        Effect::Stop(o) => prop_assert!(false, "a hypercall ended the run with {:?}", o),
    }
    Ok(())
}
