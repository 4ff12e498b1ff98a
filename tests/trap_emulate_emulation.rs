//! Trap-emulate's emulation paths on real KVM that the catalog's workloads do not
//! exercise.

mod common;

use common::exit;
use contract::abi::{port, TIMER_VECTOR};
use contract::RunOptions;
use guests::asm;
use guests::NativeOps;
use iced_x86::code_asm::*;
use trap_emulate::TrapEmulate;

#[test]
fn a_timer_pending_under_cli_is_taken_when_sti_opens_the_window() {
    if !common::kvm_or_skip("a_timer_pending_under_cli_is_taken_when_sti_opens_the_window") {
        return;
    }
    let img = common::image("pending-irq", |a| {
        let mut idt = a.create_label();
        let mut handler = a.create_label();
        let mut main = a.create_label();
        let mut spin = a.create_label();
        asm::set_gate(a, idt, TIMER_VECTOR, handler).unwrap();
        asm::load_idt(a, &NativeOps, idt).unwrap();
        a.jmp(main).unwrap();
        // The handler records where the main code was when the interrupt came.
        a.set_label(&mut handler).unwrap();
        a.mov(rbx, r9).unwrap();
        a.iretq().unwrap();
        a.set_label(&mut main).unwrap();
        a.mov(r9, 1u64).unwrap();
        a.xor(eax, eax).unwrap();
        a.out(u32::from(port::TIMER), eax).unwrap(); // due at once; virtual IF is 0
        a.mov(ecx, 1000).unwrap();
        a.set_label(&mut spin).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(spin).unwrap();
        a.mov(r9, 2u64).unwrap();
        a.sti().unwrap();
        a.mov(r9, 3u64).unwrap(); // in the STI shadow, runs natively
        a.cli().unwrap(); // the first trap after the window opened
        exit(a);
        asm::idt_storage(a, &mut idt).unwrap();
    });
    let r = common::run(&TrapEmulate, &img, &RunOptions::default());
    assert_eq!(r.outcome.result(), Some(3), "{:?}", r.outcome);
    assert_eq!(r.injections, 1);
    let traps: Vec<(&str, u64)> = r.traps.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        traps,
        [
            ("cli", 1),
            ("iretq", 1),
            ("irq", 1),
            ("lidt", 1),
            ("out", 2),
            ("sti", 1)
        ]
    );
}

#[test]
fn string_io_and_in_go_through_the_devices() {
    if !common::kvm_or_skip("string_io_and_in_go_through_the_devices") {
        return;
    }
    let img = common::image("rep-outsb", |a| {
        let mut msg = a.create_label();
        a.lea(rsi, ptr(msg)).unwrap();
        a.mov(ecx, 5).unwrap();
        a.mov(edx, u32::from(port::CONSOLE)).unwrap();
        a.rep().outsb().unwrap();
        a.mov(edx, u32::from(port::TIMER)).unwrap();
        a.mov(eax, 0xFFFF_FFFFu32).unwrap();
        a.in_(eax, dx).unwrap(); // times the timer fired: 0
        a.mov(ebx, eax).unwrap();
        a.add(rbx, rcx).unwrap(); // RCX is 0 after the REP
        exit(a);
        a.set_label(&mut msg).unwrap();
        a.db(b"hello").unwrap();
    });
    let r = common::run(&TrapEmulate, &img, &RunOptions::default());
    assert_eq!(r.console, "hello");
    assert_eq!(r.outcome.result(), Some(0));
    assert_eq!(r.traps["rep outsb"], 1);
    assert_eq!(r.traps["in"], 1);
    assert_eq!(r.traps["out"], 1);
}

#[test]
fn int3_and_control_registers_through_the_virtual_cpu() {
    if !common::kvm_or_skip("int3_and_control_registers_through_the_virtual_cpu") {
        return;
    }
    let img = common::image("int3-cr", |a| {
        let mut idt = a.create_label();
        let mut handler = a.create_label();
        let mut main = a.create_label();
        asm::set_gate(a, idt, 3, handler).unwrap();
        asm::load_idt(a, &NativeOps, idt).unwrap();
        a.jmp(main).unwrap();
        a.set_label(&mut handler).unwrap();
        a.add(rbx, 100).unwrap();
        a.iretq().unwrap();
        a.set_label(&mut main).unwrap();
        a.int3().unwrap(); // +100, resumes after the INT3
        a.mov(rax, cr0).unwrap();
        a.mov(cr0, rax).unwrap(); // same value: accepted
        a.mov(rax, cr3).unwrap();
        a.mov(cr3, rax).unwrap(); // reload: a TLB flush
        a.mov(rax, 7u64).unwrap();
        a.mov(cr8, rax).unwrap();
        a.mov(rcx, cr8).unwrap();
        a.add(rbx, rcx).unwrap(); // +7
        a.wbinvd().unwrap();
        exit(a);
        asm::idt_storage(a, &mut idt).unwrap();
    });
    let r = common::run(&TrapEmulate, &img, &RunOptions::default());
    assert_eq!(r.outcome.result(), Some(107), "{:?}", r.outcome);
    // INT3 reaches the VMM either as the #GP of a DPL 0 gate (emulated as `int3`) or, on
    // backends that deliver it as #BP regardless of the gate's DPL (kvm_pvm does), as a
    // #BP reflected to the guest: one trap either way, same guest-visible result.
    let int3 = r.traps.get("int3").copied().unwrap_or(0) + r.traps.get("#bp").copied().unwrap_or(0);
    assert_eq!(int3, 1, "{:?}", r.traps);
    for (m, n) in [
        ("iretq", 1),
        ("mov from cr0", 1),
        ("mov to cr0", 1),
        ("mov from cr3", 1),
        ("mov to cr3", 1),
        ("mov to cr8", 1),
        ("mov from cr8", 1),
        ("wbinvd", 1),
    ] {
        assert_eq!(r.traps.get(m), Some(&n), "{m}: {:?}", r.traps);
    }
}
