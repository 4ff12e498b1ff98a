//! The translator: guest bytes at a guest RIP → one translated basic block, placed at a
//! given address of the translation cache, with the map back to guest instructions and
//! the sites where the block enters the VMM. Pure: no KVM, no guest memory beyond the
//! `read` it is given.
//!
//! Each guest instruction becomes one of:
//!
//! | guest instruction | translation | counted as |
//! |---|---|---|
//! | innocuous (ALU, loads, stores, `lfence`, `rdtsc`, …) | copied; iced-x86's `BlockEncoder` re-encodes RIP-relative operands for the new address | `copied` |
//! | `cli` / `sti` | `mov qword [VIF], 0` / `0x200` | `inline` |
//! | `pushfq` | real flags pushed, IF replaced by the virtual IF | `inline` |
//! | `popfq` | virtual IF from the popped value, the rest popped for real (the real IF stays 1) | `inline` |
//! | privileged or emulated (`out`, `hlt`, `mov cr8`, `lidt`, `invlpg`, `iretq`, `cpuid`, `int`, `sgdt`, …) | a callout: `ud2`, recognized by the VMM as this site | `callouts` |
//! | `jmp rel`, `jcc rel`, `loop`, `jrcxz` | a branch to a chaining stub (`ud2` until patched into `jmp rel32` to the successor's translation) | `branches` |
//! | `call rel` | the guest return address pushed, then a chaining stub | `branches` |
//! | `ret`, `jmp r/m`, `call r/m` | the target in RAX, then the shared lookup routine | `branches` |
//!
//! A block ends after a branch, after a callout that transfers control (`iretq`, `int`,
//! `syscall`…), or after [`MAX_BLOCK_INSNS`] instructions (a chaining stub to the next).
//! Translated code never pushes below the guest's RSP except where it says so (`pushfq`
//! sequences and the lookup routine use the slot under RSP as scratch).

use iced_x86::code_asm::*;
use iced_x86::{
    BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind,
    Register,
};

use crate::layout;

pub mod explain;

/// The most guest instructions in one block.
pub const MAX_BLOCK_INSNS: usize = 64;
/// Bytes of a chaining stub: `ud2` and three `nop`s, patched into `jmp rel32`.
pub const STUB_LEN: usize = 5;
/// The longest x86 instruction.
const MAX_INSN: usize = 15;

/// Where translated code enters the VMM, and what the VMM does there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// A privileged instruction: the VMM emulates the guest instruction at `guest`.
    Callout {
        /// The guest instruction.
        guest: u64,
        /// The guest instruction after it.
        next: u64,
        /// Translated code continues here when the guest resumes at `next` (`None` when
        /// the block ends with the callout).
        resume: Option<u64>,
        /// The guest instruction before it was STI (its interrupt shadow covers this one).
        after_sti: bool,
    },
    /// A chaining stub to the translation of `target`; patched in place once it exists.
    Branch {
        /// The guest target.
        target: u64,
    },
}

/// One translated block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The guest RIP it translates.
    pub guest: u64,
    /// The guest bytes it covers: `[guest, guest_end)`.
    pub guest_end: u64,
    /// Its address in the translation cache.
    pub tc: u64,
    /// Its machine code.
    pub code: Vec<u8>,
    /// For each guest instruction: (guest RIP, TC address of its translation).
    pub insns: Vec<(u64, u64)>,
    /// The VMM entries, by the TC address of their `ud2`.
    pub sites: Vec<(u64, Site)>,
    /// What it is made of.
    pub stats: Stats,
}

/// What a translation is made of (summed over blocks in the record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Guest instructions copied unchanged.
    pub copied: u64,
    /// Sensitive instructions rewritten inline (CLI, STI, PUSHF, POPF).
    pub inline: u64,
    /// Privileged instructions turned into callouts.
    pub callouts: u64,
    /// Branches turned into chaining stubs or lookups.
    pub branches: u64,
}

/// Why a block could not be translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// The first instruction's bytes could not be read.
    Unreadable(u64),
    /// iced-x86 could not encode the block.
    Encode(String),
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslateError::Unreadable(a) => write!(f, "guest code at {a:#x} is not readable"),
            TranslateError::Encode(e) => write!(f, "encoding the translation: {e}"),
        }
    }
}

impl From<IcedError> for TranslateError {
    fn from(e: IcedError) -> Self {
        TranslateError::Encode(e.to_string())
    }
}

/// Whether the VMM must emulate `insn` (a callout), rather than translated code run it.
pub fn is_callout(insn: &Instruction) -> bool {
    if insn.is_invalid() {
        return true;
    }
    match insn.mnemonic() {
        Mnemonic::Cli | Mnemonic::Sti => false,
        Mnemonic::Pushf | Mnemonic::Popf => true, // 16-bit forms: not rewritten
        Mnemonic::Syscall
        | Mnemonic::Sysretq
        | Mnemonic::Sysret
        | Mnemonic::Sysenter
        | Mnemonic::Sysexit
        | Mnemonic::Sysexitq
        | Mnemonic::Int1
        | Mnemonic::Into
        | Mnemonic::Iret
        | Mnemonic::Iretd
        | Mnemonic::Retf => true,
        _ => {
            emulator::instructions::handler_for(insn).is_some()
                || emulator::classify::classify(insn, true, true)
                    == emulator::classify::Class::Privileged
        }
    }
}

/// Whether control never falls through a callout (the VMM resumes wherever the emulation
/// says).
fn ends_block(insn: &Instruction) -> bool {
    insn.is_invalid()
        || matches!(
            insn.flow_control(),
            FlowControl::Interrupt
                | FlowControl::Return
                | FlowControl::UnconditionalBranch
                | FlowControl::IndirectBranch
                | FlowControl::Call
                | FlowControl::IndirectCall
                | FlowControl::ConditionalBranch
                | FlowControl::Exception
        )
        || matches!(insn.mnemonic(), Mnemonic::Iretq | Mnemonic::Hlt)
}

fn abs(addr: u64) -> AsmMemoryOperand {
    qword_ptr(addr)
}

/// Emits code that pushes the 64-bit guest address `value` without touching flags.
fn push_guest_address(a: &mut CodeAssembler, value: u64) -> Result<(), IcedError> {
    a.lea(rsp, ptr(rsp - 8))?;
    a.mov(dword_ptr(rsp), value as u32)?;
    a.mov(dword_ptr(rsp + 4), (value >> 32) as u32)
}

/// The operand of an indirect branch, as `mov rax, <operand>`.
fn load_target(insn: &Instruction) -> Result<Instruction, TranslateError> {
    Ok(match insn.op0_kind() {
        OpKind::Register => {
            Instruction::with2(Code::Mov_r64_rm64, Register::RAX, insn.op0_register())?
        }
        OpKind::Memory => Instruction::with2(
            Code::Mov_r64_rm64,
            Register::RAX,
            iced_x86::MemoryOperand::new(
                insn.memory_base(),
                insn.memory_index(),
                insn.memory_index_scale(),
                insn.memory_displacement64() as i64,
                insn.memory_displ_size(),
                false,
                insn.segment_prefix(),
            ),
        )?,
        _ => {
            return Err(TranslateError::Encode(
                "indirect branch without a register or memory operand".into(),
            ))
        }
    })
}

/// A conditional branch of the same condition to `to`.
fn branch_like(a: &mut CodeAssembler, m: Mnemonic, to: CodeLabel) -> Result<(), TranslateError> {
    Ok(match m {
        Mnemonic::Ja => a.ja(to),
        Mnemonic::Jae => a.jae(to),
        Mnemonic::Jb => a.jb(to),
        Mnemonic::Jbe => a.jbe(to),
        Mnemonic::Je => a.je(to),
        Mnemonic::Jg => a.jg(to),
        Mnemonic::Jge => a.jge(to),
        Mnemonic::Jl => a.jl(to),
        Mnemonic::Jle => a.jle(to),
        Mnemonic::Jne => a.jne(to),
        Mnemonic::Jno => a.jno(to),
        Mnemonic::Jnp => a.jnp(to),
        Mnemonic::Jns => a.jns(to),
        Mnemonic::Jo => a.jo(to),
        Mnemonic::Jp => a.jp(to),
        Mnemonic::Js => a.js(to),
        Mnemonic::Loop => a.loop_(to),
        Mnemonic::Loope => a.loope(to),
        Mnemonic::Loopne => a.loopne(to),
        Mnemonic::Jrcxz => a.jrcxz(to),
        Mnemonic::Jecxz => a.jecxz(to),
        _ => {
            return Err(TranslateError::Encode(format!(
                "{m:?} is not a conditional branch"
            )))
        }
    }?)
}

/// One site to place: its label, and what it is.
enum Pending {
    /// A callout at the instruction's label; whether translated code continues after it.
    Site(CodeLabel, Site, bool),
    Stub(CodeLabel, u64),
}

/// Translates the block at guest `rip`, for placement at `tc`. `read` fills a buffer with
/// guest code (guest-virtual addresses) and returns how many bytes it could read.
/// `lookup` is the address of the shared lookup routine ([`lookup_routine`]).
pub fn translate(
    read: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    rip: u64,
    tc: u64,
    lookup: u64,
) -> Result<Block, TranslateError> {
    let mut a = CodeAssembler::new(64)?;
    let mut insns: Vec<(u64, CodeLabel)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut stats = Stats::default();
    let mut at = rip;
    let mut after_sti = false;
    let mut open = true; // whether control falls off the end of what was emitted
    for count in 0.. {
        if count == MAX_BLOCK_INSNS {
            break;
        }
        let mut bytes = [0u8; MAX_INSN];
        let n = read(at, &mut bytes);
        if n == 0 {
            if count == 0 {
                return Err(TranslateError::Unreadable(at));
            }
            break;
        }
        let insn = Decoder::with_ip(64, &bytes[..n], at, DecoderOptions::NONE).decode();
        if insn.is_invalid() && n < MAX_INSN && count > 0 {
            // Possibly cut short by the end of readable memory: let the next block start here.
            break;
        }
        let next = at.wrapping_add(if insn.is_invalid() {
            1
        } else {
            insn.len() as u64
        });
        let mut label = a.create_label();
        a.set_label(&mut label)?;
        insns.push((at, label));
        let was_sti = after_sti;
        after_sti = false;
        let mut end = false;
        match insn.mnemonic() {
            Mnemonic::Cli if !insn.is_invalid() => {
                a.mov(abs(layout::VIF), 0)?;
                stats.inline += 1;
                // The label needs an instruction: the store is it.
            }
            Mnemonic::Sti => {
                a.mov(abs(layout::VIF), 0x200)?;
                stats.inline += 1;
                after_sti = true;
            }
            Mnemonic::Pushfq => {
                // [rsp] = real flags with IF := virtual IF; real flags and RAX unchanged.
                a.pushfq()?;
                a.pushfq()?;
                a.mov(abs(layout::SAVE_RAX), rax)?;
                a.mov(rax, qword_ptr(rsp + 8))?;
                a.and(rax, !0x200i32)?;
                a.or(rax, abs(layout::VIF))?;
                a.mov(qword_ptr(rsp + 8), rax)?;
                a.mov(rax, abs(layout::SAVE_RAX))?;
                a.popfq()?;
                stats.inline += 1;
            }
            Mnemonic::Popfq => {
                // Virtual IF from the popped value; the rest for real (IF stays 1 at CPL 3).
                a.mov(abs(layout::SAVE_RAX), rax)?;
                a.mov(rax, qword_ptr(rsp))?;
                a.and(eax, 0x200)?;
                a.mov(abs(layout::VIF), rax)?;
                a.mov(rax, abs(layout::SAVE_RAX))?;
                a.popfq()?;
                stats.inline += 1;
            }
            _ if is_callout(&insn) => {
                // The instruction's own label is the site: `ud2` is its whole translation.
                a.ud2()?;
                stats.callouts += 1;
                end = ends_block(&insn);
                pending.push(Pending::Site(
                    label,
                    Site::Callout {
                        guest: at,
                        next,
                        resume: None,
                        after_sti: was_sti,
                    },
                    !end,
                ));
                if end {
                    open = false;
                }
            }
            _ => match insn.flow_control() {
                FlowControl::UnconditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => {
                    let stub = a.create_label();
                    a.jmp(stub)?;
                    pending.push(Pending::Stub(stub, insn.near_branch_target()));
                    stats.branches += 1;
                    end = true;
                    open = false;
                }
                FlowControl::ConditionalBranch => {
                    let taken = a.create_label();
                    branch_like(&mut a, insn.mnemonic(), taken)?;
                    pending.push(Pending::Stub(taken, insn.near_branch_target()));
                    stats.branches += 1;
                    end = true; // falls through to the next guest instruction's stub
                }
                FlowControl::Call if insn.op0_kind() == OpKind::NearBranch64 => {
                    push_guest_address(&mut a, next)?;
                    let stub = a.create_label();
                    a.jmp(stub)?;
                    pending.push(Pending::Stub(stub, insn.near_branch_target()));
                    stats.branches += 1;
                    end = true;
                    open = false;
                }
                FlowControl::Return if insn.mnemonic() == Mnemonic::Ret => {
                    a.mov(abs(layout::SAVE_RAX), rax)?;
                    a.pop(rax)?;
                    if insn.op_count() == 1 {
                        let imm = i32::from(insn.immediate16());
                        a.lea(rsp, ptr(rsp + imm))?;
                    }
                    a.jmp(lookup)?;
                    stats.branches += 1;
                    end = true;
                    open = false;
                }
                FlowControl::IndirectBranch | FlowControl::IndirectCall
                    if insn.op0_kind() == OpKind::Register
                        || (insn.op0_kind() == OpKind::Memory
                            && insn.memory_size() == iced_x86::MemorySize::UInt64) =>
                {
                    a.mov(abs(layout::SAVE_RAX), rax)?;
                    // RAX still holds the guest's value when the operand is computed.
                    a.add_instruction(load_target(&insn)?)?;
                    if insn.flow_control() == FlowControl::IndirectCall {
                        push_guest_address(&mut a, next)?;
                    }
                    a.jmp(lookup)?;
                    stats.branches += 1;
                    end = true;
                    open = false;
                }
                FlowControl::Next => {
                    a.add_instruction(insn)?;
                    stats.copied += 1;
                }
                _ => {
                    // Anything else that moves control (far or odd forms): the VMM decides.
                    a.ud2()?;
                    stats.callouts += 1;
                    pending.push(Pending::Site(
                        label,
                        Site::Callout {
                            guest: at,
                            next,
                            resume: None,
                            after_sti: was_sti,
                        },
                        false,
                    ));
                    end = true;
                    open = false;
                }
            },
        }
        at = next;
        if end {
            break;
        }
    }
    if open {
        // Falls through to the next guest instruction: a stub to its translation.
        let stub = a.create_label();
        a.jmp(stub)?;
        pending.push(Pending::Stub(stub, at));
    }
    // Stubs go after the code.
    let mut stubs = Vec::new();
    for p in &mut pending {
        if let Pending::Stub(label, target) = p {
            a.set_label(label)?;
            a.db(&[0x0F, 0x0B, 0x90, 0x90, 0x90])?;
            stubs.push((*label, *target));
        }
    }
    let result = a.assemble_options(tc, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    let mut sites = Vec::new();
    for p in &pending {
        match p {
            Pending::Site(label, site, continues) => {
                let mut site = *site;
                let ip = result.label_ip(label)?;
                if let (Site::Callout { resume, .. }, true) = (&mut site, *continues) {
                    *resume = Some(ip + 2); // after the `ud2`
                }
                sites.push((ip, site));
            }
            Pending::Stub(label, target) => {
                sites.push((result.label_ip(label)?, Site::Branch { target: *target }));
            }
        }
    }
    let insns = insns
        .iter()
        .map(|(g, l)| Ok((*g, result.label_ip(l)?)))
        .collect::<Result<Vec<_>, IcedError>>()?;
    Ok(Block {
        guest: rip,
        guest_end: at,
        tc,
        code: result.inner.code_buffer,
        insns,
        sites,
        stats,
    })
}

/// The shared lookup routine, assembled at `at`: the guest target in RAX (the guest's RAX
/// parked at [`layout::SAVE_RAX`]); jumps to its translation if the table has it, or
/// enters the VMM with its `ud2` (the miss site, returned second) with the target at
/// [`layout::TARGET`]. Flags, RAX and RCX are the guest's again either way; the slot
/// below the guest's RSP is used as scratch for the flags.
pub fn lookup_routine(at: u64) -> Result<(Vec<u8>, u64), TranslateError> {
    let mut a = CodeAssembler::new(64)?;
    let mut miss = a.create_label();
    let mut miss_site = a.create_label();
    a.pushfq()?;
    a.mov(abs(layout::SAVE_RCX), rcx)?;
    a.mov(abs(layout::TARGET), rax)?;
    a.inc(abs(layout::LOOKUPS))?;
    a.mov(ecx, eax)?;
    a.and(ecx, (layout::TABLE_ENTRIES - 1) as i32)?;
    a.shl(ecx, 4)?;
    a.cmp(rax, qword_ptr(rcx + layout::TABLE as i32))?;
    a.jne(miss)?;
    a.mov(rcx, qword_ptr(rcx + (layout::TABLE + 8) as i32))?;
    a.mov(abs(layout::JUMP), rcx)?;
    a.mov(rcx, abs(layout::SAVE_RCX))?;
    a.mov(rax, abs(layout::SAVE_RAX))?;
    a.popfq()?;
    a.jmp(abs(layout::JUMP))?;
    a.set_label(&mut miss)?;
    a.mov(rcx, abs(layout::SAVE_RCX))?;
    a.mov(rax, abs(layout::SAVE_RAX))?;
    a.popfq()?;
    a.set_label(&mut miss_site)?;
    a.ud2()?;
    let r = a.assemble_options(at, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    let site = r.label_ip(&miss_site)?;
    Ok((r.inner.code_buffer, site))
}

/// `jmp rel32` from a stub at `stub` to `to`, the bytes that patch the stub.
pub fn chain_patch(stub: u64, to: u64) -> [u8; STUB_LEN] {
    let rel = to.wrapping_sub(stub + STUB_LEN as u64) as i64 as i32;
    let r = rel.to_le_bytes();
    [0xE9, r[0], r[1], r[2], r[3]]
}

#[cfg(test)]
mod tests;
