//! The guest kernel's memory workloads on shadow page tables, in the two modes that build
//! them — trap-emulate, and binary translation (the kernel's code translated, its processes
//! untranslated on their user shadows): each completes with the result it computes and
//! exactly the counts its oracle declares (`guests/src/oracles/trap_emulate_kernel.rs`,
//! `binary_translation_kernel.rs`), and the shadow cache's effect on a context switch is
//! the oracle's.

mod common;

use binary_translation::BinaryTranslation;
use contract::{Engine, Flavour, Mode, Outcome, RunOptions, RunRecord};
use guests::kernel::workloads::tlb_walk_sum;
use guests::oracles::trap_emulate_kernel::pages_built;
use guests::Params;
use trap_emulate::TrapEmulate;

/// The modes that run the guest kernel on shadow tables.
const SHADOW_MODES: [Mode; 2] = [Mode::TrapEmulate, Mode::BinaryTranslation];

/// The workloads of the guest kernel.
const MEMORY_WORKLOADS: [&str; 6] = [
    "ptemod",
    "syscall",
    "pgfault",
    "ctxswitch",
    "forkwait",
    "tlb-walk",
];

fn computes(workload: &str, n: u64, k: u64) -> u64 {
    let sum_to = |m: u64| m * (m + 1) / 2;
    match workload {
        "syscall" | "pgfault" => sum_to(n),
        "ctxswitch" => n.div_ceil(2) + ((n / 2) << 32),
        "forkwait" => n * sum_to(k),
        "tlb-walk" => tlb_walk_sum(n),
        // B = 1: one PTE flipped to frame B (0xB), back to A (0xA), …, each read back.
        "ptemod" => n.div_ceil(2) * 0xB + n / 2 * 0xA,
        _ => unreachable!(),
    }
}

fn run(mode: Mode, workload: &str, p: Params, cache: bool) -> RunRecord {
    let img = common::workload_image(workload, Flavour::Native, p);
    let opts = RunOptions {
        shadow_cache: cache,
        ..RunOptions::default()
    };
    let engine: &dyn Engine = match mode {
        Mode::TrapEmulate => &TrapEmulate,
        Mode::BinaryTranslation => &BinaryTranslation,
        other => unreachable!("{other} builds no shadow tables"),
    };
    common::run(engine, &img, &opts)
}

fn result(r: &RunRecord, what: &str) -> u64 {
    match &r.outcome {
        Outcome::Completed {
            exit_code: 0,
            result,
            ..
        } => *result,
        Outcome::Diverged {
            declared: true,
            result: Some(result),
            ..
        } => *result,
        o => panic!("{what}: {o:?}\n{:?}\n{:?}", r.traps, r.shadow),
    }
}

#[test]
fn every_memory_workload_runs_on_shadow_tables_with_exact_counts() {
    if !common::kvm_or_skip("every_memory_workload_runs_on_shadow_tables_with_exact_counts") {
        return;
    }
    for (mode, w) in SHADOW_MODES
        .into_iter()
        .flat_map(|m| MEMORY_WORKLOADS.map(|w| (m, w)))
    {
        assert_eq!(guests::unsupported(w, mode), None);
        let p = common::params(w);
        let what = format!("{w} in {mode} (n={}, k={})", p.n, p.k);
        let r = run(mode, w, p, true);
        assert_eq!(result(&r, &what), computes(w, p.n, p.k), "{what}");
        assert!(!r.expected.is_empty(), "{what}: no oracle");
        assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
        assert!(r.verdict_ok(), "{what}");
        // Without the cache: the oracle's variant, a declared divergence.
        let off = run(
            mode,
            w,
            Params {
                n: p.n.min(50),
                ..p
            },
            false,
        );
        assert!(
            off.mismatches.is_empty(),
            "{what} without the cache: {:?}",
            off.mismatches
        );
        assert!(
            matches!(off.outcome, Outcome::Diverged { declared: true, .. }),
            "{what} without the cache: {:?}",
            off.outcome
        );
    }
}

#[test]
fn pgfault_with_n_1000_shows_the_oracles_hidden_and_true_faults() {
    if !common::kvm_or_skip("pgfault_with_n_1000_shows_the_oracles_hidden_and_true_faults") {
        return;
    }
    let p = Params {
        n: 1000,
        ..common::params("pgfault")
    };
    for mode in SHADOW_MODES {
        let r = run(mode, "pgfault", p, true);
        assert_eq!(result(&r, "pgfault"), 1000 * 1001 / 2, "{mode}");
        assert!(r.mismatches.is_empty(), "{mode}: {:?}", r.mismatches);
        // The fixed 30 (27 in binary translation: the CPU never fetches the kernel's code
        // pages there), two per fault (the kernel zeroing the frame, the retried access),
        // one for the second user page table.
        let fixed = if mode == Mode::TrapEmulate { 30 } else { 27 };
        assert_eq!(r.shadow["hidden_faults"], fixed + 2 * 1000 + 1, "{mode}");
        assert_eq!(r.shadow["true_faults"], 1000, "{mode}");
        if mode == Mode::BinaryTranslation {
            assert_eq!(r.traps["#pf"], 1000, "{mode}");
        }
        assert_eq!(r.injections, 1000, "{mode}");
    }
}

#[test]
fn without_the_shadow_cache_ctxswitch_builds_the_oracles_extra_pages() {
    if !common::kvm_or_skip("without_the_shadow_cache_ctxswitch_builds_the_oracles_extra_pages") {
        return;
    }
    let n = 20;
    let p = Params {
        n,
        ..common::params("ctxswitch")
    };
    for mode in SHADOW_MODES {
        let on = run(mode, "ctxswitch", p, true);
        let off = run(mode, "ctxswitch", p, false);
        for r in [&on, &off] {
            assert_eq!(result(r, "ctxswitch"), computes("ctxswitch", n, p.k));
        }
        let (built_on, built_off) = (on.shadow["pages_built"], off.shadow["pages_built"]);
        assert_eq!(built_on, pages_built("ctxswitch", n, true).unwrap());
        assert_eq!(built_off, pages_built("ctxswitch", n, false).unwrap());
        assert_eq!(built_off - built_on, 9 * n - 15);
        assert_eq!(
            (on.shadow["cache_hits"], on.shadow["cache_misses"]),
            (n - 1, 4)
        );
        assert_eq!(
            (off.shadow["cache_hits"], off.shadow["cache_misses"]),
            (0, 3 + n)
        );
        assert_eq!(off.shadow["flushes"], 2 + n);
    }
}

#[test]
fn small_n_with_and_without_the_cache_match_the_oracle() {
    if !common::kvm_or_skip("small_n_with_and_without_the_cache_match_the_oracle") {
        return;
    }
    for (mode, w) in SHADOW_MODES
        .into_iter()
        .flat_map(|m| MEMORY_WORKLOADS.map(|w| (m, w)))
    {
        for n in 0..3 {
            for cache in [true, false] {
                let p = Params {
                    n,
                    ..Params::default()
                };
                let r = run(mode, w, p, cache);
                let what = format!("{w} in {mode} n={n} cache={cache}");
                assert_eq!(result(&r, &what), computes(w, n, p.k), "{what}");
                assert!(!r.expected.is_empty(), "{what}: no oracle");
                assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
            }
        }
    }
}

#[test]
fn the_kernels_translations_survive_context_switches_and_user_code_is_not_translated() {
    if !common::kvm_or_skip(
        "the_kernels_translations_survive_context_switches_and_user_code_is_not_translated",
    ) {
        return;
    }
    let few = run(
        Mode::BinaryTranslation,
        "ctxswitch",
        Params {
            n: 3,
            ..common::params("ctxswitch")
        },
        true,
    );
    let many = run(
        Mode::BinaryTranslation,
        "ctxswitch",
        Params {
            n: 40,
            ..common::params("ctxswitch")
        },
        true,
    );
    for (r, n) in [(&few, 3), (&many, 40)] {
        // Every guest CR3 load is checked against the translated pages; only the first,
        // off the boot tables, throws a block away: the kernel half is mapped alike.
        assert_eq!(r.translation["cr3 switches"], r.traps["mov to cr3"]);
        assert_eq!(r.translation["cr3 switches"], 3 + n);
        assert_eq!(r.translation["cr3 invalidations"], 1);
        // User mode's SYSCALLs trap from native user code (none is a callout site).
        assert_eq!(r.traps["syscall"], 1 + n);
    }
    // 37 more switches translate nothing more: the processes' code is never translated.
    for key in ["blocks", "copied", "chains", "lookup misses"] {
        assert_eq!(few.translation[key], many.translation[key], "{key}");
    }
}

/// ptemod's rounds at every small N and B, with and without the shadow cache: the
/// trapped stores (all but the first round's), the hidden faults and, in binary
/// translation, the kernel paths the rounds take (a first round of 1, 2 or 3 and more
/// changes; a second round; a last round of one change) are the oracle's exactly, and
/// the reads are worked out here page by page.
#[test]
fn ptemod_rounds_match_the_oracle_at_small_n_and_b() {
    if !common::kvm_or_skip("ptemod_rounds_match_the_oracle_at_small_n_and_b") {
        return;
    }
    for mode in SHADOW_MODES {
        for b in 1..=4u64 {
            for n in 0..=9u64 {
                for cache in [true, false] {
                    let p = Params {
                        n,
                        b,
                        ..Params::default()
                    };
                    let r = run(mode, "ptemod", p, cache);
                    let what = format!("ptemod in {mode} n={n} b={b} cache={cache}");
                    let mut frames = vec![0xA_u64; b as usize];
                    let mut want = 0;
                    for i in 0..n {
                        let page = (i % b) as usize;
                        frames[page] ^= 0xA ^ 0xB;
                        want += frames[page];
                    }
                    assert_eq!(result(&r, &what), want, "{what}");
                    assert!(!r.expected.is_empty(), "{what}: no oracle");
                    assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
                    assert_eq!(r.traps.get("invlpg").copied().unwrap_or(0), n, "{what}");
                }
            }
        }
    }
}
