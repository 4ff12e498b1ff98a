//! What must hold after every trap of a fuzzed guest, and the runner that checks it.

use contract::abi::{layout, PAGE_SIZE};
use contract::Outcome;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{Guest, DATA, GUEST_IDT, PRIVATE, RAM};
use crate::dispatch::Handled;
use crate::instructions::mock::{boot_cpu, Bench};
use crate::platform::Platform;
use crate::vcpu::VirtualCpu;
use contract::x86::rflags;

/// The bench for `g`: its code at [`CODE`] (or at its RIP, where that is writable RAM),
/// its registers, data, stack and IDT; the monitor's private pages filled with a pattern,
/// so that even a write of zeros there shows.
fn bench(g: &Guest) -> Bench {
    let mut b = Bench::new(&g.code);
    let pattern: Vec<u8> = (0..PRIVATE.end - PRIVATE.start)
        .map(|i| (i as u8) ^ 0xA5)
        .collect();
    b.mock.put(PRIVATE.start, &pattern);
    b.mock.put(DATA, &g.data);
    // Two plausible PTE values in the data, for `mov [pt], reg`-from-memory forms.
    b.mock
        .put(DATA + 64, &(layout::SCRATCH_FRAME_A | 7).to_le_bytes());
    b.mock.put(DATA + 72, &(layout::IDT | 7).to_le_bytes());
    // Two pseudo-descriptors for LGDT/LIDT: a table inside the monitor's IDT, and one that ends
    // inside the monitor.
    let mut pd = [0u8; 10];
    pd[..2].copy_from_slice(&0xFFFu16.to_le_bytes());
    pd[2..].copy_from_slice(&(layout::IDT + 0x100).to_le_bytes());
    b.mock.put(DATA + 80, &pd);
    pd[2..].copy_from_slice(&(layout::MONITOR_BASE - 0x800).to_le_bytes());
    b.mock.put(DATA + 96, &pd);
    if let Some(gates) = &g.idt {
        b.guest_idt(GUEST_IDT, gates);
    }
    b.regs.gpr = g.gpr;
    if let Some((r, addr)) = g.aim {
        b.regs.gpr[r] = addr;
    }
    b.regs.rflags = g.rflags;
    let sp = b.regs.rsp();
    if sp.checked_add(64).is_some_and(|end| end <= RAM) {
        b.mock.put(sp, &g.stack);
    }
    if let Some(rip) = g.rip {
        b.regs.rip = rip;
        if rip
            .checked_add(g.code.len() as u64)
            .is_some_and(|e| e <= RAM)
        {
            b.mock.put(rip, &g.code);
        }
    }
    b.emu.cpu.vif = g.vif;
    b.mock.timer_armed = g.timer_armed;
    b.mock.timer_due = g.timer_due;
    b
}

fn private_snapshot(b: &mut Bench) -> Vec<u8> {
    let mut buf = vec![0u8; (PRIVATE.end - PRIVATE.start) as usize];
    b.mock
        .read_phys(PRIVATE.start, &mut buf)
        .expect("the mock backs the monitor's region");
    buf
}

/// The first differing address of two snapshots of the private range.
fn first_change(before: &[u8], after: &[u8]) -> Option<u64> {
    before
        .iter()
        .zip(after)
        .position(|(a, b)| a != b)
        .map(|i| PRIVATE.start + i as u64)
}

/// Whether a trap's result is one of the classified ones. A fault names the trapping RIP,
/// or the one the trap moved to (a timer that cannot be delivered after an emulated
/// instruction is found at the next one).
fn classified(h: &Handled, rip: u64, now: u64) -> Result<(), TestCaseError> {
    prop_assert!(!h.name.is_empty(), "a trap without a name");
    match &h.stop {
        None | Some(Outcome::Completed { .. }) => {}
        Some(Outcome::GuestFault {
            rip: at, detail, ..
        }) => {
            prop_assert!(
                *at == Some(rip) || *at == Some(now),
                "the fault names {:x?}, neither the trapping RIP {:#x} nor {:#x}",
                at,
                rip,
                now
            );
            prop_assert!(!detail.is_empty(), "a fault without a reason");
        }
        Some(other) => prop_assert!(false, "an unclassified end: {:?}", other),
    }
    Ok(())
}

/// What the virtual CPU may have changed since boot.
fn cpu_within_bounds(cpu: &VirtualCpu, boot: &VirtualCpu) -> Result<(), TestCaseError> {
    const CR0_MUTABLE: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 18);
    const CR4_MUTABLE: u64 = (1 << 9) | (1 << 10);
    const EFER_MUTABLE: u64 = 1 | (1 << 11);
    const CR3_ADDR: u64 = 0x000F_FFFF_FFFF_F000;
    prop_assert_eq!(cpu.cpl, 0);
    prop_assert_eq!((cpu.cr0 ^ boot.cr0) & !CR0_MUTABLE, 0, "cr0 {:#x}", cpu.cr0);
    prop_assert_eq!((cpu.cr4 ^ boot.cr4) & !CR4_MUTABLE, 0, "cr4 {:#x}", cpu.cr4);
    prop_assert_eq!(
        cpu.cr3 & CR3_ADDR,
        boot.cr3 & CR3_ADDR,
        "cr3 {:#x}",
        cpu.cr3
    );
    prop_assert_eq!(
        (cpu.efer ^ boot.efer) & !EFER_MUTABLE,
        0,
        "efer {:#x}",
        cpu.efer
    );
    let monitor_end = layout::MONITOR_BASE + layout::MONITOR_SIZE;
    for (t, b) in [(cpu.gdtr, boot.gdtr), (cpu.idtr, boot.idtr)] {
        prop_assert!(
            t == b || !t.overlaps(layout::MONITOR_BASE, monitor_end),
            "a descriptor table over the monitor: {:?}",
            t
        );
    }
    Ok(())
}

/// Runs `g`'s traps, checking every property after each; `log` receives every result.
pub(super) fn run(g: &Guest, log: &mut Vec<Handled>) -> Result<(), TestCaseError> {
    let mut b = bench(g);
    let boot = boot_cpu();
    for t in &g.traps {
        if let Some(code) = &t.code {
            let rip = b.regs.rip;
            if rip.checked_add(code.len() as u64).is_some_and(|e| e <= RAM) {
                b.mock.put(rip, code);
            }
        }
        let rip = b.regs.rip;
        let before = private_snapshot(&mut b);
        let h = b.trap_vector(t.vector, t.error_code, t.cr2);
        classified(&h, rip, b.regs.rip)?;
        let after = private_snapshot(&mut b);
        prop_assert!(
            before == after,
            "trap {:?} at {:#x} ({}) wrote the monitor's private memory at {:#x?}",
            t.vector,
            rip,
            h.name,
            first_change(&before, &after)
        );
        for i in 0..512 {
            let e = b.mock.u64_at(layout::SCRATCH_PT + i * 8);
            let frame = e & 0x000F_FFFF_FFFF_F000;
            let allowed = frame + PAGE_SIZE <= RAM
                || frame == layout::SCRATCH_FRAME_A
                || frame == layout::SCRATCH_FRAME_B;
            prop_assert!(
                e & 1 == 0 || allowed,
                "scratch PTE {} = {:#x} maps a frame outside guest RAM and the scratch frames",
                i,
                e
            );
        }
        cpu_within_bounds(&b.emu.cpu, &boot)?;
        prop_assert_eq!(b.regs.rflags & rflags::IF, rflags::IF, "the real IF");
        prop_assert_eq!(b.regs.rflags & rflags::IOPL, 0, "the real IOPL");
        let stop = h.stop.is_some();
        log.push(h);
        if stop {
            break;
        }
        prop_assert!(
            !PRIVATE.contains(&b.regs.rip),
            "resumed inside the monitor at {:#x}",
            b.regs.rip
        );
    }
    Ok(())
}
