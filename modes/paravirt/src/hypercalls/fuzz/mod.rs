//! Property-based fuzzing of the hypercall validator against random arguments and
//! page-table states.
//!
//! Each case is a random sequence of hypercalls on one hypervisor and its guest memory, as
//! a hostile paravirtual guest would make them: every number (unknown ones included) with
//! wild arguments; `mmu_update` batches whose `{ptr, val}` pairs alias a small set of
//! frames in the first 2 MiB (where roots can be pinned), the scratch frames and the
//! monitor; `new_baseptr` of valid copies of the VMM's root (with the accessed and dirty
//! bits changed, or one entry tampered with) and of random frames; multicalls whose lists
//! sit in the very pages they pin; cpuid, device_read and console_write with buffers over
//! pinned pages, the monitor and the end of RAM; `iret` frames and event deliveries on
//! wild stacks. Between calls the guest writes what it may write: RAM outside the pinned
//! page tables. After every call:
//!
//! * nothing panicked, and every result is a value ≥ 0 or one of the documented errno
//!   values (in RAX, in a multicall entry, from `iret`);
//! * Xen's invariant holds: no pinned frame has a writable mapping — the incremental
//!   counts are zero for every pinned frame and equal a recount of the VMM's validated copy
//!   of the scratch page table — and every pinned RAM frame is read-only in the identity
//!   map; every pinned root still maps nothing the VMM's root does not;
//! * the VMM wrote nothing into a frame that was pinned before the call, and nothing in
//!   the monitor's region but the shared-info page and the identity-map entries of the
//!   frames the call pinned (made read-only);
//! * the PTE writes handed to the monitor routine (`mmu_sync.writes`) are each valid on
//!   their own, and applied to the scratch page table they give exactly the VMM's copy.
//!
//! The generators are here; [`memory`] sets up a hypervisor on guest memory and writes
//! as the guest may, [`invariants`] checks every property after a call, [`steps`] makes
//! one step of a sequence and [`properties`] runs the sequences.
//!
//! `cargo test -p paravirt fuzz_` runs a few hundred sequences; `PROPTEST_CASES=N` runs `N`
//! (see `docs/security.md` for a campaign).

use contract::abi::hypercall::{errno, mmu, Hypercall};
use contract::abi::{layout, mmio, PAGE_SIZE};
use machine::setup::pte;
use proptest::prelude::*;

use super::PINNABLE_END;

mod invariants;
mod memory;
mod properties;
mod steps;

/// Guest RAM of the fuzzed hypervisor (as in its unit tests).
const RAM: u64 = 4 << 20;

/// The frames most cases fight over: candidate roots and list pages in the first 2 MiB,
/// page 0, the last pinnable page, the scratch frames, and monitor pages.
const FRAMES: &[u64] = &[
    0x0,
    0x1000,
    0x10_0000,
    0x18_0000,
    0x19_0000,
    0x1A_0000,
    PINNABLE_END - PAGE_SIZE,
    PINNABLE_END,
    RAM - PAGE_SIZE,
    layout::SCRATCH_FRAME_A,
    layout::SCRATCH_FRAME_B,
    layout::SCRATCH_PT,
    layout::PML4,
    layout::PT0,
    layout::IDT,
    layout::SHARED_INFO,
    0x000F_FFFF_FFFF_F000,
    !0xFFFu64,
];

const DOCUMENTED: [i64; 5] = [
    errno::EPERM,
    errno::E2BIG,
    errno::EFAULT,
    errno::EINVAL,
    errno::ENOSYS,
];

/// What a result must be: a value ≥ 0 or a documented errno.
fn documented(v: i64) -> bool {
    v >= 0 || DOCUMENTED.contains(&v)
}

/// The frames a sequence fights over most: two candidate roots and a low page.
const CONTESTED: &[u64] = &[0x1000, 0x18_0000, 0x19_0000];

/// Stands for "the page of this multicall's own list" in a generated entry.
const OWN_PAGE: u64 = 0x0BAD_0000_0000_0000;

fn frame() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => prop::sample::select(CONTESTED),
        3 => prop::sample::select(FRAMES),
        1 => (0u64..RAM / PAGE_SIZE).prop_map(|p| p * PAGE_SIZE),
    ]
    .boxed()
}

/// An address a hostile guest would name: in one of the contested frames (at its start,
/// its middle, near its end), at the edges of RAM, in the monitor, wrapping.
fn address() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => (frame(), prop_oneof![Just(0u64), Just(0x800), Just(0xFF8), Just(0xFFC), 0u64..PAGE_SIZE])
            .prop_map(|(f, o)| f + o),
        1 => prop_oneof![
            Just(RAM - 8),
            Just(RAM),
            Just(layout::MONITOR_STACK_TOP),
            Just(layout::BOOT_INFO),
            Just(0x8000_0000_0000u64),
            Just(u64::MAX),
            Just(u64::MAX - 7),
            Just(!0xFFFu64),
        ],
        1 => any::<u64>(),
    ]
    .boxed()
}

/// Where a request list goes: mostly a plain page of RAM, sometimes anywhere.
fn list_at() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => (0u64..256).prop_map(|k| 0x2_0000 + k * 16),
        1 => address(),
    ]
    .boxed()
}

/// A length or count: around the limits, or anything.
fn count() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => 0u64..8,
        1 => prop_oneof![Just(63u64), Just(64), Just(65), Just(511), Just(512), Just(513),
                         Just(4095), Just(4096), Just(4097)],
        1 => any::<u64>(),
    ]
    .boxed()
}

/// One argument of a raw hypercall.
fn arg() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => address(),
        2 => count(),
        1 => (0u64..512).prop_map(|i| layout::SCRATCH_PT + i * 8),
        1 => prop_oneof![Just(mmio::TICKET), Just(mmio::SCRATCH), Just(mmio::ID), Just(0x18)]
            .prop_map(|r| layout::MMIO_BASE + r),
    ]
    .boxed()
}

/// A hypercall number: a real one, or not.
fn number() -> BoxedStrategy<u64> {
    prop_oneof![
        6 => 1u64..=14,
        1 => Just(0u64),
        1 => 14u64..64,
        1 => any::<u64>(),
    ]
    .boxed()
}

/// A PTE value: a contested frame with plausible flags, forbidden flags, or anything.
fn pte_value() -> BoxedStrategy<u64> {
    let flags = prop_oneof![
        1 => Just(0u64),
        1 => Just(pte::P),
        4 => Just(pte::P | pte::US),
        1 => Just(pte::P | pte::RW),
        4 => Just(pte::P | pte::RW | pte::US),
        1 => Just(pte::P | pte::RW | pte::US | 0x60),
        1 => Just(pte::P | pte::RW | pte::US | (1 << 63)),
        1 => Just(pte::P | pte::RW | pte::PS),
        1 => Just(pte::P | 0x100),
        1 => Just(pte::P | 0x200),
        1 => 0u64..0x1000,
    ];
    prop_oneof![
        5 => (frame(), flags).prop_map(|(f, fl)| f | fl),
        1 => any::<u64>(),
    ]
    .boxed()
}

/// A PTE pointer: an entry of the scratch table, a misaligned one, or another table.
fn pte_ptr() -> BoxedStrategy<u64> {
    prop_oneof![
        6 => (0u64..8).prop_map(|i| layout::SCRATCH_PT + i * 8),
        2 => (0u64..512).prop_map(|i| layout::SCRATCH_PT + i * 8),
        1 => (0u64..PAGE_SIZE).prop_map(|i| layout::SCRATCH_PT + i),
        1 => address(),
    ]
    .boxed()
}

/// One step of a hostile guest.
#[derive(Debug, Clone)]
enum Op {
    /// Any number with any arguments.
    Raw { nr: u64, args: [u64; 3] },
    /// Writes a request list at `at` and calls `mmu_update` on it.
    Mmu {
        at: u64,
        reqs: Vec<(u64, u64)>,
        /// Added to the list's length (a count that does not match the list).
        extra: u64,
        flags: u64,
    },
    /// Writes a copy of the VMM's root into `frame` (accessed/dirty bits flipped, an entry
    /// tampered with) and asks for it as the new root.
    Root {
        frame: u64,
        ad: bool,
        tamper: Option<(u64, u64)>,
    },
    /// Writes a multicall list at `page + offset` (the page optionally a valid root copy,
    /// so that an entry can pin the list's own page) and runs it.
    Multi {
        page: u64,
        offset: u64,
        root_copy: bool,
        entries: Vec<(u64, [u64; 3])>,
        extra: u64,
    },
    /// Writes random bytes where the guest may write.
    Fill { at: u64, bytes: Vec<u8> },
    /// An `iret` with a frame at `rsp`.
    Iret { rsp: u64, frame: [u64; 6] },
    /// An event (a reflected exception or the timer) delivered on the stack at `rsp`.
    Event {
        rsp: u64,
        rip: u64,
        error_code: Option<u64>,
        unmask: bool,
    },
}

fn op() -> BoxedStrategy<Op> {
    let raw = (number(), [arg(), arg(), arg()]).prop_map(|(nr, args)| Op::Raw { nr, args });
    let mmu = (
        list_at(),
        prop::collection::vec((pte_ptr(), pte_value()), 0..6),
        prop_oneof![8 => Just(0u64), 1 => 1u64..3, 1 => any::<u64>()],
        prop_oneof![4 => Just(0u64), 4 => Just(mmu::FLUSH_TLB), 1 => any::<u64>()],
    )
        .prop_map(|(at, reqs, extra, flags)| Op::Mmu {
            at,
            reqs,
            extra,
            flags,
        });
    let root = (
        frame(),
        any::<bool>(),
        prop::option::weighted(0.3, (0u64..512, pte_value())),
    )
        .prop_map(|(frame, ad, tamper)| Op::Root { frame, ad, tamper });
    let entry = prop_oneof![
        // new_baseptr of a contested frame (possibly the list's own page)
        2 => frame().prop_map(|f| (Hypercall::NewBaseptr.number(), [f, 0, 0])),
        2 => Just((Hypercall::NewBaseptr.number(), [OWN_PAGE, 0, 0])),
        2 => (address(), 0u64..4).prop_map(|(at, n)| (Hypercall::MmuUpdate.number(), [at, n, 0])),
        1 => (number(), [arg(), arg(), arg()]),
    ];
    let multi = (
        frame(),
        prop_oneof![Just(0u64), Just(0x800), Just(0xFD8), 0u64..PAGE_SIZE],
        prop::bool::weighted(0.7),
        prop::collection::vec(entry, 0..5),
        prop_oneof![4 => Just(0u64), 1 => 1u64..3, 1 => any::<u64>()],
    )
        .prop_map(|(page, offset, root_copy, entries, extra)| Op::Multi {
            page,
            offset,
            root_copy,
            entries,
            extra,
        });
    let fill = (address(), prop::collection::vec(any::<u8>(), 1..64))
        .prop_map(|(at, bytes)| Op::Fill { at, bytes });
    let iret = (
        address(),
        (
            any::<u64>(),
            address(),
            prop_oneof![Just(0x23u64), Just(0x08), any::<u64>()],
            any::<u64>(),
            address(),
            prop_oneof![Just(0x1Bu64), Just(0x10), any::<u64>()],
        ),
    )
        .prop_map(|(rsp, (rax, rip, cs, rflags, sp, ss))| Op::Iret {
            rsp,
            frame: [rax, rip, cs, rflags, sp, ss],
        });
    let event = (
        address(),
        address(),
        prop::option::of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(|(rsp, rip, error_code, unmask)| Op::Event {
            rsp,
            rip,
            error_code,
            unmask,
        });
    prop_oneof![
        3 => raw,
        3 => mmu,
        2 => root,
        2 => multi,
        1 => fill,
        1 => iret,
        1 => event,
    ]
    .boxed()
}
