//! One suite over every engine: every workload of the catalog in every engine of this
//! build, N from the one table (`common::ITERATIONS`), judged by its oracle exactly, with
//! the counts that tell the three strategies apart checked one by one, and the same result
//! and console in every mode but where a mode declares its divergence. The outcome each
//! mode must reach follows what the capability probe says this host does.

mod common;

use contract::abi::{hypercall, port};
use contract::{CountKey, ExitKind, GuestImage, Mode, Oracle, Outcome, RunOptions, RunRecord};
use guests::{Params, WORKLOADS};

/// Whether CPUID faulting is in effect for a trap-emulate run with `opts` on this host.
fn cpuid_faulting(opts: &RunOptions) -> bool {
    opts.cpuid_faulting
        && machine::caps::probe()
            .expect("probe")
            .cpuid_faulting
            .is_present()
}

/// Which divergence this host and these options make a mode declare for a workload:
/// `Some(host_caused)`.
fn declared_divergence(workload: &str, mode: Mode, opts: &RunOptions) -> Option<bool> {
    match (workload, mode) {
        ("popf", Mode::TrapEmulate) => Some(false),
        // CPUID joins the hole where faulting is not in effect; the host is the cause when
        // faulting was asked for.
        ("cpuid", Mode::TrapEmulate) if !cpuid_faulting(opts) => Some(opts.cpuid_faulting),
        _ => None,
    }
}

/// The result a run produced, divergent or not.
fn result_of(r: &RunRecord) -> Option<u64> {
    match &r.outcome {
        Outcome::Completed { result, .. } => Some(*result),
        Outcome::Diverged { result, .. } => *result,
        _ => None,
    }
}

/// What each workload computes, worked out here rather than taken from its oracle.
fn computes(workload: &str, n: u64) -> Option<u64> {
    Some(match workload {
        "irq-toggle" => n * (n - 1) / 2,
        "cpuid" | "divzero" => n,
        "popf" => 3 * n,
        "cr8wr" => (n - 1) & 15,
        "mmio" => n * (n + 1) / 2,
        // With B = 1 the kernel flips one PTE between frame A (holding 0xA) and frame B
        // (0xB), B first, and reads each back.
        "ptemod" => n.div_ceil(2) * 0xB + n / 2 * 0xA,
        _ => return None,
    })
}

/// The oracle the record was judged by: the variant whose condition holds, or the mode's.
fn oracle_for<'a>(image: &'a GuestImage, r: &RunRecord) -> &'a Oracle {
    image
        .expected
        .variants
        .iter()
        .filter(|v| v.mode == r.mode)
        .find_map(|v| v.when.holds(r).map(|_| &v.oracle))
        .or_else(|| image.expected.oracles.get(&r.mode))
        .unwrap_or_else(|| panic!("{} has no oracle for {}", image.name, r.mode))
}

fn check_everywhere(opts: &RunOptions) {
    let engines = virtlab::engines::all();
    for w in WORKLOADS {
        let n = common::iterations(w.name);
        let mut seen: Vec<(Mode, Option<u64>, String)> = Vec::new();
        for engine in &engines {
            let mode = engine.mode();
            if guests::unsupported(w.name, mode).is_some() {
                // Declared, and never judged by an oracle there.
                assert!(
                    oracle_absent(w.name, mode),
                    "{}: an oracle for {mode}",
                    w.name
                );
                continue;
            }
            let image = common::workload_image(w.name, engine.flavour(), common::params(w.name));
            let r = common::run(*engine, &image, opts);
            let what = format!("{} (n={n}) in {mode}", w.name);
            assert_eq!(r.mode, mode, "{what}");
            // The oracle, exactly, and really applied: every key it lists was measured.
            assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
            assert!(!r.expected.is_empty(), "{what}: no oracle");
            for key in oracle_for(&image, &r).counts.keys() {
                assert!(r.expected.contains_key(key), "{what}: {key}");
            }
            assert_eq!(r.console_ok, Some(true), "{what}: console {:?}", r.console);
            match (declared_divergence(w.name, mode, opts), &r.outcome) {
                (None, Outcome::Completed { exit_code: 0, .. }) => {
                    assert!(r.verdict_ok(), "{what}");
                }
                (
                    Some(host),
                    Outcome::Diverged {
                        declared: true,
                        host_caused,
                        ..
                    },
                ) => assert_eq!(*host_caused, host, "{what}"),
                (want, got) => panic!("{what}: expected divergence {want:?}, got {got:?}"),
            }
            assert!(r.went_as_expected(false), "{what}");
            // A declared wrong answer is the one declared; any other is the right one.
            let want = match image.expected.divergences.get(&mode) {
                Some(d) => Some(d.result),
                None => image.expected.result,
            };
            assert_eq!(result_of(&r), want, "{what}: result");
            per_mode_invariants(&r, &what);
            match mode {
                Mode::HwAssisted => hw_assisted_counts(w.name, n, &r, &what),
                Mode::TrapEmulate => trap_emulate_counts(w.name, n, &r, opts, &what),
                Mode::Paravirt => paravirt_counts(w.name, &r, &what),
                Mode::BinaryTranslation => binary_translation_counts(w.name, n, &r, &what),
            }
            seen.push((mode, result_of(&r), r.console.clone()));
        }
        // The same result and console in every mode, but for a declared wrong answer.
        let (_, reference, console) = &seen[0];
        if let Some(want) = computes(w.name, n) {
            assert_eq!(*reference, Some(want), "{}: what it computes", w.name);
        }
        for (mode, result, other) in &seen[1..] {
            assert_eq!(other, console, "{}: console in {mode}", w.name);
            if !(w.name == "popf" && *mode == Mode::TrapEmulate) {
                assert_eq!(result, reference, "{}: result in {mode}", w.name);
            }
        }
    }
}

/// Whether the catalog has no oracle for `workload` in `mode`.
fn oracle_absent(workload: &str, mode: Mode) -> bool {
    let w = guests::find(workload).unwrap();
    !w.expectations(&common::params(workload))
        .oracles
        .contains_key(&mode)
}

/// What each strategy guarantees about how its exits are made up.
fn per_mode_invariants(r: &RunRecord, what: &str) {
    match r.mode {
        Mode::HwAssisted => {
            assert!(r.traps.is_empty() && r.hypercalls.is_empty(), "{what}");
            // KVM's statistics, where this host offers them (a probed capability).
            if machine::caps::probe().expect("probe").stats_fd.is_present() {
                assert!(
                    r.kvm_stats.contains_key("exits"),
                    "{what}: no KVM statistics"
                );
            }
            assert!(r.guest.is_some(), "{what}: the guest measured nothing");
        }
        Mode::TrapEmulate => {
            // One Trap exit per trap, and only the trap names the oracle states.
            assert_eq!(
                r.exit_count(ExitKind::Trap),
                r.traps.values().sum::<u64>(),
                "{what}"
            );
            for name in r.traps.keys() {
                assert!(
                    r.expected.contains_key(&CountKey::Traps(name.clone())),
                    "{what}: a trap the oracle does not name: {name}"
                );
            }
            assert_eq!(
                r.port_writes(port::FAULT),
                0,
                "{what}: a trap is not port I/O"
            );
        }
        Mode::BinaryTranslation => {
            // One Trap exit per VMM entry (callout or translator entry), every one named
            // and stated by the oracle; CLI/STI/PUSHF/POPF never among them.
            assert_eq!(
                r.exit_count(ExitKind::Trap),
                r.traps.values().sum::<u64>(),
                "{what}"
            );
            for name in r.traps.keys() {
                assert!(
                    r.expected.contains_key(&CountKey::Traps(name.clone())),
                    "{what}: a VMM entry the oracle does not name: {name}"
                );
                assert!(
                    !["cli", "sti", "pushfq", "popfq"].contains(&name.as_str()),
                    "{what}: {name} trapped"
                );
            }
            // Translator entries: one per chain patched and per lookup miss.
            assert_eq!(
                r.traps.get("translate").copied().unwrap_or(0),
                r.translation["chains"] + r.translation["lookup misses"],
                "{what}"
            );
            assert!(r.translation["blocks"] > 0, "{what}");
        }
        Mode::Paravirt => {
            // Every exit is a hypercall, but the exceptions the guest causes itself and
            // the accesses to the disk it was given (its MMIO page and ATA ports), and
            // every hypercall is counted under exactly one name.
            // (The balloon's ports are a device open to every guest: their `out`s exit
            // to the machine directly.)
            let traps = r.exit_count(ExitKind::Trap);
            let balloon = r.port_writes(contract::overcommit::port::INFLATE)
                + r.port_writes(contract::overcommit::port::DEFLATE);
            let disk: u64 = if r.device.is_empty() {
                0
            } else {
                [
                    ExitKind::MmioRead,
                    ExitKind::MmioWrite,
                    ExitKind::IoIn,
                    ExitKind::IoOut,
                ]
                .map(|k| r.exit_count(k))
                .iter()
                .sum()
            };
            assert_eq!(
                r.total_exits(),
                r.exit_count(ExitKind::Hypercall) + traps + disk + balloon,
                "{what}"
            );
            let named: u64 = r
                .hypercalls
                .iter()
                .filter(|(k, _)| !k.contains("multicall:") && !hypercall::is_counter(k))
                .map(|(_, v)| v)
                .sum();
            assert_eq!(named, r.exit_count(ExitKind::Hypercall), "{what}");
            assert_eq!(r.port_writes(hypercall::PORT), 0, "{what}");
            assert!(r.hypercalls.keys().all(|k| !k.starts_with("rejected")));
        }
    }
}

/// Binary translation: the translation is made once, whatever N; only the callouts
/// and the lookups grow with N.
fn binary_translation_counts(workload: &str, n: u64, r: &RunRecord, what: &str) {
    let t = |k: &str| r.traps.get(k).copied().unwrap_or(0);
    match workload {
        "irq-toggle" | "popf" => {
            assert_eq!(t("cli") + t("sti"), 0, "{what}: CLI/STI inline");
            assert_eq!(
                r.total_exits(),
                1 + t("translate"),
                "{what}: no exit per op"
            );
        }
        "call-ret" => {
            assert_eq!(r.translation["lookups"], n, "{what}: one lookup per RET");
            assert_eq!(r.translation["lookup misses"], 1, "{what}");
        }
        "cpuid" => assert_eq!(t("cpuid"), n + 1, "{what}: a callout on every host"),
        _ => {}
    }
    assert_eq!(r.translation["invalidations"], 0, "{what}");
}

/// Hardware-assisted: only port I/O, MMIO and `hlt` leave the VM; the rest of every
/// workload (CLI/STI, CPUID, POPF, CR8, #DE, PTE writes) is handled in the kernel.
fn hw_assisted_counts(workload: &str, n: u64, r: &RunRecord, what: &str) {
    match workload {
        "pio" => {
            assert_eq!(r.port_writes(port::CONSOLE), n, "{what}");
            assert_eq!(
                r.exit_count(ExitKind::IoOut),
                n + 1,
                "{what}: + the exit port"
            );
            assert_eq!(r.port_writes(port::EXIT), 1, "{what}");
            assert_eq!(r.console, guests::workloads::pio_text(n), "{what}");
            assert_eq!(r.total_exits(), n + 1, "{what}");
        }
        "mmio" => {
            assert_eq!(r.exit_count(ExitKind::MmioRead), n, "{what}: one by one");
            assert_eq!(r.exit_count(ExitKind::MmioWrite), 0, "{what}");
        }
        "hlt-timer" => {
            assert_eq!(r.exit_count(ExitKind::Halt), n, "{what}");
            assert_eq!(r.injections, n, "{what}");
            assert_eq!(r.port_writes(port::TIMER), n, "{what}");
            assert_eq!(r.exit_count(ExitKind::InterruptWindow), 0, "{what}");
        }
        "blk-virtio" => {
            // One doorbell per batch of Q requests, after the queue's five setup writes.
            let b = n.div_ceil(common::params(workload).q);
            assert_eq!(r.exit_count(ExitKind::MmioWrite), 5 + 2 * b, "{what}");
            assert_eq!(r.device["virtio:notifications"], 2 * b, "{what}");
        }
        "blk-emulated" => {
            // Every register access exits: one command register write per request.
            let command = contract::abi::blk::ATA_COMMAND;
            assert_eq!(r.port_writes(command), 2 * n, "{what}");
            assert_eq!(r.device["ata:commands"], 2 * n, "{what}");
        }
        "balloon" => {
            let b = guests::Params::default().b;
            assert_eq!(r.exit_count(ExitKind::IoOut), 2 * b + 1, "{what}");
            assert_eq!(
                r.total_exits(),
                2 * b + 1,
                "{what}: the balloon's and the exit"
            );
        }
        _ => assert_eq!(
            r.total_exits(),
            1,
            "{what}: only the exit port: {:?}",
            r.exits
        ),
    }
}

/// Trap-and-emulate: one trap per privileged instruction, named by its mnemonic.
fn trap_emulate_counts(workload: &str, n: u64, r: &RunRecord, opts: &RunOptions, what: &str) {
    let traps = |name: &str| r.traps.get(name).copied().unwrap_or(0);
    match workload {
        "irq-toggle" => {
            assert_eq!(
                (traps("cli"), traps("sti"), traps("out")),
                (n, n, 1),
                "{what}"
            );
            assert_eq!(r.exit_count(ExitKind::Trap), 2 * n + 1, "{what}");
            assert_eq!(
                r.total_exits() - r.exit_count(ExitKind::Interrupted),
                2 * n + 1,
                "{what}"
            );
            assert_eq!(r.event_ns["cli"].count, n, "{what}");
            assert_eq!(r.injections, 0, "{what}");
        }
        "hlt-timer" => {
            for m in ["sti", "hlt", "iretq", "cli"] {
                assert_eq!(traps(m), n, "{what}: {m}");
            }
            assert_eq!((traps("out"), traps("lidt")), (n + 1, 1), "{what}");
            assert_eq!(r.injections, n, "{what}");
        }
        "divzero" => {
            assert_eq!(
                (traps("#de"), traps("iretq"), r.injections),
                (n, n, n),
                "{what}"
            );
        }
        "ptemod" => {
            // One INVLPG per change; every store but the first (its page table is not
            // shadowed until the first read) traps, besides the kernel's 4 at boot.
            assert_eq!(
                (traps("pte write"), traps("invlpg")),
                (4 + n - 1, n),
                "{what}"
            );
        }
        "cr8wr" => {
            assert_eq!(
                (traps("mov to cr8"), traps("mov from cr8")),
                (n + 1, 1),
                "{what}"
            );
        }
        "mmio" => {
            assert_eq!(
                r.exit_count(ExitKind::MmioRead),
                n,
                "{what}: MMIO exits, no trap"
            );
            assert_eq!(r.exit_count(ExitKind::Trap), 1, "{what}");
        }
        "cpuid" => {
            let want = if cpuid_faulting(opts) { n + 1 } else { 0 };
            assert_eq!(traps("cpuid"), want, "{what}");
        }
        "popf" => {
            // The hole: PUSHF/POPF never trapped, only CLI, STI and the exit did, and the
            // guest's IF test saw the real IF once per iteration.
            assert_eq!(
                r.traps.keys().collect::<Vec<_>>(),
                ["cli", "out", "sti"],
                "{what}"
            );
            assert!(
                matches!(r.outcome, Outcome::Diverged { ref got, .. } if *got == n.to_string()),
                "{what}: {:?}",
                r.outcome
            );
        }
        _ => {}
    }
}

/// Paravirtual: nothing but hypercalls, and none where the shared-info page does.
fn paravirt_counts(workload: &str, r: &RunRecord, what: &str) {
    if workload == "irq-toggle" {
        // The virtual IF is a byte in the shared-info page: no hypercall but `exit`.
        assert_eq!(r.hypercalls.len(), 1, "{what}: {:?}", r.hypercalls);
        assert_eq!(r.hypercalls["exit"], 1, "{what}");
        assert_eq!(r.total_exits(), 1, "{what}");
    }
}

#[test]
fn the_iteration_table_has_one_row_per_workload() {
    let mut table: Vec<&str> = common::ITERATIONS.iter().map(|(w, _)| *w).collect();
    let mut catalog: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
    table.sort_unstable();
    catalog.sort_unstable();
    assert_eq!(table, catalog);
    for (w, n) in common::ITERATIONS {
        assert!((100..=1000).contains(n), "{w}: {n}");
    }
}

#[test]
fn every_workload_in_every_engine_meets_its_oracle_exactly() {
    if !common::kvm_or_skip("every_workload_in_every_engine_meets_its_oracle_exactly") {
        return;
    }
    check_everywhere(&RunOptions::default());
}

#[test]
fn the_oracles_follow_cpuid_faulting_switched_off() {
    if !common::kvm_or_skip("the_oracles_follow_cpuid_faulting_switched_off") {
        return;
    }
    check_everywhere(&RunOptions {
        cpuid_faulting: false,
        ..RunOptions::default()
    });
}

#[test]
fn zero_iterations_complete_everywhere() {
    if !common::kvm_or_skip("zero_iterations_complete_everywhere") {
        return;
    }
    for engine in virtlab::engines::all() {
        for w in WORKLOADS {
            if guests::unsupported(w.name, engine.mode()).is_some() {
                continue;
            }
            let image = common::workload_image(
                w.name,
                engine.flavour(),
                Params {
                    n: 0,
                    ..Params::default()
                },
            );
            let r = common::run(engine, &image, &RunOptions::default());
            let what = format!("{} in {}", w.name, engine.mode());
            assert!(r.mismatches.is_empty(), "{what}: {:?}", r.mismatches);
            assert!(r.went_as_expected(false), "{what}: {:?}", r.outcome);
        }
    }
}
