//! Hostile page tables in binary translation, where the guest kernel's code runs
//! translated and its page tables on the shadow tables trap-emulate uses: the guest's own
//! hostile tables (the monitor's frames, frames and tables beyond RAM or in the monitor,
//! huge pages where none are allowed, a loop) end classified, as in trap-emulate. (The
//! attacking user processes run in both modes in `tests/shadow_isolation.rs`.)

mod common;

use binary_translation::BinaryTranslation;
use contract::abi::{layout, port};
use contract::{FaultKind, GuestImage, RunRecord};
use contract::{Outcome, RunOptions};
use iced_x86::code_asm::*;

/// The guest's tables (guest-physical, identity-mapped by its own 2 MiB pages).
const PML4_A: u64 = 0x20_0000;
const PDPT_A: u64 = 0x20_1000;
const PD_A: u64 = 0x20_2000;
/// The PT of the data window, shared by both address spaces.
const PT_D: u64 = 0x20_3000;
/// The data window (PD entry 4) and the frames behind it.
const DATA_VA: u64 = 0x80_0000;
const FRAMES: u64 = 0x30_0000;
const U: u64 = 7; // present, writable, user
const LARGE: u64 = 0x87;

fn run(img: &GuestImage, cache: bool) -> RunRecord {
    let opts = RunOptions {
        shadow_cache: cache,
        ..common::short()
    };
    common::run(&BinaryTranslation, img, &opts)
}

fn result(r: &RunRecord) -> u64 {
    match &r.outcome {
        Outcome::Completed { result, .. } => *result,
        o => panic!("{o:?}\n{:?}", r.traps),
    }
}

#[test]
fn hostile_tables_of_the_guests_own_end_classified_in_binary_translation() {
    if !common::kvm_or_skip("hostile_tables_of_the_guests_own_end_classified_in_binary_translation")
    {
        return;
    }
    let base = [
        (PML4_A, PDPT_A | U),
        (PDPT_A, PD_A | U),
        (PD_A, LARGE),
        (PD_A + 4 * 8, PT_D | U),
    ];
    let cases: [(&str, (u64, u64), FaultKind, &str); 7] = [
        (
            "maps the IDT",
            (PT_D, layout::IDT | U),
            FaultKind::MonitorViolation,
            "a page of the monitor",
        ),
        (
            "maps a shadow page",
            (PT_D, layout::SHADOW_BASE | U),
            FaultKind::MonitorViolation,
            "a page of the monitor",
        ),
        (
            "maps beyond RAM",
            (PT_D, 0x7FF0_0000 | U),
            FaultKind::BadMemoryAccess,
            "beyond guest RAM",
        ),
        (
            "a PT beyond RAM",
            (PD_A + 4 * 8, 0x7FF0_0000 | U),
            FaultKind::BadMemoryAccess,
            "beyond guest RAM",
        ),
        (
            "a PT in the monitor",
            (PD_A + 4 * 8, layout::PT_MONITOR | U),
            FaultKind::MonitorViolation,
            "in the monitor's region",
        ),
        (
            "a 1 GiB page",
            (PDPT_A, U | 0x80),
            FaultKind::BadMemoryAccess,
            "a huge page at level 3",
        ),
        (
            "PS in the PML4",
            (PML4_A, PDPT_A | U | 0x80),
            FaultKind::BadMemoryAccess,
            "a huge page at level 4",
        ),
    ];
    for (what, (at, value), kind, mentions) in cases {
        let img = common::assemble("hostile-tables", |a| {
            for (at, v) in base.into_iter().chain([(PT_D, FRAMES | U), (at, value)]) {
                a.mov(rdi, at)?;
                a.mov(rax, v)?;
                a.mov(qword_ptr(rdi), rax)?;
            }
            a.mov(rax, PML4_A)?;
            a.mov(cr3, rax)?;
            a.mov(rsi, DATA_VA)?;
            a.mov(rax, 0x4141_4141u64)?;
            a.mov(qword_ptr(rsi), rax)?;
            a.xor(eax, eax)?;
            a.out(u32::from(port::EXIT), eax)
        });
        let r = run(&img, true);
        let (k, detail) = common::fault_of(&r);
        assert_eq!(k, kind, "{what}: {detail}");
        assert!(detail.contains(mentions), "{what}: {detail}");
    }
    // A table that maps itself: the PD's entry 4 is the PD, used as the window's PT, so
    // page 4 of the window is the PD's own page (read-only in the shadow).
    let img = common::assemble("pt-loop", |a| {
        for (at, v) in base.into_iter().chain([(PD_A + 4 * 8, PD_A | U)]) {
            a.mov(rdi, at)?;
            a.mov(rax, v)?;
            a.mov(qword_ptr(rdi), rax)?;
        }
        a.mov(rax, PML4_A)?;
        a.mov(cr3, rax)?;
        a.mov(rsi, DATA_VA + 4 * 0x1000)?;
        a.mov(rbx, qword_ptr(rsi))?;
        a.xor(eax, eax)?;
        a.out(u32::from(port::EXIT), eax)
    });
    let r = run(&img, true);
    assert_eq!(result(&r), LARGE, "the PD's entry 0, read through the loop");
}
