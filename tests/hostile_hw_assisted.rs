//! Bad guests in hw-assisted end as classified records; the VMM never panics.

mod common;

use std::time::Duration;

use contract::abi::layout;
use contract::{Error, FaultKind, GuestImage, Limit, Outcome, RunOptions, RunRecord};
use hw_assisted::HwAssisted;
use iced_x86::code_asm::*;

fn image(build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestImage {
    common::assemble("hostile", build)
}

/// A guest that jumps to itself forever.
fn spin() -> GuestImage {
    image(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    })
}

fn short_limits() -> RunOptions {
    let mut o = RunOptions::default();
    o.limits.wall = Duration::from_millis(500);
    o.limits.max_exits = 10_000;
    o.limits.max_console_bytes = 4096;
    o
}

fn run(img: &GuestImage) -> RunRecord {
    common::run(&HwAssisted, img, &short_limits())
}

/// Runs a flood that must end at a count limit, with the wall clock out of its way: on a
/// busy host that emulates CPL 0 code, 10,000 exits can take longer than half a second.
fn run_flood(img: &GuestImage) -> RunRecord {
    let mut o = short_limits();
    o.limits.wall = Duration::from_secs(20);
    common::run(&HwAssisted, img, &o)
}

#[test]
fn spinning_forever_times_out_on_the_wall_clock() {
    if !common::kvm_or_skip("spinning_forever_times_out_on_the_wall_clock") {
        return;
    }
    let img = spin();
    let r = run(&img);
    assert!(
        matches!(r.outcome, Outcome::TimedOut { limit: Limit::WallClock, rip: Some(rip) } if rip == layout::DEFAULT_LOAD),
        "{:?}",
        r.outcome
    );
    // Ended by the watchdog, not hours later (generous: this is not a timing test).
    assert!(r.wall_ns < 10_000_000_000, "{}", r.wall_ns);
}

#[test]
fn an_exit_flood_hits_the_exit_limit() {
    if !common::kvm_or_skip("an_exit_flood_hits_the_exit_limit") {
        return;
    }
    let img = image(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.in_(al, 0xF0)?;
        a.jmp(l)
    });
    let r = run_flood(&img);
    assert!(
        matches!(
            r.outcome,
            Outcome::TimedOut {
                limit: Limit::ExitCount,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.total_exits(), 10_000);
}

#[test]
fn a_console_flood_hits_the_console_limit() {
    if !common::kvm_or_skip("a_console_flood_hits_the_console_limit") {
        return;
    }
    let img = image(|a| {
        let mut l = a.create_label();
        a.mov(al, b'x' as u32)?;
        a.set_label(&mut l)?;
        a.out(0xE9u32, al)?;
        a.jmp(l)
    });
    let r = run_flood(&img);
    assert!(
        matches!(
            r.outcome,
            Outcome::TimedOut {
                limit: Limit::ConsoleBytes,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.console.len(), 4096);
}

#[test]
fn garbage_bytes_are_an_invalid_opcode_fault() {
    if !common::kvm_or_skip("garbage_bytes_are_an_invalid_opcode_fault") {
        return;
    }
    // 0xFF /7 does not exist; neither does UD2's purpose.
    for bytes in [vec![0xFF, 0xFF, 0xFF, 0xFF], vec![0x0F, 0x0B], vec![0x06]] {
        let img = GuestImage::flat(
            "garbage",
            bytes.clone(),
            layout::DEFAULT_LOAD,
            layout::DEFAULT_LOAD,
        );
        let r = run(&img);
        let (kind, detail) = common::fault_of(&r);
        assert_eq!(kind, FaultKind::Exception, "{bytes:02x?}");
        assert!(detail.contains("#UD"), "{bytes:02x?}: {detail}");
        assert!(
            matches!(r.outcome, Outcome::GuestFault { rip: Some(rip), .. } if rip == layout::DEFAULT_LOAD)
        );
    }
}

#[test]
fn a_triple_fault_is_a_shutdown() {
    if !common::kvm_or_skip("a_triple_fault_is_a_shutdown") {
        return;
    }
    // An empty IDT: the #UD cannot be delivered, nor the #DF, so the CPU shuts down.
    let img = image(|a| {
        a.push(0)?;
        a.push(0)?;
        a.lidt(ptr(rsp))?;
        a.ud2()
    });
    let r = run(&img);
    assert_eq!(common::fault_of(&r).0, FaultKind::Shutdown);
}

#[test]
fn unmapped_memory_is_a_page_fault() {
    if !common::kvm_or_skip("unmapped_memory_is_a_page_fault") {
        return;
    }
    // Above RAM, the MMIO page and the monitor's region nothing is mapped.
    for addr in [0x8000_0000u64, 0x1_0000_0000, 0xFFFF_8000_0000_0000] {
        let img = image(|a| {
            a.mov(rax, addr)?;
            a.mov(rbx, qword_ptr(rax))?;
            a.hlt()
        });
        let r = run(&img);
        let (kind, detail) = common::fault_of(&r);
        assert_eq!(kind, FaultKind::Exception);
        assert!(
            detail.contains("#PF") || detail.contains("#GP"),
            "{addr:#x}: {detail}"
        );
    }
}

#[test]
fn unknown_ports_and_device_registers_are_bad_device_accesses() {
    if !common::kvm_or_skip("unknown_ports_and_device_registers_are_bad_device_accesses") {
        return;
    }
    let out = image(|a| a.out(0x80u32, al));
    assert_eq!(common::fault_of(&run(&out)).0, FaultKind::BadDeviceAccess);
    let inp = image(|a| a.in_(al, 0x60u32));
    assert_eq!(common::fault_of(&run(&inp)).0, FaultKind::BadDeviceAccess);
    let mmio = image(|a| {
        a.mov(rax, layout::MMIO_BASE + 0x800)?;
        a.mov(rbx, qword_ptr(rax))
    });
    let (kind, detail) = common::fault_of(&run(&mmio));
    assert_eq!(kind, FaultKind::BadDeviceAccess);
    assert!(detail.contains("0x3fe00800"), "{detail}");
}

#[test]
fn halting_with_nothing_to_wait_for_ends_the_run() {
    if !common::kvm_or_skip("halting_with_nothing_to_wait_for_ends_the_run") {
        return;
    }
    let img = image(|a| {
        a.mov(ebx, 42)?;
        a.hlt()
    });
    let r = run(&img);
    assert_eq!(
        r.outcome,
        Outcome::Completed {
            exit_code: 0,
            result: 42,
            ending: contract::Ending::Halted
        }
    );
}

#[test]
fn images_that_break_the_abi_are_refused() {
    if !common::kvm_or_skip("images_that_break_the_abi_are_refused") {
        return;
    }
    // Loaded into the monitor's region instead of guest RAM.
    let mut img = GuestImage::flat("monitor", vec![0xF4], layout::BOOT_INFO, layout::BOOT_INFO);
    assert!(matches!(
        common::try_run(&HwAssisted, &img, &RunOptions::default()),
        Err(Error::InvalidImage(_))
    ));
    img = GuestImage::flat(
        "entry",
        vec![0xF4],
        layout::DEFAULT_LOAD,
        layout::DEFAULT_LOAD + 8,
    );
    assert!(matches!(
        common::try_run(&HwAssisted, &img, &RunOptions::default()),
        Err(Error::InvalidImage(_))
    ));
    img = GuestImage::flat(
        "huge",
        vec![0; 1 << 20],
        layout::DEFAULT_RAM_SIZE - 4096,
        layout::DEFAULT_RAM_SIZE - 4096,
    );
    assert!(matches!(
        common::try_run(&HwAssisted, &img, &RunOptions::default()),
        Err(Error::InvalidImage(_))
    ));
    let opts = RunOptions {
        ram_size: 3 << 20,
        ..RunOptions::default()
    };
    let ok = GuestImage::flat("ok", vec![0xF4], layout::DEFAULT_LOAD, layout::DEFAULT_LOAD);
    assert!(matches!(
        common::try_run(&HwAssisted, &ok, &opts),
        Err(Error::InvalidOption(_))
    ));
}

#[test]
fn the_vmm_keeps_working_after_hostile_guests() {
    if !common::kvm_or_skip("the_vmm_keeps_working_after_hostile_guests") {
        return;
    }
    let spin = spin();
    let _ = run(&spin);
    let _ = run(&GuestImage::flat(
        "g",
        vec![0x0F, 0x0B],
        layout::DEFAULT_LOAD,
        layout::DEFAULT_LOAD,
    ));
    let r = common::run_workload(&HwAssisted, "pio", common::params("pio"));
    assert!(r.verdict_ok(), "{:?}", r.outcome);
}

#[test]
fn cli_hlt_stops_the_cpu_even_with_the_timer_armed() {
    if !common::kvm_or_skip("cli_hlt_stops_the_cpu_even_with_the_timer_armed") {
        return;
    }
    let img = image(|a| {
        a.mov(eax, 60_000_000u32)?; // one minute
        a.out(0xF0u32, eax)?;
        a.mov(ebx, 5)?;
        a.cli()?;
        a.hlt()
    });
    let r = run(&img);
    assert_eq!(
        r.outcome,
        Outcome::Completed {
            exit_code: 0,
            result: 5,
            ending: contract::Ending::Halted
        }
    );
    assert_eq!(r.injections, 0);
}
