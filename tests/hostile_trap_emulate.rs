//! Hostile guests in trap-emulate: every one ends classified, within its limits, and the
//! VMM survives.

mod common;

use std::time::{Duration, Instant};

use contract::abi::{layout, port};
use contract::{FaultKind, Limit, Outcome, RunRecord};
use iced_x86::code_asm::*;
use trap_emulate::TrapEmulate;

use common::{exit, fault_of};

fn run(img: &contract::GuestImage) -> RunRecord {
    common::run(&TrapEmulate, img, &common::short())
}

/// A guest that did something hostile, then proves the monitor still works: the VMM
/// must end it at the hostile step, and a fresh run afterwards must be fine.
fn assert_violation(name: &str, body: impl FnOnce(&mut CodeAssembler), mentions: &str) {
    let img = common::image(name, |a| {
        body(a);
        exit(a);
    });
    let r = run(&img);
    let (kind, detail) = fault_of(&r);
    assert_eq!(kind, FaultKind::MonitorViolation, "{name}: {detail}");
    assert!(detail.contains(mentions), "{name}: {detail}");
    // The VMM is intact: the next guest runs normally.
    let ok = run(&common::image("after", |a| {
        a.mov(al, b'k' as u32).unwrap();
        a.out(u32::from(port::CONSOLE), al).unwrap();
        exit(a);
    }));
    assert!(
        matches!(ok.outcome, Outcome::Completed { .. }),
        "{:?}",
        ok.outcome
    );
    assert_eq!(ok.console, "k");
}

#[test]
fn reading_or_writing_monitor_pages_is_a_monitor_violation() {
    if !common::kvm_or_skip("reading_or_writing_monitor_pages_is_a_monitor_violation") {
        return;
    }
    assert_violation(
        "read-idt",
        |a| {
            a.mov(rsi, layout::IDT).unwrap();
            a.mov(rax, qword_ptr(rsi)).unwrap();
        },
        "IDT",
    );
    assert_violation(
        "write-page-tables",
        |a| {
            a.mov(rdi, layout::PML4).unwrap();
            a.mov(qword_ptr(rdi), rax).unwrap();
        },
        "page tables",
    );
    assert_violation(
        "write-stub",
        |a| {
            a.mov(rdi, layout::STUBS).unwrap();
            a.mov(byte_ptr(rdi), 0xC3).unwrap();
        },
        "fault stubs",
    );
    assert_violation(
        "jump-into-monitor",
        |a| {
            a.mov(rax, layout::STUBS).unwrap();
            a.jmp(rax).unwrap();
        },
        "execute",
    );
}

#[test]
fn lidt_pointing_into_the_monitor_is_refused() {
    if !common::kvm_or_skip("lidt_pointing_into_the_monitor_is_refused") {
        return;
    }
    assert_violation(
        "lidt-monitor",
        |a| {
            a.sub(rsp, 16).unwrap();
            a.mov(word_ptr(rsp), 0xFFF).unwrap();
            a.mov(rax, layout::IDT).unwrap();
            a.mov(qword_ptr(rsp + 2), rax).unwrap();
            a.lidt(ptr(rsp)).unwrap();
        },
        "lidt",
    );
}

#[test]
fn mapping_a_monitor_frame_through_the_scratch_pte_is_refused() {
    if !common::kvm_or_skip("mapping_a_monitor_frame_through_the_scratch_pte_is_refused") {
        return;
    }
    assert_violation(
        "pte-to-idt",
        |a| {
            a.mov(rdi, layout::SCRATCH_PT).unwrap();
            a.mov(rax, layout::IDT | 7).unwrap();
            a.mov(qword_ptr(rdi), rax).unwrap();
            a.mov(rsi, layout::SCRATCH_VA).unwrap();
            a.invlpg(byte_ptr(rsi)).unwrap();
            a.mov(qword_ptr(rsi), rax).unwrap();
        },
        "monitor",
    );
}

#[test]
fn the_paravirt_escape_attempted_here_is_a_monitor_violation() {
    if !common::kvm_or_skip("the_paravirt_escape_attempted_here_is_a_monitor_violation") {
        return;
    }
    // The steps of paravirt's alias-then-pin escape, unmodified: a writable alias of a
    // guest frame X (allowed: X is guest RAM), a PML4 copy written into X through it, then
    // the entry that would map the monitor's memory — a trapped, validated PTE write here.
    let x = 0x18_0000u64;
    assert_violation(
        "alias-then-map",
        |a| {
            a.mov(rdi, layout::SCRATCH_PT + 8).unwrap();
            a.mov(rax, x | 7).unwrap();
            a.mov(qword_ptr(rdi), rax).unwrap();
            a.mov(rsi, layout::SCRATCH_VA + 0x1000).unwrap();
            a.invlpg(byte_ptr(rsi)).unwrap();
            a.mov(rax, layout::PDPT | 7).unwrap();
            a.mov(qword_ptr(rsi), rax).unwrap();
            a.mov(rdi, layout::SCRATCH_PT + 16).unwrap();
            a.mov(rax, layout::PML4 | 7).unwrap();
            a.mov(qword_ptr(rdi), rax).unwrap();
        },
        "a page of the monitor",
    );
    // Loading X as CR3 selects a shadow of X, which maps nothing the guest did not map
    // through X (an empty table: the next fetch is the guest's own #PF, and with no IDT
    // of its own the run ends classified), and the monitor's region as the VMM maps it.
    let img = common::image("alias-then-cr3", |a| {
        a.mov(rax, x).unwrap();
        a.mov(cr3, rax).unwrap();
        exit(a);
    });
    let r = run(&img);
    let (kind, detail) = fault_of(&r);
    assert_eq!(kind, FaultKind::Exception, "{detail}");
    assert!(detail.contains("#PF (execute at 0x10000d)"), "{detail}");
    assert_eq!(r.shadow["true_faults"], 1);
    assert_eq!(r.shadow["hidden_faults"], 0);
}

#[test]
fn garbage_and_unemulated_instructions_end_classified() {
    if !common::kvm_or_skip("garbage_and_unemulated_instructions_end_classified") {
        return;
    }
    // 0x06 (PUSH ES) does not exist in 64-bit mode: #UD, and no guest IDT to take it.
    let r = run(&common::raw("garbage", &[0x06, 0x07, 0xFF, 0xFF]));
    let (kind, detail) = fault_of(&r);
    assert_eq!(kind, FaultKind::Exception);
    assert!(
        detail.contains("#UD") && detail.contains("invalid"),
        "{detail}"
    );
    assert_eq!(r.traps["#ud"], 1);

    // CLTS is privileged and not emulated: named.
    let r = run(&common::raw("clts", &[0x0F, 0x06]));
    let (kind, detail) = fault_of(&r);
    assert_eq!(kind, FaultKind::UnhandledInstruction);
    assert!(detail.starts_with("clts"), "{detail}");

    // MOV to DR0: privileged, not emulated.
    let r = run(&common::raw("mov-dr", &[0x0F, 0x23, 0xC0]));
    let (kind, detail) = fault_of(&r);
    assert_eq!(kind, FaultKind::UnhandledInstruction);
    assert!(detail.starts_with("mov"), "{detail}");

    // A divide error with no guest IDT.
    let r = run(&common::image("div0", |a| {
        a.xor(ecx, ecx).unwrap();
        a.div(ecx).unwrap();
    }));
    let (kind, detail) = fault_of(&r);
    assert_eq!(kind, FaultKind::Exception);
    assert!(
        detail.contains("#DE") && detail.contains("not loaded an IDT"),
        "{detail}"
    );
}

#[test]
fn a_runaway_loop_times_out_within_the_wall_limit() {
    if !common::kvm_or_skip("a_runaway_loop_times_out_within_the_wall_limit") {
        return;
    }
    let t = Instant::now();
    let r = run(&common::raw("spin", &[0xEB, 0xFE]));
    assert!(
        matches!(
            r.outcome,
            Outcome::TimedOut {
                limit: Limit::WallClock,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
}

#[test]
fn a_trap_storm_ends_at_the_exit_limit() {
    if !common::kvm_or_skip("a_trap_storm_ends_at_the_exit_limit") {
        return;
    }
    // cli; jmp back: one trap per iteration, forever.
    let r = run(&common::raw("cli-storm", &[0xFA, 0xEB, 0xFD]));
    assert!(
        matches!(r.outcome, Outcome::TimedOut { .. }),
        "{:?}",
        r.outcome
    );
}
