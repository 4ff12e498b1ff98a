//! Hostile page-table guests, one test per family of attack, over every mode the attack
//! applies to. Each attack ends classified — refused with its exact error code, killed
//! with its named fault, or a declared limit — and never reaches the monitor's region or
//! a page table writable. `docs/security.md` lists the families and their outcomes.

mod common;

use common::kvm_or_skip;
use contract::abi::hypercall::{errno, mmu, mmuext, Hypercall, PORT};
use contract::abi::layout;
use contract::{Flavour, GuestImage, Outcome, RunOptions, RunRecord};
use iced_x86::code_asm::*;
use paravirt::Paravirt;

// The paravirtual guest's own tables, as in tests/paravirt_direct_paging.rs.
const L4: u64 = 0x18_0000;
const L3: u64 = 0x18_1000;
const L2: u64 = 0x18_2000;
const L1: u64 = 0x18_3000;
const DATA: u64 = 0x30_0000;
/// A frame of plain guest RAM the attacks try to turn into a page table they can write.
const VICTIM: u64 = 0x31_0000;
const REQS: u64 = 0x20_0000;
/// The user half's first page (PML4 entry 1).
const USER: u64 = 0x80_0000_0000;
const PWU: u64 = 0b111;
const PU: u64 = 0b101;

fn pv_image(
    name: &str,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> GuestImage {
    let mut img = common::assemble(name, body);
    img.flavour = Flavour::Paravirt;
    img
}

fn hypercall(a: &mut CodeAssembler, h: Hypercall, args: [u64; 3]) -> Result<(), IcedError> {
    a.mov(rdi, args[0])?;
    a.mov(rsi, args[1])?;
    a.mov(rdx, args[2])?;
    a.mov(rax, h.number())?;
    a.out(u32::from(PORT), eax)
}

/// A hypercall whose result must be `want`: RBX counts the ones that are.
fn expect(a: &mut CodeAssembler, h: Hypercall, args: [u64; 3], want: i64) -> Result<(), IcedError> {
    let mut skip = a.create_label();
    hypercall(a, h, args)?;
    a.mov(rcx, want)?;
    a.cmp(rax, rcx)?;
    a.jne(skip)?;
    a.inc(rbx)?;
    a.set_label(&mut skip)?;
    a.nop()
}

fn store(a: &mut CodeAssembler, addr: u64, value: u64) -> Result<(), IcedError> {
    a.mov(rax, addr)?;
    a.mov(rcx, value)?;
    a.mov(qword_ptr(rax), rcx)
}

/// One `mmu_update` batch of `reqs`, whose result must be `want`.
fn batch(a: &mut CodeAssembler, reqs: &[(u64, u64)], want: i64) -> Result<(), IcedError> {
    for (i, &(ptr, val)) in reqs.iter().enumerate() {
        store(a, REQS + 16 * i as u64, ptr)?;
        store(a, REQS + 16 * i as u64 + 8, val)?;
    }
    expect(
        a,
        Hypercall::MmuUpdate,
        [REQS, reqs.len() as u64, mmu::FLUSH_TLB],
        want,
    )
}

fn pin(a: &mut CodeAssembler, frame: u64, level: u64, want: i64) -> Result<(), IcedError> {
    expect(a, Hypercall::MmuextOp, [mmuext::PIN, frame, level], want)
}

/// The guest's tables: the VMM's slot, then USER → DATA (writable) and USER + 4 KiB → the
/// L1 itself (read-only); pinned and loaded.
fn own_tables(a: &mut CodeAssembler) -> Result<(), IcedError> {
    store(a, L4, layout::PDPT | PWU)?;
    store(a, L4 + 8, L3 | PWU)?;
    store(a, L3, L2 | PWU)?;
    store(a, L2, L1 | PWU)?;
    store(a, L1, DATA | PWU)?;
    store(a, L1 + 8, L1 | PU)?;
    pin(a, L4, 4, 0)?;
    expect(a, Hypercall::NewBaseptr, [L4, 0, 0], 0)
}

fn pv_exit(a: &mut CodeAssembler) -> Result<(), IcedError> {
    hypercall(a, Hypercall::Exit, [0, 0, 0])?;
    a.hlt()
}

fn pv_run(img: &GuestImage) -> RunRecord {
    common::run(&Paravirt, img, &RunOptions::default())
}

fn completed(result: u64) -> Outcome {
    Outcome::Completed {
        exit_code: 0,
        result,
        ending: contract::Ending::ExitPort,
    }
}

/// Family: a batch whose later entries drop a table's type and take it again. The table
/// is validated anew from guest memory, where the batch's earlier write to it is not yet
/// made (the monitor makes the writes after the hypercall): a writable mapping written
/// by the batch would escape the count, and the frame it maps could become a page table
/// the guest writes. Paravirt only (the other modes have no batches).
#[test]
fn a_batch_that_retypes_a_table_it_wrote_keeps_the_write_counted() {
    if !kvm_or_skip("a_batch_that_retypes_a_table_it_wrote_keeps_the_write_counted") {
        return;
    }
    let img = pv_image("retype-in-batch", |a| {
        a.xor(ebx, ebx)?;
        own_tables(a)?; // 1, 2
                        // USER + 8 KiB → VICTIM writable; then the L1 loses its only reference and takes
                        // it again, all in one batch: accepted.
        batch(a, &[(L1 + 16, VICTIM | PWU), (L2, 0), (L2, L1 | PWU)], 3)?; // 3
                                                                           // VICTIM is mapped writable: it may not become a page table, pinned …
        pin(a, VICTIM, 1, errno::EPERM)?; // 4
                                          // … or referenced, after the guest wrote a mapping of the monitor into it.
        store(a, USER + 0x2000, layout::PML4 | PWU)?;
        batch(a, &[(L2 + 8, VICTIM | PWU)], errno::EPERM)?; // 5
                                                            // Had the escape worked, USER + 2 MiB would map the monitor's PML4: read it.
        let mut safe = a.create_label();
        a.cmp(rax, 1)?;
        a.jne(safe)?;
        a.mov(rax, USER + 0x20_0000)?;
        a.mov(rax, qword_ptr(rax))?;
        a.add(rbx, 100)?;
        a.set_label(&mut safe)?;
        a.nop()?;
        pv_exit(a)
    });
    let r = pv_run(&img);
    assert_eq!(r.outcome, completed(5), "{:?}", r.hypercalls);
    let h = &r.hypercalls;
    assert_eq!(h["direct_paging:refused:writable_page_table"], 2);
    assert_eq!(h["rejected:mmuext_op"], 1);
    assert_eq!(h["rejected:mmu_update"], 1);
}
