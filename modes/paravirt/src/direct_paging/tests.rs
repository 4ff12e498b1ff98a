use super::*;
use proptest::prelude::*;

const RAM: u64 = 4 << 20;
const L4: u64 = 0x10_0000;
const L3: u64 = 0x10_1000;
const L2: u64 = 0x10_2000;
const L1: u64 = 0x10_3000;
const DATA: u64 = 0x20_0000;
/// Present, writable, user.
const PWU: u64 = 0b111;
/// Present, user (read-only).
const PU: u64 = 0b101;

fn mem() -> GuestMemoryMmap {
    machine::guest_memory(RAM).unwrap()
}

fn put(mem: &GuestMemoryMmap, addr: u64, val: u64) {
    mem.write_obj(val, GuestAddress(addr)).unwrap();
}

/// L4[1] → L3, L3[0] → L2, L2[0] → L1, L1[i] → DATA + i pages (writable) for `pages`.
fn hierarchy(mem: &GuestMemoryMmap, pages: u64) {
    put(mem, L4 + 8, L3 | PWU);
    put(mem, L3, L2 | PWU);
    put(mem, L2, L1 | PWU);
    for i in 0..pages {
        put(mem, L1 + i * 8, (DATA + i * PAGE_SIZE) | PWU);
    }
}

fn pinned(mem: &GuestMemoryMmap) -> DirectPaging {
    let mut dp = DirectPaging::new(RAM, &[]);
    dp.pin(mem, L4, Level::L4).unwrap();
    dp
}

#[test]
fn pinning_a_root_types_the_whole_hierarchy_and_unpinning_drops_it() {
    let mem = mem();
    hierarchy(&mem, 3);
    let mut dp = pinned(&mem);
    assert_eq!(dp.level_of(L4), Some(Level::L4));
    assert_eq!(dp.level_of(L3), Some(Level::L3));
    assert_eq!(dp.level_of(L2), Some(Level::L2));
    assert_eq!(dp.level_of(L1), Some(Level::L1));
    assert_eq!(dp.level_of(DATA), None);
    assert_eq!(dp.writable_mappings(DATA + PAGE_SIZE), 1);
    assert_eq!(dp.counters.validations, 4);
    assert_eq!(dp.counters.pins, 1);
    assert_eq!(
        dp.take_type_changes(),
        [(L1, true), (L2, true), (L3, true), (L4, true)]
    );
    dp.unpin(L4).unwrap();
    assert_eq!(dp.tables(), 0);
    assert_eq!(dp.writable_mappings(DATA), 0);
    assert_eq!(
        dp.take_type_changes(),
        [(L4, false), (L3, false), (L2, false), (L1, false)]
    );
    assert_eq!(dp.unpin(L4), Err(Refusal::PinState { frame: L4 }));
    assert_eq!(dp.counters.named()["direct_paging:refused:pin_state"], 1);
}

#[test]
fn a_page_table_is_never_writable() {
    let mem = mem();
    hierarchy(&mem, 1);
    let mut dp = pinned(&mem);
    // Through an update: every level of the hierarchy, read-only allowed.
    for table in [L4, L3, L2, L1] {
        assert_eq!(
            dp.update_batch(&mem, &[(L1 + 16, table | PWU)]),
            Err((0, Refusal::WritablePageTable { frame: table }))
        );
        assert!(dp.update_batch(&mem, &[(L1 + 16, table | PU)]).is_ok());
    }
    // A frame mapped writable does not become a page table.
    put(&mem, 0x10_4000 + 8, 0x10_5000 | PWU);
    assert_eq!(
        dp.update_batch(
            &mem,
            &[(L1 + 24, 0x10_4000 | PWU), (L2 + 8, 0x10_4000 | PWU)]
        ),
        Err((1, Refusal::WritablePageTable { frame: 0x10_4000 }))
    );
    // An L1 table mapping itself writable is refused while it is validated.
    put(&mem, 0x10_6000, 0x10_6000 | PWU);
    assert_eq!(
        dp.update_batch(&mem, &[(L2 + 16, 0x10_6000 | PWU)]),
        Err((0, Refusal::WritablePageTable { frame: 0x10_6000 }))
    );
    assert_eq!(dp.level_of(0x10_6000), None);
    assert_eq!(dp.counters.refusals["writable_page_table"], 6);
}

#[test]
fn the_monitors_region_and_frames_beyond_ram_are_refused() {
    let mem = mem();
    hierarchy(&mem, 1);
    let mut dp = pinned(&mem);
    for (val, want) in [
        (
            layout::MONITOR_BASE | PU,
            Refusal::MonitorRegion {
                frame: layout::MONITOR_BASE,
            },
        ),
        (
            layout::SHARED_INFO | PWU,
            Refusal::MonitorRegion {
                frame: layout::SHARED_INFO,
            },
        ),
        (RAM | PU, Refusal::BeyondRam { frame: RAM }),
        (pte::FRAME | PU, Refusal::BeyondRam { frame: pte::FRAME }),
    ] {
        assert_eq!(dp.update_batch(&mem, &[(L1 + 8, val)]), Err((0, want)));
        // As a table reference too.
        assert!(dp.update_batch(&mem, &[(L2 + 8, val)]).is_err());
    }
    assert_eq!(dp.counters.refusals["monitor_region"], 4);
    assert_eq!(dp.counters.refusals["beyond_ram"], 4);
}

#[test]
fn ps_is_refused_at_every_level_above_l1() {
    let mem = mem();
    hierarchy(&mem, 1);
    let mut dp = pinned(&mem);
    for (table, level) in [(L4, Level::L4), (L3, Level::L3), (L2, Level::L2)] {
        assert_eq!(
            dp.update_batch(&mem, &[(table + 16, DATA | PU | pte::PS)]),
            Err((0, Refusal::LargePage { level }))
        );
    }
    // Bit 7 of an L1 entry is PAT, a reserved bit here.
    assert_eq!(
        dp.update_batch(&mem, &[(L1 + 16, DATA | PU | pte::PS)]),
        Err((
            0,
            Refusal::ReservedBits {
                level: Level::L1,
                entry: DATA | PU | pte::PS
            }
        ))
    );
    // A hostile root with PS in its L4 entry is refused at pin time, and stays untyped.
    put(&mem, 0x10_8000 + 8, DATA | PWU | pte::PS);
    assert_eq!(
        dp.pin(&mem, 0x10_8000, Level::L4),
        Err(Refusal::LargePage { level: Level::L4 })
    );
    assert_eq!(dp.level_of(0x10_8000), None);
}

#[test]
fn loops_and_wrong_levels_are_refused() {
    let mem = mem();
    hierarchy(&mem, 1);
    let mut dp = pinned(&mem);
    // A table referencing itself, or a table above it.
    for (ptr, target) in [(L4 + 16, L4), (L3 + 8, L4), (L2 + 8, L3), (L2 + 8, L2)] {
        assert_eq!(
            dp.update_batch(&mem, &[(ptr, target | PU)]),
            Err((0, Refusal::Loop { frame: target }))
        );
    }
    // A table two levels down.
    assert_eq!(
        dp.update_batch(&mem, &[(L3 + 8, L1 | PU)]),
        Err((
            0,
            Refusal::WrongType {
                frame: L1,
                has: Level::L1,
                wanted: Level::L2
            }
        ))
    );
    // A hostile root that is its own L3 is refused at pin time.
    put(&mem, 0x10_8000 + 8, 0x10_8000 | PWU);
    assert_eq!(
        dp.pin(&mem, 0x10_8000, Level::L4),
        Err(Refusal::Loop { frame: 0x10_8000 })
    );
    // A two-table cycle below a fresh root.
    put(&mem, 0x10_9000 + 8, 0x10_A000 | PWU);
    put(&mem, 0x10_A000, 0x10_9000 | PWU);
    assert_eq!(
        dp.pin(&mem, 0x10_9000, Level::L4),
        Err(Refusal::Loop { frame: 0x10_9000 })
    );
    assert_eq!(dp.tables(), 4, "nothing of the refused roots stays typed");
}

#[test]
fn the_vmm_slot_takes_only_the_vmms_tables() {
    let mem = mem();
    hierarchy(&mem, 1);
    let vmm_l3 = layout::PDPT;
    put(&mem, L4, vmm_l3 | 0b011);
    let mut dp = DirectPaging::new(RAM, &[vmm_l3]);
    dp.pin(&mem, L4, Level::L4).unwrap();
    assert_eq!(dp.level_of(vmm_l3), None, "outside the model's types");
    assert_eq!(
        dp.update_batch(&mem, &[(L4, L3 | PU)]),
        Err((0, Refusal::VmmSlot { entry: L3 | PU }))
    );
    // The slot may be cleared and set again; elsewhere the VMM's table is the monitor's.
    assert!(dp
        .update_batch(&mem, &[(L4, 0), (L4, vmm_l3 | 0b011)])
        .is_ok());
    assert_eq!(
        dp.update_batch(&mem, &[(L4 + 16, vmm_l3 | 0b011)]),
        Err((0, Refusal::MonitorRegion { frame: vmm_l3 }))
    );
}

#[test]
fn a_refused_batch_leaves_nothing_behind() {
    let mem = mem();
    hierarchy(&mem, 2);
    let mut dp = pinned(&mem);
    let before = (dp.writable_mappings(DATA), dp.tables());
    put(&mem, 0x10_4000, 0x30_0000 | PWU);
    let r = dp.update_batch(
        &mem,
        &[
            (L1, 0),                        // drops DATA's writable mapping
            (L2 + 8, 0x10_4000 | PWU),      // a new L1, validated
            (L1 + 8, (DATA + 0x1000) | PU), // makes a mapping read-only
            (L1 + 16, 0x10_4000 | PWU),     // refused: the new L1, writable
        ],
    );
    assert_eq!(r, Err((3, Refusal::WritablePageTable { frame: 0x10_4000 })));
    assert_eq!((dp.writable_mappings(DATA), dp.tables()), before);
    assert_eq!(dp.writable_mappings(DATA + 0x1000), 1);
    assert_eq!(dp.level_of(0x10_4000), None);
    assert_eq!(dp.counters.entries, 0);
    assert_eq!(dp.counters.batches, 1);
    // The same batch without its last entry goes through, and is returned for the monitor.
    let ok = dp.update_batch(
        &mem,
        &[
            (L1, 0),
            (L2 + 8, 0x10_4000 | PWU),
            (L1 + 8, (DATA + 0x1000) | PU),
        ],
    );
    assert_eq!(ok.unwrap().len(), 3);
    assert_eq!(dp.level_of(0x10_4000), Some(Level::L1));
    assert_eq!(dp.writable_mappings(0x30_0000), 1);
    assert_eq!(dp.counters.named()["direct_paging:entries"], 3);
}

#[test]
fn shared_tables_are_counted_and_survive_one_root() {
    let mem = mem();
    hierarchy(&mem, 1);
    // A second root sharing the L3.
    let l4b = 0x10_7000;
    put(&mem, l4b + 16, L3 | PWU);
    let mut dp = pinned(&mem);
    dp.pin(&mem, l4b, Level::L4).unwrap();
    assert_eq!(dp.counters.validations, 5, "the shared L3 validated once");
    dp.unpin(L4).unwrap();
    assert_eq!(dp.level_of(L4), None);
    assert_eq!(dp.level_of(L1), Some(Level::L1));
    dp.unpin(l4b).unwrap();
    assert_eq!(dp.tables(), 0);
    assert_eq!(dp.pin(&mem, L4, Level::L4), Ok(()));
    assert_eq!(
        dp.pin(&mem, L4, Level::L4),
        Err(Refusal::PinState { frame: L4 })
    );
}

#[test]
fn updates_outside_page_tables_or_misaligned_are_refused() {
    let mem = mem();
    hierarchy(&mem, 1);
    let mut dp = pinned(&mem);
    assert_eq!(
        dp.update_batch(&mem, &[(DATA, 0)]),
        Err((0, Refusal::NotAPageTable { ptr: DATA }))
    );
    assert_eq!(
        dp.update_batch(&mem, &[(L1 + 4, 0)]),
        Err((0, Refusal::Misaligned { addr: L1 + 4 }))
    );
    assert_eq!(
        dp.pin(&mem, DATA + 8, Level::L1),
        Err(Refusal::Misaligned { addr: DATA + 8 })
    );
    for r in [
        Refusal::NotAPageTable { ptr: 0 },
        Refusal::Loop { frame: 0 },
        Refusal::WritablePageTable { frame: 0 },
    ] {
        assert_eq!(r.errno(), errno::EPERM);
    }
    assert_eq!(Refusal::BeyondRam { frame: 0 }.errno(), errno::EFAULT);
    assert_eq!(
        Refusal::LargePage { level: Level::L2 }.errno(),
        errno::EINVAL
    );
}

/// The invariant, checked from the model's own view.
fn invariant(dp: &DirectPaging) {
    for frame in dp.typed.keys() {
        assert_eq!(
            dp.writable_mappings(*frame),
            0,
            "{frame:#x} typed and writable"
        );
    }
    // Counts match the validated tables.
    let mut writable = BTreeMap::new();
    let mut refs: BTreeMap<u64, u32> = dp.pinned.iter().map(|&p| (p, 1)).collect();
    for t in dp.typed.values() {
        for (i, &e) in t.entries.iter().enumerate() {
            if e & pte::P == 0 || (t.level == Level::L4 && i == VMM_SLOT) {
                continue;
            }
            if t.level == Level::L1 {
                if e & pte::RW != 0 {
                    *writable.entry(e & pte::FRAME).or_insert(0u32) += 1;
                }
            } else {
                *refs.entry(e & pte::FRAME).or_default() += 1;
            }
        }
    }
    assert_eq!(writable, dp.writable);
    let held: BTreeMap<u64, u32> = dp.typed.iter().map(|(&f, t)| (f, t.refs)).collect();
    assert_eq!(refs, held);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random batches over a small set of frames (tables and data alike, any flags):
    /// whatever is accepted or refused, the invariant holds, and unpinning the root
    /// leaves nothing typed or counted.
    #[test]
    fn random_batches_keep_the_invariant(
        batches in prop::collection::vec(
            prop::collection::vec((0u64..8, 0u64..4, 0u64..10, 0u64..4), 1..6),
            1..12,
        )
    ) {
        let mem = mem();
        hierarchy(&mem, 1);
        let mut dp = pinned(&mem);
        let frames = |i: u64| 0x10_0000 + i * PAGE_SIZE;
        let flags = [PU, PWU, 0, PU | pte::PS];
        for batch in &batches {
            let updates: Vec<(u64, u64)> = batch
                .iter()
                .map(|&(t, slot, f, fl)| {
                    let target = if f < 8 { frames(f) } else if f == 8 { RAM } else { layout::PML4 };
                    (frames(t % 4) + 8 * (slot + 1), target | flags[fl as usize])
                })
                .collect();
            let _ = dp.update_batch(&mem, &updates);
            invariant(&dp);
        }
        dp.unpin(L4).unwrap();
        prop_assert_eq!(dp.tables(), 0);
        prop_assert!(dp.writable.is_empty());
    }
}

#[test]
fn tables_beyond_the_protectable_end_or_mapped_elsewhere_are_refused() {
    let mem = mem();
    hierarchy(&mem, 1);
    let mut dp = DirectPaging::new(RAM, &[]).with_table_end(L1);
    assert_eq!(
        dp.pin(&mem, L4, Level::L4),
        Err(Refusal::Unprotectable { frame: L1 })
    );
    assert_eq!(dp.tables(), 0);
    let mut dp = DirectPaging::new(RAM, &[]);
    dp.set_foreign_writable(BTreeMap::from([(L2, 1)]));
    assert_eq!(
        dp.pin(&mem, L4, Level::L4),
        Err(Refusal::WritablePageTable { frame: L2 })
    );
    dp.set_foreign_writable(BTreeMap::new());
    dp.pin(&mem, L4, Level::L4).unwrap();
    assert_eq!(dp.entry(L2, 0), Some(L1 | PWU));
    assert_eq!(dp.entry(DATA, 0), None);
}

/// A table that loses its type and takes it again before the writes handed out are made
/// is validated with them: the writable mapping written first stays counted, in one
/// batch and across two (one multicall), and is forgotten only once memory holds it.
#[test]
fn retyping_a_table_sees_the_writes_not_made_yet() {
    let victim = DATA + 0x10_0000;
    for split in [false, true] {
        let mem = mem();
        hierarchy(&mem, 1);
        let mut dp = pinned(&mem);
        let reqs = [(L1 + 16, victim | PWU), (L2, 0), (L2, L1 | PWU)];
        if split {
            dp.update_batch(&mem, &reqs[..1]).unwrap();
            dp.update_batch(&mem, &reqs[1..]).unwrap();
        } else {
            dp.update_batch(&mem, &reqs).unwrap();
        }
        assert_eq!(dp.entry(L1, 2), Some(victim | PWU), "split {split}");
        assert_eq!(dp.writable_mappings(victim), 1, "split {split}");
        assert_eq!(
            dp.pin(&mem, victim, Level::L1),
            Err(Refusal::WritablePageTable { frame: victim })
        );
        // Once made, memory holds the write and the next validation reads it there.
        put(&mem, L1 + 16, victim | PWU);
        dp.writes_applied();
        dp.update_batch(&mem, &[(L2, 0), (L2, L1 | PWU)]).unwrap();
        assert_eq!(dp.writable_mappings(victim), 1, "split {split}");
    }
}
