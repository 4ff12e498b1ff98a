//! The disk workloads: `blk-virtio` (a virtio-blk driver over one split virtqueue, queue
//! depth Q, one doorbell per batch) and `blk-emulated` (an unmodified ATA PIO driver:
//! every register access is an exit or a trap). Both write N requests of S bytes, read
//! them back, and check every byte; the host checks the image afterwards
//! ([`expected_image`]).
//!
//! What the guest writes is one pattern over the whole disk: every 8-byte word of sector
//! k holds the sector's tag `PATTERN_BASE + k·PATTERN_STEP` (mod 2⁶⁴), so a sector read
//! from the wrong place, or not read at all, cannot pass, and every byte is still checked.
//! The guest fills a sector with one `rep stosq` of its tag and checks it with
//! `repe scasq`: string instructions, which KVM's instruction emulator repeats without
//! re-entering the guest where the guest's kernel code is emulated one instruction at a
//! time, and which run natively everywhere else. A word-by-word loop there would cost
//! the run its time in emulated instructions rather than in I/O.
//!
//! blk-virtio learns how its requests complete from the boot-info page: with no
//! completion vector there it polls the used ring after each doorbell; with one (the
//! `kernel-notify` backend's irqfd, under hw-assisted) it installs a gate for
//! [`contract::abi::blk::COMPLETION_VECTOR`] in its own IDT, enables its local APIC in
//! x2APIC mode, and waits for each batch's interrupt in `hlt`, counting exactly one per
//! doorbell ([`IRQS_TAKEN`] against [`IRQS_AWAITED`]).
//!
//! Guest memory they use (in RAM, above the code at 1 MiB): the queue at
//! [`QUEUE_BASE`] (descriptor table, available ring, used ring, request headers, status
//! bytes, the interrupt counters) and the data buffers from [`DATA_BASE`]: Q write
//! buffers of S bytes, then Q read buffers.

use contract::abi::blk::{self, SECTOR_SIZE};
use iced_x86::code_asm::*;

use crate::asm;
use crate::ops::{AsmResult, GuestOps};
use crate::workloads::Params;

/// First 8-byte word of the disk's pattern.
pub const PATTERN_BASE: u64 = 0x0123_4567_89AB_CDEF;
/// Step between consecutive words of the pattern (odd: every word differs).
pub const PATTERN_STEP: u64 = 0x9E37_79B9_7F4A_7C15;
/// Queue size the virtio driver sets up.
pub const QUEUE_SIZE: u64 = 256;
/// Where the queue and the request headers live.
pub const QUEUE_BASE: u64 = 0x20_0000;
/// Descriptor table (256 × 16 bytes).
pub const DESC: u64 = QUEUE_BASE;
/// Available ring.
pub const AVAIL: u64 = QUEUE_BASE + 0x1000;
/// Used ring.
pub const USED: u64 = QUEUE_BASE + 0x2000;
/// Request headers (16 bytes per slot).
pub const HEADERS: u64 = QUEUE_BASE + 0x3000;
/// Status bytes (one per slot).
pub const STATUS: u64 = QUEUE_BASE + 0x3800;
/// Completion interrupts the driver's handler took (a u64 it counts up).
pub const IRQS_TAKEN: u64 = QUEUE_BASE + 0x3F00;
/// Completion interrupts the driver waited for: one per doorbell.
pub const IRQS_AWAITED: u64 = QUEUE_BASE + 0x3F08;
/// First data buffer.
pub const DATA_BASE: u64 = 0x30_0000;
/// Gates in the driver's own IDT when completion is an interrupt (up to its vector).
const IRQ_IDT_ENTRIES: u32 = blk::COMPLETION_VECTOR as u32 + 1;
/// x2APIC registers as MSRs, and the APIC base MSR's enable bits.
const MSR_APIC_BASE: u32 = 0x1B;
const APIC_BASE_EN_EXTD: u32 = 0xC00;
const MSR_X2APIC_EOI: u32 = 0x80B;
const MSR_X2APIC_SVR: u32 = 0x80F;
/// Spurious-interrupt vector register: APIC software-enabled, spurious vector 0xFF.
const SVR_ENABLED: u32 = 0x1FF;
/// Largest request (S).
pub const MAX_S: u64 = 64 << 10;
/// Largest queue depth (Q): three descriptors per request in a 256-entry table.
pub const MAX_Q: u64 = 64;
/// Most bytes of buffers a run may use (Q·S): the write and read buffers fit in the
/// default 16 MiB of guest RAM.
pub const MAX_BUFFERS: u64 = 4 << 20;
/// Exit code of a driver that found a device error or a byte that differs.
pub const EXIT_FAILED: u32 = 1;
/// Exit code of a virtio driver that found no virtio-blk device.
pub const EXIT_NO_DEVICE: u32 = 3;

/// Whether the workload named `name` needs a disk (of [`disk_bytes`]).
pub fn needs_disk(name: &str) -> bool {
    matches!(name, "blk-emulated" | "blk-virtio")
}

/// 8-byte words in a sector.
const SECTOR_WORDS: u64 = SECTOR_SIZE / 8;

/// The tag of sector `sector`: every 8-byte word of it holds this.
pub fn sector_tag(sector: u64) -> u64 {
    PATTERN_BASE.wrapping_add(sector.wrapping_mul(PATTERN_STEP))
}

/// The 8-byte word at word index `k` of the disk's pattern: its sector's tag.
pub fn pattern_word(k: u64) -> u64 {
    sector_tag(k / SECTOR_WORDS)
}

/// The bytes a run with `p` leaves on the disk: N·S bytes of the pattern from offset 0.
pub fn expected_image(p: &Params) -> Vec<u8> {
    (0..p.n * p.s / 8)
        .flat_map(|k| pattern_word(k).to_le_bytes())
        .collect()
}

/// The size of the disk a run with `p` needs: N·S bytes.
pub fn disk_bytes(p: &Params) -> u64 {
    p.n * p.s
}

/// Where the first byte that differs from the pattern is, in `image` (its first N·S
/// bytes); `None` if they all match.
pub fn first_difference(image: &[u8], p: &Params) -> Option<u64> {
    let want = disk_bytes(p);
    if (image.len() as u64) < want {
        return Some(image.len() as u64);
    }
    image[..want as usize]
        .chunks_exact(8)
        .enumerate()
        .find(|(k, c)| *c != pattern_word(*k as u64).to_le_bytes())
        .map(|(k, c)| {
            let w = pattern_word(k as u64).to_le_bytes();
            8 * k as u64 + c.iter().zip(w).position(|(a, b)| *a != b).unwrap_or(0) as u64
        })
}

/// Checks S and Q for the disk workloads.
pub fn check(p: &Params) -> Result<(), String> {
    if p.s == 0 || p.s % SECTOR_SIZE != 0 || p.s > MAX_S {
        return Err(format!(
            "s (request size) must be a multiple of {SECTOR_SIZE} bytes between {SECTOR_SIZE} and {MAX_S}, not {}",
            p.s
        ));
    }
    if p.q == 0 || p.q > MAX_Q {
        return Err(format!("q (queue depth) must be 1 to {MAX_Q}, not {}", p.q));
    }
    if p.q * p.s > MAX_BUFFERS {
        return Err(format!(
            "q × s = {} bytes of buffers is more than {MAX_BUFFERS}",
            p.q * p.s
        ));
    }
    Ok(())
}

/// Batches of one phase of blk-virtio: ⌈N/Q⌉, one doorbell each.
pub fn batches(p: &Params) -> u64 {
    p.n.div_ceil(p.q.max(1))
}

fn exit_with_failures(a: &mut CodeAssembler, ops: &dyn GuestOps) -> AsmResult {
    let mut ok = a.create_label();
    let mut park = a.create_label();
    a.xor(eax, eax)?;
    a.test(r13, r13)?;
    a.jz(ok)?;
    a.mov(eax, EXIT_FAILED)?;
    a.set_label(&mut ok)?;
    ops.exit(a)?;
    a.set_label(&mut park)?;
    a.hlt()?;
    a.jmp(park)
}

/// Compares S bytes at RDI with the pattern, one sector at a time from the tag in R10
/// (R12 = step to the next sector's tag): RBX counts the words that match, R13 those
/// that differ. A `repe scasq` per sector stops at a word that differs; the scan goes on
/// from the next word, so every word is counted. Clobbers RAX, RSI, RDI.
fn verify(a: &mut CodeAssembler, s: u64) -> AsmResult {
    let mut sector = a.create_label();
    let mut scan = a.create_label();
    let mut next = a.create_label();
    a.push(rcx)?;
    a.mov(esi, (s / SECTOR_SIZE) as u32)?;
    a.set_label(&mut sector)?;
    a.mov(rax, r10)?;
    a.mov(ecx, SECTOR_WORDS as u32)?;
    a.add(rbx, SECTOR_WORDS as i32)?;
    a.set_label(&mut scan)?;
    a.repe().scasq()?;
    // ZF set: the last word compared matched, so RCX is 0 and the sector is done.
    a.je(next)?;
    a.inc(r13)?;
    a.dec(rbx)?;
    a.test(rcx, rcx)?;
    a.jnz(scan)?;
    a.set_label(&mut next)?;
    a.add(r10, r12)?;
    a.dec(rsi)?;
    a.jnz(sector)?;
    a.pop(rcx)
}

/// Fills S bytes at RDI with the pattern, one `rep stosq` of its tag per sector from the
/// tag in R10 (R12 = step). Clobbers RAX, RSI, RDI.
fn fill(a: &mut CodeAssembler, s: u64) -> AsmResult {
    let mut sector = a.create_label();
    a.push(rcx)?;
    a.mov(esi, (s / SECTOR_SIZE) as u32)?;
    a.set_label(&mut sector)?;
    a.mov(rax, r10)?;
    a.mov(ecx, SECTOR_WORDS as u32)?;
    a.rep().stosq()?;
    a.add(r10, r12)?;
    a.dec(rsi)?;
    a.jnz(sector)?;
    a.pop(rcx)
}

// ---------------------------------------------------------------- blk-virtio

/// One phase of the virtio driver: N requests of type `kind`, Q at a time.
///
/// R8 = next request, R9 = available index, R10 = sector tag, R11 = batch size,
/// RCX = slot.
fn virtio_phase(a: &mut CodeAssembler, p: &Params, kind: u32) -> AsmResult {
    let (n, s, q) = (p.n, p.s, p.q);
    let write = kind == blk::T_OUT;
    let buffers = if write { DATA_BASE } else { DATA_BASE + q * s };
    let mut batch = a.create_label();
    let mut capped = a.create_label();
    let mut slot = a.create_label();
    let mut poll = a.create_label();
    let mut polled = a.create_label();
    let mut interrupt = a.create_label();
    let mut check = a.create_label();
    let mut status_ok = a.create_label();
    let mut done = a.create_label();
    a.xor(r8d, r8d)?;
    a.mov(r10, PATTERN_BASE)?;
    a.set_label(&mut batch)?;
    a.mov(rax, n)?;
    a.cmp(r8, rax)?;
    a.jae(done)?;
    a.mov(r11, rax)?;
    a.sub(r11, r8)?;
    a.cmp(r11, q as i32)?;
    a.jbe(capped)?;
    a.mov(r11, q)?;
    a.set_label(&mut capped)?;
    a.xor(ecx, ecx)?;

    a.set_label(&mut slot)?;
    // The header: type, reserved, sector = (R8 + slot)·S/512.
    a.mov(rdi, rcx)?;
    a.shl(rdi, 4)?;
    a.add(rdi, HEADERS as i32)?;
    a.mov(dword_ptr(rdi), kind)?;
    a.mov(dword_ptr(rdi + 4), 0)?;
    a.lea(rax, ptr(r8 + rcx))?;
    a.imul_3(rax, rax, (s / SECTOR_SIZE) as i32)?;
    a.mov(qword_ptr(rdi + 8), rax)?;
    // The status byte: not a status, so a device that never writes it is caught.
    a.mov(byte_ptr(rcx + STATUS as i32), 0xFF)?;
    // The data buffer of this slot in RDX; a write fills it first.
    a.imul_3(rdx, rcx, s as i32)?;
    a.add(rdx, buffers as i32)?;
    if write {
        a.mov(rdi, rdx)?;
        fill(a, s)?;
    }
    // Three descriptors from 3·slot: header → data → status.
    a.imul_3(rdi, rcx, 48)?;
    a.add(rdi, DESC as i32)?;
    a.mov(rax, rcx)?;
    a.shl(rax, 4)?;
    a.add(rax, HEADERS as i32)?;
    a.mov(qword_ptr(rdi), rax)?;
    a.mov(dword_ptr(rdi + 8), 16)?;
    a.mov(word_ptr(rdi + 12), 1)?; // NEXT
    a.lea(eax, ptr(rcx + rcx * 2 + 1))?;
    a.mov(word_ptr(rdi + 14), ax)?;
    a.mov(qword_ptr(rdi + 16), rdx)?;
    a.mov(dword_ptr(rdi + 24), s as u32)?;
    a.mov(word_ptr(rdi + 28), if write { 1 } else { 1 | 2 })?; // NEXT (| WRITE)
    a.lea(eax, ptr(rcx + rcx * 2 + 2))?;
    a.mov(word_ptr(rdi + 30), ax)?;
    a.lea(rax, ptr(rcx + STATUS as i32))?;
    a.mov(qword_ptr(rdi + 32), rax)?;
    a.mov(dword_ptr(rdi + 40), 1)?;
    a.mov(word_ptr(rdi + 44), 2)?; // WRITE
    a.mov(word_ptr(rdi + 46), 0)?;
    // Make the chain available: ring[avail % size] = 3·slot.
    a.mov(eax, r9d)?;
    a.and(eax, (QUEUE_SIZE - 1) as u32)?;
    a.lea(edx, ptr(rcx + rcx * 2))?;
    a.mov(word_ptr(rax * 2 + (AVAIL + 4) as i32), dx)?;
    a.inc(r9)?;
    a.inc(rcx)?;
    a.cmp(rcx, r11)?;
    a.jb(slot)?;

    // Publish the batch and ring the doorbell once.
    a.mov(word_ptr((AVAIL + 2) as i32), r9w)?;
    a.mov(rsi, blk::VIRTIO_BASE)?;
    a.mov(qword_ptr(rsi + blk::QUEUE_NOTIFY as i32), 0)?;
    // Completion: an interrupt, where the boot-info page names its vector...
    a.cmp(
        qword_ptr(r15 + contract::abi::boot_info::BLK_COMPLETION_VECTOR as i32),
        0,
    )?;
    a.jne(interrupt)?;
    // ...or the used ring's index reaching ours (at once with the inline backend).
    a.set_label(&mut poll)?;
    a.movzx(eax, word_ptr((USED + 2) as i32))?;
    a.cmp(ax, r9w)?;
    a.je(polled)?;
    a.pause()?;
    a.jmp(poll)?;
    a.set_label(&mut interrupt)?;
    wait_for_interrupt(a, polled)?;
    a.set_label(&mut polled)?;

    // Every status must be OK; a read's data must be the pattern.
    a.xor(ecx, ecx)?;
    a.set_label(&mut check)?;
    a.cmp(byte_ptr(rcx + STATUS as i32), blk::S_OK as u32)?;
    a.je(status_ok)?;
    a.inc(r13)?;
    a.set_label(&mut status_ok)?;
    if !write {
        a.imul_3(rdi, rcx, s as i32)?;
        a.add(rdi, buffers as i32)?;
        verify(a, s)?;
    }
    a.inc(rcx)?;
    a.cmp(rcx, r11)?;
    a.jb(check)?;
    a.add(r8, r11)?;
    a.jmp(batch)?;
    a.set_label(&mut done)
}

/// Waits for this batch's completion interrupt: `sti; hlt` until the handler has counted
/// one more interrupt than before the doorbell, with interrupts off whenever the count is
/// read (so an interrupt between the check and the `hlt` still wakes it: `sti` holds
/// interrupts off for one more instruction). Exactly one interrupt per batch, and the used
/// ring complete when it arrives, or R13 counts a failure; then on to `polled`. Clobbers
/// RAX.
fn wait_for_interrupt(a: &mut CodeAssembler, polled: CodeLabel) -> AsmResult {
    let mut wait = a.create_label();
    let mut woken = a.create_label();
    let mut one = a.create_label();
    a.inc(qword_ptr(IRQS_AWAITED as i32))?;
    a.mov(rax, qword_ptr(IRQS_AWAITED as i32))?;
    a.set_label(&mut wait)?;
    a.cli()?;
    a.cmp(qword_ptr(IRQS_TAKEN as i32), rax)?;
    a.jae(woken)?;
    a.sti()?;
    a.hlt()?;
    a.jmp(wait)?;
    a.set_label(&mut woken)?;
    a.cmp(qword_ptr(IRQS_TAKEN as i32), rax)?;
    a.je(one)?;
    a.inc(r13)?;
    a.set_label(&mut one)?;
    a.movzx(eax, word_ptr((USED + 2) as i32))?;
    a.cmp(ax, r9w)?;
    a.je(polled)?;
    a.inc(r13)
}

/// Takes the completion interrupt: its IDT gate, the local APIC in x2APIC mode and
/// software-enabled, the counters zeroed. Clobbers RAX, RCX, RDX.
fn enable_interrupt(
    a: &mut CodeAssembler,
    ops: &dyn GuestOps,
    idt: CodeLabel,
    handler: CodeLabel,
) -> AsmResult {
    a.mov(qword_ptr(IRQS_TAKEN as i32), 0)?;
    a.mov(qword_ptr(IRQS_AWAITED as i32), 0)?;
    asm::set_gate(a, idt, blk::COMPLETION_VECTOR, handler)?;
    asm::load_idt_for(a, ops, idt, IRQ_IDT_ENTRIES)?;
    a.mov(ecx, MSR_APIC_BASE)?;
    a.rdmsr()?;
    a.or(eax, APIC_BASE_EN_EXTD)?;
    a.wrmsr()?;
    a.mov(ecx, MSR_X2APIC_SVR)?;
    a.mov(eax, SVR_ENABLED)?;
    a.xor(edx, edx)?;
    a.wrmsr()
}

/// The completion interrupt's handler: counts it and signals end of interrupt.
fn interrupt_handler(a: &mut CodeAssembler, ops: &dyn GuestOps) -> AsmResult {
    a.push(rax)?;
    a.push(rcx)?;
    a.push(rdx)?;
    a.inc(qword_ptr(IRQS_TAKEN as i32))?;
    a.mov(ecx, MSR_X2APIC_EOI)?;
    a.xor(eax, eax)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    a.pop(rdx)?;
    a.pop(rcx)?;
    a.pop(rax)?;
    ops.iret(a)
}

pub(crate) fn virtio(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let mut found = a.create_label();
    let mut idt = a.create_label();
    let mut handler = a.create_label();
    let mut irq_setup = a.create_label();
    let mut ready = a.create_label();
    let mut all_awaited = a.create_label();
    asm::prologue(a)?;
    a.xor(r13d, r13d)?;
    a.mov(r12, PATTERN_STEP)?;
    a.xor(r9d, r9d)?;
    // Find the device: one MMIO read.
    a.mov(rsi, blk::VIRTIO_BASE)?;
    a.mov(rax, qword_ptr(rsi + blk::MAGIC as i32))?;
    a.mov(rdx, blk::VIRTIO_MAGIC)?;
    a.cmp(rax, rdx)?;
    a.je(found)?;
    a.mov(eax, EXIT_NO_DEVICE)?;
    ops.exit(a)?;
    a.set_label(&mut found)?;
    // Set the queue up: five MMIO writes.
    a.mov(qword_ptr(rsi + blk::QUEUE_SIZE as i32), QUEUE_SIZE as i32)?;
    a.mov(qword_ptr(rsi + blk::QUEUE_DESC as i32), DESC as i32)?;
    a.mov(qword_ptr(rsi + blk::QUEUE_AVAIL as i32), AVAIL as i32)?;
    a.mov(qword_ptr(rsi + blk::QUEUE_USED as i32), USED as i32)?;
    a.mov(qword_ptr(rsi + blk::QUEUE_READY as i32), 1)?;
    // The boot-info page says whether completion is an interrupt (and at what vector).
    a.cmp(
        qword_ptr(r15 + contract::abi::boot_info::BLK_COMPLETION_VECTOR as i32),
        0,
    )?;
    a.jne(irq_setup)?;
    a.set_label(&mut ready)?;
    asm::start_clock(a)?;
    virtio_phase(a, p, blk::T_OUT)?;
    virtio_phase(a, p, blk::T_IN)?;
    asm::stop_clock(a, 2 * p.n)?;
    // Every interrupt the handler took was one the driver waited for.
    a.mov(rax, qword_ptr(IRQS_TAKEN as i32))?;
    a.cmp(rax, qword_ptr(IRQS_AWAITED as i32))?;
    a.je(all_awaited)?;
    a.inc(r13)?;
    a.set_label(&mut all_awaited)?;
    exit_with_failures(a, ops)?;
    a.set_label(&mut irq_setup)?;
    enable_interrupt(a, ops, idt, handler)?;
    a.jmp(ready)?;
    a.set_label(&mut handler)?;
    interrupt_handler(a, ops)?;
    asm::idt_storage_for(a, &mut idt, IRQ_IDT_ENTRIES)
}

// ---------------------------------------------------------------- blk-emulated

/// `out` of AL to `port` (DX is set first).
fn outb(a: &mut CodeAssembler, port: u16) -> AsmResult {
    a.mov(edx, u32::from(port))?;
    a.out(dx, al)
}

/// Reads the status register until BSY clears; R13 counts an error. Leaves the status
/// in AL.
fn wait_ready(a: &mut CodeAssembler) -> AsmResult {
    let mut poll = a.create_label();
    let mut no_error = a.create_label();
    a.mov(edx, u32::from(blk::ATA_COMMAND))?;
    a.set_label(&mut poll)?;
    a.in_(al, dx)?;
    a.test(al, u32::from(blk::ATA_SR_BSY))?;
    a.jnz(poll)?;
    a.test(al, u32::from(blk::ATA_SR_ERR))?;
    a.jz(no_error)?;
    a.inc(r13)?;
    a.set_label(&mut no_error)
}

/// One ATA command over all N requests: per request, the six register writes, then per
/// sector one status read and the data through the data port.
fn ata_phase(a: &mut CodeAssembler, p: &Params, write: bool) -> AsmResult {
    let sectors = p.s / SECTOR_SIZE;
    let buffer = if write { DATA_BASE } else { DATA_BASE + p.s };
    let mut request = a.create_label();
    let mut sector = a.create_label();
    let mut failed = a.create_label();
    let mut next = a.create_label();
    a.xor(r8d, r8d)?;
    a.mov(r10, PATTERN_BASE)?;
    a.set_label(&mut request)?;
    if write {
        a.mov(rdi, buffer)?;
        fill(a, p.s)?;
    }
    // R9 = LBA of this request.
    a.imul_3(r9, r8, sectors as i32)?;
    a.mov(rax, r9)?;
    a.shr(rax, 24)?;
    a.and(al, 0x0F)?;
    a.or(al, 0xE0)?;
    outb(a, blk::ATA_DRIVE)?;
    a.mov(al, (sectors & 0xFF) as u32)?;
    outb(a, blk::ATA_SECTOR_COUNT)?;
    a.mov(rax, r9)?;
    outb(a, blk::ATA_LBA_LOW)?;
    a.shr(rax, 8)?;
    outb(a, blk::ATA_LBA_MID)?;
    a.shr(rax, 8)?;
    outb(a, blk::ATA_LBA_HIGH)?;
    a.mov(
        al,
        u32::from(if write {
            blk::ATA_CMD_WRITE
        } else {
            blk::ATA_CMD_READ
        }),
    )?;
    outb(a, blk::ATA_COMMAND)?;
    a.mov(r11d, sectors as u32)?;
    a.mov(rax, buffer)?;
    if write {
        a.mov(rsi, rax)?;
    } else {
        a.mov(rdi, rax)?;
    }
    a.set_label(&mut sector)?;
    wait_ready(a)?;
    a.test(al, u32::from(blk::ATA_SR_DRQ))?;
    a.jz(failed)?;
    a.mov(edx, u32::from(blk::ATA_DATA))?;
    a.mov(ecx, (SECTOR_SIZE / 2) as u32)?;
    if write {
        a.rep().outsw()?;
    } else {
        a.rep().insw()?;
    }
    a.dec(r11)?;
    a.jnz(sector)?;
    if write {
        // The last sector is on the disk when the drive is ready again.
        wait_ready(a)?;
    } else {
        a.mov(rdi, buffer)?;
        verify(a, p.s)?;
    }
    a.jmp(next)?;
    a.set_label(&mut failed)?;
    a.inc(r13)?;
    a.set_label(&mut next)?;
    a.inc(r8)?;
    a.mov(rax, p.n)?;
    a.cmp(r8, rax)?;
    a.jb(request)
}

pub(crate) fn emulated(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let mut start = a.create_label();
    asm::prologue(a)?;
    a.xor(r13d, r13d)?;
    a.mov(r12, PATTERN_STEP)?;
    a.mov(rax, p.n)?;
    a.test(rax, rax)?;
    a.jz(start)?;
    asm::start_clock(a)?;
    ata_phase(a, p, true)?;
    // The read phase starts the pattern again from the first request.
    ata_phase(a, p, false)?;
    asm::stop_clock(a, 2 * p.n)?;
    a.set_label(&mut start)?;
    exit_with_failures(a, ops)
}

/// The oracles of a disk workload under `backend`: with `kernel-notify` the doorbell's
/// writes are absorbed by KVM (an ioeventfd) and never exit, so blk-virtio's MMIO writes
/// are the five of the queue's setup; everything else is the same. blk-emulated has no
/// doorbell: its counts do not depend on the backend. Binary translation keeps no oracle
/// there: whether the guest's polling loop ever finds the ring not yet complete (and so
/// gets translated) is a race with the backend thread.
///
/// `irqfd`: whether a CPL 0 guest's completion is an irqfd's interrupt on this host (the
/// machine's probe says). Then hw-assisted under `kernel-notify` expects one completion
/// interrupt per batch (`virtio:interrupts` = 2B) and still no other exit: the interrupt
/// and the `hlt` that waits for it stay in the kernel.
pub fn for_backend(
    e: &mut contract::Expectations,
    workload: &str,
    backend: contract::BlockBackend,
    p: &Params,
    irqfd: bool,
) {
    if workload != "blk-virtio" || backend == contract::BlockBackend::Inline {
        return;
    }
    e.oracles.remove(&contract::Mode::BinaryTranslation);
    let key = contract::CountKey::Exits(contract::ExitKind::MmioWrite);
    for o in e.oracles.values_mut() {
        if let Some(w) = o.counts.get_mut(&key) {
            *w -= 2 * batches(p);
        }
    }
    if irqfd && backend == contract::BlockBackend::KernelNotify {
        if let Some(o) = e.oracles.get_mut(&contract::Mode::HwAssisted) {
            o.counts.insert(
                contract::CountKey::Device("virtio:interrupts".into()),
                2 * batches(p),
            );
        }
    }
}

/// What both disk workloads produce: the number of 8-byte words read back that matched.
pub(crate) fn expect(p: &Params) -> contract::Expectations {
    contract::Expectations {
        exit_code: Some(0),
        result: Some(p.n * p.s / 8),
        console: Some(String::new()),
        oracles: Default::default(),
        divergences: Default::default(),
        variants: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_of_a_sector_holds_its_tag_and_a_misplaced_sector_is_found() {
        let p = Params {
            n: 2,
            s: 1024,
            ..Params::default()
        };
        let image = expected_image(&p);
        assert_eq!(image.len(), 2048);
        for (k, word) in image.chunks_exact(8).enumerate() {
            assert_eq!(word, sector_tag(k as u64 / 64).to_le_bytes(), "word {k}");
        }
        assert_eq!(first_difference(&image, &p), None);
        // Sectors 1 and 2 swapped: the first byte of sector 1 differs.
        let mut swapped = image.clone();
        swapped[512..1024].copy_from_slice(&image[1024..1536]);
        swapped[1024..1536].copy_from_slice(&image[512..1024]);
        assert_eq!(first_difference(&swapped, &p), Some(512));
        // One flipped bit in the last word.
        let mut flipped = image.clone();
        flipped[2047] ^= 0x10;
        assert_eq!(first_difference(&flipped, &p), Some(2047));
        assert_eq!(first_difference(&image[..100], &p), Some(100));
    }
}
