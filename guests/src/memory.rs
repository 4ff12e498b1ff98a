//! Workloads about guest memory: the balloon driver of the flat guest, written against
//! the balloon device ([`contract::overcommit`]), with exact results.

use contract::abi::{boot_info, PAGE_SIZE};
use contract::overcommit::port;
use iced_x86::code_asm::*;

use crate::asm::{self, counted_loop};
use crate::ops::{AsmResult, GuestOps};
use crate::workloads::Params;

/// First page of the region the memory workloads write (4 MiB: above the image and its
/// stack).
pub const REGION_BASE: u64 = 4 << 20;
/// Pages in that region with the default 16 MiB of RAM.
pub const REGION_PAGES: u64 = ((16 << 20) - REGION_BASE) / PAGE_SIZE;
/// The value the first qword of page `i` of the region holds: `PATTERN ^ i`.
pub const PATTERN: u64 = 0x5A17_C0DE_0000_0000;

/// Sets RDI to the address of page R12 of the region.
fn page_of_r12(a: &mut CodeAssembler) -> AsmResult {
    a.mov(rdi, r12)?;
    a.shl(rdi, 12)?;
    a.mov(rax, REGION_BASE)?;
    a.add(rdi, rax)
}

/// Sets RAX to the pattern of page R12.
fn pattern_of_r12(a: &mut CodeAssembler) -> AsmResult {
    a.mov(rax, PATTERN)?;
    a.xor(rax, r12)
}

/// Spins until `delay_us` microseconds of TSC have passed (by the TSC frequency in the
/// boot-info page; none if it is 0). No exit: the guest simply stays alive.
fn hold(a: &mut CodeAssembler, delay_us: u32) -> AsmResult {
    if delay_us == 0 {
        return Ok(());
    }
    let mut again = a.create_label();
    a.mov(rax, qword_ptr(r15 + boot_info::TSC_KHZ as i32))?;
    a.mov(rcx, u64::from(delay_us))?;
    a.imul_2(rax, rcx)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 1000)?;
    a.div(rcx)?;
    a.mov(r11, rax)?; // cycles to wait
    a.lfence()?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.mov(r10, rax)?; // start
    a.set_label(&mut again)?;
    a.pause()?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.sub(rax, r10)?;
    a.cmp(rax, r11)?;
    a.jb(again)
}

/// `balloon`: write the pattern into the first qword of N pages of the region, hold for
/// `delay_us`, inflate the balloon by the last B of them (one `out` per page), deflate
/// them, then check all N pages: the B given back read zero (their contents went back
/// to the host), the others still hold their pattern. The result is the number of pages
/// that matched: N.
pub(crate) fn balloon(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let b = p.b;
    // The balloon takes the last B pages written (the most recently touched, so still
    // resident under host swapping); with B > N, from the first.
    let first = p.n.saturating_sub(b);
    asm::prologue(a)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        page_of_r12(a)?;
        pattern_of_r12(a)?;
        a.mov(qword_ptr(rdi), rax)
    })?;
    hold(a, p.delay_us)?;
    for port in [port::INFLATE, port::DEFLATE] {
        counted_loop(a, b, |a| {
            a.mov(eax, (REGION_BASE / PAGE_SIZE + first) as u32)?;
            a.add(eax, r12d)?;
            a.out(u32::from(port), eax)
        })?;
    }
    counted_loop(a, p.n, |a| {
        let mut kept = a.create_label();
        let mut compare = a.create_label();
        page_of_r12(a)?;
        pattern_of_r12(a)?;
        a.mov(rcx, first)?;
        a.cmp(r12, rcx)?;
        a.jb(kept)?;
        a.mov(rcx, first + b)?;
        a.cmp(r12, rcx)?;
        a.jae(kept)?;
        a.xor(eax, eax)?; // given back: reads zero
        a.jmp(compare)?;
        a.set_label(&mut kept)?;
        a.nop()?;
        a.set_label(&mut compare)?;
        let mut differs = a.create_label();
        a.cmp(qword_ptr(rdi), rax)?;
        a.jne(differs)?;
        a.inc(rbx)?;
        a.set_label(&mut differs)?;
        a.nop()
    })?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)
}

pub(crate) fn balloon_expect(p: &Params) -> contract::Expectations {
    contract::Expectations {
        exit_code: Some(0),
        result: Some(p.n),
        console: Some(String::new()),
        oracles: Default::default(),
        divergences: Default::default(),
        variants: Vec::new(),
    }
}
