//! The shadow builder against synthetic guest page tables: hidden and true faults, the two
//! shadows per root, write protection, the cache, the monitor's entry and hostile tables —
//! and the invariant that whatever the shadow maps, the guest maps with at least the same
//! rights, checked by walking the shadow as the CPU would (`paging::translate`) over the
//! stores the builder emitted.

use std::cell::RefCell;
use std::collections::HashMap;

use contract::abi::layout;
use contract::x86::pte;

use super::*;
use crate::paging::translate;

const U: u64 = pte::P | pte::RW | pte::US;
const K: u64 = pte::P | pte::RW;
const RAM: u64 = 4 << 20;

/// Guest RAM as a sparse map of u64s, and the pool as the real CPU sees it (only what the
/// stores wrote).
#[derive(Default)]
struct Sim {
    guest: RefCell<HashMap<u64, u64>>,
    real: HashMap<u64, u64>,
}

impl Sim {
    fn set(&self, addr: u64, v: u64) {
        self.guest.borrow_mut().insert(addr, v);
    }
    fn reader(&self) -> impl Fn(u64) -> Option<u64> + '_ {
        |a| {
            (a < RAM || layout::is_monitor(a))
                .then(|| self.guest.borrow().get(&a).copied().unwrap_or(0))
        }
    }
    fn apply(&mut self, fx: &mut Effects) {
        for (a, v) in fx.stores.drain(..) {
            assert!(
                (layout::SHADOW_BASE..layout::SHADOW_BASE + layout::SHADOW_SIZE).contains(&a),
                "a store outside the pool: {a:#x}"
            );
            self.real.insert(a, v);
        }
        fx.invlpg.clear();
        fx.flush = false;
    }
    /// The real CPU's translation of `va` through the shadow at `cr3`.
    fn shadow(&self, cr3: u64, va: u64) -> Option<crate::paging::Translation> {
        translate(cr3, va, |a| Some(self.real.get(&a).copied().unwrap_or(0))).ok()
    }
    fn guest_view(&self, root: u64, va: u64) -> Option<crate::paging::Translation> {
        let g = self.guest.borrow();
        translate(root, va, |a| Some(g.get(&a).copied().unwrap_or(0))).ok()
    }
}

/// Two address spaces sharing a supervisor-only kernel half: roots 0x1000 and 0x11000.
/// Each: PML4[0] → PDPT → PD[0] → PT (user pages); PD[1] → kernel PT (supervisor).
fn two_processes(sim: &Sim) {
    for (root, pdpt, pd, pt) in [
        (0x1000, 0x2000, 0x3000, 0x4000),
        (0x11000, 0x12000, 0x13000, 0x14000),
    ] {
        sim.set(root, pdpt | U);
        sim.set(pdpt, pd | U);
        sim.set(pd, pt | U);
        sim.set(pd + 8, 0x5000 | U); // the shared kernel PT (its leaves decide)
                                     // user pages at 0x10_0000.. (PT index 256..)
        for i in 0..4 {
            sim.set(
                pt + (256 + i) * 8,
                (0x10_0000 + (root << 4) + i * 0x1000) | U,
            );
        }
    }
    // Kernel PT: 0x20_0000 → frame 0x20_0000 supervisor; 0x20_1000 maps the kernel PT page
    // itself writable (a direct map of a page table).
    sim.set(0x5000, 0x20_0000 | K);
    sim.set(0x5008, 0x4000 | K);
}

fn mmu(cache: bool) -> ShadowMmu {
    ShadowMmu::new(Config::new(RAM, cache))
}

#[test]
fn a_mapped_page_is_a_hidden_fault_and_then_the_shadow_agrees_with_the_guest() {
    let mut sim = Sim::default();
    two_processes(&sim);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    let cr3 = m
        .activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    sim.apply(&mut fx);
    assert_eq!(sim.shadow(cr3, 0x10_0000), None, "filled lazily");
    // The monitor's entry is there from the start, whatever the guest maps.
    let pdpt = m.shadow_entry(cr3, 0).unwrap() & pte::FRAME;
    assert_eq!(m.shadow_entry(pdpt, 1), Some(layout::PD_MONITOR | U));
    let r = m.page_fault(0x10_0123, error_code::WRITE, &mut sim.reader(), &mut fx);
    assert_eq!(r, Ok(Resolution::Hidden));
    sim.apply(&mut fx);
    let t = sim.shadow(cr3, 0x10_0123).unwrap();
    assert_eq!(t.gpa, sim.guest_view(0x1000, 0x10_0123).unwrap().gpa);
    assert!(t.user && t.writable);
    // PML4, PDPT (with the monitor's entry), PD and PT: four pages built.
    assert_eq!(m.stats().pages_built, 4);
    // Not mapped by the guest: a true fault with the guest's error code.
    let r = m.page_fault(0x30_0000, error_code::WRITE, &mut sim.reader(), &mut fx);
    assert_eq!(r, Ok(Resolution::True { error_code: 0b010 }));
    assert_eq!((m.stats().hidden_faults, m.stats().true_faults), (1, 1));
    assert!(fx.stores.is_empty(), "a true fault changes no shadow");
}

#[test]
fn the_user_shadow_does_not_map_supervisor_pages() {
    let mut sim = Sim::default();
    two_processes(&sim);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    m.activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    // The kernel touches its own page: mapped (user-accessible for the real CPL 3).
    assert_eq!(
        m.page_fault(0x20_0000, 0, &mut sim.reader(), &mut fx),
        Ok(Resolution::Hidden)
    );
    let kcr3 = m.real_cr3().unwrap();
    let ucr3 = m
        .set_privilege(Privilege::User, &mut sim.reader(), &mut fx)
        .unwrap()
        .unwrap();
    assert_ne!(kcr3, ucr3, "two shadows per root");
    sim.apply(&mut fx);
    assert!(sim.shadow(kcr3, 0x20_0000).is_some());
    assert_eq!(sim.shadow(ucr3, 0x20_0000), None);
    // User mode reading the kernel page: a protection fault, the guest's own.
    let r = m.page_fault(0x20_0000, error_code::USER, &mut sim.reader(), &mut fx);
    assert_eq!(
        r,
        Ok(Resolution::True {
            error_code: error_code::PRESENT | error_code::USER
        })
    );
    // Its own page: hidden, and only in the user shadow.
    assert_eq!(
        m.page_fault(0x10_1000, error_code::USER, &mut sim.reader(), &mut fx),
        Ok(Resolution::Hidden)
    );
    sim.apply(&mut fx);
    assert!(sim.shadow(ucr3, 0x10_1000).unwrap().user);
    assert_eq!(sim.shadow(kcr3, 0x10_1000), None);
    assert_eq!(sim.shadow(ucr3, 0x20_0000), None);
}

#[test]
fn page_table_pages_are_read_only_and_their_stores_invalidate_the_shadow() {
    let mut sim = Sim::default();
    two_processes(&sim);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    let cr3 = m
        .activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    m.page_fault(0x10_0000, 0, &mut sim.reader(), &mut fx)
        .unwrap();
    // The kernel's direct map of the PT page 0x4000 (at 0x20_1000): mapped read-only.
    assert_eq!(
        m.page_fault(0x20_1000, 0, &mut sim.reader(), &mut fx),
        Ok(Resolution::Hidden)
    );
    sim.apply(&mut fx);
    let t = sim.shadow(cr3, 0x20_1000).unwrap();
    assert_eq!(t.gpa, 0x4000);
    assert!(!t.writable && sim.guest_view(0x1000, 0x20_1000).unwrap().writable);
    // A write there is a page-table store for the VMM to emulate.
    let pte_at = 0x20_1000 + 256 * 8;
    let r = m.page_fault(
        pte_at,
        error_code::WRITE | error_code::PRESENT,
        &mut sim.reader(),
        &mut fx,
    );
    assert_eq!(
        r,
        Ok(Resolution::PageTableWrite {
            gpa: 0x4000 + 256 * 8
        })
    );
    // The VMM writes the guest's PTE (a new frame), then tells the builder.
    sim.set(0x4000 + 256 * 8, 0x7_7000 | U);
    m.pt_write(0x4000 + 256 * 8, &mut sim.reader(), &mut fx)
        .unwrap();
    assert_eq!(fx.invlpg, vec![0x10_0000]);
    sim.apply(&mut fx);
    assert_eq!(sim.shadow(cr3, 0x10_0000), None, "the stale entry is gone");
    m.page_fault(0x10_0000, 0, &mut sim.reader(), &mut fx)
        .unwrap();
    sim.apply(&mut fx);
    assert_eq!(sim.shadow(cr3, 0x10_0000).unwrap().gpa, 0x7_7000);
    assert_eq!(m.stats().pt_writes, 1);
    // A store to an entry that produced nothing changes no shadow.
    m.pt_write(0x4000 + 300 * 8, &mut sim.reader(), &mut fx)
        .unwrap();
    assert!(fx.stores.is_empty());
}

#[test]
fn a_page_mapped_writable_loses_write_access_when_it_becomes_a_table() {
    let mut sim = Sim::default();
    two_processes(&sim);
    // 0x20_1000 now maps frame 0x6000, not yet a table.
    sim.set(0x5008, 0x6000 | K);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    let cr3 = m
        .activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    m.page_fault(0x20_1000, error_code::WRITE, &mut sim.reader(), &mut fx)
        .unwrap();
    sim.apply(&mut fx);
    assert!(sim.shadow(cr3, 0x20_1000).unwrap().writable);
    // The guest makes 0x6000 the PT of 0x40_0000 (PD[2]) and touches that address.
    sim.set(0x3000 + 16, 0x6000 | U);
    sim.set(0x6000, 0x8000 | U);
    m.pt_write(0x3000 + 16, &mut sim.reader(), &mut fx).unwrap();
    m.page_fault(0x40_0000, 0, &mut sim.reader(), &mut fx)
        .unwrap();
    assert!(fx.invlpg.contains(&0x20_1000));
    sim.apply(&mut fx);
    assert!(!sim.shadow(cr3, 0x20_1000).unwrap().writable);
    assert!(m.is_page_table(0x6000));
}

#[test]
fn the_cache_keeps_a_shadow_per_root_and_without_it_every_switch_rebuilds() {
    let run = |cache: bool, switches: u64| {
        let mut sim = Sim::default();
        two_processes(&sim);
        let mut m = mmu(cache);
        let mut fx = Effects::default();
        for i in 0..switches {
            let root = if i % 2 == 0 { 0x1000 } else { 0x11000 };
            m.activate(root, Privilege::Kernel, &mut sim.reader(), &mut fx)
                .unwrap();
            let r = m.page_fault(0x10_0000, 0, &mut sim.reader(), &mut fx);
            // Once filled, a cached shadow needs no fault: the CPU would not raise one.
            if sim.shadow(m.real_cr3().unwrap(), 0x10_0000).is_none() {
                assert_eq!(r, Ok(Resolution::Hidden));
            }
            sim.apply(&mut fx);
            let t = sim.shadow(m.real_cr3().unwrap(), 0x10_0000).unwrap();
            assert_eq!(t.gpa, sim.guest_view(root, 0x10_0000).unwrap().gpa);
        }
        *m.stats()
    };
    let on = run(true, 10);
    assert_eq!((on.cache_hits, on.cache_misses, on.flushes), (8, 2, 0));
    assert_eq!(on.pages_built, 8, "4 pages per root, built once");
    let off = run(false, 10);
    assert_eq!((off.cache_hits, off.cache_misses, off.flushes), (0, 10, 9));
    assert_eq!(off.pages_built, 40, "4 pages per switch");
}

#[test]
fn the_guest_cannot_replace_the_monitors_entry() {
    let sim = Sim::default();
    two_processes(&sim);
    // The guest maps its own table at PDPT[1] (the monitor's gigabyte).
    sim.set(0x2008, 0x3000 | U);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    let cr3 = m
        .activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    let pdpt = m.shadow_entry(cr3, 0).unwrap() & pte::FRAME;
    m.pt_write(0x2008, &mut sim.reader(), &mut fx).unwrap();
    assert_eq!(m.shadow_entry(pdpt, 1), Some(layout::PD_MONITOR | U));
    assert_eq!(
        m.page_fault(
            layout::MONITOR_BASE + (3 << 20),
            0,
            &mut sim.reader(),
            &mut fx
        ),
        Err(ShadowError::ReservedGigabyte {
            va: layout::MONITOR_BASE + (3 << 20)
        })
    );
    // Rewriting PML4 entry 0 rebuilds the PDPT, with the monitor's entry again.
    m.pt_write(0x1000, &mut sim.reader(), &mut fx).unwrap();
    let pdpt2 = m.shadow_entry(cr3, 0).unwrap() & pte::FRAME;
    assert_eq!(m.shadow_entry(pdpt2, 1), Some(layout::PD_MONITOR | U));
    assert!(fx.flush);
}

#[test]
fn hostile_tables_end_with_a_name() {
    let cases: [(&str, u64, u64, ShadowError); 6] = [
        (
            "maps the IDT",
            0x4000 + 256 * 8,
            layout::IDT | U,
            ShadowError::MapsMonitor {
                va: 0x10_0000,
                frame: layout::IDT,
            },
        ),
        (
            "maps a shadow page",
            0x4000 + 256 * 8,
            layout::SHADOW_BASE | U,
            ShadowError::MapsMonitor {
                va: 0x10_0000,
                frame: layout::SHADOW_BASE,
            },
        ),
        (
            "maps beyond RAM",
            0x4000 + 256 * 8,
            (RAM + 0x1000) | U,
            ShadowError::BeyondRam {
                va: 0x10_0000,
                frame: RAM + 0x1000,
            },
        ),
        (
            "a PT in the monitor",
            0x3000,
            layout::PT_MONITOR | U,
            ShadowError::TableInMonitor {
                va: 0x10_0000,
                table: layout::PT_MONITOR,
                level: 1,
            },
        ),
        (
            "a 1 GiB page",
            0x2000,
            U | pte::PS,
            ShadowError::HugePage {
                va: 0x10_0000,
                level: 3,
            },
        ),
        (
            "PS in the PML4",
            0x1000,
            0x2000 | U | pte::PS,
            ShadowError::HugePage {
                va: 0x10_0000,
                level: 4,
            },
        ),
    ];
    for (what, at, value, err) in cases {
        let sim = Sim::default();
        two_processes(&sim);
        sim.set(at, value);
        let mut m = mmu(true);
        let mut fx = Effects::default();
        m.activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
            .unwrap();
        let r = m.page_fault(0x10_0000, 0, &mut sim.reader(), &mut fx);
        assert_eq!(r, Err(err), "{what}");
        assert!(
            fx.stores
                .iter()
                .all(|&(_, v)| v & pte::FRAME != layout::IDT),
            "{what}"
        );
    }
    // The shared pages and the MMIO page may be mapped.
    let sim = Sim::default();
    two_processes(&sim);
    sim.set(0x4000 + 256 * 8, layout::BOOT_INFO | U);
    sim.set(0x4000 + 257 * 8, layout::MMIO_BASE | U);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    m.activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    assert_eq!(
        m.page_fault(0x10_0000, 0, &mut sim.reader(), &mut fx),
        Ok(Resolution::Hidden)
    );
    assert_eq!(
        m.page_fault(0x10_1000, 0, &mut sim.reader(), &mut fx),
        Ok(Resolution::Hidden)
    );
    // A root outside RAM or in the monitor.
    for root in [RAM, layout::PML4 + 0x1000] {
        let r = m.activate(root, Privilege::Kernel, &mut sim.reader(), &mut fx);
        assert_eq!(r, Err(ShadowError::RootOutsideRam { root }));
    }
    assert!(ShadowError::RootOutsideRam { root: layout::PML4 }.is_monitor_violation());
}

#[test]
fn a_table_that_maps_itself_is_walked_once_and_stays_read_only() {
    let mut sim = Sim::default();
    // PML4[0] → PDPT; PDPT[0] → PD; PD[0] → the PML4 itself used as a PT (a loop).
    sim.set(0x1000, 0x2000 | U);
    sim.set(0x2000, 0x3000 | U);
    sim.set(0x3000, 0x1000 | U);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    let cr3 = m
        .activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    // VA 0: PT index 0 of "PT" 0x1000 is 0x2000|U → frame 0x2000, itself a table.
    assert_eq!(
        m.page_fault(0, error_code::WRITE, &mut sim.reader(), &mut fx),
        Ok(Resolution::PageTableWrite { gpa: 0x2000 })
    );
    assert_eq!(
        m.page_fault(0, 0, &mut sim.reader(), &mut fx),
        Ok(Resolution::Hidden)
    );
    sim.apply(&mut fx);
    let t = sim.shadow(cr3, 0).unwrap();
    assert_eq!(t.gpa, 0x2000);
    assert!(!t.writable);
}

#[test]
fn a_guest_2mib_page_is_shadowed_with_4k_pages() {
    let mut sim = Sim::default();
    sim.set(0x1000, 0x2000 | U);
    sim.set(0x2000, 0x3000 | U);
    sim.set(0x3000 + 8, 0x20_0000 | U | pte::PS);
    let mut m = mmu(true);
    let mut fx = Effects::default();
    let cr3 = m
        .activate(0x1000, Privilege::Kernel, &mut sim.reader(), &mut fx)
        .unwrap();
    assert_eq!(
        m.page_fault(0x23_4567, 0, &mut sim.reader(), &mut fx),
        Ok(Resolution::Hidden)
    );
    sim.apply(&mut fx);
    assert_eq!(sim.shadow(cr3, 0x23_4567).unwrap().gpa, 0x23_4567);
    assert_eq!(sim.shadow(cr3, 0x23_5000), None, "one 4 KiB page at a time");
}

#[test]
fn a_small_pool_is_recycled_with_stores_and_stays_correct() {
    // 12 pages for 6 roots of 4 pages each: the builder flushes and reuses dirty pages,
    // zeroing them with stores; every translation stays the guest's.
    let mut sim = Sim::default();
    let roots: Vec<u64> = (0..6).map(|i| 0x10_0000 + i * 0x1_0000).collect();
    for &r in &roots {
        sim.set(r, (r + 0x1000) | U);
        sim.set(r + 0x1000, (r + 0x2000) | U);
        sim.set(r + 0x2000 + 2 * 8, (r + 0x3000) | U);
        for i in 0..8 {
            sim.set(r + 0x3000 + i * 8, (0x30_0000 + (r >> 4) + i * 0x1000) | U);
        }
    }
    let mut cfg = Config::new(RAM, true);
    cfg.pool_pages = 12;
    let mut m = ShadowMmu::new(cfg);
    let mut fx = Effects::default();
    let mut seed = 7u64;
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let root = roots[(seed >> 33) as usize % roots.len()];
        let va = 0x40_0000 + ((seed >> 40) % 8) * 0x1000;
        m.activate(root, Privilege::Kernel, &mut sim.reader(), &mut fx)
            .unwrap();
        sim.apply(&mut fx);
        let cr3 = m.real_cr3().unwrap();
        if sim.shadow(cr3, va).is_none() {
            assert_eq!(
                m.page_fault(va, 0, &mut sim.reader(), &mut fx),
                Ok(Resolution::Hidden)
            );
            sim.apply(&mut fx);
        }
        let want = sim.guest_view(root, va).unwrap().gpa;
        assert_eq!(sim.shadow(cr3, va).unwrap().gpa, want);
        // Nothing else the shadow maps disagrees with the guest.
        for other in 0..8 {
            let v = 0x40_0000 + other * 0x1000;
            if let Some(t) = sim.shadow(cr3, v) {
                assert_eq!(t.gpa, sim.guest_view(root, v).unwrap().gpa);
            }
        }
        assert!(m.pages_in_use() <= 12);
    }
    assert!(m.stats().flushes > 0);
}
