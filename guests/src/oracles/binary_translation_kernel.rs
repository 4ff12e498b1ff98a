//! Binary translation under the guest kernel (`ptemod`, `syscall`, `pgfault`,
//! `ctxswitch`, `forkwait`, `tlb-walk`): the kernel's code runs translated, its user processes run
//! untranslated on their user shadows, and both go through the shadow MMU trap-emulate
//! uses (`shadow:*`).
//!
//! The callouts are trap-emulate's traps, one for one: the kernel's privileged
//! instructions (`wrmsr`, `mov to cr3`, `sysretq`, `iretq`, `mov from cr2`), its PTE
//! stores into shadowed tables (`pte write`, `pt unshadow`), and what user mode does
//! natively (`syscall`, `#pf`). The shadow counts are trap-emulate's too, with one
//! difference: the real CPU never fetches the kernel's code — the VMM reads it to
//! translate it, and the CPU runs the translation in the monitor's region — so the hidden
//! faults trap-emulate takes on the kernel's code pages do not happen (3 fewer with the
//! shadow cache: the kernel's code in the kernel's shadow of each root it first runs
//! in; 4 fewer without). A hidden fault in the middle of a guest instruction's
//! translation (the stack access of a translated CALL) is filled and that instruction of
//! the translation runs again; it counts as `#pf hidden` like any other.
//!
//! The `translation:*` counts describe the kernel code translated (once, whatever N is,
//! once its paths have all run) and its indirect branches (`lookups`: the kernel's
//! returns, per system call or fault). `cr3 switches` counts the guest root changes the
//! translations were checked against (every `mov to cr3`); the kernel half is mapped
//! alike in every address space, so only the first switch — off the boot tables, whose
//! map of the boot code's page differs — throws a block away (`cr3 invalidations`).

use contract::{Condition, CountKey, ExitKind, Mode, Oracle, OracleVariant};

use super::trap_emulate_kernel::{pages_built, ptemod_trapped_stores, tlb_walk_tables};
use crate::kernel::workloads::TLB_WALK_PAGES;
use crate::workloads::Params;

/// `extra` when the workload runs its loop at all (N > 0).
fn first(n: u64, extra: u64) -> u64 {
    if n > 0 {
        extra
    } else {
        0
    }
}

/// The kernel code translated and how it was entered.
struct Tc {
    blocks: u64,
    copied: u64,
    callout_sites: u64,
    branches: u64,
    chains: u64,
    lookups: u64,
    lookup_misses: u64,
}

/// The traps every kernel workload makes at boot, whatever it runs.
const BOOT: [(&str, u64); 4] = [("lidt", 1), ("rdmsr", 2), ("wrmsr", 8), ("out", 1)];

fn build(callouts: &[(&str, u64)], shadow: &[(&str, u64)], tc: &Tc, cr3: u64) -> Oracle {
    let translate = tc.chains + tc.lookup_misses;
    let list: Vec<(&str, u64)> = BOOT.iter().chain(callouts).copied().collect();
    let total = list.iter().map(|(_, n)| n).sum::<u64>() + translate;
    let o = list.iter().fold(
        Oracle::default()
            .expect(CountKey::Exits(ExitKind::Trap), total)
            .expect(CountKey::Traps("translate".into()), translate)
            .expect(CountKey::Traps("cli".into()), 0)
            .expect(CountKey::Traps("sti".into()), 0),
        |o, (name, n)| o.expect(CountKey::Traps((*name).to_string()), *n),
    );
    let o = shadow.iter().fold(o, |o, (name, n)| {
        o.expect(CountKey::Shadow((*name).to_string()), *n)
    });
    let rows = [
        ("blocks", tc.blocks),
        ("copied", tc.copied),
        ("inline", 0),
        ("callout sites", tc.callout_sites),
        ("branches", tc.branches),
        ("chains", tc.chains),
        ("lookups", tc.lookups),
        ("lookup misses", tc.lookup_misses),
        ("invalidations", 0),
        ("flushes", 0),
        ("cr3 switches", cr3),
        ("cr3 invalidations", 1),
        ("lookup repairs", 0),
    ];
    rows.into_iter().fold(o, |o, (name, n)| {
        o.expect(CountKey::Translation(name.into()), n)
    })
}

/// ptemod's kernel translated, as N and B make it run its paths: the window's mapping
/// loop takes its back edge from B = 2 on (one chain, and one return per page mapped:
/// `lookups` = 36 + B); the rounds' loops over the stores and the reads take their back
/// edges from a first round of 2 changes on, and more chains from one of 3; a second
/// round adds the jump back to the round's head, and a last round of one change after
/// rounds of more (its stores trapping now) two more.
fn ptemod_tc(n: u64, b: u64) -> Tc {
    let b = b.max(1);
    let window = u64::from(b >= 2);
    let first = n.min(b);
    let (blocks, copied, callout_sites) = match first {
        0 => (64, 441, 18),
        1 => (68, 462, 19),
        _ => (70, 474, 20),
    };
    let chains = if n == 0 {
        62 + window
    } else {
        66 + window
            + 2 * u64::from(first >= 2)
            + 2 * u64::from(first >= 3)
            + u64::from(n > b)
            + 2 * u64::from(b >= 2 && n > b && n % b == 1)
    };
    Tc {
        blocks,
        copied,
        callout_sites,
        branches: blocks - 2,
        chains,
        lookups: 36 + b,
        lookup_misses: 27,
    }
}

/// The translation of each workload's kernel, as N, K and B make it run its paths.
fn tc(workload: &str, n: u64, k: u64, b: u64) -> Option<Tc> {
    let ran = n > 0;
    Some(match workload {
        "ptemod" => ptemod_tc(n, b),
        "syscall" => Tc {
            blocks: if ran { 64 } else { 63 },
            copied: if ran { 435 } else { 433 },
            callout_sites: if ran { 19 } else { 18 },
            branches: 61,
            chains: if ran { 60 } else { 59 },
            lookups: 33,
            lookup_misses: 25,
        },
        // Past 512 faults the kernel takes one more page table: one more path.
        "pgfault" => {
            let more = u64::from(n > 512);
            Tc {
                blocks: if ran { 70 } else { 63 },
                copied: if ran { 471 } else { 435 },
                callout_sites: if ran { 20 } else { 18 },
                branches: if ran { 67 } else { 61 },
                chains: if ran { 66 + more } else { 59 },
                lookups: if ran {
                    35 + 2 * n + n.saturating_sub(1) / 512
                } else {
                    33
                },
                lookup_misses: if ran { 28 } else { 26 },
            }
        }
        // The second process and its switch back run from N = 2 and 3.
        "ctxswitch" => {
            let at = |v: [u64; 4]| v[n.min(3) as usize];
            Tc {
                blocks: at([68, 73, 76, 77]),
                copied: at([504, 534, 539, 542]),
                callout_sites: at([19, 19, 20, 21]),
                branches: at([66, 71, 74, 75]),
                chains: at([65, 69, 73, 75]),
                lookups: 46 + n,
                lookup_misses: if ran { 32 } else { 31 },
            }
        }
        // A loop over K pages takes its back edge from K = 2 on.
        "forkwait" => Tc {
            blocks: if ran { 70 } else { 55 },
            copied: if ran { 475 } else { 362 },
            callout_sites: if ran { 20 } else { 18 },
            branches: if ran { 68 } else { 53 },
            chains: if ran {
                68 + u64::from(n >= 2) + u64::from(k >= 2)
            } else {
                52
            },
            lookups: 22 + (21 + 3 * k) * n,
            lookup_misses: if ran { 28 } else { 21 },
        },
        "tlb-walk" => Tc {
            blocks: 69,
            copied: 472,
            callout_sites: 18,
            branches: 67,
            chains: 69,
            lookups: 4202,
            lookup_misses: 28,
        },
        _ => return None,
    })
}

/// The oracle of a kernel workload in binary translation, if it is one (shadow cache on).
pub(super) fn oracle(workload: &str, p: &Params) -> Option<Oracle> {
    let (n, k) = (p.n, p.k);
    let tc = tc(workload, n, k, p.b)?;
    let common = |hidden: u64| -> Vec<(&'static str, u64)> {
        vec![("hidden_faults", hidden), ("flushes", 0)]
    };
    Some(match workload {
        "ptemod" => {
            let hidden = 22 + first(n, 1) + n;
            let writes = 4 + ptemod_trapped_stores(n, p.b);
            let mut s = common(hidden);
            s.extend([
                ("true_faults", 0),
                ("pt_writes", writes),
                ("pages_built", 24 + first(n, 4)),
                ("cache_hits", 1),
                ("cache_misses", 3),
                ("unshadowed", 1),
            ]);
            build(
                &[
                    ("#pf hidden", hidden),
                    ("invlpg", n),
                    ("mov to cr3", 4),
                    ("pt unshadow", 1),
                    ("pte write", writes),
                    ("syscall", 1),
                    ("sysretq", 1),
                ],
                &s,
                &tc,
                4,
            )
        }
        "syscall" => {
            let hidden = 22;
            let mut s = common(hidden);
            s.extend([
                ("true_faults", 0),
                ("pt_writes", 4),
                ("pages_built", 29),
                ("cache_hits", 1),
                ("cache_misses", 3),
                ("unshadowed", 1),
            ]);
            build(
                &[
                    ("#pf hidden", hidden),
                    ("mov to cr3", 4),
                    ("pt unshadow", 1),
                    ("pte write", 4),
                    ("syscall", n + 2),
                    ("sysretq", n + 2),
                ],
                &s,
                &tc,
                4,
            )
        }
        "pgfault" => {
            let hidden = 22 + first(n, 5) + 2 * n + n.saturating_sub(1) / 512;
            let mut s = common(hidden);
            s.extend([
                ("true_faults", n),
                ("pt_writes", 4 + n),
                ("cache_hits", 1),
                ("cache_misses", 3),
                ("unshadowed", 1),
            ]);
            build(
                &[
                    ("#pf", n),
                    ("#pf hidden", hidden),
                    ("mov from cr2", n),
                    ("iretq", n),
                    ("mov to cr3", 4),
                    ("pt unshadow", 1),
                    ("pte write", 4 + n),
                    ("syscall", 2),
                    ("sysretq", 2),
                ],
                &s,
                &tc,
                4,
            )
            .expect(CountKey::Injections, n)
        }
        "ctxswitch" => {
            let hidden = match n {
                0 => 30,
                1 => 35,
                _ => 41,
            };
            let mut s = common(hidden);
            s.extend([
                ("true_faults", 0),
                ("pt_writes", 4),
                ("pages_built", pages_built("ctxswitch", n, true)?),
                ("cache_hits", n.max(2) - 1),
                ("cache_misses", if n >= 2 { 4 } else { 3 }),
                ("unshadowed", 1),
            ]);
            let cr3 = 3 + n.max(1);
            build(
                &[
                    ("#pf hidden", hidden),
                    ("mov to cr3", cr3),
                    ("pt unshadow", 1),
                    ("pte write", 4),
                    ("syscall", 1 + n),
                    ("sysretq", 1 + n),
                ],
                &s,
                &tc,
                cr3,
            )
        }
        "forkwait" => {
            let hidden = 13 + first(n, k) + (11 + k) * n;
            let mut s = common(hidden);
            s.extend([
                ("true_faults", 0),
                ("pt_writes", 4 + 6 * n),
                ("cache_hits", 1 + n),
                ("cache_misses", 2 + n),
                ("unshadowed", n),
            ]);
            let cr3 = 3 + 2 * n;
            build(
                &[
                    ("#pf hidden", hidden),
                    ("mov to cr3", cr3),
                    ("pt unshadow", n),
                    ("pte write", 4 + 6 * n),
                    ("syscall", 1 + n),
                    ("sysretq", 1 + n),
                ],
                &s,
                &tc,
                cr3,
            )
        }
        "tlb-walk" => {
            let hidden = 95 + n.min(TLB_WALK_PAGES);
            let mut s = common(hidden);
            s.extend([
                ("true_faults", 0),
                ("pt_writes", 4),
                ("pages_built", 29 + first(n, 1) + tlb_walk_tables(n)),
                ("cache_hits", 1),
                ("cache_misses", 3),
                ("unshadowed", 1),
            ]);
            build(
                &[
                    ("#pf hidden", hidden),
                    ("mov to cr3", 4),
                    ("pt unshadow", 1),
                    ("pte write", 4),
                    ("syscall", 2),
                    ("sysretq", 2),
                ],
                &s,
                &tc,
                4,
            )
        }
        _ => return None,
    })
}

/// The counts without the shadow cache: every CR3 load drops the shadows and builds the
/// new root's from nothing (trap-emulate's variant, less the kernel's code pages).
fn without_cache(workload: &str, p: &Params) -> Option<Oracle> {
    let (n, k) = (p.n, p.k);
    let tc = tc(workload, n, k, p.b)?;
    let (hidden, cr3, calls, flushes, extra): (u64, u64, u64, u64, Vec<(&str, u64)>) =
        match workload {
            "ptemod" => (
                25 + first(n, 1) + n,
                4,
                1,
                3,
                vec![("invlpg", n), ("pte write", ptemod_trapped_stores(n, p.b))],
            ),
            "syscall" => (25, 4, n + 2, 3, vec![]),
            "pgfault" => (
                25 + first(n, 5) + 2 * n + n.saturating_sub(1) / 512,
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
                if n == 0 { 33 } else { 32 + 6 * n },
                3 + n.max(1),
                1 + n,
                2 + n.max(1),
                vec![],
            ),
            "forkwait" => (
                20 + first(n, 2 + k) + (14 + 2 * k) * n,
                3 + 2 * n,
                1 + n,
                2 + 2 * n,
                vec![],
            ),
            "tlb-walk" => (98 + n.min(TLB_WALK_PAGES), 4, 2, 3, vec![]),
            _ => return None,
        };
    let mut list = vec![
        ("#pf hidden", hidden),
        ("mov to cr3", cr3),
        ("syscall", calls),
        ("sysretq", calls),
    ];
    list.extend(extra);
    let pt_writes = match workload {
        "pgfault" => n,
        "ptemod" => ptemod_trapped_stores(n, p.b),
        _ => 0,
    };
    let mut counts = vec![
        ("hidden_faults", hidden),
        ("true_faults", if workload == "pgfault" { n } else { 0 }),
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
    let o = build(&list, &counts, &tc, cr3);
    Some(if workload == "pgfault" {
        o.expect(CountKey::Injections, n)
    } else {
        o
    })
}

/// Binary translation's kernel workloads with the shadow cache off.
pub(super) fn variants(workload: &str, p: &Params) -> Vec<OracleVariant> {
    let Some(oracle) = without_cache(workload, p) else {
        return Vec::new();
    };
    vec![OracleVariant {
        mode: Mode::BinaryTranslation,
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
