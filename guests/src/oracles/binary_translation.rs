//! Binary translation: the guest's code runs from the translation cache at CPL 3. Every
//! VMM entry is one `Trap` exit on the monitor's FAULT port, and is either a **callout**
//! (a privileged instruction, emulated and named as in trap-and-emulate: `out`, `cpuid`,
//! `mov to cr8`, `hlt`, `iretq`, `pte write`, `#de` for a reflected fault…) or a
//! **translator entry** (`translate`: a chaining stub reached for the first time, or an
//! indirect-branch lookup that missed). CLI, STI, PUSHF and POPF are rewritten inline and
//! never trap. CPUID is a callout by design, so the count does not depend on the host's
//! CPUID faulting.
//!
//! The `translation:*` counts are exact for these images but depend on where blocks
//! begin and end (a block ends after each branch and each control-transferring callout;
//! a loop head reached by a back edge from the middle of the first block is translated
//! again as a block of its own): `blocks`, `copied`, `inline`, `callout sites` and
//! `branches` describe the code translated, once, whatever N is; `chains` counts the
//! distinct direct edges taken (each patched once); `lookups` counts indirect branches
//! executed (N returns in call-ret) and `lookup misses` the first time each target is
//! looked up before it was translated. `translate` traps = `chains` + `lookup misses`.

use contract::{CountKey, ExitKind, Oracle};

use crate::workloads::Params;

/// The code a workload's translation is made of, and how it was entered.
struct Tc {
    blocks: u64,
    copied: u64,
    inline: u64,
    callout_sites: u64,
    branches: u64,
    chains: u64,
    lookups: u64,
    lookup_misses: u64,
}

fn oracle_of(callouts: &[(&str, u64)], tc: &Tc) -> Oracle {
    let translate = tc.chains + tc.lookup_misses;
    let total: u64 = callouts.iter().map(|(_, n)| n).sum::<u64>() + translate;
    let counts = [
        ("blocks", tc.blocks),
        ("copied", tc.copied),
        ("inline", tc.inline),
        ("callout sites", tc.callout_sites),
        ("branches", tc.branches),
        ("chains", tc.chains),
        ("lookups", tc.lookups),
        ("lookup misses", tc.lookup_misses),
        ("invalidations", 0),
        ("flushes", 0),
    ];
    let o = callouts.iter().fold(
        Oracle::default()
            .expect(CountKey::Exits(ExitKind::Trap), total)
            .expect(CountKey::Traps("translate".into()), translate)
            // Never trapped: rewritten inline.
            .expect(CountKey::Traps("cli".into()), 0)
            .expect(CountKey::Traps("sti".into()), 0),
        |o, (name, n)| o.expect(CountKey::Traps((*name).to_string()), *n),
    );
    counts.into_iter().fold(o, |o, (name, n)| {
        o.expect(CountKey::Translation(name.into()), n)
    })
}

/// A straight-line workload: its loop in three blocks (entry, loop head, exit), three
/// chains, no indirect branch.
const fn straight(copied: u64, inline: u64, callout_sites: u64) -> Tc {
    Tc {
        blocks: 3,
        copied,
        inline,
        callout_sites,
        branches: 2,
        chains: 3,
        lookups: 0,
        lookup_misses: 0,
    }
}

/// The oracle for N ≥ 2, where every edge of the measured loop is taken (with N = 0 the
/// loop is skipped and with N = 1 its back edge is never taken, so fewer blocks are
/// translated and fewer chains patched; those runs carry no oracle).
pub(super) fn oracle(workload: &str, p: &Params) -> Option<Oracle> {
    if crate::kernel::workloads::KERNEL_WORKLOADS.contains(&workload) {
        return super::binary_translation_kernel::oracle(workload, p);
    }
    let n = p.n;
    if n < 2 {
        return None;
    }
    Some(match workload {
        "compute" => oracle_of(&[("out", 1)], &straight(26, 0, 2)),
        "pio" => oracle_of(&[("out", n + 1)], &straight(27, 0, 3)),
        // One CPUID before the loop; a callout whatever the host's CPUID faulting.
        "cpuid" => oracle_of(
            &[("cpuid", n + 1), ("out", 1)],
            &Tc {
                blocks: 6,
                copied: 34,
                inline: 0,
                callout_sites: 4,
                branches: 5,
                chains: 6,
                lookups: 0,
                lookup_misses: 0,
            },
        ),
        // CLI and STI inline: no exit per iteration at all.
        "irq-toggle" => oracle_of(&[("out", 1)], &straight(22, 2, 2)),
        // CLI, 4 × PUSHF, 3 × POPF and STI... all inline: the hole is closed.
        "popf" => oracle_of(
            &[("out", 1)],
            &Tc {
                blocks: 6,
                copied: 36,
                inline: 9,
                callout_sites: 2,
                branches: 5,
                chains: 6,
                lookups: 0,
                lookup_misses: 0,
            },
        ),
        "cr8wr" => oracle_of(
            &[("mov to cr8", n + 1), ("mov from cr8", 1), ("out", 1)],
            &straight(25, 0, 5),
        ),
        // Every `out` is a callout (the balloon's 2B too: the engine hands them to the
        // machine's device). The verify loop takes both of its paths only when B < N;
        // the two balloon loops take their back edges only when B ≥ 2 (one chain each);
        // the hold spins without exits but adds a loop, so the oracle is for
        // delay_us = 0.
        "balloon" if p.b < n && p.delay_us == 0 => oracle_of(
            &[("out", 2 * p.b + 1)],
            &Tc {
                blocks: 14,
                copied: 63,
                inline: 0,
                callout_sites: 4,
                branches: 13,
                chains: if p.b >= 2 { 18 } else { 16 },
                lookups: 0,
                lookup_misses: 0,
            },
        ),
        "mmio" => oracle_of(&[("out", 1)], &straight(25, 0, 2))
            .expect(CountKey::Exits(ExitKind::MmioRead), n),
        // Per iteration: OUT (arm), HLT (the timer is reflected there), IRETQ; STI and
        // CLI inline.
        "hlt-timer" => oracle_of(
            &[("lidt", 1), ("out", n + 1), ("hlt", n), ("iretq", n)],
            &Tc {
                blocks: 6,
                copied: 39,
                inline: 2,
                callout_sites: 6,
                branches: 3,
                chains: 4,
                lookups: 0,
                lookup_misses: 0,
            },
        )
        .expect(CountKey::Injections, n),
        "divzero" => oracle_of(
            &[("lidt", 1), ("#de", n), ("iretq", n), ("out", 1)],
            &Tc {
                blocks: 6,
                copied: 45,
                inline: 0,
                callout_sites: 4,
                branches: 4,
                chains: 4,
                lookups: 0,
                lookup_misses: 0,
            },
        )
        .expect(CountKey::Injections, n),
        // N returns, each one lookup; the first misses (its target is not translated
        // yet), every other hits: no exit per call.
        "call-ret" => oracle_of(
            &[("out", 1)],
            &Tc {
                blocks: 6,
                copied: 22,
                inline: 0,
                callout_sites: 2,
                branches: 5,
                chains: 5,
                lookups: n,
                lookup_misses: 1,
            },
        ),
        _ => return None,
    })
}
