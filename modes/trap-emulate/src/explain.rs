//! `explain`: what each mode will do with a guest image, read from its bytes.
//!
//! The image is decoded linearly from its load address with iced-x86. A flat binary has
//! no section table, so code and data cannot be told apart in general; the one
//! convention used here is that trailing zero bytes are data (the workloads keep their
//! IDT storage there, and zeros would decode as `add [rax], al`). Data placed between
//! pieces of code decodes as junk instructions and is counted as such; bytes that are no
//! valid instruction are counted as `invalid`.

use std::collections::BTreeMap;
use std::fmt;

use contract::{GuestImage, RunOptions};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use serde::Serialize;

use emulator::classify::{classify, sensitive_unprivileged, Class};
use emulator::instructions::handler_for;
use emulator::mnemonic_name;

/// What each mode does with one kind of instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeEffects {
    /// hw-assisted.
    pub hw_assisted: String,
    /// trap-emulate.
    pub trap_emulate: String,
    /// paravirt.
    pub paravirt: String,
}

/// All occurrences of one instruction kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Name (the trap name for the ones trap-emulate emulates, e.g. `mov to cr8`).
    pub name: String,
    /// Class.
    pub class: Class,
    /// Occurrences.
    pub count: u64,
    /// Address of each occurrence.
    pub addresses: Vec<u64>,
    /// Why it is sensitive (privileged and sensitive-unprivileged classes).
    pub why: Option<String>,
    /// What each mode does with it.
    pub modes: ModeEffects,
}

/// The explanation of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Image name.
    pub image: String,
    /// Load address.
    pub load_addr: u64,
    /// Bytes decoded as code.
    pub code_bytes: u64,
    /// Trailing zero bytes taken as data.
    pub data_bytes: u64,
    /// Whether CPUID faulting was assumed on.
    pub cpuid_faulting: bool,
    /// Whether CR4.UMIP was assumed set.
    pub umip: bool,
    /// Instructions decoded.
    pub instructions: u64,
    /// Byte positions that decode to no valid instruction.
    pub invalid: u64,
    /// Instruction kinds, privileged first, then sensitive-unprivileged, then innocuous.
    pub groups: Vec<Group>,
}

impl Explanation {
    /// Groups of one class.
    pub fn class(&self, class: Class) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(move |g| g.class == class)
    }

    /// The group named `name`, if any.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

fn effects(insn: &Instruction, class: Class, cpuid_faulting: bool) -> ModeEffects {
    let hw = match insn.mnemonic() {
        Mnemonic::In
        | Mnemonic::Out
        | Mnemonic::Insb
        | Mnemonic::Insw
        | Mnemonic::Insd
        | Mnemonic::Outsb
        | Mnemonic::Outsw
        | Mnemonic::Outsd => "executed at CPL 0; exits to the VMM as port I/O",
        Mnemonic::Hlt => "executed at CPL 0; exits to the VMM as a halt",
        Mnemonic::Cpuid => "executed at CPL 0; KVM answers it in the kernel",
        _ => "executed by the CPU at CPL 0; no exit to the VMM",
    };
    let te = match class {
        Class::Privileged if handler_for(insn).is_some() => {
            "faults at CPL 3 (#GP); the VMM decodes and emulates it against the virtual CPU"
                .to_string()
        }
        Class::Privileged => {
            "faults at CPL 3; not emulated by this engine: the run ends as UnhandledInstruction"
                .to_string()
        }
        Class::SensitiveUnprivileged if insn.mnemonic() == Mnemonic::Cpuid && !cpuid_faulting => {
            "runs natively at CPL 3 without reaching this VMM: the guest sees what the layer \
             below answers (KVM's CPUID table, or the host CPU's own values where CPUID at CPL 3 \
             is not intercepted), not the virtual CPU's"
                .to_string()
        }
        Class::SensitiveUnprivileged => {
            "runs natively at CPL 3 without trapping: it sees or changes the real state, not \
             the virtual one"
                .to_string()
        }
        Class::Innocuous => "native".to_string(),
    };
    // `out 0xFC, eax` is the hypercall gate of paravirtual builds.
    let gate = insn.mnemonic() == Mnemonic::Out
        && insn.op0_kind() == iced_x86::OpKind::Immediate8
        && insn.immediate8() == contract::abi::hypercall::PORT as u8;
    let pv = match class {
        Class::Innocuous => "native",
        _ if gate => {
            "the hypercall gate: the I/O bitmap opens port 0xFC to CPL 3, so this `out` exits \
             straight to the VMM as a hypercall (in a native build, hw-assisted and trap-emulate \
             have no device there and the run ends naming the paravirtual build)"
        }
        _ => {
            "the paravirtual flavour of a workload never executes it (a pv-op, a hypercall or \
             a shared-page access, takes its place); an unported native binary that executes \
             it ends as UnportedPrivilegedInstruction"
        }
    };
    ModeEffects {
        hw_assisted: if class == Class::Innocuous {
            "native".into()
        } else {
            hw.into()
        },
        trap_emulate: te,
        paravirt: pv.into(),
    }
}

fn group_name(insn: &Instruction, class: Class) -> String {
    match (class, handler_for(insn)) {
        (Class::Privileged, Some(h)) => h.name(insn),
        _ => mnemonic_name(insn),
    }
}

/// Explains an image with the default run options (CPUID faulting on, UMIP off).
pub fn explain(image: &GuestImage) -> Explanation {
    let o = RunOptions::default();
    explain_with(image, o.cpuid_faulting, o.umip)
}

/// Explains an image for a given CPUID-faulting and UMIP configuration.
pub fn explain_with(image: &GuestImage, cpuid_faulting: bool, umip: bool) -> Explanation {
    let code_len = image
        .bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    let code = &image.bytes[..code_len];
    let mut decoder = Decoder::with_ip(64, code, image.load_addr, DecoderOptions::NONE);
    let mut groups: BTreeMap<(Class, String), Group> = BTreeMap::new();
    let (mut instructions, mut invalid) = (0u64, 0u64);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            invalid += 1;
            continue;
        }
        instructions += 1;
        let class = classify(&insn, cpuid_faulting, umip);
        let name = group_name(&insn, class);
        let g = groups
            .entry((class, name.clone()))
            .or_insert_with(|| Group {
                name,
                class,
                count: 0,
                addresses: Vec::new(),
                why: match class {
                    Class::Innocuous => None,
                    _ => Some(
                        sensitive_unprivileged(&insn)
                            .unwrap_or("privileged: reserved to CPL 0 (or to IOPL)")
                            .to_string(),
                    ),
                },
                modes: effects(&insn, class, cpuid_faulting),
            });
        g.count += 1;
        g.addresses.push(insn.ip());
    }
    Explanation {
        image: image.name.clone(),
        load_addr: image.load_addr,
        code_bytes: code_len as u64,
        data_bytes: (image.bytes.len() - code_len) as u64,
        cpuid_faulting,
        umip,
        instructions,
        invalid,
        groups: groups.into_values().collect(),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} instructions in {} bytes at {:#x} ({} trailing zero bytes taken as data, \
             {} invalid); CPUID faulting {}, UMIP {}",
            self.image,
            self.instructions,
            self.code_bytes,
            self.load_addr,
            self.data_bytes,
            self.invalid,
            if self.cpuid_faulting { "on" } else { "off" },
            if self.umip { "on" } else { "off" },
        )?;
        for class in [
            Class::Privileged,
            Class::SensitiveUnprivileged,
            Class::Innocuous,
        ] {
            let gs: Vec<&Group> = self.class(class).collect();
            let n: u64 = gs.iter().map(|g| g.count).sum();
            let noun = if n == 1 {
                "instruction"
            } else {
                "instructions"
            };
            writeln!(f, "\n{} — {n} {noun}", class.title().to_uppercase())?;
            if class == Class::Innocuous {
                let list: Vec<String> = gs
                    .iter()
                    .map(|g| format!("{} x{}", g.name, g.count))
                    .collect();
                writeln!(f, "  {}", list.join(", "))?;
                continue;
            }
            for g in gs {
                let addrs: Vec<String> = g
                    .addresses
                    .iter()
                    .take(6)
                    .map(|a| format!("{a:#x}"))
                    .collect();
                let more = if g.addresses.len() > 6 { ", …" } else { "" };
                writeln!(
                    f,
                    "  {:<14} x{:<4} at {}{more}",
                    g.name,
                    g.count,
                    addrs.join(", ")
                )?;
                if let Some(why) = &g.why {
                    writeln!(f, "      why:          {why}")?;
                }
                writeln!(f, "      hw-assisted:  {}", g.modes.hw_assisted)?;
                writeln!(f, "      trap-emulate: {}", g.modes.trap_emulate)?;
                writeln!(f, "      paravirt:     {}", g.modes.paravirt)?;
            }
        }
        Ok(())
    }
}
