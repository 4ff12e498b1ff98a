//! Shadow paging in trap-emulate, end to end on KVM: a small guest builds two address
//! spaces of its own, loads CR3, touches pages it maps (hidden faults), pages it does not
//! (true faults its #PF handler serves with a PTE store the VMM emulates), flushes one
//! with `invlpg`, and switches between the two roots — with the shadow cache on and off.
//! Every count is exact. The guest's own hostile tables end classified alike in
//! trap-emulate and in binary translation, which shares its shadow MMU.

mod common;

use binary_translation::BinaryTranslation;
use contract::abi::{layout, port};
use contract::{Engine, FaultKind, GuestImage, Outcome, RunOptions, RunRecord};
use iced_x86::code_asm::*;
use trap_emulate::TrapEmulate;

/// The guest's tables (guest-physical, identity-mapped by its own 2 MiB pages).
const PML4_A: u64 = 0x20_0000;
const PDPT_A: u64 = 0x20_1000;
const PD_A: u64 = 0x20_2000;
/// The PT of the data window, shared by both address spaces.
const PT_D: u64 = 0x20_3000;
const PML4_B: u64 = 0x20_4000;
const PDPT_B: u64 = 0x20_5000;
const PD_B: u64 = 0x20_6000;
/// The data window (PD entry 4) and the frames behind it.
const DATA_VA: u64 = 0x80_0000;
const FRAMES: u64 = 0x30_0000;
const U: u64 = 7; // present, writable, user
const LARGE: u64 = 0x87;

/// `mapped` pages of the data window mapped up front, `unmapped` more the #PF handler maps
/// on demand, then `switches` CR3 loads alternating B, A, B, …
fn guest(mapped: u64, unmapped: u64, switches: u32) -> GuestImage {
    common::assemble("shadow", |a| {
        let mut handler = a.create_label();
        let mut idt = a.create_label();
        let mut idtr = a.create_label();
        let mut touch = a.create_label();
        let mut switch = a.create_label();
        let mut marks = a.create_label();
        // The tables, under the boot tables (plain stores into RAM).
        let put = |a: &mut CodeAssembler, at: u64, v: u64| -> Result<(), IcedError> {
            a.mov(rdi, at)?;
            a.mov(rax, v)?;
            a.mov(qword_ptr(rdi), rax)
        };
        for (pml4, pdpt, pd) in [(PML4_A, PDPT_A, PD_A), (PML4_B, PDPT_B, PD_B)] {
            put(a, pml4, pdpt | U)?;
            put(a, pdpt, pd | U)?;
            put(a, pdpt + 8, layout::PD_MONITOR | U)?; // as the boot tables map it
            put(a, pd, LARGE)?; // 0–2 MiB: the image and its stack
            put(a, pd + 8, 0x20_0000 | LARGE)?; // 2–4 MiB: the tables and the frames
            put(a, pd + 4 * 8, PT_D | U)?;
        }
        for i in 0..mapped {
            put(a, PT_D + i * 8, (FRAMES + i * 0x1000) | U)?;
        }
        // A mark in every frame: frame i holds i + 1.
        a.mov(rdi, FRAMES)?;
        a.mov(ecx, 1)?;
        a.set_label(&mut marks)?;
        a.mov(qword_ptr(rdi), rcx)?;
        a.add(rdi, 0x1000)?;
        a.inc(ecx)?;
        a.cmp(ecx, (mapped + unmapped + 1) as i32)?;
        a.jb(marks)?;
        // The #PF gate (vector 14) and LIDT.
        a.lea(rax, ptr(handler))?;
        a.mov(rdx, rax)?;
        a.and(edx, 0xFFFF)?;
        a.mov(rcx, 0x0000_8E00_0008_0000u64)?;
        a.or(rdx, rcx)?;
        a.mov(rcx, rax)?;
        a.shr(rcx, 16)?;
        a.and(ecx, 0xFFFF)?;
        a.shl(rcx, 48)?;
        a.or(rdx, rcx)?;
        a.lea(rdi, ptr(idt))?;
        a.mov(qword_ptr(rdi + 14 * 16), rdx)?;
        a.lea(rsi, ptr(idtr))?;
        a.mov(word_ptr(rsi), 15 * 16 - 1)?;
        a.mov(qword_ptr(rsi + 2), rdi)?;
        a.lidt(ptr(rsi))?;
        // Into address space A.
        a.mov(rax, PML4_A)?;
        a.mov(cr3, rax)?;
        // Touch every page of the window: mapped ones are hidden faults, the others true.
        a.xor(ebx, ebx)?;
        a.mov(r8, DATA_VA)?;
        a.mov(ecx, (mapped + unmapped) as u32)?;
        a.set_label(&mut touch)?;
        a.add(rbx, qword_ptr(r8))?;
        a.add(r8, 0x1000)?;
        a.dec(ecx)?;
        a.jnz(touch)?;
        // INVLPG traps; the shadow was kept in step by the PTE stores, so no fault follows.
        a.mov(rsi, DATA_VA)?;
        a.invlpg(byte_ptr(rsi))?;
        a.add(rbx, qword_ptr(rsi))?;
        // CR3 switches: B, A, B, …, reading page 0 each time.
        a.mov(r9, PML4_B)?;
        a.mov(r10, PML4_A)?;
        a.mov(ecx, switches)?;
        a.set_label(&mut switch)?;
        a.mov(cr3, r9)?;
        a.add(rbx, qword_ptr(rsi))?;
        a.xchg(r9, r10)?;
        a.dec(ecx)?;
        a.jnz(switch)?;
        a.xor(eax, eax)?;
        a.out(u32::from(port::EXIT), eax)?;
        // The #PF handler: map the faulting page of the window to its frame.
        a.set_label(&mut handler)?;
        a.mov(rax, cr2)?;
        a.mov(rdx, DATA_VA)?;
        a.sub(rax, rdx)?;
        a.shr(rax, 12)?;
        a.mov(rdx, rax)?;
        a.shl(rdx, 3)?;
        a.add(rdx, PT_D as i32)?;
        a.shl(rax, 12)?;
        a.add(rax, (FRAMES | U) as i32)?;
        a.mov(qword_ptr(rdx), rax)?;
        a.add(rsp, 8)?;
        a.iretq()?;
        a.set_label(&mut idtr)?;
        a.db(&[0; 10])?;
        a.set_label(&mut idt)?;
        a.db(&[0; 15 * 16])?;
        Ok(())
    })
}

fn run(img: &GuestImage, cache: bool) -> RunRecord {
    run_in(&TrapEmulate, img, cache)
}

fn run_in(engine: &dyn Engine, img: &GuestImage, cache: bool) -> RunRecord {
    let opts = RunOptions {
        shadow_cache: cache,
        ..common::short()
    };
    common::run(engine, img, &opts)
}

fn shadow(r: &RunRecord, key: &str) -> u64 {
    r.shadow.get(key).copied().unwrap_or(0)
}

fn result(r: &RunRecord) -> u64 {
    match &r.outcome {
        Outcome::Completed { result, .. } => *result,
        o => panic!("{o:?}\n{:?}", r.traps),
    }
}

#[test]
fn hidden_and_true_faults_pte_stores_and_the_cache_are_counted_exactly() {
    if !common::kvm_or_skip("hidden_and_true_faults_pte_stores_and_the_cache_are_counted_exactly") {
        return;
    }
    let (mapped, unmapped, switches) = (6u64, 4u64, 5u64);
    let img = guest(mapped, unmapped, switches as u32);
    assert!(img.bytes.len() < 4096, "the guest fits in one page");
    let pages = mapped + unmapped;
    let sum = pages * (pages + 1) / 2 + 1 + switches;
    let on = run(&img, true);
    // One code page after the first load, every page of the window once, the stack page
    // (the first IRETQ reads its frame before it traps), then the code page and page 0 in
    // B's new shadow.
    assert_eq!(shadow(&on, "hidden_faults"), 1 + pages + 1 + 2);
    assert_eq!(shadow(&on, "true_faults"), unmapped);
    assert_eq!(shadow(&on, "pt_writes"), unmapped);
    assert_eq!(
        (shadow(&on, "cache_misses"), shadow(&on, "cache_hits")),
        (2, switches - 1)
    );
    assert_eq!(shadow(&on, "flushes"), 0);
    // Per shadow: PML4, the PDPT with the monitor's entry, PD, the PT of the image's
    // 2 MiB page, the PT of the window.
    assert_eq!(shadow(&on, "pages_built"), 2 * 5);
    assert_eq!(on.traps["#pf hidden"], shadow(&on, "hidden_faults"));
    assert_eq!(on.traps["#pf"], unmapped);
    assert_eq!(on.traps["pte write"], unmapped);
    assert_eq!(on.traps["mov to cr3"], 1 + switches);
    assert_eq!(on.traps["invlpg"], 1);
    assert_eq!(on.injections, unmapped);

    let off = run(&img, false);
    assert_eq!(result(&off), sum);
    assert_eq!(shadow(&off, "hidden_faults"), 1 + pages + 1 + 2 * switches);
    assert_eq!(
        (shadow(&off, "cache_misses"), shadow(&off, "cache_hits")),
        (1 + switches, 0)
    );
    assert_eq!(shadow(&off, "flushes"), switches);
    assert_eq!(shadow(&off, "pages_built"), 5 * (1 + switches));
    assert!(shadow(&off, "pages_built") > shadow(&on, "pages_built"));
}

/// The engines that run a guest's own tables on shadow tables: binary translation shares
/// trap-emulate's shadow MMU, so the guest's hostile tables end alike in both.
const SHADOW_ENGINES: [&dyn Engine; 2] = [&TrapEmulate, &BinaryTranslation];

#[test]
fn hostile_tables_of_the_guests_own_end_classified() {
    if !common::kvm_or_skip("hostile_tables_of_the_guests_own_end_classified") {
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
        for engine in SHADOW_ENGINES {
            let r = run_in(engine, &img, true);
            let (k, detail) = common::fault_of(&r);
            let mode = engine.mode();
            assert_eq!(k, kind, "{what} in {mode}: {detail}");
            assert!(detail.contains(mentions), "{what} in {mode}: {detail}");
        }
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
    for engine in SHADOW_ENGINES {
        let r = run_in(engine, &img, true);
        assert_eq!(
            result(&r),
            LARGE,
            "{}: the PD's entry 0, read through the loop",
            engine.mode()
        );
    }
}
