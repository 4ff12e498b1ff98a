//! The generators reach what the properties are about: every emulated instruction
//! decodes from the structured opcodes, and the fuzzed guests get to emulation, PTE
//! writes and every kind of named outcome.

use contract::Outcome;
use iced_x86::{Decoder, DecoderOptions};
use proptest::strategy::Strategy;

use super::invariants::run;
use super::{guest, pte_guest, OPCODES};
use crate::instructions::mock::CODE;

/// The structured generator reaches every emulated instruction, so the fuzz cases above
/// are not all rejected at the decoder.
#[test]
fn the_structured_opcodes_decode_to_the_emulated_instructions() {
    let mut seen = std::collections::BTreeSet::new();
    for op in OPCODES {
        for modrm in 0..=255u8 {
            let mut bytes = op.to_vec();
            bytes.extend([modrm, 0, 0, 0, 0, 0, 0, 0]);
            let insn = Decoder::with_ip(64, &bytes, CODE, DecoderOptions::NONE).decode();
            if crate::instructions::handler_for(&insn).is_some() {
                seen.insert(crate::dispatch::mnemonic_name(&insn));
            }
        }
    }
    for name in [
        "cli", "sti", "hlt", "in", "out", "insb", "outsd", "mov", "rdmsr", "wrmsr", "lgdt", "lidt",
        "sgdt", "sidt", "sldt", "str", "smsw", "invlpg", "wbinvd", "invd", "iretq", "cpuid", "int",
        "int3",
    ] {
        assert!(seen.contains(name), "{name} is never generated: {seen:?}");
    }
}

/// The fuzzed guests reach the states that matter, not only early refusals: most emulated
/// instructions are emulated, PTE stores are validated and written, and the guest runs
/// into every kind of named outcome, monitor violations included.
#[test]
fn the_fuzzed_guests_reach_emulation_pte_writes_and_violations() {
    use contract::FaultKind;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut log = Vec::new();
    for i in 0..600 {
        let strategy = if i % 4 == 0 { pte_guest() } else { guest() };
        let g = strategy.new_tree(&mut runner).expect("a case").current();
        run(&g, &mut log).expect("the properties hold");
    }
    let names: std::collections::BTreeSet<&str> = log.iter().map(|h| h.name.as_str()).collect();
    let kinds: Vec<FaultKind> = log
        .iter()
        .filter_map(|h| match &h.stop {
            Some(Outcome::GuestFault { kind, .. }) => Some(*kind),
            _ => None,
        })
        .collect();
    let resumed = log.iter().filter(|h| h.stop.is_none()).count();
    let pte_writes = log
        .iter()
        .filter(|h| h.name == "pte write" && h.stop.is_none())
        .count();
    for name in [
        "cli",
        "sti",
        "in",
        "out",
        "lidt",
        "rdmsr",
        "wrmsr",
        "cpuid",
        "invlpg",
        "pte write",
        "#pf",
        "irq",
    ] {
        assert!(names.contains(name), "{name} never handled: {names:?}");
    }
    for kind in [
        FaultKind::MonitorViolation,
        FaultKind::UnhandledInstruction,
        FaultKind::BadMemoryAccess,
        FaultKind::BadDeviceAccess,
        FaultKind::Exception,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} never reached: {kinds:?}");
    }
    eprintln!(
        "{} traps, {resumed} resumed, {pte_writes} PTE stores written",
        log.len()
    );
    assert!(resumed >= 300, "{resumed} resumed");
    assert!(pte_writes >= 1, "no PTE store was ever written");
}
