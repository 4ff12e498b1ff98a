//! Direct paging through the hypercalls: pins, updates of the guest's own tables, the
//! root switch, and the VMM's side of the invariant.

use contract::abi::hypercall::{mmu, mmuext};
use proptest::prelude::*;

use super::tests::{setup, RAM};
use super::*;
use machine::setup::pte_address;

const L4: u64 = 0x18_0000;
const L3: u64 = 0x18_1000;
const L2: u64 = 0x18_2000;
const L1: u64 = 0x18_3000;
const DATA: u64 = 0x30_0000;
const PWU: u64 = 0b111;
const PU: u64 = 0b101;
const REQS: u64 = 0x2_0000;

fn ret(e: Effect) -> i64 {
    match e {
        Effect::Return(v) => v,
        other => panic!("expected a return, got {other:?}"),
    }
}

fn put(mem: &GuestMemoryMmap, addr: u64, val: u64) {
    Hypervisor::write_u64(mem, addr, val).unwrap();
}

fn hierarchy(mem: &GuestMemoryMmap) {
    put(mem, L4, layout::PDPT | 0b011);
    put(mem, L4 + 8, L3 | PWU);
    put(mem, L3, L2 | PWU);
    put(mem, L2, L1 | PWU);
    put(mem, L1, DATA | PWU);
}

fn update(hv: &mut Hypervisor, mem: &GuestMemoryMmap, reqs: &[(u64, u64)]) -> i64 {
    for (i, &(p, v)) in reqs.iter().enumerate() {
        put(mem, REQS + 16 * i as u64, p);
        put(mem, REQS + 16 * i as u64 + 8, v);
    }
    ret(hv.call(
        mem,
        Hypercall::MmuUpdate,
        [REQS, reqs.len() as u64, mmu::FLUSH_TLB],
    ))
}

fn pin(hv: &mut Hypervisor, mem: &GuestMemoryMmap, frame: u64, level: u64) -> i64 {
    ret(hv.call(mem, Hypercall::MmuextOp, [mmuext::PIN, frame, level]))
}

#[test]
fn pinning_protects_the_tables_in_the_vmms_map_and_unpinning_gives_it_back() {
    let (mut hv, mem) = setup();
    hierarchy(&mem);
    assert_eq!(pin(&mut hv, &mem, L4, 4), 0);
    let sync = hv.take_mmu_sync();
    assert!(sync.flush);
    let mut protected: Vec<(u64, u64)> = sync.writes.clone();
    protected.sort();
    let want: Vec<(u64, u64)> = [L4, L3, L2, L1]
        .iter()
        .map(|&f| (pte_address(f).unwrap(), f | pte::P | pte::US))
        .collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(
        protected, want_sorted,
        "read-only to the guest (the monitor writes through its own window)"
    );
    // The switch to the pinned root.
    assert_eq!(ret(hv.call(&mem, Hypercall::NewBaseptr, [L4, 0, 0])), 0);
    assert_eq!(hv.mmu_sync.new_root, Some(L4));
    // It cannot be unpinned while in use.
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuextOp, [mmuext::UNPIN, L4, 0])),
        errno::EPERM
    );
    assert_eq!(
        ret(hv.call(&mem, Hypercall::NewBaseptr, [layout::PML4, 0, 0])),
        0
    );
    hv.mmu_sync = MmuSync::default();
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuextOp, [mmuext::UNPIN, L4, 0])),
        0
    );
    let originals: Vec<u64> = hv.mmu_sync.writes.iter().map(|w| w.1).collect();
    for (frame, e) in [L4, L3, L2, L1].iter().zip(originals) {
        assert_eq!(e & pte::FRAME, *frame);
        assert_ne!(e & pte::US, 0, "user-accessible again");
    }
    assert_eq!(hv.direct.tables(), 0);
    let named = hv.direct.counters.named();
    assert_eq!(named["direct_paging:pins"], 1);
    assert_eq!(named["direct_paging:unpins"], 1);
    assert_eq!(named["direct_paging:validations"], 4);
}

#[test]
fn updates_of_the_guests_tables_are_validated_and_handed_to_the_monitor() {
    let (mut hv, mem) = setup();
    hierarchy(&mem);
    assert_eq!(pin(&mut hv, &mem, L4, 4), 0);
    hv.mmu_sync = MmuSync::default();
    assert_eq!(update(&mut hv, &mem, &[(L1 + 8, (DATA + 0x1000) | PWU)]), 1);
    assert_eq!(hv.mmu_sync.writes, [(L1 + 8, (DATA + 0x1000) | PWU)]);
    hv.mmu_sync = MmuSync::default();
    let refused = [
        (L1 + 8, L2 | PWU, errno::EPERM),          // a page table, writable
        (L1 + 8, layout::GDT | PU, errno::EFAULT), // the monitor's region
        (L1 + 8, RAM | PU, errno::EFAULT),         // beyond RAM
        (L2 + 8, DATA | PWU | pte::PS, errno::EINVAL), // a large page
        (L3 + 8, L3 | PU, errno::EPERM),           // a loop
        (L4, L3 | PU, errno::EPERM),               // the VMM's slot
        (DATA, 0, errno::EPERM),                   // not a page table
    ];
    for (ptr, val, want) in refused {
        assert_eq!(
            update(&mut hv, &mem, &[(ptr, val)]),
            want,
            "{ptr:#x} <- {val:#x}"
        );
    }
    assert!(hv.mmu_sync.writes.is_empty());
    let named = hv.direct.counters.named();
    for name in [
        "writable_page_table",
        "monitor_region",
        "beyond_ram",
        "large_page",
        "loop",
        "vmm_slot",
        "not_a_page_table",
    ] {
        assert_eq!(named[&format!("direct_paging:refused:{name}")], 1, "{name}");
    }
    assert_eq!(named["direct_paging:entries"], 1);
    // A table beyond the first 2 MiB: RAM has 4 KiB entries everywhere in this mode, so
    // the VMM protects it like any other.
    let far = 0x30_4000;
    assert_eq!(update(&mut hv, &mem, &[(L2 + 8, far | PWU)]), 1);
    let at = ram_pte_address(far).unwrap();
    assert!(
        hv.mmu_sync.writes.contains(&(at, far | pte::P | pte::US)),
        "{:?}",
        hv.mmu_sync.writes
    );
}

#[test]
fn the_scratch_table_and_the_guests_tables_keep_one_invariant() {
    let (mut hv, mem) = setup();
    hierarchy(&mem);
    assert_eq!(pin(&mut hv, &mem, L4, 4), 0);
    // The scratch table may not map a table of the guest's writable …
    assert_eq!(
        update(&mut hv, &mem, &[(layout::SCRATCH_PT, L2 | PWU)]),
        errno::EPERM
    );
    assert_eq!(update(&mut hv, &mem, &[(layout::SCRATCH_PT, L2 | PU)]), 1);
    // … and a frame the scratch table maps writable does not become a table.
    put(&mem, 0x18_5000, 0);
    assert_eq!(
        update(&mut hv, &mem, &[(layout::SCRATCH_PT + 8, 0x18_5000 | PWU)]),
        1
    );
    assert_eq!(pin(&mut hv, &mem, 0x18_5000, 1), errno::EPERM);
    // The VMM writes nothing into a table for the guest (a cpuid result, say).
    assert_eq!(
        ret(hv.call(&mem, Hypercall::Cpuid, [0, 0, L1 + 0x100])),
        errno::EFAULT
    );
    // Bad operations and levels.
    assert_eq!(pin(&mut hv, &mem, L1, 5), errno::EINVAL);
    assert_eq!(pin(&mut hv, &mem, L4, 4), errno::EINVAL, "pinned twice");
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuextOp, [7, L4, 0])),
        errno::EINVAL
    );
    // A root without the VMM's slot cannot be switched to.
    put(&mem, 0x18_6000 + 8, L3 | PU);
    assert_eq!(pin(&mut hv, &mem, 0x18_6000, 4), 0);
    assert_eq!(
        ret(hv.call(&mem, Hypercall::NewBaseptr, [0x18_6000, 0, 0])),
        errno::EPERM
    );
}

/// The frames a random sequence fights over (all in the first 2 MiB).
const FRAMES: [u64; 8] = [
    0x18_0000, 0x18_1000, 0x18_2000, 0x18_3000, 0x18_4000, 0x18_5000, 0x18_6000, 0x18_7000,
];

#[derive(Debug, Clone)]
enum DirectOp {
    /// The guest writes an entry of an ordinary frame (it cannot write a table).
    Store(usize, u64, u64),
    Pin(usize, u64),
    Unpin(usize),
    /// A batch of `(frame, entry, value)` updates.
    Update(Vec<(usize, u64, u64)>),
    /// A writable alias through the scratch table.
    Alias(u64, usize),
    Baseptr(usize),
}

fn entry_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0usize..8, prop::sample::select(vec![PWU, PU, 0b011, PWU | pte::PS]))
            .prop_map(|(f, fl)| FRAMES[f] | fl),
        1 => Just(layout::PDPT | PWU),
        1 => Just(DATA | PWU),
        1 => Just(layout::IDT | PU),
        1 => Just(0u64),
    ]
}

fn direct_op() -> impl Strategy<Value = DirectOp> {
    let slot = prop_oneof![Just(0u64), Just(1), 0u64..512];
    prop_oneof![
        4 => (0usize..8, slot.clone(), entry_value()).prop_map(|(f, i, v)| DirectOp::Store(f, i, v)),
        3 => (0usize..8, 0u64..6).prop_map(|(f, l)| DirectOp::Pin(f, l)),
        1 => (0usize..8).prop_map(DirectOp::Unpin),
        3 => prop::collection::vec((0usize..8, slot, entry_value()), 1..4).prop_map(DirectOp::Update),
        1 => (1u64..4, 0usize..8).prop_map(|(s, f)| DirectOp::Alias(s, f)),
        1 => (0usize..8).prop_map(DirectOp::Baseptr),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Random pins, unpins, updates, aliases and guest stores: every result is documented;
    /// after the monitor's writes, every table is read-only in the VMM's map and
    /// holds exactly the model's validated copy, no table is mapped writable anywhere,
    /// and a frame that is no longer a table has its original entry back.
    #[test]
    fn random_direct_paging_keeps_the_invariant(ops in prop::collection::vec(direct_op(), 1..40)) {
        let (mut hv, mem) = setup();
        let original: Vec<u64> = FRAMES
            .iter()
            .map(|&f| Hypervisor::read_u64(&mem, pte_address(f).unwrap()).unwrap())
            .collect();
        for op in &ops {
            let r = match op {
                DirectOp::Store(f, i, v) => {
                    if hv.direct.level_of(FRAMES[*f]).is_none() {
                        put(&mem, FRAMES[*f] + i * 8, *v);
                    }
                    0
                }
                DirectOp::Pin(f, l) => pin(&mut hv, &mem, FRAMES[*f], *l),
                DirectOp::Unpin(f) => ret(hv.call(&mem, Hypercall::MmuextOp, [mmuext::UNPIN, FRAMES[*f], 0])),
                DirectOp::Update(reqs) => {
                    let reqs: Vec<(u64, u64)> =
                        reqs.iter().map(|&(f, i, v)| (FRAMES[f] + i * 8, v)).collect();
                    update(&mut hv, &mem, &reqs)
                }
                DirectOp::Alias(s, f) => update(&mut hv, &mem, &[(layout::SCRATCH_PT + s * 8, FRAMES[*f] | PWU)]),
                DirectOp::Baseptr(f) => ret(hv.call(&mem, Hypercall::NewBaseptr, [FRAMES[*f], 0, 0])),
            };
            prop_assert!(r >= 0 || [errno::EPERM, errno::EINVAL, errno::EFAULT, errno::E2BIG].contains(&r), "{op:?} → {r}");
            // What the monitor routine does.
            let sync = hv.take_mmu_sync();
            for (ptr, val) in sync.writes {
                let table = ptr & !0xFFF;
                prop_assert!(
                    hv.direct.level_of(table).is_some()
                        || table == layout::PT0
                        || table == layout::SCRATCH_PT
                        // The VMM's 4 KiB tables of RAM beyond the first 2 MiB.
                        || (layout::SHADOW_BASE..layout::SHADOW_BASE + layout::SHADOW_SIZE)
                            .contains(&table),
                    "a write at {ptr:#x}"
                );
                put(&mem, ptr, val);
            }
            for (k, &f) in FRAMES.iter().enumerate() {
                let e = Hypervisor::read_u64(&mem, pte_address(f).unwrap()).unwrap();
                if hv.direct.level_of(f).is_some() {
                    prop_assert_eq!(e & (pte::US | pte::RW | pte::P), pte::US | pte::P, "{:#x}", f);
                    prop_assert_eq!(hv.direct.writable_mappings(f), 0);
                    prop_assert_eq!(hv.types.writable_mappings(f), 0);
                    for i in 0..512 {
                        prop_assert_eq!(
                            Some(Hypervisor::read_u64(&mem, f + i * 8).unwrap()),
                            hv.direct.entry(f, i as usize)
                        );
                    }
                } else if hv.types.is_pinned(f) {
                    // A root pinned by the older rule: read-only, and no table of ours.
                    prop_assert_eq!(e, f | pte::P | pte::US);
                    prop_assert_eq!(hv.direct.writable_mappings(f), 0);
                } else {
                    prop_assert_eq!(e, original[k], "{:#x} got its entry back", f);
                }
            }
        }
    }
}

#[test]
fn the_two_kinds_of_pinned_tables_never_mix() {
    let (mut hv, mem) = setup();
    // X: an empty page, so both rules would take it (a copy of nothing of the VMM's root;
    // an L1 that maps nothing).
    let x = 0x18_6000;
    assert_eq!(ret(hv.call(&mem, Hypercall::NewBaseptr, [x, 0, 0])), 0);
    // Typing the running root as an L1 would let an update rewrite it: refused.
    assert_eq!(pin(&mut hv, &mem, x, 1), errno::EPERM);
    assert_eq!(
        hv.direct.counters.named()["direct_paging:refused:reserved_table"],
        1
    );
    // Nor may a table of the guest's map it writable.
    put(&mem, L1, x | PWU);
    assert_eq!(pin(&mut hv, &mem, L1, 1), errno::EPERM);
    put(&mem, L1, x | PU);
    assert_eq!(pin(&mut hv, &mem, L1, 1), 0);
    // The other way round: a table of direct paging, or a frame one maps writable, is
    // not taken as a root by the older rule.
    let y = 0x18_7000;
    assert_eq!(
        ret(hv.call(&mem, Hypercall::NewBaseptr, [L1, 0, 0])),
        errno::EPERM
    );
    assert_eq!(update(&mut hv, &mem, &[(L1 + 8, y | PWU)]), 1);
    assert_eq!(
        ret(hv.call(&mem, Hypercall::NewBaseptr, [y, 0, 0])),
        errno::EPERM
    );
}
