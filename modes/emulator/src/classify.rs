//! The classification of instructions, after Popek & Goldberg (1974) and Robin & Irvine
//! (2000): *privileged* instructions fault when executed at CPL 3, so a trap-and-emulate
//! VMM sees them; *sensitive but unprivileged* ones read or change privileged state yet
//! run at CPL 3 without faulting, which is why x86 was not classically virtualizable.
//!
//! iced-x86's `is_privileged()` covers the CPL 0 instructions and the IOPL ones (IN, OUT,
//! INS, OUTS, CLI, STI). It does not flag the sensitive-unprivileged ones, so they are
//! kept here as an explicit table ([`sensitive_unprivileged`]). Two instructions depend on
//! the configuration: CPUID traps only with CPUID faulting, and SGDT/SIDT/SLDT/SMSW/STR
//! trap only with CR4.UMIP. IRETQ and INT n are not privileged on bare metal, but they
//! always trap in this engine (see [`classify`]).

use iced_x86::{Code, Instruction, Mnemonic, OpKind};
use serde::Serialize;

/// The three classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Faults at CPL 3: trap-and-emulate sees it.
    Privileged,
    /// Touches privileged state but runs at CPL 3 without faulting: the hole.
    SensitiveUnprivileged,
    /// Neither: native in every mode.
    Innocuous,
}

impl Class {
    /// Heading used in explanations.
    pub fn title(self) -> &'static str {
        match self {
            Class::Privileged => "privileged: traps in trap-emulate",
            Class::SensitiveUnprivileged => {
                "sensitive but unprivileged: silent at CPL 3 (the Popek-Goldberg hole)"
            }
            Class::Innocuous => "innocuous: native in every mode",
        }
    }
}

fn is_umip_store(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Sgdt | Mnemonic::Sidt | Mnemonic::Sldt | Mnemonic::Smsw | Mnemonic::Str
    )
}

fn segment_operand(insn: &Instruction) -> bool {
    (0..insn.op_count())
        .any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_segment_register())
}

/// The explicit table of sensitive-but-unprivileged instructions (Robin & Irvine's list
/// for 64-bit mode), with why each is sensitive. `None` for anything else.
pub fn sensitive_unprivileged(insn: &Instruction) -> Option<&'static str> {
    Some(match insn.mnemonic() {
        Mnemonic::Pushf | Mnemonic::Pushfd | Mnemonic::Pushfq => {
            "reads RFLAGS: shows the real IF (always 1) and IOPL, not the virtual IF"
        }
        Mnemonic::Popf | Mnemonic::Popfd | Mnemonic::Popfq => {
            "writes RFLAGS: at CPL 3 with IOPL 0 the change to IF is silently dropped"
        }
        Mnemonic::Sgdt | Mnemonic::Sidt => {
            "stores the real GDTR/IDTR: reveals the monitor's tables (traps only with UMIP)"
        }
        Mnemonic::Sldt | Mnemonic::Str => "stores the real LDTR/TR selector (traps only with UMIP)",
        Mnemonic::Smsw => "stores the real CR0 low bits (traps only with UMIP)",
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw => {
            "checks a descriptor against the real CPL 3, not the virtual CPL 0"
        }
        Mnemonic::Mov
            if matches!(
                insn.code(),
                Code::Mov_rm16_Sreg | Code::Mov_r32m16_Sreg | Code::Mov_r64m16_Sreg
            ) =>
        {
            "reads a segment selector: its RPL shows CPL 3"
        }
        Mnemonic::Mov
            if matches!(
                insn.code(),
                Code::Mov_Sreg_rm16 | Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_r64m16
            ) =>
        {
            "loads a segment register: checked against CPL 3, not the virtual CPL 0"
        }
        Mnemonic::Push if segment_operand(insn) => {
            "pushes a segment selector (PUSH CS in 32-bit code, PUSH FS/GS here): RPL shows CPL 3"
        }
        Mnemonic::Pop if segment_operand(insn) => "loads a segment register at CPL 3",
        Mnemonic::Cpuid => {
            "not privileged, but it reveals the CPU: it traps only because CPUID faulting \
             (MSR 0x140) is on; without it the guest reads the identification of the layer below"
        }
        _ => return None,
    })
}

/// Classifies an instruction for this engine's configuration.
pub fn classify(insn: &Instruction, cpuid_faulting: bool, umip: bool) -> Class {
    let m = insn.mnemonic();
    let traps = insn.is_privileged()
        || (m == Mnemonic::Cpuid && cpuid_faulting)
        || (umip && is_umip_store(m))
        // The VMM's frames carry the virtual kernel CS (RPL 0): IRETQ at CPL 3 faults.
        || matches!(m, Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq)
        // The monitor's gates are DPL 0: INT n / INT3 at CPL 3 fault.
        || matches!(m, Mnemonic::Int | Mnemonic::Int3);
    if traps {
        Class::Privileged
    } else if sensitive_unprivileged(insn).is_some() {
        Class::SensitiveUnprivileged
    } else {
        Class::Innocuous
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn one(bytes: &[u8]) -> Instruction {
        Decoder::new(64, bytes, DecoderOptions::NONE).decode()
    }

    #[test]
    fn the_hole_is_an_explicit_table() {
        for (bytes, class) in [
            (&[0xFA][..], Class::Privileged),                    // cli
            (&[0xE6, 0xE9], Class::Privileged),                  // out
            (&[0x0F, 0x01, 0x1C, 0x24], Class::Privileged),      // lidt
            (&[0x48, 0xCF], Class::Privileged),                  // iretq
            (&[0x9C], Class::SensitiveUnprivileged),             // pushfq
            (&[0x9D], Class::SensitiveUnprivileged),             // popfq
            (&[0x0F, 0x01, 0x08], Class::SensitiveUnprivileged), // sidt [rax]
            (&[0x8C, 0xC8], Class::SensitiveUnprivileged),       // mov eax, cs
            (&[0x0F, 0xA0], Class::SensitiveUnprivileged),       // push fs
            (&[0x0F, 0x02, 0xC1], Class::SensitiveUnprivileged), // lar eax, ecx
            (&[0x48, 0x01, 0xC3], Class::Innocuous),             // add rbx, rax
        ] {
            let i = one(bytes);
            assert_eq!(classify(&i, true, false), class, "{i}");
            assert_eq!(
                i.is_privileged(),
                class == Class::Privileged && i.mnemonic() != iced_x86::Mnemonic::Iretq,
                "{i}"
            );
        }
    }

    #[test]
    fn configuration_moves_cpuid_and_the_umip_stores() {
        let cpuid = one(&[0x0F, 0xA2]);
        assert_eq!(classify(&cpuid, true, false), Class::Privileged);
        assert_eq!(classify(&cpuid, false, false), Class::SensitiveUnprivileged);
        let sgdt = one(&[0x0F, 0x01, 0x00]);
        assert_eq!(classify(&sgdt, true, false), Class::SensitiveUnprivileged);
        assert_eq!(classify(&sgdt, true, true), Class::Privileged);
    }
}
