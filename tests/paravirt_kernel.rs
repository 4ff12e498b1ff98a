//! The guest kernel's paravirtual flavour on the paravirtual engine (direct paging): each
//! memory workload completes with the result it computes and exactly the counts its
//! oracle declares (`guests/src/oracles/paravirt_kernel.rs`) — hypercalls, `mmu_update`
//! batches and entries, pins, validations, SYSCALLs and page faults bounced to the
//! kernel's callbacks, root switches — and every exit is a hypercall or a bounce. Then
//! isolation: a user process on its user root reaches neither its kernel's pages, nor the
//! monitor's, nor another process's; and the kernel cannot map a page table writable, the
//! monitor's region or a frame beyond RAM (each `mmu_update` refused by name).

mod common;

use contract::{CountKey, Flavour, Outcome, RunOptions, RunRecord};
use guests::kernel::workloads::{
    attack_image_in, hostile_mapping_image, tlb_walk_sum, user_hypercall_image, Attack,
    HostileMapping,
};
use guests::kernel::{exit, map};
use guests::Params;
use paravirt::Paravirt;

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

fn run(workload: &str, p: Params) -> RunRecord {
    let img = common::workload_image(workload, Flavour::Paravirt, p);
    assert_eq!(img.flavour, Flavour::Paravirt);
    common::run(&Paravirt, &img, &RunOptions::default())
}

fn judge(workload: &str, p: Params) -> RunRecord {
    let r = run(workload, p);
    let what = format!("{workload} (n={}, k={})", p.n, p.k);
    match &r.outcome {
        Outcome::Completed {
            exit_code: 0,
            result,
            ..
        } => assert_eq!(*result, computes(workload, p.n, p.k), "{what}"),
        o => panic!("{what}: {o:?}\n{:?}", r.hypercalls),
    }
    assert!(
        r.verdict_ok(),
        "{what}: {:?}\n{:?}",
        r.mismatches,
        r.hypercalls
    );
    // The oracle was there to judge it, with the counts of direct paging in it.
    assert!(r
        .expected
        .contains_key(&CountKey::Hypercalls("direct_paging:batches".into())));
    // Nothing refused: the kernel's every update is valid.
    assert!(
        !r.hypercalls
            .keys()
            .any(|k| k.starts_with("rejected:") || k.contains(":refused:")),
        "{what}: {:?}",
        r.hypercalls
    );
    r
}

#[test]
fn every_memory_workload_meets_its_paravirt_oracle() {
    if !common::kvm_or_skip("every_memory_workload_meets_its_paravirt_oracle") {
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
        for n in [0, 1, 2, 7] {
            judge(
                w,
                Params {
                    n,
                    k: 3,
                    ..Params::default()
                },
            );
        }
    }
}

#[test]
fn syscall_and_pgfault_are_exact_at_larger_n() {
    if !common::kvm_or_skip("syscall_and_pgfault_are_exact_at_larger_n") {
        return;
    }
    let r = judge(
        "syscall",
        Params {
            n: 300,
            ..Params::default()
        },
    );
    // Each null call: one SYSCALL bounced (a trap exit) and one `iret` back.
    assert_eq!(r.hypercalls["mode:syscalls_bounced"], 302);
    assert_eq!(r.hypercalls["iret"], 302);
    // 600 faults: past 512 heap pages the kernel takes a second page table.
    let r = judge(
        "pgfault",
        Params {
            n: 600,
            ..Params::default()
        },
    );
    assert_eq!(r.hypercalls["mode:faults_bounced"], 600);
    assert_eq!(r.injections, 600);
}

#[test]
fn forkwait_batches_a_large_address_space() {
    if !common::kvm_or_skip("forkwait_batches_a_large_address_space") {
        return;
    }
    // 600 heap pages a round: full queues of 128 requests, a second page table.
    let r = judge(
        "forkwait",
        Params {
            n: 2,
            k: 600,
            ..Params::default()
        },
    );
    assert_eq!(r.hypercalls["direct_paging:pins"], 1 + 2 + 2 * 2);
    assert_eq!(r.hypercalls["direct_paging:unpins"], 2 + 2 * 2);
}

/// The exit code the guest reported, whatever the judgement.
fn exit_code_of(r: &RunRecord) -> Option<u32> {
    match &r.outcome {
        Outcome::Completed { exit_code, .. } => Some(*exit_code),
        Outcome::Diverged { got, .. } => got.strip_prefix("exit code ")?.parse().ok(),
        _ => None,
    }
}

fn result_of(r: &RunRecord) -> Option<u64> {
    match r.outcome {
        Outcome::Completed { result, .. }
        | Outcome::Diverged {
            result: Some(result),
            ..
        } => Some(result),
        _ => None,
    }
}

#[test]
fn a_user_process_reaches_nothing_but_its_own_pages_on_its_user_root() {
    if !common::kvm_or_skip("a_user_process_reaches_nothing_but_its_own_pages_on_its_user_root") {
        return;
    }
    for attack in Attack::ALL {
        let image = attack_image_in(attack, Flavour::Paravirt).unwrap();
        let r = common::run(&Paravirt, &image, &RunOptions::default());
        // The same fault, error code and address as on a native kernel: the user root
        // maps the kernel half and the monitor's region supervisor-only.
        assert_eq!(
            exit_code_of(&r),
            Some(exit::KILLED | attack.error_code()),
            "{attack:?}: {:?}",
            r.outcome
        );
        assert_eq!(result_of(&r), Some(attack.address()), "{attack:?}");
        // The fault went to the kernel's callback (the attacker's only fault), and the
        // other process's one SYSCALL (its yield) before it.
        assert_eq!(r.hypercalls["mode:faults_bounced"], 1, "{attack:?}");
        assert_eq!(r.hypercalls["mode:syscalls_bounced"], 1 + 1, "{attack:?}");
    }
}

#[test]
fn the_kernel_cannot_map_a_page_table_writable_the_monitor_or_beyond_ram() {
    if !common::kvm_or_skip("the_kernel_cannot_map_a_page_table_writable_the_monitor_or_beyond_ram")
    {
        return;
    }
    for what in HostileMapping::ALL {
        let image = hostile_mapping_image(what, Flavour::Paravirt).unwrap();
        let r = common::run(&Paravirt, &image, &RunOptions::default());
        let h = &r.hypercalls;
        // The whole batch refused, by name; nothing of it applied.
        assert_eq!(h["rejected:mmu_update"], 1, "{what:?}: {h:?}");
        assert_eq!(
            h[&format!("direct_paging:refused:{}", what.refusal())],
            1,
            "{what:?}: {h:?}"
        );
        assert_eq!(
            h.keys().filter(|k| k.contains(":refused:")).count(),
            1,
            "{what:?}: {h:?}"
        );
        // So the process finds its heap page unmapped, and is killed reading it.
        assert_eq!(exit_code_of(&r), Some(exit::KILLED | 0b100), "{what:?}");
        assert_eq!(result_of(&r), Some(map::USER_HEAP), "{what:?}");
    }
}

#[test]
fn a_user_process_has_no_hypercalls() {
    if !common::kvm_or_skip("a_user_process_has_no_hypercalls") {
        return;
    }
    let r = common::run(
        &Paravirt,
        &user_hypercall_image().unwrap(),
        &RunOptions::default(),
    );
    // Its `exit(0)` was refused with EPERM and the run went on to its kernel's exit.
    assert_eq!(exit_code_of(&r), Some(exit::OK), "{:?}", r.outcome);
    assert_eq!(
        result_of(&r),
        Some(contract::abi::hypercall::errno::EPERM as u64)
    );
    assert_eq!(r.hypercalls["rejected:exit"], 1, "{:?}", r.hypercalls);
    assert_eq!(r.hypercalls["mode:refused_from_user"], 1);
    assert_eq!(r.hypercalls["exit"], 1);
}
