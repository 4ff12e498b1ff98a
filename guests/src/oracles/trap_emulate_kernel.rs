//! Trap-and-emulate under the guest kernel (`ptemod`, `syscall`, `pgfault`, `ctxswitch`,
//! `forkwait`, `tlb-walk`): the kernel's own page tables run on shadow tables, so besides the traps of
//! its privileged instructions the counts include the shadow MMU's (`shadow:*`).
//!
//! Each count is the kernel's fixed part plus what one iteration costs. The fixed part is
//! the boot and the SYSCALL probe, the same in every workload but for its few lines of
//! set-up: 8 `wrmsr` and 2 `rdmsr` (EFER twice, STAR, LSTAR, SFMASK, for the probe and
//! for good), one `lidt`, the CR3 loads of the kernel's root and of each process, one
//! `pte write` per PTE the kernel stores into a table the shadows already mirror (the
//! rest go to fresh frames no shadow has read yet, and need no trap), one `pt unshadow`
//! when the kernel zeroes a frame that was the probe's page table, and one hidden fault
//! per distinct page the kernel and its processes touch in each shadow (code, data,
//! stacks, the event stack, the user pages). Per iteration:
//!
//! * `syscall`: one SYSCALL and one SYSRETQ trap, nothing else: the shadows are warm.
//! * `pgfault`: a true fault (the page is not mapped; reflected with the virtual CR2),
//!   `mov from cr2`, a hidden fault where the kernel zeroes the new frame through its map
//!   of RAM, its PTE store (`pte write`: the process's page table is shadowed), `iretq`
//!   back, and the hidden fault of the retried access in the user's shadow. Each further
//!   512 pages take one more page table, which the kernel zeroes: one more hidden fault.
//! * `ctxswitch`: a YIELD (SYSCALL), the CR3 load of the other process and its SYSRETQ.
//!   With the cache the two processes' shadows are built once; without it every CR3 load
//!   rebuilds the new root's two: nine pages (the kernel's: PML4, the kernel half's PDPT
//!   and PD, the page table split from the 2 MiB page of RAM the kernel runs in; the
//!   user's: PML4, the PDPT that carries the monitor's entry, the user half's PDPT, PD
//!   and PT), and seven hidden faults to fill them.
//! * `forkwait`: two CR3 loads (into the child, back to the kernel's root), a SYSCALL and
//!   a SYSRETQ, six PTE stores into shadowed tables, one table unshadowed (the child's
//!   root, zeroed for reuse), and 12 + K hidden faults (K for the child's pages).
//! * `tlb-walk`: one hidden fault per distinct page of the 4,096 it walks (the stride is
//!   odd, so the first 4,096 accesses are distinct), and one shadow page table per
//!   distinct 512-page slice they fall in.
//!
//! The counts are those of the default options (shadow cache on); [`pages_built`] gives
//! ctxswitch's with the cache off too.

use contract::{Condition, CountKey, ExitKind, Mode, Oracle, OracleVariant};

use crate::kernel::workloads::{TLB_WALK_PAGES, TLB_WALK_STRIDE};
use crate::workloads::Params;

fn traps(list: &[(&str, u64)]) -> Oracle {
    let total: u64 = list.iter().map(|(_, n)| n).sum();
    list.iter().fold(
        Oracle::default().expect(CountKey::Exits(ExitKind::Trap), total),
        |o, (name, n)| o.expect(CountKey::Traps((*name).to_string()), *n),
    )
}

fn shadow(o: Oracle, list: &[(&str, u64)]) -> Oracle {
    list.iter().fold(o, |o, (name, n)| {
        o.expect(CountKey::Shadow((*name).to_string()), *n)
    })
}

/// `extra` when the workload runs its loop at all (N > 0): what its first iteration
/// touches once (the page-fault path, the child's pages, the walked region).
fn first(n: u64, extra: u64) -> u64 {
    if n > 0 {
        extra
    } else {
        0
    }
}

/// The traps every kernel workload makes at boot, whatever it runs.
const BOOT: [(&str, u64); 4] = [("lidt", 1), ("rdmsr", 2), ("wrmsr", 8), ("out", 1)];

fn with_boot<'a>(list: &[(&'a str, u64)]) -> Vec<(&'a str, u64)> {
    BOOT.iter().chain(list).copied().collect()
}

/// Distinct 512-page slices (shadow page tables) tlb-walk's first `n` accesses touch.
pub fn tlb_walk_tables(n: u64) -> u64 {
    let pages = TLB_WALK_PAGES;
    let mut seen = [false; 64];
    for i in 0..n.min(pages) {
        let page = (i * TLB_WALK_STRIDE as u64) % pages;
        seen[(page / 512) as usize] = true;
    }
    seen.iter().filter(|&&s| s).count() as u64
}

/// Shadow pages ctxswitch builds with N switches, with the shadow cache on or off (from
/// N = 2 on, both processes have run: 39 with the cache, 9 more per switch without).
pub fn pages_built(workload: &str, n: u64, cache: bool) -> Option<u64> {
    match (workload, cache, n) {
        ("ctxswitch", true, 0) => Some(25),
        ("ctxswitch", true, 1) => Some(30),
        ("ctxswitch", true, _) => Some(39),
        ("ctxswitch", false, 0) => Some(28),
        ("ctxswitch", false, _) => Some(24 + 9 * n),
        _ => None,
    }
}

/// ptemod's PTE stores that trap: every one but those of the first round (min(N, B)),
/// which go to a page table no shadow mirrors yet.
pub fn ptemod_trapped_stores(n: u64, b: u64) -> u64 {
    n - n.min(b.max(1))
}

/// The oracle of a kernel workload in trap-emulate, if it is one.
pub(super) fn oracle(workload: &str, p: &Params) -> Option<Oracle> {
    let (n, k) = (p.n, p.k);
    Some(match workload {
        "ptemod" => {
            let hidden = 25 + first(n, 1) + n;
            let writes = 4 + ptemod_trapped_stores(n, p.b);
            let t = traps(&with_boot(&[
                ("#pf hidden", hidden),
                ("invlpg", n),
                ("mov to cr3", 4),
                ("pt unshadow", 1),
                ("pte write", writes),
                ("syscall", 1),
                ("sysretq", 1),
            ]));
            shadow(
                t,
                &[
                    ("hidden_faults", hidden),
                    ("true_faults", 0),
                    ("pt_writes", writes),
                    ("pages_built", 24 + first(n, 4)),
                    ("cache_hits", 1),
                    ("cache_misses", 3),
                    ("flushes", 0),
                    ("unshadowed", 1),
                ],
            )
        }
        "syscall" => {
            let hidden = 25;
            let t = traps(&with_boot(&[
                ("#pf hidden", hidden),
                ("mov to cr3", 4),
                ("pt unshadow", 1),
                ("pte write", 4),
                ("syscall", n + 2),
                ("sysretq", n + 2),
            ]));
            shadow(
                t,
                &[
                    ("hidden_faults", hidden),
                    ("true_faults", 0),
                    ("pt_writes", 4),
                    ("pages_built", 29),
                    ("cache_hits", 1),
                    ("cache_misses", 3),
                    ("flushes", 0),
                    ("unshadowed", 1),
                ],
            )
        }
        "pgfault" => {
            let hidden = 25 + first(n, 5) + 2 * n + n.saturating_sub(1) / 512;
            let t = traps(&with_boot(&[
                ("#pf", n),
                ("#pf hidden", hidden),
                ("mov from cr2", n),
                ("iretq", n),
                ("mov to cr3", 4),
                ("pt unshadow", 1),
                ("pte write", 4 + n),
                ("syscall", 2),
                ("sysretq", 2),
            ]))
            .expect(CountKey::Injections, n);
            shadow(
                t,
                &[
                    ("hidden_faults", hidden),
                    ("true_faults", n),
                    ("pt_writes", 4 + n),
                    ("cache_hits", 1),
                    ("cache_misses", 3),
                    ("flushes", 0),
                    ("unshadowed", 1),
                ],
            )
        }
        // Until N = 2 the second process has not run: its shadows come later.
        "ctxswitch" => {
            let hidden = match n {
                0 => 33,
                1 => 38,
                _ => 45,
            };
            let t = traps(&with_boot(&[
                ("#pf hidden", hidden),
                ("mov to cr3", 3 + n.max(1)),
                ("pt unshadow", 1),
                ("pte write", 4),
                ("syscall", 1 + n),
                ("sysretq", 1 + n),
            ]));
            shadow(
                t,
                &[
                    ("hidden_faults", hidden),
                    ("true_faults", 0),
                    ("pt_writes", 4),
                    ("pages_built", pages_built("ctxswitch", n, true)?),
                    ("cache_hits", n.max(2) - 1),
                    ("cache_misses", if n >= 2 { 4 } else { 3 }),
                    ("flushes", 0),
                    ("unshadowed", 1),
                ],
            )
        }
        "forkwait" => {
            let hidden = 15 + first(n, k) + (12 + k) * n;
            let t = traps(&with_boot(&[
                ("#pf hidden", hidden),
                ("mov to cr3", 3 + 2 * n),
                ("pt unshadow", n),
                ("pte write", 4 + 6 * n),
                ("syscall", 1 + n),
                ("sysretq", 1 + n),
            ]));
            shadow(
                t,
                &[
                    ("hidden_faults", hidden),
                    ("true_faults", 0),
                    ("pt_writes", 4 + 6 * n),
                    ("cache_hits", 1 + n),
                    ("cache_misses", 2 + n),
                    ("flushes", 0),
                    ("unshadowed", n),
                ],
            )
        }
        "tlb-walk" => {
            let hidden = 98 + n.min(TLB_WALK_PAGES);
            let t = traps(&with_boot(&[
                ("#pf hidden", hidden),
                ("mov to cr3", 4),
                ("pt unshadow", 1),
                ("pte write", 4),
                ("syscall", 2),
                ("sysretq", 2),
            ]));
            shadow(
                t,
                &[
                    ("hidden_faults", hidden),
                    ("true_faults", 0),
                    ("pt_writes", 4),
                    ("pages_built", 29 + first(n, 1) + tlb_walk_tables(n)),
                    ("cache_hits", 1),
                    ("cache_misses", 3),
                    ("flushes", 0),
                    ("unshadowed", 1),
                ],
            )
        }
        _ => return None,
    })
}

/// The counts without the shadow cache: every CR3 load drops the shadows and builds the
/// new root's from nothing, so no table stays mirrored long enough for a PTE store to
/// trap, and every switch pays its hidden faults again.
fn without_cache(workload: &str, p: &Params) -> Option<Oracle> {
    let (n, k) = (p.n, p.k);
    let (hidden, cr3, calls, flushes, extra): (u64, u64, u64, u64, Vec<(&str, u64)>) =
        match workload {
            "ptemod" => (
                29 + first(n, 1) + n,
                4,
                1,
                3,
                vec![("invlpg", n), ("pte write", ptemod_trapped_stores(n, p.b))],
            ),
            "syscall" => (29, 4, n + 2, 3, vec![]),
            "pgfault" => (
                29 + first(n, 5) + 2 * n + n.saturating_sub(1) / 512,
                4,
                2,
                3,
                vec![
                    ("#pf", n),
                    ("mov from cr2", n),
                    ("iretq", n),
                    ("pte write", n),
                ],
            ),
            "ctxswitch" => (
                if n == 0 { 37 } else { 35 + 7 * n },
                3 + n.max(1),
                1 + n,
                2 + n.max(1),
                vec![],
            ),
            "forkwait" => (
                23 + first(n, 2 + k) + (16 + 2 * k) * n,
                3 + 2 * n,
                1 + n,
                2 + 2 * n,
                vec![],
            ),
            "tlb-walk" => (102 + n.min(TLB_WALK_PAGES), 4, 2, 3, vec![]),
            _ => return None,
        };
    let mut list = with_boot(&[
        ("#pf hidden", hidden),
        ("mov to cr3", cr3),
        ("syscall", calls),
        ("sysretq", calls),
    ]);
    list.extend(extra);
    let pt_writes = match workload {
        "pgfault" => n,
        "ptemod" => ptemod_trapped_stores(n, p.b),
        _ => 0,
    };
    let true_faults = if workload == "pgfault" { n } else { 0 };
    let mut o = traps(&list);
    if workload == "pgfault" {
        o = o.expect(CountKey::Injections, n);
    }
    let mut counts = vec![
        ("hidden_faults", hidden),
        ("true_faults", true_faults),
        ("pt_writes", pt_writes),
        ("cache_hits", 0),
        ("cache_misses", cr3),
        ("flushes", flushes),
        ("unshadowed", 0),
    ];
    match workload {
        "ctxswitch" => counts.push(("pages_built", pages_built("ctxswitch", n, false)?)),
        "syscall" => counts.push(("pages_built", 32)),
        "tlb-walk" => counts.push(("pages_built", 32 + first(n, 1) + tlb_walk_tables(n))),
        "forkwait" => counts.push(("pages_built", 23 + 16 * n)),
        "ptemod" => counts.push(("pages_built", 27 + first(n, 4))),
        _ => {}
    }
    Some(shadow(o, &counts))
}

/// Trap-emulate's kernel workloads with the shadow cache off.
pub(super) fn variants(workload: &str, p: &Params) -> Vec<OracleVariant> {
    let Some(oracle) = without_cache(workload, p) else {
        return Vec::new();
    };
    vec![OracleVariant {
        mode: Mode::TrapEmulate,
        when: Condition::ShadowCacheOff,
        oracle,
        expected: "each address space's shadow built once and found again at each CR3 load".into(),
        got: "every CR3 load dropped the shadows and built one from nothing".into(),
        why: "without a shadow cache a VMM cannot tell a context switch from a new address \
              space: it rebuilds the shadow, and the guest pays hidden faults again for every \
              page it touches after the switch"
            .into(),
    }]
}
