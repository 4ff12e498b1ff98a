//! The paravirtual interrupt on real KVM: the virtual IF in the shared-info page, the
//! pending flag checked when the guest re-enables events, and the task priority holding
//! an event back — all through the guest's own pv-ops.

mod common;

use contract::abi::{layout, TIMER_VECTOR};
use contract::{Ending, Flavour, GuestImage, Outcome, RunOptions};
use guests::asm;
use guests::{GuestOps, ParavirtOps};
use iced_x86::code_asm::*;
use paravirt::Paravirt;

fn guest(with_tpr: bool) -> GuestImage {
    let ops = ParavirtOps::new(1).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    let a = &mut a;
    (|| -> Result<(), IcedError> {
        let mut idt = a.create_label();
        let mut handler = a.create_label();
        let mut main = a.create_label();
        asm::prologue(a)?;
        asm::set_gate(a, idt, TIMER_VECTOR, handler)?;
        asm::load_idt(a, &ops, idt)?;
        a.jmp(main)?;

        // The callback counts deliveries in RBX; the snapshots below show when it ran.
        a.set_label(&mut handler)?;
        a.inc(rbx)?;
        ops.iret(a)?;

        a.set_label(&mut main)?;
        ops.irq_disable(a)?;
        if with_tpr {
            a.mov(eax, 2)?; // priority class 2 holds vector 0x20 back
            ops.write_cr8(a)?;
        }
        a.xor(eax, eax)?;
        ops.arm_timer(a)?; // due at once, but events are masked: it stays pending
        a.mov(r9, rbx)?; // 0: nothing delivered yet
        ops.irq_enable(a)?; // sees the pending flag: event_check
        if with_tpr {
            a.mov(r10, rbx)?; // still 0: the priority holds it back
            a.xor(eax, eax)?;
            ops.write_cr8(a)?; // lowering it lets the event in at this hypercall's return
            a.shl(r10, 8)?;
            a.or(rbx, r10)?;
        }
        a.shl(r9, 4)?;
        a.or(rbx, r9)?;
        asm::finish(a, &ops)?;
        asm::idt_storage(a, &mut idt)
    })()
    .unwrap();
    let bytes = a.assemble(layout::DEFAULT_LOAD).unwrap();
    let mut img = GuestImage::flat("events", bytes, layout::DEFAULT_LOAD, layout::DEFAULT_LOAD);
    img.flavour = Flavour::Paravirt;
    img
}

fn completed(r: &contract::RunRecord) -> u64 {
    match r.outcome {
        Outcome::Completed {
            exit_code: 0,
            result,
            ending: Ending::ExitPort,
        } => result,
        ref other => panic!("{other:?} {:?}", r.hypercalls),
    }
}

#[test]
fn re_enabling_with_an_event_pending_takes_it() {
    if !common::kvm_or_skip("re_enabling_with_an_event_pending_takes_it") {
        return;
    }
    let r = common::run(&Paravirt, &guest(false), &RunOptions::default());
    // One delivery, after the masked stretch (R9 = 0).
    assert_eq!(completed(&r), 1);
    assert_eq!(r.injections, 1);
    for (name, count) in [
        ("set_trap_table", 1),
        ("set_timer", 1),
        ("event_check", 1),
        ("iret", 1),
        ("exit", 1),
    ] {
        assert_eq!(
            r.hypercalls.get(name),
            Some(&count),
            "{name}: {:?}",
            r.hypercalls
        );
    }
    assert_eq!(r.hypercalls.len(), 5, "{:?}", r.hypercalls);
}

#[test]
fn the_task_priority_holds_an_event_back() {
    if !common::kvm_or_skip("the_task_priority_holds_an_event_back") {
        return;
    }
    let r = common::run(&Paravirt, &guest(true), &RunOptions::default());
    // Not delivered at event_check (R10 = 0), delivered when the priority drops.
    assert_eq!(completed(&r), 1);
    assert_eq!(r.injections, 1);
    assert_eq!(r.hypercalls["set_tpr"], 2);
    assert_eq!(r.hypercalls["event_check"], 1);
}
