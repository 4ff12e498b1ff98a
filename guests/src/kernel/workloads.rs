//! The memory workloads, each a kernel part (`main`) and a user program, and the probe
//! guest that checks the architectural behaviour they rely on.

use contract::{Expectations, Flavour, GuestImage};
use iced_x86::code_asm::*;

use super::{exit, map, sys, Kernel};
use crate::asm::counted_loop;
use crate::ops::{AsmResult, GuestOps};
use crate::workloads::Params;

/// Pages of the tlb-walk working set (16 MiB of virtual memory, 4 KiB pages): beyond the
/// reach of the TLBs of current x86 cores (a few thousand 4 KiB entries at most).
pub const TLB_WALK_PAGES: u64 = 4096;
/// Frames behind the tlb-walk working set: page j maps frame j mod this (the TLB holds
/// translations of virtual pages, so aliases cost a TLB entry each).
pub const TLB_WALK_FRAMES: u64 = 64;
/// Stride of tlb-walk, in pages: access i touches page (i × stride) mod
/// [`TLB_WALK_PAGES`] (odd, so every page is visited once every 4096 accesses).
pub const TLB_WALK_STRIDE: i32 = 1031;

/// The workloads built on the kernel (the image of each needs the flavour's kernel
/// operations).
pub const KERNEL_WORKLOADS: &[&str] = &[
    "ptemod",
    "syscall",
    "pgfault",
    "ctxswitch",
    "forkwait",
    "tlb-walk",
    "kernel-probe",
];

fn expect_sys(k: &Kernel<'_>, a: &mut CodeAssembler, want: u32) -> AsmResult {
    k.expect_sys(a, want)
}

/// The user side's system call `nr` through the kernel's entry page (clobbers RAX, RCX,
/// R11; uses 8 bytes of stack).
fn syscall(a: &mut CodeAssembler, nr: u32) -> AsmResult {
    a.mov(eax, nr)?;
    a.mov(r11, map::USER_VDSO)?;
    a.call(r11)
}

/// The user side's start of the measured loop (RBX = 0, TSC in R14; R15 is the boot-info
/// page).
fn user_start(a: &mut CodeAssembler) -> AsmResult {
    a.xor(ebx, ebx)?;
    crate::asm::start_clock(a)
}

/// Touches heap page R12 of the heap at RSI: adds what it holds (0: it is new) to RBX,
/// stores R12 + 1 and adds that back.
fn touch_heap_page(a: &mut CodeAssembler) -> AsmResult {
    a.mov(rax, r12)?;
    a.shl(rax, 12)?;
    a.add(rax, rsi)?;
    a.add(rbx, qword_ptr(rax))?;
    a.lea(rdx, ptr(r12 + 1))?;
    a.mov(qword_ptr(rax), rdx)?;
    a.add(rbx, qword_ptr(rax))
}

/// 1 + 2 + … + n.
fn sum_to(n: u64) -> u64 {
    n.wrapping_mul(n.wrapping_add(1)) / 2
}

fn expectations(result: u64) -> Expectations {
    Expectations {
        exit_code: Some(0),
        result: Some(result),
        console: Some(String::new()),
        oracles: Default::default(),
        divergences: Default::default(),
        variants: Vec::new(),
    }
}

/// Builds the kernel with `main` and `user`; the flavour's ops must have kernel
/// operations (the caller checked).
fn kernel(
    a: &mut CodeAssembler,
    ops: &dyn GuestOps,
    main: impl FnOnce(&mut CodeAssembler, &mut Kernel<'_>) -> AsmResult,
    user: impl FnOnce(&mut CodeAssembler, &mut Kernel<'_>) -> AsmResult,
) -> AsmResult {
    match Kernel::new(a, ops) {
        Some(k) => k.assemble(a, main, user),
        // `Workload::image` refuses a kernel workload in a flavour without kernel
        // operations before it gets here; the image would only trap.
        None => a.ud2(),
    }
}

// ---------------------------------------------------------------- ptemod

/// Values ptemod's kernel stores in frames A and B, so that a read through the window
/// tells which frame a page maps.
pub const PTEMOD_VALUES: (u64, u64) = (0xA, 0xB);

/// The value ptemod's read of iteration `i` returns with batch `b`: the pages of the
/// window map frame A at first, and each round of `b` changes flips them, so the reads of
/// round r see frame B when r is even and frame A when it is odd.
pub fn ptemod_value(i: u64, b: u64) -> u64 {
    if (i / b.max(1)) % 2 == 0 {
        PTEMOD_VALUES.1
    } else {
        PTEMOD_VALUES.0
    }
}

/// ptemod's result: the sum of its N reads (closed form of Σ [`ptemod_value`]).
pub fn ptemod_sum(n: u64, b: u64) -> u64 {
    let b = b.max(1);
    let (rounds, rest) = (n / b, n % b);
    // Rounds 0, 2, 4, … read B; 1, 3, … read A; then the partial round.
    let (even, odd) = (rounds.div_ceil(2), rounds / 2);
    let full = (even * PTEMOD_VALUES.1 + odd * PTEMOD_VALUES.0).wrapping_mul(b);
    full.wrapping_add(rest.wrapping_mul(ptemod_value(rounds * b, b)))
}

/// ptemod on the kernel's own page tables: the kernel maps a window of B user pages of a
/// process (at [`map::USER_HEAP`], one page table), all to frame A, and runs on that
/// process's root. Then, in rounds of B iterations (the last may be shorter), it changes
/// the PTE of window page j (iteration j of the round) to the other frame with
/// `pte_store`, makes the round's stores take effect with one `pte_flush` (paravirt: one
/// `mmu_update` carrying them; native: nothing), and for each page changed flushes its
/// TLB entry (`invlpg`) and reads through it. With B = 1 it is one PTE changed, flushed
/// and read N times. The result is the sum of the N reads ([`ptemod_sum`]).
pub(crate) fn ptemod(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    use contract::x86::pte;
    let entry = a.create_label();
    let (n, b) = (p.n, p.b.max(1));
    let flags = (pte::P | pte::RW | pte::US) as i32;
    kernel(
        a,
        ops,
        move |a, k| {
            // Frames A and B, marked; count2 = A ^ B (what a change flips in a PTE).
            k.alloc(a)?;
            a.mov(qword_ptr(rax), PTEMOD_VALUES.0 as i32)?;
            a.mov(qword_ptr(k.var.count), rax)?;
            k.alloc(a)?;
            a.mov(qword_ptr(rax), PTEMOD_VALUES.1 as i32)?;
            a.xor(rax, qword_ptr(k.var.count))?;
            a.mov(qword_ptr(k.var.count2), rax)?;
            k.create_process(a, 0, entry, 1)?;
            // The window: B pages, all to frame A (`map` leaves RDI at the PTE it
            // stored). R13: the PTE of the window's first page (one page table holds
            // them all).
            counted_loop(a, b, |a| {
                a.mov(r9, r12)?;
                a.shl(r9, 12)?;
                a.mov(rax, map::USER_HEAP)?;
                a.add(r9, rax)?;
                a.mov(r10, qword_ptr(k.var.count))?;
                a.or(r10, flags)?;
                k.map(a, 0)
            })?;
            a.lea(r13, ptr(rdi - 8 * (b as i32 - 1)))?;
            k.switch_to(a, 0)?;
            // R14: the PTE value the current round stores (frame B first).
            a.mov(r14, qword_ptr(k.var.count))?;
            a.xor(r14, qword_ptr(k.var.count2))?;
            a.or(r14, flags)?;
            a.xor(ebx, ebx)?;
            // R12: iterations done; R8: this round's length.
            a.xor(r12d, r12d)?;
            k.start_clock(a)?;
            let (mut round, mut done) = (a.create_label(), a.create_label());
            a.set_label(&mut round)?;
            a.mov(rax, n)?;
            a.sub(rax, r12)?;
            a.jbe(done)?;
            a.mov(r8, b)?;
            a.cmp(rax, r8)?;
            a.cmovb(r8, rax)?;
            // The round's stores.
            let (mut store, mut read) = (a.create_label(), a.create_label());
            a.xor(ecx, ecx)?;
            a.set_label(&mut store)?;
            a.lea(rdi, ptr(r13 + rcx * 8))?;
            a.mov(rax, r14)?;
            k.k.pte_store(a)?;
            a.inc(rcx)?;
            a.cmp(rcx, r8)?;
            a.jb(store)?;
            k.k.pte_flush(a)?;
            // Each page changed: its TLB entry flushed, then a read through it.
            a.xor(ecx, ecx)?;
            a.set_label(&mut read)?;
            a.mov(rsi, rcx)?;
            a.shl(rsi, 12)?;
            a.mov(rax, map::USER_HEAP)?;
            a.add(rsi, rax)?;
            k.k.invlpg(a)?;
            a.add(rbx, qword_ptr(rsi))?;
            a.inc(rcx)?;
            a.cmp(rcx, r8)?;
            a.jb(read)?;
            a.add(r12, r8)?;
            a.xor(r14, qword_ptr(k.var.count2))?;
            a.jmp(round)?;
            a.set_label(&mut done)?;
            k.stop_clock(a, n)?;
            k.exit(a, exit::OK)
        },
        move |a, _| {
            // The process never runs: the kernel works on its page tables.
            a.set_label(&mut { entry })?;
            syscall(a, sys::EXIT)
        },
    )
}

pub(crate) fn ptemod_expect(p: &Params) -> Expectations {
    expectations(ptemod_sum(p.n, p.b))
}

// ---------------------------------------------------------------- syscall

pub(crate) fn syscall_workload(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let entry = a.create_label();
    let n = p.n;
    kernel(
        a,
        ops,
        move |a, k| {
            k.create_process(a, 0, entry, 1)?;
            k.switch_to(a, 0)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::EXIT)?;
            k.check_var(a, k.var.null_calls, n, exit::BAD_SYSCALL)?;
            k.user_reg(a, 0, rbx, rbx)?;
            k.exit(a, exit::OK)
        },
        move |a, _| {
            a.set_label(&mut { entry })?;
            user_start(a)?;
            counted_loop(a, n, |a| {
                syscall(a, sys::NULL)?;
                a.add(rbx, rax)
            })?;
            crate::asm::stop_clock(a, n)?;
            syscall(a, sys::EXIT)
        },
    )
}

pub(crate) fn syscall_expect(p: &Params) -> Expectations {
    expectations(sum_to(p.n))
}

// ---------------------------------------------------------------- pgfault

pub(crate) fn pgfault(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let entry = a.create_label();
    let n = p.n;
    kernel(
        a,
        ops,
        move |a, k| {
            a.mov(rax, n)?;
            a.mov(qword_ptr(k.var.heap_limit), rax)?;
            k.create_process(a, 0, entry, 1)?;
            k.switch_to(a, 0)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::EXIT)?;
            k.check_var(a, k.var.faults, n, exit::FAULT_COUNT)?;
            k.user_reg(a, 0, rbx, rbx)?;
            k.exit(a, exit::OK)
        },
        move |a, _| {
            a.set_label(&mut { entry })?;
            user_start(a)?;
            a.mov(rsi, map::USER_HEAP)?;
            counted_loop(a, n, touch_heap_page)?;
            crate::asm::stop_clock(a, n)?;
            syscall(a, sys::EXIT)
        },
    )
}

pub(crate) fn pgfault_expect(p: &Params) -> Expectations {
    expectations(sum_to(p.n))
}

// ---------------------------------------------------------------- ctxswitch

pub(crate) fn ctxswitch(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let entry = a.create_label();
    let n = p.n;
    kernel(
        a,
        ops,
        move |a, k| {
            let (mut top, mut to_a, mut run, mut done) = (
                a.create_label(),
                a.create_label(),
                a.create_label(),
                a.create_label(),
            );
            k.create_process(a, 0, entry, 2)?;
            k.create_process(a, 1, entry, 2)?;
            k.switch_to(a, 0)?;
            k.start_clock(a)?;
            a.mov(rax, n)?;
            a.test(rax, rax)?;
            a.jz(done)?;
            a.set_label(&mut top)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::YIELD)?;
            a.inc(qword_ptr(k.var.count))?;
            a.mov(rax, n)?;
            a.cmp(qword_ptr(k.var.count), rax)?;
            a.jae(done)?;
            // After an odd number of switches process B runs, after an even one A.
            a.test(qword_ptr(k.var.count), 1)?;
            a.jz(to_a)?;
            k.switch_to(a, 1)?;
            a.jmp(run)?;
            a.set_label(&mut to_a)?;
            k.switch_to(a, 0)?;
            a.set_label(&mut run)?;
            a.jmp(top)?;
            a.set_label(&mut done)?;
            k.stop_clock(a, n)?;
            // Result: A's counter + B's counter × 2^32, each read from the process's own
            // frame; each second page must hold twice its counter.
            let mut bad = a.create_label();
            for i in 0..2 {
                k.data_frame(a, i, false, rsi)?;
                k.data_frame(a, i, true, rdi)?;
                a.mov(rax, qword_ptr(rsi))?;
                a.add(rax, rax)?;
                a.cmp(rax, qword_ptr(rdi))?;
                a.jne(bad)?;
            }
            k.data_frame(a, 1, false, rsi)?;
            a.mov(rbx, qword_ptr(rsi))?;
            a.shl(rbx, 32)?;
            k.data_frame(a, 0, false, rsi)?;
            a.add(rbx, qword_ptr(rsi))?;
            k.exit(a, exit::OK)?;
            a.set_label(&mut bad)?;
            a.mov(rbx, qword_ptr(rdi))?;
            k.exit(a, exit::FAULT_COUNT)
        },
        move |a, _| {
            a.set_label(&mut { entry })?;
            a.mov(rsi, map::USER_DATA)?;
            a.inc(qword_ptr(rsi))?;
            a.add(qword_ptr(rsi + 0x1000), 2)?;
            syscall(a, sys::YIELD)?;
            a.jmp(entry)
        },
    )
}

pub(crate) fn ctxswitch_expect(p: &Params) -> Expectations {
    expectations(p.n.div_ceil(2) + ((p.n / 2) << 32))
}

// ---------------------------------------------------------------- forkwait

pub(crate) fn forkwait(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let entry = a.create_label();
    let (n, pages) = (p.n, p.k);
    kernel(
        a,
        ops,
        move |a, k| {
            let (mut top, mut done) = (a.create_label(), a.create_label());
            a.mov(rax, qword_ptr(k.var.in_use))?;
            a.mov(qword_ptr(k.var.count2), rax)?;
            k.start_clock(a)?;
            a.mov(rax, n)?;
            a.test(rax, rax)?;
            a.jz(done)?;
            a.set_label(&mut top)?;
            // Build: an address space with its code, a data page and K heap pages.
            k.create_process(a, 0, entry, 1)?;
            counted_loop(a, pages, |a| {
                a.mov(r9, r12)?;
                a.shl(r9, 12)?;
                a.mov(rax, map::USER_HEAP)?;
                a.add(r9, rax)?;
                k.map_heap_page(a, 0)
            })?;
            // Run in it.
            k.switch_to(a, 0)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::EXIT)?;
            k.user_reg(a, 0, rax, rbx)?;
            a.add(qword_ptr(k.var.result), rax)?;
            // Tear it down.
            k.destroy_process(a, 0)?;
            a.inc(qword_ptr(k.var.count))?;
            a.mov(rax, n)?;
            a.cmp(qword_ptr(k.var.count), rax)?;
            a.jb(top)?;
            a.set_label(&mut done)?;
            k.stop_clock(a, n)?;
            // Every frame came back.
            let mut leak = a.create_label();
            a.mov(rax, qword_ptr(k.var.in_use))?;
            a.cmp(rax, qword_ptr(k.var.count2))?;
            a.jne(leak)?;
            a.mov(rbx, qword_ptr(k.var.result))?;
            k.exit(a, exit::OK)?;
            a.set_label(&mut leak)?;
            a.mov(rbx, rax)?;
            k.exit(a, exit::LEAK)
        },
        move |a, _| {
            a.set_label(&mut { entry })?;
            a.xor(ebx, ebx)?;
            a.mov(rsi, map::USER_HEAP)?;
            counted_loop(a, pages, touch_heap_page)?;
            syscall(a, sys::EXIT)
        },
    )
}

pub(crate) fn forkwait_expect(p: &Params) -> Expectations {
    expectations(p.n.wrapping_mul(sum_to(p.k)))
}

// ---------------------------------------------------------------- tlb-walk

pub(crate) fn tlb_walk(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let entry = a.create_label();
    let n = p.n;
    kernel(
        a,
        ops,
        move |a, k| {
            k.create_process(a, 0, entry, 1)?;
            // Frame f holds f + 1 and backs pages f, f + 64, f + 128, …
            counted_loop(a, TLB_WALK_FRAMES, |a| {
                a.mov(r9, r12)?;
                a.shl(r9, 12)?;
                a.mov(rax, map::USER_HEAP)?;
                a.add(r9, rax)?;
                k.map_heap_page(a, 0)?;
                a.lea(rdx, ptr(r12 + 1))?;
                a.mov(qword_ptr(rax), rdx)?;
                a.mov(qword_ptr(k.var.count), rax)?;
                // The aliases: read-only, not owned (the frame is freed once).
                a.mov(ebx, 1)?;
                let mut alias = a.create_label();
                a.set_label(&mut alias)?;
                a.mov(r9, rbx)?;
                a.shl(r9, 6)?;
                a.add(r9, r12)?;
                a.shl(r9, 12)?;
                a.mov(rax, map::USER_HEAP)?;
                a.add(r9, rax)?;
                a.mov(r10, qword_ptr(k.var.count))?;
                a.or(r10, (contract::x86::pte::P | contract::x86::pte::US) as i32)?;
                k.map(a, 0)?;
                a.inc(rbx)?;
                a.cmp(rbx, (TLB_WALK_PAGES / TLB_WALK_FRAMES) as i32)?;
                a.jb(alias)
            })?;
            k.switch_to(a, 0)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::EXIT)?;
            k.user_reg(a, 0, rbx, rbx)?;
            k.exit(a, exit::OK)
        },
        move |a, _| {
            a.set_label(&mut { entry })?;
            a.mov(rsi, map::USER_HEAP)?;
            user_start(a)?;
            counted_loop(a, n, |a| {
                a.imul_3(rax, r12, TLB_WALK_STRIDE)?;
                a.and(eax, (TLB_WALK_PAGES - 1) as i32)?;
                a.shl(rax, 12)?;
                a.add(rbx, qword_ptr(rsi + rax))
            })?;
            crate::asm::stop_clock(a, n)?;
            syscall(a, sys::EXIT)
        },
    )
}

/// What tlb-walk's N accesses read: access i reads frame (i × stride mod 4096) mod 64,
/// which holds that + 1. Only i mod 64 matters, and 64 consecutive accesses read every
/// frame once (the stride is odd): closed form.
pub fn tlb_walk_sum(n: u64) -> u64 {
    let f = TLB_WALK_FRAMES;
    let stride = TLB_WALK_STRIDE as u64;
    let full = (n / f).wrapping_mul(f * (f + 1) / 2);
    let rest: u64 = (0..n % f).map(|i| (i * stride) % f + 1).sum();
    full.wrapping_add(rest)
}

pub(crate) fn tlb_walk_expect(p: &Params) -> Expectations {
    expectations(tlb_walk_sum(p.n))
}

// ---------------------------------------------------------------- the probe

/// Bits of the probe's result, one per behaviour checked.
pub mod probe_bits {
    /// The null system call returned to the next instruction with the kernel's value.
    pub const SYSCALL_RETURNS: u64 = 1 << 0;
    /// SYSRETQ restored RFLAGS from R11 (the carry set before SYSCALL is still set).
    pub const SYSRET_RFLAGS: u64 = 1 << 1;
    /// A read of a missing heap page faulted from CPL 3 with the right CR2 (the kernel
    /// served exactly that page) and read 0.
    pub const DEMAND_ZERO: u64 = 1 << 2;
    /// After the kernel rewrote a present PTE and ran `invlpg`, the user read the new
    /// frame.
    pub const INVLPG: u64 = 1 << 3;
    /// After `mov cr3` to the second process's root, the same virtual address read the
    /// second process's frame, and the first's again after switching back.
    pub const CR3_SWITCH: u64 = 1 << 4;
    /// SYSCALL from CPL 3 entered the kernel at CPL 0 (else the kernel enters with
    /// `int3`, and every other bit still holds).
    pub const SYSCALL_ENTERS_KERNEL: u64 = 1 << 5;
    /// Every bit but [`SYSCALL_ENTERS_KERNEL`].
    pub const ALL: u64 = 0x1F;
}

/// The probe guest: one run that checks, at CPL 3 under the kernel, SYSCALL/SYSRETQ, a
/// demand-zero #PF with CR2, `invlpg` after a PTE rewrite, and `mov cr3` between two
/// roots. Its result is the [`probe_bits`] that held.
pub fn probe_image(flavour: Flavour) -> Result<GuestImage, crate::Error> {
    let params = Params::default();
    crate::Workload {
        name: "kernel-probe",
        summary: "the probe of user mode, paging and SYSCALL",
        default_n: 1,
        max_n: 1,
        batched: false,
        build: probe,
        // The result depends on the host (SYSCALL_ENTERS_KERNEL): the caller judges it.
        expect: |_| Expectations {
            result: None,
            ..expectations(0)
        },
    }
    .image(flavour, Params { n: 1, ..params })
}

fn probe(a: &mut CodeAssembler, ops: &dyn GuestOps, _: &Params) -> AsmResult {
    use probe_bits::*;
    let entry = a.create_label();
    kernel(
        a,
        ops,
        move |a, k| {
            let mut remap = a.create_label();
            a.mov(qword_ptr(k.var.heap_limit), 1)?;
            k.create_process(a, 0, entry, 2)?;
            k.create_process(a, 1, entry, 2)?;
            // Process B is told who it is in RDI.
            k.proc_addr(a, rax, 1)?;
            a.mov(qword_ptr(rax + super::saved_slot(rdi)), 1)?;
            k.switch_to(a, 0)?;
            k.run_user(a)?;
            a.cmp(eax, sys::REMAP)?;
            a.je(remap)?;
            expect_sys(k, a, sys::EXIT)?;
            // Came straight to its exit: report what it found.
            k.user_reg(a, 0, rbx, rbx)?;
            k.exit(a, exit::OK)?;
            // REMAP: the first data page now maps the second data frame.
            a.set_label(&mut remap)?;
            k.data_frame(a, 0, true, r10)?;
            a.or(
                r10,
                (contract::x86::pte::P | contract::x86::pte::RW | contract::x86::pte::US) as i32,
            )?;
            a.mov(r9, map::USER_DATA)?;
            k.map(a, 0)?;
            k.k.pte_flush(a)?;
            a.mov(rsi, map::USER_DATA)?;
            k.k.invlpg(a)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::YIELD)?;
            // To B, which reports back with a yield.
            k.switch_to(a, 1)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::YIELD)?;
            k.user_reg(a, 1, rax, rbx)?;
            a.mov(qword_ptr(k.var.result), rax)?;
            k.switch_to(a, 0)?;
            // A learns what B read in its RAX.
            a.mov(rax, qword_ptr(k.var.result))?;
            k.set_user_rax(a, 0, rax)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::EXIT)?;
            k.check_var(a, k.var.faults, 1, exit::FAULT_COUNT)?;
            k.user_reg(a, 0, rbx, rbx)?;
            a.mov(rax, qword_ptr(k.var.syscall_ok))?;
            a.shl(rax, 5)?;
            a.or(rbx, rax)?;
            k.exit(a, exit::OK)
        },
        move |a, _| {
            let mut b = a.create_label();
            a.set_label(&mut { entry })?;
            a.test(edi, edi)?;
            a.jnz(b)?;
            a.xor(ebx, ebx)?;
            // SYSCALL/SYSRETQ: RAX = 1, CF kept.
            a.xor(eax, eax)?;
            a.mov(r11, map::USER_VDSO)?;
            a.stc()?;
            a.call(r11)?;
            let mut no_cf = a.create_label();
            a.jnc(no_cf)?;
            a.or(rbx, SYSRET_RFLAGS as i32)?;
            a.set_label(&mut no_cf)?;
            let mut not_one = a.create_label();
            a.cmp(rax, 1)?;
            a.jne(not_one)?;
            a.or(rbx, SYSCALL_RETURNS as i32)?;
            a.set_label(&mut not_one)?;
            // Demand-zero: a read in the middle of the first heap page.
            let mut not_zero = a.create_label();
            a.mov(rsi, map::USER_HEAP + 0x123)?;
            a.mov(rax, qword_ptr(rsi))?;
            a.test(rax, rax)?;
            a.jnz(not_zero)?;
            a.mov(qword_ptr(rsi), 7)?;
            a.cmp(qword_ptr(rsi), 7)?;
            a.jne(not_zero)?;
            a.or(rbx, DEMAND_ZERO as i32)?;
            a.set_label(&mut not_zero)?;
            // invlpg: mark both data pages, read the first (now in the TLB), remap, read.
            a.mov(rsi, map::USER_DATA)?;
            a.mov(qword_ptr(rsi), 0x11)?;
            a.mov(qword_ptr(rsi + 0x1000), 0x22)?;
            a.mov(rax, qword_ptr(rsi))?;
            syscall(a, sys::REMAP)?;
            let mut stale = a.create_label();
            a.mov(rsi, map::USER_DATA)?;
            a.cmp(qword_ptr(rsi), 0x22)?;
            a.jne(stale)?;
            a.or(rbx, INVLPG as i32)?;
            a.set_label(&mut stale)?;
            // mov cr3: B reads the same address (its own frame: 0), then A again (0x22).
            syscall(a, sys::YIELD)?;
            let mut wrong = a.create_label();
            a.test(rax, rax)?; // what B read
            a.jnz(wrong)?;
            a.mov(rsi, map::USER_DATA)?;
            a.cmp(qword_ptr(rsi), 0x22)?;
            a.jne(wrong)?;
            a.or(rbx, CR3_SWITCH as i32)?;
            a.set_label(&mut wrong)?;
            syscall(a, sys::EXIT)?;
            // B: reads its first data page and reports it in RBX.
            a.set_label(&mut b)?;
            a.mov(rsi, map::USER_DATA)?;
            a.mov(rbx, qword_ptr(rsi))?;
            a.mov(qword_ptr(rsi), 0x33)?;
            syscall(a, sys::YIELD)
        },
    )
}

// ---------------------------------------------------------------- attacks

/// What a hostile user process of the kernel tries (each must end with the process
/// killed: exit code [`exit::KILLED`] | the page-fault error code, RBX the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Reads the kernel's image through the kernel half (RAM at its guest-physical
    /// address, supervisor-only).
    ReadKernel,
    /// Writes the kernel's image.
    WriteKernel,
    /// Writes its own code page (mapped read-only).
    WriteOwnCode,
    /// Reads the monitor's page tables (the monitor's region, supervisor-only).
    ReadMonitor,
    /// Reads, at the address where the other process keeps a page, what its own address
    /// space has there (nothing: the page is the other process's alone).
    ReadOtherProcess,
}

impl Attack {
    /// Every attack.
    pub const ALL: [Attack; 5] = [
        Attack::ReadKernel,
        Attack::WriteKernel,
        Attack::WriteOwnCode,
        Attack::ReadMonitor,
        Attack::ReadOtherProcess,
    ];

    /// The address the attack touches.
    pub fn address(self) -> u64 {
        match self {
            Attack::ReadKernel | Attack::WriteKernel => contract::abi::layout::DEFAULT_LOAD,
            Attack::WriteOwnCode => map::USER_CODE,
            Attack::ReadMonitor => contract::abi::layout::PML4,
            Attack::ReadOtherProcess => map::USER_HEAP,
        }
    }

    /// The page-fault error code the attack must end with: present (bit 0) unless the
    /// page is not mapped at all, write (bit 1), user (bit 2).
    pub fn error_code(self) -> u32 {
        match self {
            Attack::ReadKernel | Attack::ReadMonitor => 0b101,
            Attack::WriteKernel | Attack::WriteOwnCode => 0b111,
            Attack::ReadOtherProcess => 0b100,
        }
    }

    fn writes(self) -> bool {
        self.error_code() & 2 != 0
    }
}

/// How a workload is assembled.
type BuildFn = fn(&mut CodeAssembler, &dyn GuestOps, &Params) -> AsmResult;

/// A kernel whose user process makes `attack`: process B first maps a heap page and
/// stores a secret in it; then process A makes the access. The run must end with A
/// killed ([`exit::KILLED`] | [`Attack::error_code`], RBX = [`Attack::address`]).
pub fn attack_image(attack: Attack) -> Result<GuestImage, crate::Error> {
    attack_image_in(attack, Flavour::Native)
}

/// [`attack_image`] in `flavour` (the paravirtual kernel runs its processes on user roots
/// that map the kernel half unreachable).
pub fn attack_image_in(attack: Attack, flavour: Flavour) -> Result<GuestImage, crate::Error> {
    let (name, build): (&'static str, BuildFn) = match attack {
        Attack::ReadKernel => ("attack-read-kernel", |a, o, _| {
            attack_guest(a, o, Attack::ReadKernel)
        }),
        Attack::WriteKernel => ("attack-write-kernel", |a, o, _| {
            attack_guest(a, o, Attack::WriteKernel)
        }),
        Attack::WriteOwnCode => ("attack-write-own-code", |a, o, _| {
            attack_guest(a, o, Attack::WriteOwnCode)
        }),
        Attack::ReadMonitor => ("attack-read-monitor", |a, o, _| {
            attack_guest(a, o, Attack::ReadMonitor)
        }),
        Attack::ReadOtherProcess => ("attack-read-other-process", |a, o, _| {
            attack_guest(a, o, Attack::ReadOtherProcess)
        }),
    };
    one_shot_image(
        name,
        "a user process of the guest kernel attacks memory it must not reach",
        build,
        flavour,
    )
}

/// The image of a one-shot guest that no oracle judges (N = 1, no expected result or exit
/// code): the tests read its outcome.
fn one_shot_image(
    name: &'static str,
    summary: &'static str,
    build: BuildFn,
    flavour: Flavour,
) -> Result<GuestImage, crate::Error> {
    crate::Workload {
        name,
        summary,
        default_n: 1,
        max_n: 1,
        batched: false,
        build,
        expect: |_| Expectations {
            result: None,
            exit_code: None,
            ..expectations(0)
        },
    }
    .image(
        flavour,
        Params {
            n: 1,
            ..Params::default()
        },
    )
}

/// A mapping a hostile guest kernel asks for, which the hypervisor must refuse (a native
/// kernel owns its MMU: only the paravirtual flavour is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostileMapping {
    /// The process's own root, writable, at a user page: the kernel could then rewrite
    /// its tables behind the hypervisor's back.
    WritableRoot,
    /// The monitor's region (its top-level table).
    Monitor,
    /// A frame far beyond guest RAM.
    BeyondRam,
}

impl HostileMapping {
    /// Every one.
    pub const ALL: [HostileMapping; 3] = [
        HostileMapping::WritableRoot,
        HostileMapping::Monitor,
        HostileMapping::BeyondRam,
    ];

    /// The name of the refusal it must meet (`direct_paging:refused:<name>`).
    pub fn refusal(self) -> &'static str {
        match self {
            HostileMapping::WritableRoot => "writable_page_table",
            HostileMapping::Monitor => "monitor_region",
            HostileMapping::BeyondRam => "beyond_ram",
        }
    }
}

/// A kernel that maps, at its process's first heap page, what `what` names, then runs the
/// process, which reads that page. Refused, the page stays unmapped: the process is
/// killed by a not-present fault there ([`exit::KILLED`] | 0b100, RBX =
/// [`map::USER_HEAP`]).
pub fn hostile_mapping_image(
    what: HostileMapping,
    flavour: Flavour,
) -> Result<GuestImage, crate::Error> {
    let (name, build): (&'static str, BuildFn) = match what {
        HostileMapping::WritableRoot => ("hostile-map-writable-root", |a, o, _| {
            hostile_mapping(a, o, HostileMapping::WritableRoot)
        }),
        HostileMapping::Monitor => ("hostile-map-monitor", |a, o, _| {
            hostile_mapping(a, o, HostileMapping::Monitor)
        }),
        HostileMapping::BeyondRam => ("hostile-map-beyond-ram", |a, o, _| {
            hostile_mapping(a, o, HostileMapping::BeyondRam)
        }),
    };
    one_shot_image(
        name,
        "a guest kernel maps what its hypervisor must refuse",
        build,
        flavour,
    )
}

/// A paravirtual kernel whose user process makes a hypercall itself (`exit(0)`), then
/// exits through its kernel with the hypercall's result in RBX: the hypervisor refuses
/// hypercalls from user mode, so the result is `EPERM` and the run goes on.
pub fn user_hypercall_image() -> Result<GuestImage, crate::Error> {
    crate::Workload {
        name: "user-hypercall",
        summary: "a user process of the paravirtual kernel calls the hypervisor",
        default_n: 1,
        max_n: 1,
        batched: false,
        build: |a, ops, _| {
            let entry = a.create_label();
            kernel(
                a,
                ops,
                move |a, k| {
                    k.create_process(a, 0, entry, 1)?;
                    k.switch_to(a, 0)?;
                    k.run_user(a)?;
                    expect_sys(k, a, sys::EXIT)?;
                    k.user_reg(a, 0, rbx, rbx)?;
                    k.exit(a, exit::OK)
                },
                move |a, _| {
                    use contract::abi::hypercall::{Hypercall, PORT};
                    a.set_label(&mut { entry })?;
                    a.xor(edi, edi)?;
                    a.mov(eax, Hypercall::Exit.number() as u32)?;
                    a.out(u32::from(PORT), eax)?;
                    a.mov(rbx, rax)?;
                    syscall(a, sys::EXIT)
                },
            )
        },
        expect: |_| Expectations {
            result: None,
            exit_code: None,
            ..expectations(0)
        },
    }
    .image(
        Flavour::Paravirt,
        Params {
            n: 1,
            ..Params::default()
        },
    )
}

fn hostile_mapping(a: &mut CodeAssembler, ops: &dyn GuestOps, what: HostileMapping) -> AsmResult {
    use contract::x86::pte;
    let entry = a.create_label();
    kernel(
        a,
        ops,
        move |a, k| {
            k.create_process(a, 0, entry, 1)?;
            match what {
                HostileMapping::WritableRoot => {
                    k.root(a, 0, r10)?;
                    a.or(r10, (pte::P | pte::RW | pte::US) as i32)?;
                }
                HostileMapping::Monitor => {
                    a.mov(r10, contract::abi::layout::PML4 | pte::P | pte::US)?;
                }
                HostileMapping::BeyondRam => {
                    a.mov(r10, (1u64 << 40) | pte::P | pte::US)?;
                }
            }
            a.mov(r9, map::USER_HEAP)?;
            k.map(a, 0)?;
            k.switch_to(a, 0)?;
            k.run_user(a)?;
            // The process must not come back: its read faults.
            a.mov(rbx, rax)?;
            k.exit(a, exit::BAD_SYSCALL)
        },
        move |a, _| {
            a.set_label(&mut { entry })?;
            a.mov(rsi, map::USER_HEAP)?;
            a.mov(rbx, qword_ptr(rsi))?;
            syscall(a, sys::EXIT)
        },
    )
}

fn attack_guest(a: &mut CodeAssembler, ops: &dyn GuestOps, attack: Attack) -> AsmResult {
    let (entry_a, entry_b) = (a.create_label(), a.create_label());
    kernel(
        a,
        ops,
        move |a, k| {
            k.create_process(a, 0, entry_a, 1)?;
            k.create_process(a, 1, entry_b, 1)?;
            // B's secret page.
            a.mov(r9, map::USER_HEAP)?;
            k.map_heap_page(a, 1)?;
            a.mov(qword_ptr(rax), 0x5EC2E7)?;
            k.switch_to(a, 1)?;
            k.run_user(a)?;
            expect_sys(k, a, sys::YIELD)?;
            k.switch_to(a, 0)?;
            k.run_user(a)?;
            // A must not come back: it is killed by its fault.
            a.mov(rbx, rax)?;
            k.exit(a, exit::BAD_SYSCALL)
        },
        move |a, _| {
            a.set_label(&mut { entry_b })?;
            a.mov(rsi, map::USER_HEAP)?;
            a.mov(rbx, qword_ptr(rsi))?;
            syscall(a, sys::YIELD)?;
            a.ud2()?;
            a.set_label(&mut { entry_a })?;
            a.mov(rsi, attack.address())?;
            if attack.writes() {
                a.mov(qword_ptr(rsi), 0x41)?;
            } else {
                a.mov(rbx, qword_ptr(rsi))?;
            }
            syscall(a, sys::EXIT)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ptemod's reads, page by page: the window maps frame A; iteration i flips page
    /// i mod B to the other frame and reads it.
    fn reads(n: u64, b: u64) -> u64 {
        let mut frames = vec![PTEMOD_VALUES.0; b as usize];
        let mut sum = 0;
        for i in 0..n {
            let page = (i % b) as usize;
            frames[page] ^= PTEMOD_VALUES.0 ^ PTEMOD_VALUES.1;
            sum += frames[page];
        }
        sum
    }

    #[test]
    fn ptemod_sum_is_the_sum_of_the_reads() {
        for b in 1..=9 {
            for n in 0..=60 {
                assert_eq!(ptemod_sum(n, b), reads(n, b), "n={n} b={b}");
            }
        }
        assert_eq!(ptemod_sum(1000, 512), reads(1000, 512));
        // B = 1: B, A, B, A, …
        assert_eq!(ptemod_sum(5, 1), 3 * 0xB + 2 * 0xA);
    }
}
