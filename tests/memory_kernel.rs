//! The guest kernel under hw-assisted: the probe of what it relies on (SYSCALL/SYSRETQ,
//! a #PF from CPL 3 with CR2, `invlpg`, `mov cr3`), and each memory workload judged by
//! its oracle with its result worked out here.

mod common;

use contract::{Flavour, Outcome, RunOptions, RunRecord};
use guests::kernel::workloads::{probe_bits, probe_image};
use guests::Params;
use hw_assisted::HwAssisted;

#[test]
fn the_probe_sees_every_behaviour_the_kernel_relies_on() {
    if !common::kvm_or_skip("the_probe_sees_every_behaviour_the_kernel_relies_on") {
        return;
    }
    let image = probe_image(Flavour::Native).unwrap();
    let opts = RunOptions {
        show_regs: true,
        ..RunOptions::default()
    };
    let r = common::run(&HwAssisted, &image, &opts);
    match &r.outcome {
        Outcome::Completed {
            exit_code, result, ..
        } => {
            assert_eq!(*exit_code, 0, "{:?}", r.outcome);
            assert_eq!(
                *result & probe_bits::ALL,
                probe_bits::ALL,
                "bits that held: {result:#x}"
            );
            // The kernel's own boot-time check agrees with the host's capability probe.
            let caps = machine::caps::probe().expect("probe");
            assert_eq!(
                result & probe_bits::SYSCALL_ENTERS_KERNEL != 0,
                caps.syscall_to_kernel.is_present(),
                "{}",
                caps.syscall_to_kernel.detail
            );
        }
        other => panic!("the probe did not complete: {other:?}"),
    }
    assert!(r.verdict_ok(), "{:?}", r.mismatches);
}

/// What each memory workload computes, worked out here.
fn computes(workload: &str, n: u64, k: u64) -> u64 {
    let sum_to = |m: u64| m * (m + 1) / 2;
    match workload {
        // The kernel returns 1, 2, …, N.
        "syscall" => sum_to(n),
        // Each new page reads 0, then i + 1.
        "pgfault" => sum_to(n),
        // A's counter, and B's above bit 32.
        "ctxswitch" => n.div_ceil(2) + ((n / 2) << 32),
        "forkwait" => n * sum_to(k),
        // Access i reads (i × 1031 mod 64) + 1.
        "tlb-walk" => (0..n).map(|i| (i * 1031) % 64 + 1).sum(),
        // B = 1: one PTE flipped to frame B (0xB), back to A (0xA), …, each read back.
        "ptemod" => n.div_ceil(2) * 0xB + n / 2 * 0xA,
        _ => unreachable!(),
    }
}

#[test]
fn every_memory_workload_computes_its_result_under_hw_assisted() {
    if !common::kvm_or_skip("every_memory_workload_computes_its_result_under_hw_assisted") {
        return;
    }
    for w in [
        "ptemod",
        "syscall",
        "pgfault",
        "ctxswitch",
        "forkwait",
        "tlb-walk",
    ] {
        let p = common::params(w);
        let r = common::run_workload(&HwAssisted, w, p);
        let what = format!("{w} (n={}, k={})", p.n, p.k);
        assert!(r.verdict_ok(), "{what}: {:?} {:?}", r.outcome, r.mismatches);
        match &r.outcome {
            Outcome::Completed {
                exit_code, result, ..
            } => {
                assert_eq!(*exit_code, 0, "{what}");
                assert_eq!(*result, computes(w, p.n, p.k), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        eprintln!(
            "{what}: {:?} wall {} ms",
            r.kvm_stats.get("pf_taken"),
            r.wall_ns / 1_000_000
        );
    }
}

/// The guest kernel owns its MMU under hw-assisted, and KVM's statistics show how KVM runs
/// it underneath: with shadow paging (on `kvm_pvm`, or VT-x/SVM without EPT/NPT) KVM
/// intercepts each of the guest's own page faults and injects it back (`pf_guest`); with
/// nested paging it never sees them.
#[test]
fn kvm_statistics_show_how_the_guest_mmu_is_virtualized() {
    if !common::kvm_or_skip("kvm_statistics_show_how_the_guest_mmu_is_virtualized") {
        return;
    }
    if !machine::caps::probe().expect("probe").stats_fd.is_present() {
        eprintln!(
            "SKIPPED kvm_statistics_show_how_the_guest_mmu_is_virtualized: no KVM stats fd here"
        );
        return;
    }
    let n = common::iterations("pgfault");
    let run = |n: u64| hw_run("pgfault", n);
    let r = run(n);
    let mmu = r
        .host
        .guest_mmu
        .clone()
        .expect("the record names the guest MMU");
    let Some(&injected) = r.kvm_stats.get("pf_guest") else {
        eprintln!(
            "SKIPPED kvm_statistics_show_how_the_guest_mmu_is_virtualized: KVM has no \
             pf_guest statistic here ({mmu})"
        );
        return;
    };
    if mmu.contains("unknown") {
        eprintln!(
            "SKIPPED kvm_statistics_show_how_the_guest_mmu_is_virtualized: the guest MMU is \
             not known here ({mmu}); pf_guest {injected}"
        );
        return;
    }
    if mmu.starts_with("shadow") {
        // KVM intercepts and injects back each of the guest's own page faults: a run with
        // N more demand-zero faults has exactly N more (whatever the boot costs, it is
        // the same in both runs).
        let r2 = run(2 * n);
        let injected2 = r2.kvm_stats["pf_guest"];
        assert_eq!(
            injected2.checked_sub(injected),
            Some(n),
            "{mmu}: pf_guest {injected} with N = {n}, {injected2} with 2N"
        );
        let taken = (r.kvm_stats.get("pf_taken"), r2.kvm_stats.get("pf_taken"));
        if let (Some(&a), Some(&b)) = taken {
            assert!(b >= a + n, "{mmu}: pf_taken {a} with N, {b} with 2N");
        }
    } else {
        assert_eq!(injected, 0, "{mmu}");
    }
}

/// What ptemod reads with batch `b`, worked out page by page: the window's B pages map
/// frame A (0xA) at first; iteration i changes page i mod B to the other frame and reads
/// it.
fn ptemod_reads(n: u64, b: u64) -> u64 {
    let mut frames = vec![0xA_u64; b as usize];
    let mut sum = 0;
    for i in 0..n {
        let page = (i % b) as usize;
        frames[page] ^= 0xA ^ 0xB;
        sum += frames[page];
    }
    sum
}

/// ptemod with a batch in every engine: every oracle exact (the rounds' stores, the
/// trapped ones, the `mmu_update` batches, the translated paths), the same result
/// everywhere, worked out here. N mod B = 1 for B = 4 (a last round of one change),
/// and B = 200 takes two `mmu_update`s a round in paravirt (the queue holds 128).
#[test]
fn ptemod_batches_in_every_engine() {
    if !common::kvm_or_skip("ptemod_batches_in_every_engine") {
        return;
    }
    let n = common::iterations("ptemod");
    for b in [4, 16, 200] {
        let p = Params {
            b,
            ..common::params("ptemod")
        };
        for engine in virtlab::engines::all() {
            let r = common::run_workload(engine, "ptemod", p);
            let what = format!("ptemod (n={n}, b={b}) in {}", engine.mode());
            assert!(r.verdict_ok(), "{what}: {:?} {:?}", r.outcome, r.mismatches);
            match &r.outcome {
                Outcome::Completed { result, .. } => {
                    assert_eq!(*result, ptemod_reads(n, b), "{what}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}

/// Under hw-assisted the guest kernel's `invlpg` never reaches virtlab; where KVM runs
/// the guest on shadow page tables (`kvm_pvm`, or VT-x/SVM without EPT/NPT) KVM itself
/// intercepts each one, and its `invlpg` statistic counts ptemod's N exactly: a run with
/// 2N has N more.
#[test]
fn kvm_counts_ptemods_invlpg_under_shadow_paging() {
    if !common::kvm_or_skip("kvm_counts_ptemods_invlpg_under_shadow_paging") {
        return;
    }
    if !machine::caps::probe().expect("probe").stats_fd.is_present() {
        eprintln!("SKIPPED kvm_counts_ptemods_invlpg_under_shadow_paging: no KVM stats fd here");
        return;
    }
    let n = common::iterations("ptemod");
    let run = |n: u64| hw_run("ptemod", n);
    let r = run(n);
    let mmu = r
        .host
        .guest_mmu
        .clone()
        .expect("the record names the guest MMU");
    let Some(&seen) = r.kvm_stats.get("invlpg") else {
        eprintln!(
            "SKIPPED kvm_counts_ptemods_invlpg_under_shadow_paging: KVM has no invlpg \
             statistic here ({mmu})"
        );
        return;
    };
    if !mmu.starts_with("shadow") {
        eprintln!(
            "SKIPPED kvm_counts_ptemods_invlpg_under_shadow_paging: the guest MMU is {mmu}; \
             invlpg {seen}"
        );
        return;
    }
    let seen2 = run(2 * n).kvm_stats["invlpg"];
    assert_eq!(
        seen2.checked_sub(seen),
        Some(n),
        "{mmu}: invlpg {seen} with N = {n}, {seen2} with 2N"
    );
}

/// `workload` with N = `n` in hw-assisted, its oracle met.
fn hw_run(workload: &str, n: u64) -> RunRecord {
    let p = Params {
        n,
        ..common::params(workload)
    };
    let r = common::run_workload(&HwAssisted, workload, p);
    assert!(
        r.verdict_ok(),
        "{workload} n={n}: {:?} {:?}",
        r.outcome,
        r.mismatches
    );
    r
}
