//! One step of a hostile guest's sequence: the guest prepares its memory, makes the call
//! (or an `iret`, or takes an event), and every property is checked; what the step
//! reached is counted.

use contract::abi::hypercall::{errno, multicall, Hypercall};
use contract::abi::{layout, PAGE_SIZE};
use kvm_bindings::kvm_regs;
use machine::setup::pte;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use vm_memory::GuestMemoryMmap;

use super::invariants::{check, returned};
use super::memory::{guest_write, guest_write_u64s, read_u64, snapshot};
use super::{documented, Op, DOCUMENTED, OWN_PAGE, RAM};
use crate::hypercalls::{Effect, Hypervisor, PTE_FRAME};

/// What the sequences reached, so a test can tell that the generator gets to the states
/// that matter (and not only to early refusals).
#[derive(Debug, Default)]
pub(super) struct Reached {
    /// Guest roots pinned.
    pub(super) pins: u32,
    /// `new_baseptr` refused with EPERM while the frame had a writable alias.
    pub(super) alias_pin_refused: u32,
    /// `mmu_update` refused with EPERM while a request mapped a pinned frame writable.
    pub(super) pinned_rw_refused: u32,
    /// Multicalls that pinned the page holding their own list (and stopped with EFAULT).
    pub(super) self_pinning_multicalls: u32,
    /// PTE writes validated and handed to the monitor routine.
    pub(super) pte_writes: u32,
    /// Hypercalls made, by result: accepted and refused.
    pub(super) accepted: u32,
    pub(super) refused: u32,
}

/// Runs one step; returns whether the run goes on.
pub(super) fn step(
    hv: &mut Hypervisor,
    mem: &GuestMemoryMmap,
    op: &Op,
    reached: &mut Reached,
) -> Result<bool, TestCaseError> {
    // The guest prepares its memory first, then the snapshot is the state at the call.
    let call = |hv: &mut Hypervisor, nr: u64, args: [u64; 3]| match Hypercall::try_from(nr) {
        Ok(h) => hv.call(mem, h, args),
        Err(_) => Effect::Return(errno::ENOSYS),
    };
    let mut list: Option<(u64, u64)> = None;
    let pending = match op {
        Op::Raw { nr, args } => Some((*nr, *args)),
        Op::Mmu {
            at,
            reqs,
            extra,
            flags,
        } => {
            let words: Vec<u64> = reqs.iter().flat_map(|&(p, v)| [p, v]).collect();
            guest_write_u64s(hv, mem, *at, &words);
            let n = (reqs.len() as u64).wrapping_add(*extra);
            Some((Hypercall::MmuUpdate.number(), [*at, n, *flags]))
        }
        Op::Root { frame, ad, tamper } => {
            let mut words: Vec<u64> = (0..512)
                .map(|i| read_u64(mem, layout::PML4 + i * 8))
                .collect();
            if *ad {
                words[0] ^= 0x60;
            }
            if let Some((i, v)) = tamper {
                words[*i as usize] = *v;
            }
            guest_write_u64s(hv, mem, *frame, &words);
            Some((Hypercall::NewBaseptr.number(), [*frame, 0, 0]))
        }
        Op::Multi {
            page,
            offset,
            root_copy,
            entries,
            extra,
        } => {
            if *root_copy {
                let mut words = vec![0u64; 512];
                words[0] = read_u64(mem, layout::PML4);
                guest_write_u64s(hv, mem, *page, &words);
            }
            let at = page.wrapping_add(*offset);
            let sentinel = 0x5A5A_0000_0000_0000u64;
            let own = |a: u64| if a == OWN_PAGE { *page } else { a };
            let words: Vec<u64> = entries
                .iter()
                .flat_map(|&(nr, [a, b, c])| [nr, own(a), b, c, sentinel])
                .collect();
            guest_write_u64s(hv, mem, at, &words);
            let n = (entries.len() as u64).wrapping_add(*extra);
            list = Some((at, entries.len() as u64));
            Some((Hypercall::Multicall.number(), [at, n, 0]))
        }
        Op::Fill { at, bytes } => {
            guest_write(hv, mem, *at, bytes);
            None
        }
        Op::Iret { .. } | Op::Event { .. } => None,
    };
    let pinned_before = hv.types.pinned.clone();
    let before = snapshot(hv, mem);
    let mut go_on = true;
    match (pending, op) {
        (Some((nr, args)), _) => {
            let aliased = hv.types.writable_mappings(args[0]) > 0;
            let maps_pinned_rw = matches!(op, Op::Mmu { reqs, .. } if reqs.iter().any(|&(_, v)| {
                v & pte::P != 0 && v & pte::RW != 0 && hv.types.is_pinned(v & PTE_FRAME)
            }));
            let e = call(hv, nr, args);
            returned(&e)?;
            let newly = hv.types.pinned.len() - pinned_before.len();
            reached.pins += newly as u32;
            reached.pte_writes += hv.mmu_sync.writes.len() as u32;
            if let Effect::Return(v) = e {
                if v < 0 {
                    reached.refused += 1;
                } else {
                    reached.accepted += 1;
                }
                match Hypercall::try_from(nr) {
                    Ok(Hypercall::NewBaseptr) if v == errno::EPERM && aliased => {
                        reached.alias_pin_refused += 1
                    }
                    Ok(Hypercall::MmuUpdate) if v == errno::EPERM && maps_pinned_rw => {
                        reached.pinned_rw_refused += 1
                    }
                    Ok(Hypercall::Multicall)
                        if v == errno::EFAULT
                            && newly > 0
                            && list.is_some_and(|(at, _)| {
                                hv.types.is_pinned(at & !(PAGE_SIZE - 1))
                            }) =>
                    {
                        reached.self_pinning_multicalls += 1
                    }
                    _ => {}
                }
            }
            go_on = matches!(e, Effect::Return(_) | Effect::Block | Effect::Iret);
            if let (Some((at, n)), Effect::Return(_)) = (list, &e) {
                for i in 0..n {
                    // A list that wraps around the address space is refused whole (and
                    // the guest could not write its end either).
                    let Some(slot) = at.checked_add(i * multicall::ENTRY_SIZE + multicall::RESULT)
                    else {
                        continue;
                    };
                    // A slot in a page pinned before the call held whatever was there: the
                    // guest could not write its entry, and the VMM does not write results
                    // there (that the page is unchanged is checked below).
                    let pinned = |a: u64| pinned_before.contains(&(a & !(PAGE_SIZE - 1)));
                    if let Some(v) = slot
                        .checked_add(8)
                        .filter(|&end| end <= RAM && !pinned(slot) && !pinned(end - 1))
                        .map(|_| read_u64(mem, slot))
                    {
                        prop_assert!(
                            v == 0x5A5A_0000_0000_0000 || documented(v as i64),
                            "multicall entry {} got {:#x}",
                            i,
                            v
                        );
                    }
                }
            }
        }
        (None, Op::Iret { rsp, frame }) => {
            guest_write_u64s(hv, mem, *rsp, frame);
            let before = snapshot(hv, mem);
            let mut regs = kvm_regs {
                rsp: *rsp,
                rip: 0x10_0000,
                rflags: 0x202,
                ..Default::default()
            };
            if let Err(e) = hv.iret(mem, &mut regs) {
                prop_assert!(DOCUMENTED.contains(&e), "iret refused with {}", e);
            } else {
                prop_assert!(regs.rip < RAM, "iret to {:#x}", regs.rip);
            }
            return check(hv, mem, &before, &pinned_before).map(|()| true);
        }
        (
            None,
            Op::Event {
                rsp,
                rip,
                error_code,
                unmask,
            },
        ) => {
            hv.set_mask(mem, !unmask);
            let before = snapshot(hv, mem);
            let mut regs = kvm_regs {
                rsp: *rsp,
                rip: *rip,
                rflags: 0x202,
                ..Default::default()
            };
            match hv.push_callback_frame(mem, &mut regs, 0x10_0040, *error_code) {
                Ok(()) => prop_assert_eq!(regs.rip, 0x10_0040),
                Err(contract::Outcome::GuestFault { .. }) => {}
                Err(o) => prop_assert!(false, "event delivery ended with {:?}", o),
            }
            return check(hv, mem, &before, &pinned_before).map(|()| true);
        }
        (None, _) => {}
    }
    check(hv, mem, &before, &pinned_before)?;
    Ok(go_on)
}
