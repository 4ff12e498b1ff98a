//! Batched MMU updates, multicalls and a new page-table base on real KVM: the guest
//! remaps eight scratch pages with one `mmu_update`, remaps them again with a
//! `multicall` of two more, reads through every mapping, and switches CR3 to its own
//! copy of the root and back.

mod common;

use contract::abi::hypercall::{errno, mmu, multicall, Hypercall, PORT};
use contract::abi::layout;
use contract::{Ending, Flavour, GuestImage, Outcome, RunOptions};
use iced_x86::code_asm::*;
use paravirt::Paravirt;

const LOAD: u64 = layout::DEFAULT_LOAD;
const SLOTS: u64 = 8;
const FRAMES: u64 = 0x30_0000;
const REQS: u64 = 0x20_0000;
const CALLS: u64 = 0x20_1000;
const ROOT: u64 = 0x1F_0000;
const MSG: u64 = 0x20_2000;

fn call(a: &mut CodeAssembler, h: Hypercall, args: [u64; 3]) -> Result<(), IcedError> {
    a.mov(rdi, args[0])?;
    a.mov(rsi, args[1])?;
    a.mov(rdx, args[2])?;
    a.mov(eax, h.number() as u32)?;
    a.out(u32::from(PORT), eax)
}

/// Stores a u64 at an absolute address (clobbers RCX, RDX).
fn store(a: &mut CodeAssembler, at: u64, v: u64) -> Result<(), IcedError> {
    a.mov(rcx, at)?;
    a.mov(rdx, v)?;
    a.mov(qword_ptr(rcx), rdx)
}

/// Counts in R15 when RAX equals `want`.
fn check(a: &mut CodeAssembler, want: i64) -> Result<(), IcedError> {
    let mut skip = a.create_label();
    a.mov(rcx, want)?;
    a.cmp(rax, rcx)?;
    a.jne(skip)?;
    a.inc(r15)?;
    a.set_label(&mut skip)?;
    a.nop()
}

/// Σ (k + 1) · [SCRATCH_VA + k · 4096] into `dst`.
fn weighted_sum(a: &mut CodeAssembler, dst: AsmRegister64) -> Result<(), IcedError> {
    a.xor(dst, dst)?;
    for k in 0..SLOTS {
        a.mov(rcx, layout::SCRATCH_VA + k * 0x1000)?;
        a.mov(rax, qword_ptr(rcx))?;
        a.imul_3(rax, rax, (k + 1) as i32)?;
        a.add(dst, rax)?;
    }
    Ok(())
}

fn value(frame: u64) -> u64 {
    100 + frame
}

fn guest() -> GuestImage {
    let mut a = CodeAssembler::new(64).unwrap();
    let a = &mut a;
    (|| -> Result<(), IcedError> {
        a.xor(r15d, r15d)?;
        for f in 0..SLOTS {
            store(a, FRAMES + f * 0x1000, value(f))?;
        }
        // One mmu_update of 8 requests: slot k -> frame k.
        for k in 0..SLOTS {
            store(a, REQS + k * 16, layout::SCRATCH_PT + k * 8)?;
            store(a, REQS + k * 16 + 8, (FRAMES + k * 0x1000) | 7)?;
        }
        call(a, Hypercall::MmuUpdate, [REQS, SLOTS, mmu::FLUSH_TLB])?;
        check(a, SLOTS as i64)?;
        weighted_sum(a, r12)?;
        // A multicall: two mmu_updates of 4 (slot k -> frame 7 - k) and a console write.
        for k in 0..SLOTS {
            store(a, REQS + 0x200 + k * 16, layout::SCRATCH_PT + k * 8)?;
            store(
                a,
                REQS + 0x200 + k * 16 + 8,
                (FRAMES + (SLOTS - 1 - k) * 0x1000) | 7,
            )?;
        }
        store(a, MSG, u64::from_le_bytes(*b"remapped"))?;
        let entries = [
            [Hypercall::MmuUpdate.number(), REQS + 0x200, 4, 0],
            [
                Hypercall::MmuUpdate.number(),
                REQS + 0x240,
                4,
                mmu::FLUSH_TLB,
            ],
            [Hypercall::ConsoleWrite.number(), MSG, 8, 0],
        ];
        for (i, e) in entries.iter().enumerate() {
            for (j, w) in e.iter().enumerate() {
                store(
                    a,
                    CALLS + i as u64 * multicall::ENTRY_SIZE + j as u64 * 8,
                    *w,
                )?;
            }
        }
        call(a, Hypercall::Multicall, [CALLS, 3, 0])?;
        check(a, 0)?;
        weighted_sum(a, r13)?;
        // A root that maps more than the VMM's own is refused…
        store(a, ROOT, layout::PDPT | 7)?;
        store(a, ROOT + 8, FRAMES | 7)?;
        call(a, Hypercall::NewBaseptr, [ROOT, 0, 0])?;
        check(a, errno::EPERM)?;
        // …a copy of it is accepted and pinned (the VMM will not write it for the guest).
        store(a, ROOT + 8, 0)?;
        call(a, Hypercall::NewBaseptr, [ROOT, 0, 0])?;
        check(a, 0)?;
        call(a, Hypercall::Cpuid, [0, 0, ROOT])?;
        check(a, errno::EFAULT)?;
        weighted_sum(a, r14)?; // still the same mappings under the new root
        let mut differs = a.create_label();
        a.cmp(r14, r13)?;
        a.jne(differs)?;
        a.inc(r15)?;
        a.set_label(&mut differs)?;
        call(a, Hypercall::NewBaseptr, [layout::PML4, 0, 0])?;
        check(a, 0)?;
        // RBX = S1 · 10⁶ + S2 · 10³ + checks passed.
        a.mov(rbx, r15)?;
        a.imul_3(r13, r13, 1000)?;
        a.add(rbx, r13)?;
        a.imul_3(r12, r12, 1_000_000)?;
        a.add(rbx, r12)?;
        a.xor(edi, edi)?;
        a.mov(eax, Hypercall::Exit.number() as u32)?;
        a.out(u32::from(PORT), eax)
    })()
    .unwrap();
    let bytes = a.assemble(LOAD).unwrap();
    let mut img = GuestImage::flat("mmu", bytes, LOAD, LOAD);
    img.flavour = Flavour::Paravirt;
    img
}

#[test]
fn batched_mmu_updates_multicall_and_new_baseptr() {
    if !common::kvm_or_skip("batched_mmu_updates_multicall_and_new_baseptr") {
        return;
    }
    let r = common::run(&Paravirt, &guest(), &RunOptions::default());
    let s1: u64 = (0..SLOTS).map(|k| (k + 1) * value(k)).sum();
    let s2: u64 = (0..SLOTS).map(|k| (k + 1) * value(SLOTS - 1 - k)).sum();
    let checks = 7;
    let Outcome::Completed {
        exit_code: 0,
        result,
        ending: Ending::ExitPort,
    } = r.outcome
    else {
        panic!("{:?} {:?}", r.outcome, r.hypercalls);
    };
    assert_eq!(
        result,
        s1 * 1_000_000 + s2 * 1000 + checks,
        "{:?}",
        r.hypercalls
    );
    assert_eq!(r.console, "remapped");
    assert_eq!(r.hypercalls["mmu_update"], 1);
    assert_eq!(r.hypercalls["multicall"], 1);
    assert_eq!(r.hypercalls["multicall:mmu_update"], 2);
    assert_eq!(r.hypercalls["multicall:console_write"], 1);
    assert_eq!(r.hypercalls["new_baseptr"], 2);
    assert_eq!(r.hypercalls["rejected:new_baseptr"], 1);
    assert_eq!(r.hypercalls["rejected:cpuid"], 1);
}
