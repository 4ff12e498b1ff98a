//! The guest owns guest-physical memory from 0: a flat binary linked at 0, entered at 0
//! with RSP = 2 MiB, that prints, stores 42 at 0x400 and halts with RAX = 42 — the guest
//! of the common KVM teaching example — runs unmodified, and the user sees what it left.

mod common;

use contract::abi::{layout, port};
use contract::state::{PeekRequest, RegsView};
use contract::{Ending, Engine, GuestImage, Outcome, RunOptions};
use hw_assisted::HwAssisted;
use iced_x86::code_asm::*;
use trap_emulate::TrapEmulate;

fn teaching_guest() -> GuestImage {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut msg = a.create_label();
    let mut next = a.create_label();
    let mut done = a.create_label();
    a.lea(rsi, ptr(msg)).unwrap();
    a.set_label(&mut next).unwrap();
    a.lodsb().unwrap();
    a.test(al, al).unwrap();
    a.jz(done).unwrap();
    a.out(u32::from(port::CONSOLE), al).unwrap();
    a.jmp(next).unwrap();
    a.set_label(&mut done).unwrap();
    a.mov(dword_ptr(0x400), 42).unwrap();
    a.mov(eax, 42).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut msg).unwrap();
    a.db(b"Hello from address 0\n\0").unwrap();
    let bytes = a.assemble(0).unwrap();
    let mut img = GuestImage::flat("at0", bytes, 0, 0);
    img.stack_top = 2 << 20;
    img
}

#[test]
fn a_guest_linked_at_0_runs_and_leaves_42_behind() {
    if !common::kvm_or_skip("a_guest_linked_at_0_runs_and_leaves_42_behind") {
        return;
    }
    let img = teaching_guest();
    let opts = RunOptions {
        show_regs: true,
        peeks: vec![
            PeekRequest {
                addr: 0x400,
                len: 8,
            },
            PeekRequest {
                addr: layout::MONITOR_BASE + layout::MONITOR_SIZE,
                len: 8,
            },
        ],
        ..RunOptions::default()
    };
    for (engine, view) in [
        (&HwAssisted as &dyn Engine, RegsView::Real),
        (&TrapEmulate, RegsView::Virtual),
    ] {
        let r = common::run(engine, &img, &opts);
        assert_eq!(
            r.outcome,
            Outcome::Completed {
                exit_code: 0,
                result: 0,
                ending: Ending::Halted
            },
            "{}",
            r.mode
        );
        assert_eq!(r.console, "Hello from address 0\n");
        let regs = r.final_regs.expect("registers captured");
        assert_eq!(regs.view, view);
        assert_eq!(regs.get("rax"), Some(42), "{}", r.mode);
        assert_eq!(regs.get("rsp"), Some(2 << 20));
        assert_eq!(regs.get("cr3"), Some(layout::PML4));
        assert_eq!(regs.rflags & (1 << 9), 0, "IF stays off as at entry");
        assert_eq!(r.peeks[0].bytes(), 42u64.to_le_bytes());
        assert!(
            r.peeks[1].error.is_some(),
            "past the monitor's slot: not memory"
        );
    }
}

#[test]
fn the_monitor_is_out_of_reach_of_a_guest_at_0() {
    if !common::kvm_or_skip("the_monitor_is_out_of_reach_of_a_guest_at_0") {
        return;
    }
    // A deprivileged guest that owns page 0 still cannot read the monitor's page tables.
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(qword_ptr(0), 7).unwrap();
    a.mov(rax, layout::PML4).unwrap();
    a.mov(rbx, qword_ptr(rax)).unwrap();
    a.hlt().unwrap();
    let img = GuestImage::flat("peek-monitor", a.assemble(0).unwrap(), 0, 0);
    let r = common::run(&TrapEmulate, &img, &common::short());
    match &r.outcome {
        Outcome::GuestFault { kind, detail, .. } => {
            assert_eq!(*kind, contract::FaultKind::MonitorViolation, "{detail}");
            assert!(detail.contains("page tables"), "{detail}");
        }
        o => panic!("{o:?}"),
    }
}
