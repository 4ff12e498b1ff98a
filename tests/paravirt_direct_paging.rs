//! Direct paging on the paravirtual engine, end to end: a guest builds its own
//! four-level page tables, pins them, runs on them, changes them only through validated
//! `mmu_update` batches — and cannot write them, map them writable, map the monitor's
//! region, reach beyond RAM, use a large page or build a loop.

mod common;

use common::direct_paging::*;
use common::kvm_or_skip;
use contract::abi::hypercall::{errno, mmu, mmuext, Hypercall};
use contract::abi::layout;
use contract::Outcome;
use iced_x86::code_asm::*;

/// Counts in RBX when the quadword at `addr`, without the accessed and dirty bits, is
/// `want`.
fn expect_read(a: &mut CodeAssembler, addr: u64, want: u64) -> Result<(), IcedError> {
    let mut skip = a.create_label();
    a.mov(rax, addr)?;
    a.mov(rax, qword_ptr(rax))?;
    a.mov(rcx, !0x60u64)?;
    a.and(rax, rcx)?;
    a.mov(rcx, want)?;
    a.cmp(rax, rcx)?;
    a.jne(skip)?;
    a.inc(rbx)?;
    a.set_label(&mut skip)?;
    a.nop()
}

fn update(a: &mut CodeAssembler, ptr: u64, val: u64, want: i64) -> Result<(), IcedError> {
    store(a, REQS, ptr)?;
    store(a, REQS + 8, val)?;
    expect(a, Hypercall::MmuUpdate, [REQS, 1, mmu::FLUSH_TLB], want)
}

fn unpin(a: &mut CodeAssembler, frame: u64, want: i64) -> Result<(), IcedError> {
    expect(a, Hypercall::MmuextOp, [mmuext::UNPIN, frame, 0], want)
}

/// The guest's tables: the VMM's slot, then USER → DATA (writable) and USER + 4 KiB → the
/// L1 itself (read-only).
fn build_tables(a: &mut CodeAssembler) -> Result<(), IcedError> {
    store(a, L4, layout::PDPT | PWU)?;
    store(a, L4 + 8, L3 | PWU)?;
    store(a, L3, L2 | PWU)?;
    store(a, L2, L1 | PWU)?;
    store(a, L1, DATA | PWU)?;
    store(a, L1 + 8, L1 | PU)?;
    store(a, DATA, 0x1111)?;
    store(a, DATA + 0x1000, 0x8888)
}

#[test]
fn a_guest_runs_on_its_own_validated_page_tables() {
    if !kvm_or_skip("a_guest_runs_on_its_own_validated_page_tables") {
        return;
    }
    let img = image("direct-paging", |a| {
        a.xor(ebx, ebx)?;
        build_tables(a)?;
        pin(a, L4, 4, 0)?; // 1
        expect(a, Hypercall::NewBaseptr, [L4, 0, 0], 0)?; // 2
        expect_read(a, USER, 0x1111)?; // 3: the guest's own mapping
        expect_read(a, USER + 0x1000, DATA | PWU)?; // 4: its L1, read-only
        update(a, L1, (DATA + 0x1000) | PWU, 1)?; // 5
        expect_read(a, USER, 0x8888)?; // 6: the update took effect
        expect_read(a, USER + 0x1000, (DATA + 0x1000) | PWU)?; // 7
                                                               // Refused, each with its code.
        update(a, L1 + 16, L2 | PWU, errno::EPERM)?; // 8: a page table, writable
        update(a, L1 + 16, layout::IDT | PU, errno::EFAULT)?; // 9: the monitor's region
        update(a, L1 + 16, (64 << 20) | PU, errno::EFAULT)?; // 10: beyond RAM
        update(a, L2 + 8, DATA | PWU | 0x80, errno::EINVAL)?; // 11: a large page
        update(a, L3 + 8, L4 | PU, errno::EPERM)?; // 12: a loop
        update(a, L4, L3 | PWU, errno::EPERM)?; // 13: the VMM's slot
        unpin(a, L4, errno::EPERM)?; // 14: the root in use
                                     // Back to the VMM's root; unpinned, the tables are plain pages again.
        expect(a, Hypercall::NewBaseptr, [layout::PML4, 0, 0], 0)?; // 15
        unpin(a, L4, 0)?; // 16
        store(a, L1 + 16, 0x1_0000)?;
        expect_read(a, L1 + 16, 0x1_0000)?; // 17
        exit(a)
    });
    let r = run(&img);
    assert_eq!(r.outcome, completed(17), "{:?}", r.hypercalls);
    let h = &r.hypercalls;
    assert_eq!(h["mmuext_op"], 2);
    assert_eq!(h["rejected:mmuext_op"], 1);
    assert_eq!(h["mmu_update"], 1);
    assert_eq!(h["rejected:mmu_update"], 6);
    assert_eq!(h["direct_paging:pins"], 1);
    assert_eq!(h["direct_paging:unpins"], 1);
    assert_eq!(h["direct_paging:validations"], 4);
    assert_eq!(h["direct_paging:entries"], 1);
    assert_eq!(h["direct_paging:batches"], 7);
    for name in [
        "writable_page_table",
        "monitor_region",
        "beyond_ram",
        "large_page",
        "loop",
        "vmm_slot",
    ] {
        assert_eq!(h[&format!("direct_paging:refused:{name}")], 1, "{name}");
    }
}

#[test]
fn a_pinned_table_cannot_be_written_through_the_vmms_map_of_ram() {
    if !kvm_or_skip("a_pinned_table_cannot_be_written_through_the_vmms_map_of_ram") {
        return;
    }
    let img = image("write-pinned", |a| {
        a.xor(ebx, ebx)?;
        build_tables(a)?;
        pin(a, L4, 4, 0)?;
        // The escape: rewrite L1 to map the monitor's region.
        store(a, L1 + 16, layout::PML4 | PWU)?;
        exit(a)
    });
    let r = run(&img);
    match &r.outcome {
        Outcome::GuestFault { kind, .. } => {
            assert_eq!(*kind, contract::FaultKind::Exception, "{:?}", r.outcome)
        }
        other => panic!("the store must fault, got {other:?}"),
    }
    assert_eq!(r.hypercalls["mmuext_op"], 1);
    assert!(!r.hypercalls.contains_key("exit"));
}

#[test]
fn hostile_roots_are_refused_at_pin_time() {
    if !kvm_or_skip("hostile_roots_are_refused_at_pin_time") {
        return;
    }
    let img = image("hostile-roots", |a| {
        a.xor(ebx, ebx)?;
        build_tables(a)?;
        // An L1 mapping itself writable.
        store(a, L1 + 16, L1 | PWU)?;
        pin(a, L4, 4, errno::EPERM)?;
        store(a, L1 + 16, 0)?;
        // A loop: the L2 pointing back at the L3.
        store(a, L2 + 8, L3 | PWU)?;
        pin(a, L4, 4, errno::EPERM)?;
        store(a, L2 + 8, 0)?;
        // PS in an L3 entry.
        store(a, L3 + 8, 0x4000_0000 | PWU | 0x80)?;
        pin(a, L4, 4, errno::EINVAL)?;
        store(a, L3 + 8, 0)?;
        // An L1 mapping the monitor's region, and one mapping beyond RAM.
        store(a, L1 + 16, layout::MONITOR_ROUTINE | PU)?;
        pin(a, L4, 4, errno::EFAULT)?;
        store(a, L1 + 16, (1 << 40) | PU)?;
        pin(a, L4, 4, errno::EFAULT)?;
        store(a, L1 + 16, 0)?;
        // (A table above 2 MiB is no refusal: the VMM maps all of RAM with 4 KiB pages
        // in this mode, so it write-protects any frame; tests/paravirt_kernel.rs runs a
        // kernel whose tables live there.)
        // Clean now: pinned, and the tables are no longer writable (nothing was left
        // half-typed by the refusals).
        pin(a, L4, 4, 0)?;
        exit(a)
    });
    let r = run(&img);
    assert_eq!(r.outcome, completed(6), "{:?}", r.hypercalls);
    let h = &r.hypercalls;
    assert_eq!(h["rejected:mmuext_op"], 5);
    // Tables below a refused entry are validated, then dropped with the refusal: the
    // loop after its L1 (1), the large page after L2 and L1 (2); then the clean pin (4).
    assert_eq!(h["direct_paging:validations"], 7);
    for (name, n) in [
        ("writable_page_table", 1),
        ("loop", 1),
        ("large_page", 1),
        ("monitor_region", 1),
        ("beyond_ram", 1),
    ] {
        assert_eq!(h[&format!("direct_paging:refused:{name}")], n, "{name}");
    }
}
