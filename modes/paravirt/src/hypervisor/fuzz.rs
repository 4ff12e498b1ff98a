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
//! `cargo test -p paravirt fuzz_` runs a few hundred sequences; `PROPTEST_CASES=N` runs `N`
//! (see `docs/security.md` for a campaign).

use std::collections::BTreeSet;

use contract::abi::hypercall::{errno, mmu, multicall, Hypercall};
use contract::abi::{layout, mmio, PAGE_SIZE};
use contract::Limits;
use kvm_bindings::kvm_regs;
use machine::setup::{pte, pte_address, write_page_tables};
use machine::testing::fuzz_cases;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{CpuidLeaf, Effect, Hypervisor, PageTypes, PINNABLE_END, PTE_ALLOWED_FLAGS, PTE_FRAME};

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
        6 => 1u64..=13,
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

/// A hypervisor on fresh guest memory with the machine's page tables, as the engine
/// sets it up.
fn setup() -> (Hypervisor, GuestMemoryMmap) {
    let mem = machine::guest_memory(RAM).expect("guest memory");
    write_page_tables(&mem, RAM).expect("page tables");
    let leaf = CpuidLeaf {
        function: 0,
        index: 0,
        indexed: false,
        regs: [0xD, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
    };
    let mut hv = Hypervisor::new(RAM, &Limits::default(), super::CpuidTable(vec![leaf]));
    hv.setup(&mem).expect("setup");
    ::monitor::install(&mem).expect("monitor");
    (hv, mem)
}

/// Writes `bytes` at `at` as the guest can: only RAM outside pinned page tables.
fn guest_write(hv: &Hypervisor, mem: &GuestMemoryMmap, at: u64, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        let Some(a) = at.checked_add(done as u64) else {
            return;
        };
        // The rest of this page, at most.
        let n = ((PAGE_SIZE - a % PAGE_SIZE) as usize).min(bytes.len() - done);
        if a < RAM && !hv.types.is_pinned(a & !(PAGE_SIZE - 1)) {
            let end = (done + n).min(done + (RAM - a) as usize);
            let _ = mem.write_slice(&bytes[done..end], GuestAddress(a));
        }
        done += n;
    }
}

fn guest_write_u64s(hv: &Hypervisor, mem: &GuestMemoryMmap, at: u64, words: &[u64]) {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    guest_write(hv, mem, at, &bytes);
}

fn read_u64(mem: &GuestMemoryMmap, at: u64) -> u64 {
    mem.read_obj(GuestAddress(at)).expect("backed")
}

/// The whole monitor's region in use, and every pinned page, before a call.
struct Snapshot {
    monitor: Vec<u8>,
    pinned: Vec<(u64, Vec<u8>)>,
}

fn snapshot(hv: &Hypervisor, mem: &GuestMemoryMmap) -> Snapshot {
    let page = |at: u64, len: u64| {
        let mut buf = vec![0u8; len as usize];
        mem.read_slice(&mut buf, GuestAddress(at)).expect("backed");
        buf
    };
    Snapshot {
        monitor: page(
            layout::MONITOR_BASE,
            layout::MONITOR_END - layout::MONITOR_BASE,
        ),
        pinned: hv
            .types
            .pinned
            .iter()
            .map(|&p| (p, page(p, PAGE_SIZE)))
            .collect(),
    }
}

/// The 512 entries of the page table at `at`.
fn table(mem: &GuestMemoryMmap, at: u64) -> Vec<u64> {
    let mut raw = vec![0u8; PAGE_SIZE as usize];
    mem.read_slice(&mut raw, GuestAddress(at)).expect("backed");
    raw.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Whether every present entry of the root at `root` repeats the VMM's (up to A/D).
fn maps_nothing_new(mem: &GuestMemoryMmap, root: u64) -> bool {
    let vmm = table(mem, layout::PML4);
    table(mem, root)
        .iter()
        .zip(&vmm)
        .all(|(e, v)| e & pte::P == 0 || (e | 0x60) == (v | 0x60))
}

/// Every property, after one call.
fn check(
    hv: &mut Hypervisor,
    mem: &GuestMemoryMmap,
    before: &Snapshot,
    pinned_before: &BTreeSet<u64>,
) -> Result<(), TestCaseError> {
    // The VMM wrote nothing into a page table pinned before the call.
    for (p, bytes) in &before.pinned {
        let mut now = vec![0u8; PAGE_SIZE as usize];
        mem.read_slice(&mut now, GuestAddress(*p)).expect("backed");
        prop_assert!(
            &now == bytes,
            "the VMM wrote into pinned page table {:#x}",
            p
        );
    }
    // Nothing in the monitor's region changed but the shared-info page and the identity
    // map entries of frames pinned by this call (made read-only).
    let mut now = vec![0u8; before.monitor.len()];
    mem.read_slice(&mut now, GuestAddress(layout::MONITOR_BASE))
        .expect("backed");
    let newly: BTreeSet<u64> = hv.types.pinned.difference(pinned_before).copied().collect();
    let off = |a: u64| (a - layout::MONITOR_BASE) as usize;
    let (pt0, shared) = (off(layout::PT0), off(layout::SHARED_INFO));
    let page = PAGE_SIZE as usize;
    for (from, to) in [(0, pt0), (pt0 + page, shared), (shared + page, now.len())] {
        prop_assert!(
            now[from..to] == before.monitor[from..to],
            "the VMM changed the monitor's region in {:#x}..{:#x}",
            layout::MONITOR_BASE + from as u64,
            layout::MONITOR_BASE + to as u64
        );
    }
    // In the identity map of the first 2 MiB, only the entries of frames pinned now.
    for (i, (a, b)) in before.monitor[pt0..pt0 + page]
        .chunks_exact(8)
        .zip(now[pt0..pt0 + page].chunks_exact(8))
        .enumerate()
    {
        let frame = i as u64 * PAGE_SIZE;
        prop_assert!(
            a == b || newly.contains(&frame),
            "the VMM changed the identity entry of {:#x}, which it did not pin",
            frame
        );
    }
    for &f in &newly {
        if let Some(at) = pte_address(f) {
            let e = read_u64(mem, at);
            prop_assert_eq!(
                e,
                f | pte::P | pte::US,
                "the identity entry of pinned {:#x}",
                f
            );
        }
    }
    // Xen's invariant, from the VMM's own accounting and recounted.
    let mut recount = std::collections::BTreeMap::<u64, u32>::new();
    for &e in &hv.types.scratch {
        if let Some(f) = PageTypes::writable_frame(e) {
            *recount.entry(f).or_default() += 1;
        }
    }
    prop_assert_eq!(&recount, &hv.types.writable, "incremental writable counts");
    for &p in &hv.types.pinned {
        prop_assert_eq!(
            hv.types.writable_mappings(p),
            0,
            "pinned {:#x} is writable",
            p
        );
        if p < RAM {
            let e = read_u64(
                mem,
                pte_address(p).expect("pinnable frames have 4 KiB entries"),
            );
            prop_assert_eq!(
                e & pte::RW,
                0,
                "pinned {:#x} writable in the identity map",
                p
            );
            prop_assert!(
                maps_nothing_new(mem, p),
                "pinned root {:#x} maps more than the VMM's",
                p
            );
        }
    }
    // What the monitor routine will do: every write valid on its own, and the result equal
    // to the VMM's copy of the scratch table.
    let sync = std::mem::take(&mut hv.mmu_sync);
    if let Some(root) = sync.new_root {
        prop_assert!(
            root == layout::PML4 || hv.types.is_pinned(root),
            "CR3 would load an unpinned root {:#x}",
            root
        );
    }
    for &(ptr, val) in &sync.writes {
        prop_assert!(
            (layout::SCRATCH_PT..layout::SCRATCH_PT + PAGE_SIZE).contains(&ptr) && ptr % 8 == 0,
            "a PTE write at {:#x}",
            ptr
        );
        if val & pte::P != 0 {
            let f = val & PTE_FRAME;
            prop_assert_eq!(
                val & !(PTE_FRAME | PTE_ALLOWED_FLAGS),
                0,
                "flags of {:#x}",
                val
            );
            prop_assert!(
                f + PAGE_SIZE <= RAM
                    || f == layout::SCRATCH_FRAME_A
                    || f == layout::SCRATCH_FRAME_B,
                "a PTE write maps frame {:#x}",
                f
            );
            prop_assert!(
                !(hv.types.is_pinned(f) && val & pte::RW != 0),
                "a PTE write maps pinned {:#x} writable",
                f
            );
        }
        mem.write_obj(val, GuestAddress(ptr)).expect("backed");
    }
    prop_assert_eq!(
        table(mem, layout::SCRATCH_PT),
        hv.types.scratch.clone(),
        "the scratch table differs from the VMM's copy"
    );
    Ok(())
}

fn returned(e: &Effect) -> Result<(), TestCaseError> {
    match e {
        Effect::Return(v) => prop_assert!(documented(*v), "undocumented result {}", v),
        Effect::Stop(contract::Outcome::TimedOut { .. })
        | Effect::Exit(_)
        | Effect::Block
        | Effect::Iret => {}
        Effect::Stop(o) => prop_assert!(false, "a hypercall ended the run with {:?}", o),
    }
    Ok(())
}

/// Runs one step; returns whether the run goes on.
/// What the sequences reached, so a test can tell that the generator gets to the states
/// that matter (and not only to early refusals).
#[derive(Debug, Default)]
struct Reached {
    /// Guest roots pinned.
    pins: u32,
    /// `new_baseptr` refused with EPERM while the frame had a writable alias.
    alias_pin_refused: u32,
    /// `mmu_update` refused with EPERM while a request mapped a pinned frame writable.
    pinned_rw_refused: u32,
    /// Multicalls that pinned the page holding their own list (and stopped with EFAULT).
    self_pinning_multicalls: u32,
    /// PTE writes validated and handed to the monitor routine.
    pte_writes: u32,
    /// Hypercalls made, by result: accepted and refused.
    accepted: u32,
    refused: u32,
}

fn step(
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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: fuzz_cases(256),
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    /// Random hypercall sequences keep Xen's invariant and never make the VMM write a page
    /// table for the guest.
    #[test]
    fn fuzz_hypercalls_keep_xens_invariant(ops in prop::collection::vec(op(), 1..24)) {
        let (mut hv, mem) = setup();
        let (before, pinned) = (snapshot(&hv, &mem), hv.types.pinned.clone());
        check(&mut hv, &mem, &before, &pinned)?;
        for op in &ops {
            if !step(&mut hv, &mem, op, &mut Reached::default())? {
                break;
            }
        }
    }
}

/// The generator reaches the states the invariant is about: guest roots get pinned, a
/// frame with a writable alias is refused as a root, a pinned frame is refused as a
/// writable mapping, a multicall pins the page of its own list, PTE writes go through.
#[test]
fn the_fuzzed_sequences_reach_pins_aliases_and_self_pinning_multicalls() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let ops = prop::collection::vec(op(), 1..24);
    let mut reached = Reached::default();
    for _ in 0..150 {
        let case = ops.new_tree(&mut runner).expect("a case").current();
        let (mut hv, mem) = setup();
        for op in &case {
            if !step(&mut hv, &mem, op, &mut reached).expect("the properties hold") {
                break;
            }
        }
    }
    assert!(reached.pins >= 20, "{reached:?}");
    assert!(reached.alias_pin_refused >= 1, "{reached:?}");
    assert!(reached.pinned_rw_refused >= 3, "{reached:?}");
    assert!(reached.self_pinning_multicalls >= 5, "{reached:?}");
    assert!(reached.pte_writes >= 30, "{reached:?}");
    assert!(reached.accepted >= 150, "{reached:?}");
    assert!(reached.refused >= 150, "{reached:?}");
    eprintln!("{reached:?}");
}
