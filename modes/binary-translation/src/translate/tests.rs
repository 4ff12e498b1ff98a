use super::*;
use iced_x86::{Decoder, DecoderOptions};

const GUEST: u64 = 0x10_0000;
const AT: u64 = layout::TC + 0x100;
const LOOKUP: u64 = layout::TC;

fn reader(code: &[u8]) -> impl FnMut(u64, &mut [u8]) -> usize + '_ {
    move |addr, buf| {
        let Some(off) = addr.checked_sub(GUEST) else {
            return 0;
        };
        let off = off as usize;
        if off >= code.len() {
            return 0;
        }
        let n = buf.len().min(code.len() - off);
        buf[..n].copy_from_slice(&code[off..off + n]);
        n
    }
}

fn block(code: &[u8], rip: u64) -> Block {
    translate(&mut reader(code), rip, AT, LOOKUP).unwrap()
}

fn decoded(b: &Block) -> Vec<Instruction> {
    Decoder::with_ip(64, &b.code, b.tc, DecoderOptions::NONE)
        .into_iter()
        .collect()
}

fn mnemonics(b: &Block) -> Vec<Mnemonic> {
    decoded(b).iter().map(|i| i.mnemonic()).collect()
}

#[test]
fn sensitive_instructions_are_rewritten_and_privileged_ones_become_callouts() {
    // cli; sti; pushfq; popfq; out 0xe9, al; nop; jmp $
    let b = block(
        &[0xFA, 0xFB, 0x9C, 0x9D, 0xE6, 0xE9, 0x90, 0xEB, 0xFE],
        GUEST,
    );
    assert_eq!(
        b.stats,
        Stats {
            copied: 1,
            inline: 4,
            callouts: 1,
            branches: 1
        }
    );
    let m = mnemonics(&b);
    for native in [Mnemonic::Cli, Mnemonic::Sti, Mnemonic::Out] {
        assert!(
            !m.contains(&native),
            "{native:?} must not run natively: {m:?}"
        );
    }
    // The callout: `ud2` at the out's translation, resuming after it.
    let out_tc = b.insns.iter().find(|(g, _)| *g == GUEST + 4).unwrap().1;
    assert_eq!(
        b.sites[0],
        (
            out_tc,
            Site::Callout {
                guest: GUEST + 4,
                next: GUEST + 6,
                resume: Some(out_tc + 2),
                after_sti: false
            }
        )
    );
    assert_eq!(&b.code[(out_tc - b.tc) as usize..][..2], &[0x0F, 0x0B]);
    // cli and sti store the virtual IF.
    let stores: Vec<_> = decoded(&b)
        .into_iter()
        .filter(|i| i.code() == Code::Mov_rm64_imm32 && i.memory_displacement64() == layout::VIF)
        .map(|i| i.immediate32())
        .collect();
    assert_eq!(stores, [0, 0x200]);
    // jmp $ is a chaining stub back to itself.
    assert!(b
        .sites
        .iter()
        .any(|(_, s)| *s == Site::Branch { target: GUEST + 7 }));
    assert_eq!(b.guest_end, GUEST + 9);
}

#[test]
fn the_instruction_after_sti_is_in_its_shadow() {
    // sti; hlt
    let b = block(&[0xFB, 0xF4], GUEST);
    assert!(matches!(
        b.sites[0].1,
        Site::Callout {
            guest,
            after_sti: true,
            resume: None,
            ..
        } if guest == GUEST + 1
    ));
}

#[test]
fn rip_relative_operands_still_reach_the_guest_data() {
    // mov rax, [rip + 0x100]; jmp $
    let b = block(
        &[0x48, 0x8B, 0x05, 0x00, 0x01, 0x00, 0x00, 0xEB, 0xFE],
        GUEST,
    );
    let i = decoded(&b)[0];
    assert_eq!(i.memory_base(), Register::RIP);
    assert_eq!(i.memory_displacement64(), GUEST + 7 + 0x100);
}

#[test]
fn a_conditional_branch_has_two_stubs_and_calls_push_the_guest_return_address() {
    // dec ecx; jne -4 (to GUEST)
    let b = block(&[0xFF, 0xC9, 0x75, 0xFC], GUEST);
    let targets: Vec<_> = b
        .sites
        .iter()
        .filter_map(|(_, s)| match s {
            Site::Branch { target } => Some(*target),
            _ => None,
        })
        .collect();
    assert_eq!(targets, [GUEST, GUEST + 4]);
    // call +0 (to GUEST + 5); the pushed value is GUEST + 5, in two dword stores.
    let b = block(&[0xE8, 0x00, 0x00, 0x00, 0x00], GUEST);
    let imms: Vec<_> = decoded(&b)
        .into_iter()
        .filter(|i| i.code() == Code::Mov_rm32_imm32)
        .map(|i| i.immediate32())
        .collect();
    assert_eq!(imms, [(GUEST + 5) as u32, 0]);
    assert!(!mnemonics(&b).contains(&Mnemonic::Call));
    // ret: through the lookup routine.
    let b = block(&[0xC3], GUEST);
    let last = *decoded(&b).last().unwrap();
    assert!(decoded(&b)
        .iter()
        .any(|i| i.mnemonic() == Mnemonic::Jmp && i.near_branch_target() == LOOKUP));
    assert_ne!(last.mnemonic(), Mnemonic::Ret);
}

#[test]
fn a_jump_into_the_middle_of_an_instruction_translates_what_is_there() {
    // mov eax, 0x90FB90FA: from +1, cli; nop; sti; nop
    let code = [0xB8, 0xFA, 0x90, 0xFB, 0x90, 0xEB, 0xFE];
    let whole = block(&code, GUEST);
    assert_eq!(whole.stats.inline, 0);
    let inner = block(&code, GUEST + 1);
    assert_eq!(inner.stats.inline, 2);
    assert_eq!(inner.stats.copied, 2);
}

#[test]
fn a_block_that_never_ends_is_cut_into_pieces() {
    let code = vec![0x90; 1000];
    let b = block(&code, GUEST);
    assert_eq!(b.stats.copied, MAX_BLOCK_INSNS as u64);
    assert_eq!(b.guest_end, GUEST + MAX_BLOCK_INSNS as u64);
    assert_eq!(
        b.sites.last().unwrap().1,
        Site::Branch {
            target: GUEST + MAX_BLOCK_INSNS as u64
        }
    );
    // Code that runs off the end of readable memory: the block stops there.
    let b = block(&[0x90, 0x90], GUEST);
    assert_eq!(
        b.sites.last().unwrap().1,
        Site::Branch { target: GUEST + 2 }
    );
    assert_eq!(
        translate(&mut reader(&[]), GUEST, AT, LOOKUP),
        Err(TranslateError::Unreadable(GUEST))
    );
}

#[test]
fn chain_patches_are_jumps_to_the_successor() {
    let p = chain_patch(0x1000, 0x2000);
    let i = Decoder::with_ip(64, &p, 0x1000, DecoderOptions::NONE).decode();
    assert_eq!(i.mnemonic(), Mnemonic::Jmp);
    assert_eq!(i.near_branch_target(), 0x2000);
    let p = chain_patch(0x2000, 0x1000);
    let i = Decoder::with_ip(64, &p, 0x2000, DecoderOptions::NONE).decode();
    assert_eq!(i.near_branch_target(), 0x1000);
}

#[test]
fn the_lookup_routine_ends_in_its_miss_site() {
    let (code, miss) = lookup_routine(LOOKUP).unwrap();
    assert_eq!(miss, LOOKUP + code.len() as u64 - 2);
    assert_eq!(&code[code.len() - 2..], &[0x0F, 0x0B]);
}

#[test]
fn callouts_cover_the_emulated_and_the_privileged() {
    let is =
        |bytes: &[u8]| is_callout(&Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode());
    assert!(is(&[0x0F, 0xA2])); // cpuid: always, whatever the host's CPUID faulting
    assert!(is(&[0xF4])); // hlt
    assert!(is(&[0x44, 0x0F, 0x22, 0xC0])); // mov cr8, rax
    assert!(is(&[0x48, 0xCF])); // iretq
    assert!(is(&[0x0F, 0x01, 0x04, 0x24])); // sgdt [rsp]: the virtual GDTR
    assert!(!is(&[0xFA])); // cli: inline
    assert!(!is(&[0x48, 0x01, 0xC3])); // add rbx, rax
}
