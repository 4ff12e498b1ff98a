//! Hostile code in binary translation, on KVM: code that reads or rewrites itself, jumps
//! into the middle of an instruction, never ends, fills the translation cache, or goes
//! after the engine's own pages. Each runs correctly or ends classified, within its
//! limits, and the monitor's private pages are never touched.

mod common;

use binary_translation::{layout as bt, BinaryTranslation};
use contract::abi::layout;
use contract::state::PeekRequest;
use contract::{FaultKind, GuestImage, Outcome, RunOptions, RunRecord};
use iced_x86::code_asm::*;

use common::{exit, fault_of};

fn run(img: &GuestImage) -> RunRecord {
    common::run(&BinaryTranslation, img, &common::short())
}

/// The image of `bytes` loaded (and entered) at `load`.
fn at(name: &str, load: u64, bytes: Vec<u8>) -> GuestImage {
    GuestImage::flat(name, bytes, load, load)
}

/// Assembles `body` for `load`.
fn asm(load: u64, body: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    body(&mut a);
    a.assemble(load).unwrap()
}

fn result(r: &RunRecord) -> u64 {
    match r.outcome {
        Outcome::Completed { result, .. } => result,
        ref o => panic!("{}: expected completion, got {o:?}", r.workload),
    }
}

fn translation(r: &RunRecord, key: &str) -> u64 {
    r.translation.get(key).copied().unwrap_or(0)
}

#[test]
fn a_guest_reading_its_own_code_sees_its_own_bytes() {
    if !common::kvm_or_skip("a_guest_reading_its_own_code_sees_its_own_bytes") {
        return;
    }
    // Reads the first 8 bytes of itself, then 8 bytes of a block it has run (after the
    // jump), and adds them.
    let load = layout::DEFAULT_LOAD;
    let bytes = asm(load, |a| {
        let mut later = a.create_label();
        a.mov(rsi, load).unwrap();
        a.mov(rbx, qword_ptr(rsi)).unwrap();
        a.jmp(later).unwrap();
        a.set_label(&mut later).unwrap();
        a.add(rbx, qword_ptr(rsi + 8)).unwrap();
        exit(a);
    });
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let expect = word(0).wrapping_add(word(8));
    let r = run(&at("read-own-code", load, bytes));
    assert_eq!(result(&r), expect);
    assert_eq!(translation(&r, "invalidations"), 0);
}

/// `target: mov eax, 1; add rbx, rax; ret`, then from the entry `main: call target;
/// patch the immediate to 100; call target; exit`: 1 + 100 when the second call runs the
/// new code.
fn rewrite_a_called_block(load: u64) -> GuestImage {
    let bytes = asm(load, |a| {
        let mut target = a.create_label();
        a.set_label(&mut target).unwrap();
        a.mov(eax, 1u32).unwrap();
        a.add(rbx, rax).unwrap();
        a.ret().unwrap();
        // main, at +9
        a.xor(ebx, ebx).unwrap();
        a.call(target).unwrap();
        a.mov(rdi, load).unwrap();
        a.mov(dword_ptr(rdi + 1), 100u32).unwrap();
        a.call(target).unwrap();
        exit(a);
    });
    assert_eq!(
        &bytes[..10],
        &[0xB8, 1, 0, 0, 0, 0x48, 0x01, 0xC3, 0xC3, 0x31]
    );
    GuestImage::flat("rewrite-called-block", bytes, load, load + 9)
}

#[test]
fn rewriting_a_block_that_already_ran_runs_the_new_code() {
    if !common::kvm_or_skip("rewriting_a_block_that_already_ran_runs_the_new_code") {
        return;
    }
    // In the first 2 MiB (4 KiB units) and above (2 MiB units).
    for load in [layout::DEFAULT_LOAD, 0x30_0000] {
        let r = run(&rewrite_a_called_block(load));
        assert_eq!(result(&r), 101, "at {load:#x}");
        assert!(translation(&r, "invalidations") >= 1, "{:?}", r.translation);
        assert_eq!(r.traps.get("code write"), Some(&1), "{:?}", r.traps);
    }
}

#[test]
fn copying_new_code_over_a_routine_with_rep_movsb_runs_the_copy() {
    if !common::kvm_or_skip("copying_new_code_over_a_routine_with_rep_movsb_runs_the_copy") {
        return;
    }
    // The called block's `mov eax, 1` is replaced by `mov eax, 50` built at 0x20_0000 and
    // copied over it byte by byte: 1 + 50.
    let load = layout::DEFAULT_LOAD;
    let bytes = asm(load, |a| {
        let mut target = a.create_label();
        a.set_label(&mut target).unwrap();
        a.mov(eax, 1u32).unwrap();
        a.add(rbx, rax).unwrap();
        a.ret().unwrap();
        a.xor(ebx, ebx).unwrap();
        a.call(target).unwrap();
        a.mov(rsi, 0x20_0000u64).unwrap();
        a.mov(byte_ptr(rsi), 0xB8).unwrap();
        a.mov(dword_ptr(rsi + 1), 50u32).unwrap();
        a.mov(rdi, load).unwrap();
        a.mov(ecx, 5u32).unwrap();
        a.cld().unwrap();
        a.rep().movsb().unwrap();
        a.call(target).unwrap();
        exit(a);
    });
    assert_eq!(
        &bytes[..10],
        &[0xB8, 1, 0, 0, 0, 0x48, 0x01, 0xC3, 0xC3, 0x31]
    );
    let r = run(&GuestImage::flat(
        "rep-movsb-over-code",
        bytes,
        load,
        load + 9,
    ));
    assert_eq!(result(&r), 51);
    assert_eq!(r.traps.get("code write"), Some(&1), "{:?}", r.traps);
}

#[test]
fn an_emulated_store_into_translated_code_invalidates_it_too() {
    if !common::kvm_or_skip("an_emulated_store_into_translated_code_invalidates_it_too") {
        return;
    }
    // `insd` from the timer port (0: it never fired) over the immediate of the called
    // block: the VMM writes the code, not the guest's store. 1 + 0.
    let load = layout::DEFAULT_LOAD;
    let bytes = asm(load, |a| {
        let mut target = a.create_label();
        a.set_label(&mut target).unwrap();
        a.mov(eax, 1u32).unwrap();
        a.add(rbx, rax).unwrap();
        a.ret().unwrap();
        a.xor(ebx, ebx).unwrap();
        a.call(target).unwrap();
        a.mov(edx, u32::from(contract::abi::port::TIMER)).unwrap();
        a.mov(rdi, load + 1).unwrap();
        a.insd().unwrap();
        a.call(target).unwrap();
        exit(a);
    });
    assert_eq!(
        &bytes[..10],
        &[0xB8, 1, 0, 0, 0, 0x48, 0x01, 0xC3, 0xC3, 0x31]
    );
    let r = run(&GuestImage::flat("insd-over-code", bytes, load, load + 9));
    assert_eq!(result(&r), 1);
    assert_eq!(r.traps.get("insd"), Some(&1), "{:?}", r.traps);
    assert!(!r.traps.contains_key("code write"), "{:?}", r.traps);
    assert!(translation(&r, "invalidations") >= 1, "{:?}", r.translation);
}

#[test]
fn rewriting_the_next_instruction_of_the_running_block_runs_the_new_one() {
    if !common::kvm_or_skip("rewriting_the_next_instruction_of_the_running_block_runs_the_new_one")
    {
        return;
    }
    // Twice round a loop: each time the store rewrites the immediate of the `mov bl`
    // right after it, in the same block: 7, then 7 + 9.
    let load = layout::DEFAULT_LOAD;
    let body = |off: i32| {
        asm(load, move |a| {
            let mut next = a.create_label();
            let mut again = a.create_label();
            a.xor(ebx, ebx).unwrap();
            a.xor(edx, edx).unwrap();
            a.mov(ecx, 2u32).unwrap();
            a.mov(al, 7u32).unwrap();
            a.set_label(&mut again).unwrap();
            a.mov(rdi, load).unwrap();
            a.mov(byte_ptr(rdi + off), al).unwrap(); // the immediate of `mov bl, 1` below
            a.set_label(&mut next).unwrap();
            a.mov(bl, 1u32).unwrap();
            a.add(rdx, rbx).unwrap();
            a.mov(al, 9u32).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(again).unwrap();
            a.mov(rbx, rdx).unwrap();
            exit(a);
        })
    };
    let at_imm = |b: &[u8]| b.windows(2).position(|w| w == [0xB3, 0x01]).unwrap() as i32 + 1;
    let off = at_imm(&body(1)); // any disp8: the same length
    let bytes = body(off);
    assert_eq!(at_imm(&bytes), off, "{bytes:02x?}");
    let r = run(&at("rewrite-next", load, bytes));
    assert_eq!(result(&r), 7 + 9);
    assert!(translation(&r, "invalidations") >= 2, "{:?}", r.translation);
}

#[test]
fn data_next_to_code_is_written_correctly_and_the_code_stays_right() {
    if !common::kvm_or_skip("data_next_to_code_is_written_correctly_and_the_code_stays_right") {
        return;
    }
    // A counter in the code's own page and one in the code's 2 MiB page above 2 MiB: a
    // loop of 50 increments of each; every store to a protected unit is correct.
    for load in [layout::DEFAULT_LOAD, 0x30_0000] {
        let bytes = asm(load, |a| {
            let mut again = a.create_label();
            a.mov(rsi, load + 0x800).unwrap();
            a.mov(rdi, load + 0x4_0000).unwrap();
            a.mov(qword_ptr(rsi), 0).unwrap();
            a.mov(qword_ptr(rdi), 0).unwrap();
            a.mov(ecx, 50u32).unwrap();
            a.set_label(&mut again).unwrap();
            a.inc(qword_ptr(rsi)).unwrap();
            a.add(qword_ptr(rdi), 2).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(again).unwrap();
            a.mov(rbx, qword_ptr(rsi)).unwrap();
            a.add(rbx, qword_ptr(rdi)).unwrap();
            exit(a);
        });
        let r = run(&at("data-next-to-code", load, bytes));
        assert_eq!(result(&r), 150, "at {load:#x}: {:?}", r.translation);
    }
}

#[test]
fn a_jump_into_the_middle_of_an_instruction_runs_what_is_there() {
    if !common::kvm_or_skip("a_jump_into_the_middle_of_an_instruction_runs_what_is_there") {
        return;
    }
    #[rustfmt::skip]
    let code = [
        0x31, 0xDB,                   // 0: xor ebx, ebx
        0xB8, 0xB3, 0x2A, 0x90, 0x90, // 2: mov eax, 0x90902AB3 (at 3: mov bl, 42; nop; nop)
        0x85, 0xDB,                   // 7: test ebx, ebx
        0x75, 0x04,                   // 9: jnz 15
        0xEB, 0xF6,                   // 11: jmp 3, into the mov's immediate
        0x90, 0x90,                   // 13
        0x31, 0xC0,                   // 15: xor eax, eax
        0xE7, 0xF4,                   // out 0xf4, eax
    ];
    let r = run(&common::raw("mid-instruction", &code));
    assert_eq!(result(&r), 42);
}

#[test]
fn blocks_that_never_end_time_out_within_the_limits() {
    if !common::kvm_or_skip("blocks_that_never_end_time_out_within_the_limits") {
        return;
    }
    // 4,000 `inc rax` and a jump back; and `jmp $`.
    let mut long = [0x48, 0xFF, 0xC0].repeat(4000);
    let back = -(long.len() as i32 + 5);
    long.push(0xE9);
    long.extend(back.to_le_bytes());
    for (name, code) in [("long-run", long), ("spin", vec![0xEB, 0xFE])] {
        let r = run(&common::raw(name, &code));
        assert!(
            matches!(r.outcome, Outcome::TimedOut { .. }),
            "{name}: {:?}",
            r.outcome
        );
    }
}

#[test]
fn a_full_translation_cache_is_flushed_and_the_run_completes() {
    if !common::kvm_or_skip("a_full_translation_cache_is_flushed_and_the_run_completes") {
        return;
    }
    // 300 blocks of `add rbx, i; jmp next`, run 3 times round.
    const BLOCKS: u64 = 300;
    let load = layout::DEFAULT_LOAD;
    let bytes = asm(load, |a| {
        let mut again = a.create_label();
        a.xor(ebx, ebx).unwrap();
        a.mov(ecx, 3u32).unwrap();
        a.set_label(&mut again).unwrap();
        for i in 1..=BLOCKS {
            let mut next = a.create_label();
            a.add(rbx, i as i32).unwrap();
            a.jmp(next).unwrap();
            a.set_label(&mut next).unwrap();
        }
        a.dec(ecx).unwrap();
        a.jnz(again).unwrap();
        exit(a);
    });
    let img = at("many-blocks", load, bytes);
    let opts = common::short();
    let small = binary_translation::run_with_cache(&img, &opts, bt::TC + 0x1000).unwrap();
    assert_eq!(result(&small), 3 * BLOCKS * (BLOCKS + 1) / 2);
    assert!(
        translation(&small, "flushes") >= 1,
        "{:?}",
        small.translation
    );
    let full = common::run(&BinaryTranslation, &img, &opts);
    assert_eq!(result(&full), result(&small));
    assert_eq!(translation(&full, "flushes"), 0);
    assert!(translation(&small, "blocks") > translation(&full, "blocks"));
}

/// Peeks at the monitor's private pages: the IDT, the fault stubs, the routine.
fn private_pages() -> Vec<PeekRequest> {
    [
        layout::IDT,
        layout::STUBS,
        layout::MONITOR_ROUTINE,
        layout::GDT,
    ]
    .into_iter()
    .map(|addr| PeekRequest { addr, len: 4096 })
    .collect()
}

fn run_peeking(img: &GuestImage) -> RunRecord {
    let opts = RunOptions {
        peeks: private_pages(),
        ..common::short()
    };
    common::run(&BinaryTranslation, img, &opts)
}

fn peeked(r: &RunRecord) -> Vec<String> {
    r.peeks.iter().map(|p| p.hex.clone()).collect()
}

/// A guest that goes after the engine's pages: it must end classified, the monitor's
/// private pages must be what a harmless guest leaves there, and the next guest must run.
fn assert_classified(
    name: &str,
    body: impl FnOnce(&mut CodeAssembler),
    kind: FaultKind,
    mentions: &str,
) {
    let baseline = run_peeking(&common::image("baseline", exit));
    let r = run_peeking(&common::image(name, |a| {
        body(a);
        exit(a);
    }));
    let (k, detail) = fault_of(&r);
    assert_eq!(k, kind, "{name}: {detail}");
    assert!(detail.contains(mentions), "{name}: {detail}");
    assert!(peeked(&r).iter().all(|h| !h.is_empty()));
    assert_eq!(
        peeked(&r),
        peeked(&baseline),
        "{name}: the monitor's pages changed"
    );
    let ok = run(&common::image("after", |a| {
        a.mov(ebx, 5u32).unwrap();
        exit(a);
    }));
    assert_eq!(result(&ok), 5);
}

#[test]
fn going_after_the_translation_cache_and_the_monitor_ends_classified() {
    if !common::kvm_or_skip("going_after_the_translation_cache_and_the_monitor_ends_classified") {
        return;
    }
    assert_classified(
        "write-tc",
        |a| {
            a.mov(rdi, bt::TC).unwrap();
            a.mov(byte_ptr(rdi), 0xC3).unwrap();
        },
        FaultKind::MonitorViolation,
        "monitor",
    );
    assert_classified(
        "jump-into-tc",
        |a| {
            a.mov(rax, bt::TC).unwrap();
            a.jmp(rax).unwrap();
        },
        FaultKind::BadMemoryAccess,
        "not guest code",
    );
    assert_classified(
        "read-idt",
        |a| {
            a.mov(rsi, layout::IDT).unwrap();
            a.mov(rax, qword_ptr(rsi)).unwrap();
        },
        FaultKind::MonitorViolation,
        "IDT",
    );
    // A forged lookup-table entry for the guest address `rax` will hold: the lookup
    // hits and jumps where the entry says, outside the translation cache.
    // The guest code it jumps to untranslated is a `hlt` it wrote at 0x30_0000.
    for (name, to) in [
        ("forged-entry-to-stubs", layout::STUBS),
        ("forged-entry-to-guest-code", 0x30_0000),
    ] {
        let target = 0x20_0000u64;
        assert_classified(
            name,
            |a| {
                a.mov(rsi, 0x30_0000u64).unwrap();
                a.mov(byte_ptr(rsi), 0xF4).unwrap();
                a.mov(rdi, bt::entry_of(target)).unwrap();
                a.mov(rax, target).unwrap();
                a.mov(qword_ptr(rdi), rax).unwrap();
                a.mov(rcx, to).unwrap();
                a.mov(qword_ptr(rdi + 8), rcx).unwrap();
                a.jmp(rax).unwrap();
            },
            FaultKind::MonitorViolation,
            "outside its translation",
        );
    }
}

#[test]
fn the_data_page_holds_only_the_guests_own_virtual_state() {
    if !common::kvm_or_skip("the_data_page_holds_only_the_guests_own_virtual_state") {
        return;
    }
    // It reads its virtual IF there after STI, then clears it by a store: the next
    // PUSHF shows IF = 0, as after CLI.
    let r = run(&common::image("data-page", |a| {
        a.sti().unwrap();
        a.mov(rsi, bt::VIF).unwrap();
        a.mov(rbx, qword_ptr(rsi)).unwrap();
        a.mov(qword_ptr(rsi), 0).unwrap();
        a.pushfq().unwrap();
        a.pop(rax).unwrap();
        a.and(eax, 0x200).unwrap();
        a.shl(rax, 8).unwrap();
        a.or(rbx, rax).unwrap();
        exit(a);
    }));
    assert_eq!(result(&r), 0x200);
}
