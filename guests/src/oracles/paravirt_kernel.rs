//! Paravirtual under the guest kernel (`ptemod`, `syscall`, `pgfault`, `ctxswitch`,
//! `forkwait`, `tlb-walk`): direct paging. The kernel's page tables are the real ones, read-only to
//! it, changed by `mmu_update` batches; each process has a kernel root and a user root;
//! SYSCALL and page faults of user mode reach the kernel as callbacks, and it returns to
//! user mode with `iret`. Every count follows from what the kernel does:
//!
//! * **Boot** (every workload): `set_trap_table` (the page-fault and `int3` callbacks),
//!   `set_callback` twice (the SYSCALL probe's landing, then the real entry), the
//!   kernel-only root (a pin, one batch of one entry: its VMM slot) and a switch to it.
//! * **An address space** of D data pages: two pins (kernel and user root); five batches
//!   — the two roots' VMM slots and their shared user-half table (4 entries), the code's
//!   page directory (1), its page table (1), the entry page and the two code pages (3),
//!   the data pages (D) — and five tables validated (both roots, the user half's table,
//!   that directory and page table).
//! * **A switch** of address space: `mmuext_op(NEW_USER_BASEPTR)` and `new_baseptr`.
//! * **Tearing a space down**: a switch to the kernel-only root, then two unpins (both
//!   roots; every table of the space loses its type with them).
//! * **The SYSCALL probe**: one address space (D = 1), a switch, one return to user mode,
//!   one SYSCALL bounced, the teardown.
//! * **Heap pages** the kernel maps ([`heap`]): the PTE stores queue up and go as one
//!   `mmu_update` when the kernel flushes (after it creates a table, which it reads next,
//!   and before it switches) or when the queue holds [`PTE_QUEUE_LEN`] requests.
//!
//! * **ptemod's rounds** ([`ptemod_rounds`]): a round of B PTE changes is one
//!   `mmu_update` of B requests (one per [`PTE_QUEUE_LEN`] requests when B is larger),
//!   then one `mmuext_op(INVLPG)` per page changed; no table changes type, so nothing is
//!   validated.
//!
//! Then per event: a SYSCALL of user mode is one trap exit, bounced to the kernel root
//! (two root switches with the `iret` back, the null call's only hypercall); a page fault
//! is one trap exit and one injection (the frame on the event stack), and one batch for
//! its PTE (plus one per table it creates). Every trap exit is a bounce: there is no
//! other exception.

use contract::abi::hypercall::Hypercall;
use contract::{CountKey, ExitKind, Oracle};

use crate::kernel::workloads::{TLB_WALK_FRAMES, TLB_WALK_PAGES};
use crate::pv_ops::PTE_QUEUE_LEN;
use crate::workloads::Params;

/// What a run of the kernel makes, added up part by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `mmu_update` hypercalls (each one batch of direct paging).
    pub batches: u64,
    /// Requests in them.
    pub entries: u64,
    /// Tables validated.
    pub validations: u64,
    /// Roots pinned.
    pub pins: u64,
    /// Roots unpinned.
    pub unpins: u64,
    /// Address-space switches (`new_baseptr`, each with a `NEW_USER_BASEPTR`).
    pub switches: u64,
    /// Returns to user mode (`iret`).
    pub irets: u64,
    /// SYSCALLs bounced to the kernel.
    pub syscalls: u64,
    /// Page faults bounced to the kernel.
    pub faults: u64,
    /// TLB entries flushed (`mmuext_op(INVLPG)`).
    pub invlpgs: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            batches: self.batches + o.batches,
            entries: self.entries + o.entries,
            validations: self.validations + o.validations,
            pins: self.pins + o.pins,
            unpins: self.unpins + o.unpins,
            switches: self.switches + o.switches,
            irets: self.irets + o.irets,
            syscalls: self.syscalls + o.syscalls,
            faults: self.faults + o.faults,
            invlpgs: self.invlpgs + o.invlpgs,
        }
    }
}

impl Counts {
    fn times(self, n: u64) -> Counts {
        (0..n).fold(Counts::default(), |acc, _| acc + self)
    }
}

/// The kernel-only root, at boot.
const BOOT: Counts = Counts {
    batches: 1,
    entries: 1,
    validations: 1,
    pins: 1,
    switches: 1,
    unpins: 0,
    irets: 0,
    syscalls: 0,
    faults: 0,
    invlpgs: 0,
};

/// A new address space with `data` data pages.
fn space(data: u64) -> Counts {
    Counts {
        batches: 5,
        entries: 4 + 1 + 1 + 3 + data,
        validations: 5,
        pins: 2,
        ..Counts::default()
    }
}

const SWITCH: Counts = Counts {
    switches: 1,
    ..ZERO
};

const TEARDOWN: Counts = Counts {
    switches: 1,
    unpins: 2,
    ..ZERO
};

const ZERO: Counts = Counts {
    batches: 0,
    entries: 0,
    validations: 0,
    pins: 0,
    unpins: 0,
    switches: 0,
    irets: 0,
    syscalls: 0,
    faults: 0,
    invlpgs: 0,
};

/// Entering user mode and leaving it with a SYSCALL (a null call, or the one that hands
/// the CPU back to the kernel's `main`).
const ROUND_TRIP: Counts = Counts {
    irets: 1,
    syscalls: 1,
    ..ZERO
};

/// The boot-time SYSCALL probe: a process, its run, its teardown.
fn probe() -> Counts {
    space(1) + SWITCH + ROUND_TRIP + TEARDOWN
}

/// Mapping the heap pages `pages` (virtual page numbers from the heap's start, in the
/// kernel's order) into a space whose heap has no table yet, then the flush before the
/// switch: batches, requests and tables validated.
pub fn heap(pages: impl IntoIterator<Item = u64>) -> Counts {
    let mut c = Counts::default();
    let mut queued = 0;
    let mut tables = std::collections::BTreeSet::new();
    let store = |c: &mut Counts, queued: &mut u64| {
        c.entries += 1;
        *queued += 1;
        if *queued == PTE_QUEUE_LEN {
            c.batches += 1;
            *queued = 0;
        }
    };
    let flush = |c: &mut Counts, queued: &mut u64| {
        if *queued > 0 {
            c.batches += 1;
            *queued = 0;
        }
    };
    for page in pages {
        // The heap's page directory, then a page table per 512 pages: each a store the
        // kernel flushes at once (it reads the new entry's table next).
        for table in [u64::MAX, page / 512] {
            if tables.insert(table) {
                c.validations += 1;
                store(&mut c, &mut queued);
                flush(&mut c, &mut queued);
            }
        }
        store(&mut c, &mut queued);
    }
    flush(&mut c, &mut queued);
    c
}

/// pgfault's N demand-zero faults: each maps one page and flushes at once (the user
/// retries the access next).
fn faults(n: u64) -> Counts {
    let mut tables = 0;
    let mut c = Counts::default();
    for page in 0..n {
        let new = u64::from(page == 0) + u64::from(page % 512 == 0);
        tables += new;
        c = c + Counts {
            batches: 1 + new,
            entries: 1 + new,
            irets: 1,
            faults: 1,
            ..ZERO
        };
    }
    c.validations = tables;
    c
}

/// ptemod's N changes in rounds of B: each round's stores go as one `mmu_update` (or
/// one per [`PTE_QUEUE_LEN`] of them, when B is larger: the queue submits itself when
/// full), then one `mmuext_op(INVLPG)` per page changed.
pub fn ptemod_rounds(n: u64, b: u64) -> Counts {
    let b = b.max(1);
    let mut c = Counts::default();
    let mut done = 0;
    while done < n {
        let round = b.min(n - done);
        c.batches += round.div_ceil(PTE_QUEUE_LEN);
        c.entries += round;
        c.invlpgs += round;
        done += round;
    }
    c
}

/// What a kernel workload makes in paravirt, part by part.
pub fn counts(workload: &str, p: &Params) -> Option<Counts> {
    let (n, k) = (p.n, p.k);
    let base = BOOT + probe();
    Some(match workload {
        // One process that never runs; its window of B heap pages mapped, the switch to
        // it, then the rounds.
        "ptemod" => base + space(1) + heap(0..p.b.max(1)) + SWITCH + ptemod_rounds(n, p.b),
        // One process; N null calls, then EXIT.
        "syscall" => base + space(1) + SWITCH + ROUND_TRIP + ROUND_TRIP.times(n),
        "pgfault" => base + space(1) + SWITCH + ROUND_TRIP + faults(n),
        // Two processes of two data pages; N runs ending in a YIELD, N − 1 switches
        // between them.
        "ctxswitch" => {
            base + space(2)
                + space(2)
                + SWITCH
                + ROUND_TRIP.times(n)
                + SWITCH.times(n.saturating_sub(1))
        }
        // N × (a space with K heap pages, a run to its EXIT, its teardown).
        "forkwait" => base + (space(1) + heap(0..k) + SWITCH + ROUND_TRIP + TEARDOWN).times(n),
        // 64 frames, each behind 64 pages: frame f at pages f, f + 64, f + 128, …
        "tlb-walk" => {
            let per = TLB_WALK_PAGES / TLB_WALK_FRAMES;
            let pages =
                (0..TLB_WALK_FRAMES).flat_map(|f| (0..per).map(move |m| f + m * TLB_WALK_FRAMES));
            base + space(1) + heap(pages) + SWITCH + ROUND_TRIP
        }
        _ => return None,
    })
}

fn hc(h: Hypercall) -> CountKey {
    CountKey::Hypercalls(h.name().to_string())
}

fn named(name: &str) -> CountKey {
    CountKey::Hypercalls(name.to_string())
}

/// The oracle of a kernel workload in paravirt, if it is one.
pub(super) fn oracle(workload: &str, p: &Params) -> Option<Oracle> {
    let c = counts(workload, p)?;
    let calls = [
        (Hypercall::Exit, 1),
        (Hypercall::SetTrapTable, 1),
        (Hypercall::SetCallback, 2),
        (Hypercall::MmuUpdate, c.batches),
        (
            Hypercall::MmuextOp,
            c.pins + c.unpins + c.switches + c.invlpgs,
        ),
        (Hypercall::NewBaseptr, c.switches),
        (Hypercall::Iret, c.irets),
    ];
    let total: u64 = calls.iter().map(|c| c.1).sum();
    let mut o = Oracle::default()
        .expect(CountKey::Exits(ExitKind::Hypercall), total)
        .expect(CountKey::Exits(ExitKind::Trap), c.syscalls + c.faults)
        .expect(CountKey::Injections, c.faults);
    for (h, n) in calls {
        o = o.expect(hc(h), n);
    }
    for (name, n) in [
        ("direct_paging:batches", c.batches),
        ("direct_paging:entries", c.entries),
        ("direct_paging:validations", c.validations),
        ("direct_paging:pins", c.pins),
        ("direct_paging:unpins", c.unpins),
        ("mode:syscalls_bounced", c.syscalls),
        ("mode:faults_bounced", c.faults),
        ("mode:root_switches", 2 * (c.syscalls + c.faults)),
    ] {
        o = o.expect(named(name), n);
    }
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_queue_flushes_at_tables_and_when_full() {
        // Four pages: the directory (1 batch), the table (1), the four stores (1).
        let c = heap(0..4);
        assert_eq!((c.batches, c.entries, c.validations), (3, 6, 2));
        // 600 pages: a full queue every 128 stores, the second table at page 512.
        let c = heap(0..600);
        assert_eq!(c.entries, 600 + 3);
        assert_eq!(c.validations, 3);
        // The first two tables (2), four full queues of 128 (pages 0–511), the second
        // table (1), the last 88 stores (1).
        assert_eq!(c.batches, 2 + 4 + 1 + 1);
    }

    #[test]
    fn ptemod_rounds_batch_by_b_and_by_the_queue() {
        // 10 changes in rounds of 4: 4, 4, 2.
        let c = ptemod_rounds(10, 4);
        assert_eq!(
            (c.batches, c.entries, c.invlpgs, c.validations),
            (3, 10, 10, 0)
        );
        // Rounds of 200 take two batches each (the queue submits itself at 128): 200, 100.
        assert_eq!(ptemod_rounds(300, 200).batches, 3);
        // B = 128: one batch a round, the flush finding the queue empty.
        assert_eq!(ptemod_rounds(256, 128).batches, 2);
        assert_eq!(ptemod_rounds(0, 16), Counts::default());
    }

    #[test]
    fn syscall_costs_one_trap_and_one_iret_per_call() {
        let at = |n| {
            counts(
                "syscall",
                &Params {
                    n,
                    ..Params::default()
                },
            )
            .unwrap()
        };
        let (a, b) = (at(10), at(11));
        assert_eq!(b.irets - a.irets, 1);
        assert_eq!(b.syscalls - a.syscalls, 1);
        assert_eq!(b.batches, a.batches);
    }
}
