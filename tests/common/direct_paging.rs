//! Builders of small paravirtual guests that run on page tables of their own: the frames
//! they use, the hypercall sequence, and the checks that count in RBX
//! (`docs/hypercall-abi.md`, "Direct paging").

use contract::abi::hypercall::{mmuext, Hypercall, PORT};
use contract::{Flavour, GuestImage, Outcome, RunOptions, RunRecord};
use iced_x86::code_asm::*;
use paravirt::Paravirt;

/// The guest's four tables, in its first 2 MiB.
pub const L4: u64 = 0x18_0000;
pub const L3: u64 = 0x18_1000;
pub const L2: u64 = 0x18_2000;
pub const L1: u64 = 0x18_3000;
/// Data frames the tables map.
pub const DATA: u64 = 0x30_0000;
/// Where the guest writes its `mmu_update` requests.
pub const REQS: u64 = 0x20_0000;
/// The user half's first page (PML4 entry 1).
pub const USER: u64 = 0x80_0000_0000;
/// Present, writable, user.
pub const PWU: u64 = 0b111;
/// Present, user (read-only).
pub const PU: u64 = 0b101;

/// A paravirtual image of `body` at the default load address.
pub fn image(
    name: &str,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> GuestImage {
    let mut img = super::assemble(name, body);
    img.flavour = Flavour::Paravirt;
    img
}

/// Hypercall `h` with three arguments; the result in RAX.
pub fn hypercall(a: &mut CodeAssembler, h: Hypercall, args: [u64; 3]) -> Result<(), IcedError> {
    a.mov(rdi, args[0])?;
    a.mov(rsi, args[1])?;
    a.mov(rdx, args[2])?;
    a.mov(rax, h.number())?;
    a.out(u32::from(PORT), eax)
}

/// A hypercall whose result must be `want`: RBX counts the ones that are.
pub fn expect(
    a: &mut CodeAssembler,
    h: Hypercall,
    args: [u64; 3],
    want: i64,
) -> Result<(), IcedError> {
    let mut skip = a.create_label();
    hypercall(a, h, args)?;
    a.mov(rcx, want)?;
    a.cmp(rax, rcx)?;
    a.jne(skip)?;
    a.inc(rbx)?;
    a.set_label(&mut skip)?;
    a.nop()
}

/// Stores `value` at `addr`.
pub fn store(a: &mut CodeAssembler, addr: u64, value: u64) -> Result<(), IcedError> {
    a.mov(rax, addr)?;
    a.mov(rcx, value)?;
    a.mov(qword_ptr(rax), rcx)
}

/// Pins the table at `frame` as level `level`; the result must be `want`.
pub fn pin(a: &mut CodeAssembler, frame: u64, level: u64, want: i64) -> Result<(), IcedError> {
    expect(a, Hypercall::MmuextOp, [mmuext::PIN, frame, level], want)
}

/// Ends the guest through the exit hypercall.
pub fn exit(a: &mut CodeAssembler) -> Result<(), IcedError> {
    hypercall(a, Hypercall::Exit, [0, 0, 0])?;
    a.hlt()
}

/// Runs `img` in paravirt with the default options.
pub fn run(img: &GuestImage) -> RunRecord {
    super::run(&Paravirt, img, &RunOptions::default())
}

/// The outcome of a guest that ended through the exit port with `result`.
pub fn completed(result: u64) -> Outcome {
    Outcome::Completed {
        exit_code: 0,
        result,
        ending: contract::Ending::ExitPort,
    }
}
