//! Memory isolation under hw-assisted, where the guest kernel owns its MMU: a user process
//! of the guest kernel cannot read or write its kernel's pages, its own code, the
//! monitor's region or another process's pages (each attack ends with the process killed
//! by the fault the CPU raised, the error code and address exact); and a hostile guest
//! kernel's page tables (a loop, a huge page where none is allowed, a frame beyond RAM, a
//! trashed IDT) end classified within their limits, the VMM unharmed.

mod common;

use contract::abi::layout;
use contract::x86::pte;
use contract::{FaultKind, Outcome, RunOptions};
use guests::kernel::exit;
use guests::kernel::workloads::{attack_image, Attack};
use hw_assisted::HwAssisted;
use iced_x86::code_asm::*;

#[test]
fn a_user_process_reaches_nothing_but_its_own_pages() {
    if !common::kvm_or_skip("a_user_process_reaches_nothing_but_its_own_pages") {
        return;
    }
    for attack in Attack::ALL {
        let image = attack_image(attack).unwrap();
        let r = common::run(&HwAssisted, &image, &RunOptions::default());
        let result = match r.outcome {
            Outcome::Completed { result, .. }
            | Outcome::Diverged {
                result: Some(result),
                ..
            } => result,
            ref other => panic!("{attack:?}: {other:?}"),
        };
        assert_eq!(
            exit_code_of(&r),
            Some(exit::KILLED | attack.error_code()),
            "{attack:?}: {:?}",
            r.outcome
        );
        assert_eq!(result, attack.address(), "{attack:?}");
        // Nothing left the VM but the kernel's exit.
        assert_eq!(r.total_exits(), 1, "{attack:?}: {:?}", r.exits);
    }
}

/// The exit code the guest reported, whatever the judgement.
fn exit_code_of(r: &contract::RunRecord) -> Option<u32> {
    match &r.outcome {
        Outcome::Completed { exit_code, .. } => Some(*exit_code),
        Outcome::Diverged { got, .. } => got.strip_prefix("exit code ")?.parse().ok(),
        _ => None,
    }
}

/// A CPL 0 guest that builds its own root at 2 MiB (the boot tables' first-GiB mapping in
/// entry 0, so that its code keeps running), lets `entries` fill the rest, switches to it
/// and reads the address `probe`.
fn hostile_tables(
    name: &str,
    entries: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    probe: u64,
) -> contract::GuestImage {
    common::assemble(name, |a| {
        let root = 0x20_0000u64;
        a.mov(rdi, root)?;
        a.mov(rax, layout::PDPT | pte::P | pte::RW | pte::US)?;
        a.mov(qword_ptr(rdi), rax)?;
        entries(a)?;
        a.mov(rax, root)?;
        a.mov(cr3, rax)?;
        a.mov(rsi, probe)?;
        a.mov(rbx, qword_ptr(rsi))?;
        a.xor(eax, eax)?;
        a.out(u32::from(contract::abi::port::EXIT), eax)
    })
}

#[test]
fn hostile_page_tables_end_classified() {
    if !common::kvm_or_skip("hostile_page_tables_end_classified") {
        return;
    }
    let root = 0x20_0000u64;
    let opts = common::short();
    // A loop: the root's entry 1 points at the root itself (a recursive mapping). The walk
    // is four levels whatever the entries say: the read lands in the root's own frame,
    // seen as a page, and returns its first entry.
    let looped = hostile_tables(
        "pt-loop",
        |a| {
            a.mov(rax, root | pte::P | pte::RW)?;
            a.mov(qword_ptr(rdi + 8), rax)
        },
        0x80_0000_0000 | (1 << 30) | (1 << 21) | (1 << 12),
    );
    let r = common::run(&HwAssisted, &looped, &opts);
    match r.outcome {
        // The entry as written, with the accessed bit the walk itself set (bit 5).
        Outcome::Completed { result, .. } => assert_eq!(
            result & !(1 << 5),
            layout::PDPT | pte::P | pte::RW | pte::US,
            "{result:#x}"
        ),
        other => panic!("pt-loop: {other:?}"),
    }
    // A huge page where none is allowed: PS in a PML4 entry is a reserved bit.
    let huge = hostile_tables(
        "pt-huge-pml4",
        |a| {
            a.mov(rax, pte::P | pte::RW | pte::PS)?;
            a.mov(qword_ptr(rdi + 8), rax)
        },
        0x80_0000_0000,
    );
    let r = common::run(&HwAssisted, &huge, &opts);
    let (kind, detail) = common::fault_of(&r);
    assert_eq!(kind, FaultKind::Exception, "{detail}");
    assert!(detail.contains("#PF"), "{detail}");
    // A frame beyond RAM: a 1 GiB-aligned 2 MiB page at 2 GiB, where no memory slot is.
    let beyond = hostile_tables(
        "pt-beyond-ram",
        |a| {
            // Entry 1 → a PDPT at 2 MiB + 4 KiB → a PD at + 8 KiB → a 2 MiB page at 2 GiB.
            a.mov(rax, (root + 0x1000) | pte::P | pte::RW)?;
            a.mov(qword_ptr(rdi + 8), rax)?;
            a.mov(rax, (root + 0x2000) | pte::P | pte::RW)?;
            a.mov(qword_ptr(rdi + 0x1000), rax)?;
            a.mov(rax, 0x8000_0000u64 | pte::P | pte::RW | pte::PS)?;
            a.mov(qword_ptr(rdi + 0x2000), rax)
        },
        0x80_0000_0000,
    );
    let r = common::run(&HwAssisted, &beyond, &opts);
    let (kind, detail) = common::fault_of(&r);
    assert!(
        matches!(
            kind,
            FaultKind::BadMemoryAccess | FaultKind::BadDeviceAccess
        ),
        "{kind:?}: {detail}"
    );
    // The guest kernel trashes the IDT the VMM built (its own machine's), then faults:
    // #UD, #DF and a triple fault; KVM shuts the VM down.
    let trashed = common::assemble("idt-trashed", |a| {
        a.mov(rdi, layout::IDT)?;
        a.mov(ecx, 512)?;
        a.xor(eax, eax)?;
        a.rep().stosq()?;
        a.ud2()
    });
    let r = common::run(&HwAssisted, &trashed, &opts);
    let (kind, detail) = common::fault_of(&r);
    assert_eq!(kind, FaultKind::Shutdown, "{detail}");
}
