use contract::abi::hypercall::{mmu, multicall, MAX_BATCH, MAX_CONSOLE_WRITE, MAX_MULTICALL};
use contract::record::FaultKind;
use kvm_bindings::kvm_regs;

use super::*;

pub(super) const RAM: u64 = 4 << 20;

pub(super) fn setup() -> (Hypervisor, GuestMemoryMmap) {
    let mem = machine::guest_memory(RAM).unwrap();
    machine::setup::write_page_tables(&mem, RAM).unwrap();
    let leaf = CpuidLeaf {
        function: 0,
        index: 0,
        indexed: false,
        regs: [0xD, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
    };
    let mut hv = Hypervisor::new(RAM, &Limits::default(), CpuidTable(vec![leaf]));
    hv.setup(&mem).unwrap();
    ::monitor::install(&mem).unwrap();
    (hv, mem)
}

fn ret(e: Effect) -> i64 {
    match e {
        Effect::Return(v) => v,
        other => panic!("expected a return, got {other:?}"),
    }
}

#[test]
fn numbers_round_trip() {
    for h in Hypercall::ALL {
        assert_eq!(Hypercall::try_from(h.number()), Ok(h));
    }
    assert!(Hypercall::try_from(0).is_err());
    assert!(Hypercall::try_from(u64::MAX).is_err());
}

#[test]
fn setup_masks_events_and_the_monitor_hides_the_scratch_table() {
    let (hv, mem) = setup();
    assert!(hv.masked(&mem));
    assert!(!hv.pending(&mem));
    let at = machine::setup::pte_address(layout::SCRATCH_PT).unwrap();
    let e: u64 = mem.read_obj(GuestAddress(at)).unwrap();
    assert_eq!(e & pte::US, 0);
}

#[test]
fn console_write_validates_its_buffer() {
    let (mut hv, mem) = setup();
    mem.write_slice(b"hello", GuestAddress(0x20_000)).unwrap();
    assert_eq!(
        ret(hv.call(&mem, Hypercall::ConsoleWrite, [0x20_000, 5, 0])),
        5
    );
    assert_eq!(hv.devices.console.text(), "hello");
    let bad = [
        ([layout::BOOT_INFO, 5, 0], errno::EFAULT), // the monitor's region
        ([RAM - 2, 5, 0], errno::EFAULT),           // runs off the end of RAM
        ([u64::MAX - 1, 5, 0], errno::EFAULT),      // wraps around
        ([0x20_000, 1 << 40, 0], errno::E2BIG),     // absurd length
        ([0x20_000, MAX_CONSOLE_WRITE + 1, 0], errno::E2BIG),
    ];
    for (args, want) in bad {
        assert_eq!(
            ret(hv.call(&mem, Hypercall::ConsoleWrite, args)),
            want,
            "{args:x?}"
        );
    }
    assert_eq!(hv.devices.console.text(), "hello");
}

#[test]
fn mmu_update_only_touches_the_guests_own_page_table() {
    let (mut hv, mem) = setup();
    let reqs = 0x20_000;
    let good = layout::SCRATCH_FRAME_B | pte::P | pte::RW | pte::US;
    let cases = [
        ((layout::SCRATCH_PT, good), 1),
        ((layout::PML4, good), errno::EPERM), // the VMM's table
        ((layout::SCRATCH_PT + 3, good), errno::EPERM), // misaligned
        ((layout::SCRATCH_PT, layout::GDT | 7), errno::EINVAL), // maps the VMM's GDT
        ((layout::SCRATCH_PT, RAM | 7), errno::EINVAL), // beyond RAM
        ((layout::SCRATCH_PT, good | pte::PS), errno::EINVAL),
        ((layout::SCRATCH_PT, layout::SCRATCH_PT | 7), errno::EINVAL), // its own table
        ((layout::SCRATCH_PT, layout::SCRATCH_PT | 5), errno::EINVAL), // … even read-only
        ((layout::SCRATCH_PT, 0x5000 | 7), 1), // any page of guest RAM, page 0 included
        ((layout::SCRATCH_PT, 7), 1),
    ];
    for ((ptr, val), want) in cases {
        Hypervisor::write_u64(&mem, reqs, ptr).unwrap();
        Hypervisor::write_u64(&mem, reqs + 8, val).unwrap();
        let got = ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, mmu::FLUSH_TLB]));
        assert_eq!(got, want, "{ptr:#x} <- {val:#x}");
    }
    assert!(hv.mmu_sync.flush);
    assert_eq!(hv.mmu_sync.writes.len(), 3);
    assert_eq!(hv.mmu_sync.writes[0], (layout::SCRATCH_PT, good));
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, MAX_BATCH + 1, 0])),
        errno::E2BIG
    );
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, 2])),
        errno::EINVAL
    );
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuUpdate, [layout::PML4, 1, 0])),
        errno::EFAULT
    );
}

#[test]
fn a_batch_is_all_or_nothing() {
    let (mut hv, mem) = setup();
    let reqs = 0x20_000;
    Hypervisor::write_u64(&mem, reqs, layout::SCRATCH_PT).unwrap();
    Hypervisor::write_u64(&mem, reqs + 8, layout::SCRATCH_FRAME_B | 7).unwrap();
    Hypervisor::write_u64(&mem, reqs + 16, layout::PD).unwrap();
    Hypervisor::write_u64(&mem, reqs + 24, layout::SCRATCH_FRAME_B | 7).unwrap();
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 2, 0])),
        errno::EPERM
    );
    assert!(hv.mmu_sync.writes.is_empty());
    // Two batches of 300 in one hypercall (a multicall) exceed MAX_BATCH.
    assert_eq!(ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, 0])), 1);
    hv.mmu_sync
        .writes
        .resize(MAX_BATCH as usize, (layout::SCRATCH_PT, 0));
    assert_eq!(
        ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, 0])),
        errno::E2BIG
    );
}

#[test]
fn new_baseptr_accepts_only_a_copy_of_the_vmm_root() {
    let (mut hv, mem) = setup();
    let root = 0x18_0000;
    let e0: u64 = mem.read_obj(GuestAddress(layout::PML4)).unwrap();
    Hypervisor::write_u64(&mem, root, e0).unwrap();
    Hypervisor::write_u64(&mem, root + 8, layout::SCRATCH_FRAME_A | 7).unwrap();
    assert_eq!(
        ret(hv.call(&mem, Hypercall::NewBaseptr, [root, 0, 0])),
        errno::EPERM
    );
    Hypervisor::write_u64(&mem, root + 8, 0).unwrap();
    assert_eq!(ret(hv.call(&mem, Hypercall::NewBaseptr, [root, 0, 0])), 0);
    assert_eq!(hv.mmu_sync.new_root, Some(root));
    // Pinned: read-only to the guest, and the VMM will not write it for the guest.
    assert_eq!(
        ret(hv.call(&mem, Hypercall::Cpuid, [0, 0, root])),
        errno::EFAULT
    );
    for bad in [root + 8, layout::GDT, layout::SCRATCH_PT, RAM, 4 << 20] {
        assert_ne!(
            ret(hv.call(&mem, Hypercall::NewBaseptr, [bad, 0, 0])),
            0,
            "{bad:#x}"
        );
    }
}

#[test]
fn new_baseptr_of_the_last_page_of_the_address_space_is_refused() {
    // Regression: `root + PAGE_SIZE` overflowed (a panic in a debug build).
    let (mut hv, mem) = setup();
    for bad in [!0xFFF, 0x000F_FFFF_FFFF_F000, PINNABLE_END] {
        assert_eq!(
            ret(hv.call(&mem, Hypercall::NewBaseptr, [bad, 0, 0])),
            errno::EINVAL,
            "{bad:#x}"
        );
    }
}

#[test]
fn cpuid_multicall_tpr_and_device_read() {
    let (mut hv, mem) = setup();
    assert_eq!(ret(hv.call(&mem, Hypercall::Cpuid, [0, 0, 0x20_000])), 0);
    let ebx: u32 = mem.read_obj(GuestAddress(0x20_004)).unwrap();
    assert_eq!(ebx, 0x756E_6547);

    let calls = 0x30_000;
    let entries: [[u64; 4]; 4] = [
        [Hypercall::SetTpr.number(), 3, 0, 0],
        [Hypercall::SetTpr.number(), 99, 0, 0],
        [Hypercall::Exit.number(), 0, 0, 0],
        [0xBAD, 0, 0, 0],
    ];
    for (i, e) in entries.iter().enumerate() {
        for (j, w) in e.iter().enumerate() {
            Hypervisor::write_u64(&mem, calls + i as u64 * 40 + j as u64 * 8, *w).unwrap();
        }
    }
    assert_eq!(ret(hv.call(&mem, Hypercall::Multicall, [calls, 4, 0])), 0);
    let results: Vec<i64> = (0..4)
        .map(|i| Hypervisor::read_u64(&mem, calls + i * 40 + 32).unwrap() as i64)
        .collect();
    assert_eq!(results, [0, errno::EINVAL, errno::EINVAL, errno::ENOSYS]);
    assert_eq!(Hypervisor::tpr(&mem), 3);
    assert_eq!(hv.counters.counts()["multicall:set_tpr"], 1);
    assert_eq!(hv.counters.counts()["rejected:multicall:unknown"], 1);
    assert_eq!(
        ret(hv.call(&mem, Hypercall::Multicall, [calls, MAX_MULTICALL + 1, 0])),
        errno::E2BIG
    );

    let ticket = layout::MMIO_BASE + contract::abi::mmio::TICKET;
    assert_eq!(
        ret(hv.call(&mem, Hypercall::DeviceRead, [ticket, 3, 0x20_000])),
        3
    );
    let third: u64 = mem.read_obj(GuestAddress(0x20_010)).unwrap();
    assert_eq!(third, 3);
    assert_eq!(
        ret(hv.call(&mem, Hypercall::DeviceRead, [ticket + 4, 1, 0x20_000])),
        errno::EINVAL
    );
    assert_eq!(
        ret(hv.call(
            &mem,
            Hypercall::DeviceRead,
            [ticket, 1, layout::SHARED_INFO]
        )),
        errno::EFAULT
    );
    assert_eq!(
        ret(hv.call(&mem, Hypercall::DeviceRead, [ticket, 0, 0x20_000])),
        errno::EINVAL
    );
}

#[test]
fn events_are_delivered_only_when_unmasked_and_registered() {
    let (mut hv, mem) = setup();
    // A trap table with the timer's gate pointing at 0x10_0040.
    let table = 0x20_000;
    let (low, high) = machine::setup::interrupt_gate(0x10_0040, 0x08, 0);
    let gate = table + u64::from(TIMER_VECTOR) * 16;
    Hypervisor::write_u64(&mem, gate, low).unwrap();
    Hypervisor::write_u64(&mem, gate + 8, high).unwrap();
    let bytes = (u64::from(TIMER_VECTOR) + 1) * 16;
    assert_eq!(
        ret(hv.call(&mem, Hypercall::SetTrapTable, [table, bytes, 0])),
        1
    );

    assert_eq!(ret(hv.call(&mem, Hypercall::SetTimer, [0, 0, 0])), 0);
    hv.poll_timer(&mem);
    assert!(hv.pending(&mem));
    let mut regs = kvm_regs {
        rip: 0x10_0000,
        rsp: 0xF_FF08,
        rflags: 0x2,
        rax: 7,
        ..Default::default()
    };
    assert_eq!(hv.deliver_pending(&mem, &mut regs), Ok(false)); // masked
    hv.set_mask(&mem, false);
    assert_eq!(hv.deliver_pending(&mem, &mut regs), Ok(true));
    assert_eq!(regs.rip, 0x10_0040);
    assert_eq!(regs.rsp, 0xF_FF00 - 40);
    assert!(hv.masked(&mem) && !hv.pending(&mem));
    assert_eq!(hv.injections, 1);

    // The guest's `iret` pushes RAX and returns through the frame.
    regs.rsp -= 8;
    Hypervisor::write_u64(&mem, regs.rsp, 7).unwrap();
    regs.rax = 0;
    hv.iret(&mem, &mut regs).unwrap();
    assert_eq!((regs.rip, regs.rsp, regs.rax), (0x10_0000, 0xF_FF08, 7));
    assert!(!hv.masked(&mem));

    // A frame that would return to the kernel's code selector is refused.
    regs.rsp = 0x40_000;
    for (i, w) in [0u64, 0x10_0000, 0x08, 0x202, 0x40_100, 0x1B]
        .iter()
        .enumerate()
    {
        Hypervisor::write_u64(&mem, regs.rsp + i as u64 * 8, *w).unwrap();
    }
    assert_eq!(hv.iret(&mem, &mut regs), Err(errno::EINVAL));
    regs.rsp = layout::MONITOR_STACK_TOP - 0x100;
    assert_eq!(hv.iret(&mem, &mut regs), Err(errno::EFAULT));
}

#[test]
fn a_callback_frame_needs_a_writable_stack() {
    let (mut hv, mem) = setup();
    let mut regs = kvm_regs {
        rip: 0x10_0000,
        rsp: layout::MONITOR_STACK_TOP, // the monitor's stack
        ..Default::default()
    };
    let r = hv.push_callback_frame(&mem, &mut regs, 0x10_0040, Some(0));
    assert!(matches!(
        r,
        Err(Outcome::GuestFault {
            kind: FaultKind::BadMemoryAccess,
            ..
        })
    ));
    assert_eq!(hv.injections, 0);
}

/// A root that repeats the VMM's first PML4 entry and nothing else (a valid copy).
fn valid_root(mem: &GuestMemoryMmap, root: u64) {
    let e0: u64 = mem.read_obj(GuestAddress(layout::PML4)).unwrap();
    for i in 0..512 {
        Hypervisor::write_u64(mem, root + i * 8, 0).unwrap();
    }
    Hypervisor::write_u64(mem, root, e0).unwrap();
}

fn map_scratch(hv: &mut Hypervisor, mem: &GuestMemoryMmap, index: u64, val: u64) -> i64 {
    let reqs = 0x20_000;
    Hypervisor::write_u64(mem, reqs, layout::SCRATCH_PT + index * 8).unwrap();
    Hypervisor::write_u64(mem, reqs + 8, val).unwrap();
    ret(hv.call(mem, Hypercall::MmuUpdate, [reqs, 1, 0]))
}

#[test]
fn a_frame_with_a_writable_alias_is_never_pinned() {
    let (mut hv, mem) = setup();
    let x = 0x18_0000;
    valid_root(&mem, x);
    // (a) an alias of X, writable: allowed while X is an ordinary page …
    assert_eq!(map_scratch(&mut hv, &mem, 1, x | 7), 1);
    assert_eq!(hv.types.writable_mappings(x), 1);
    // (b) … so X cannot become a page table: the escape's pin is refused.
    assert_eq!(
        ret(hv.call(&mem, Hypercall::NewBaseptr, [x, 0, 0])),
        errno::EPERM
    );
    assert_eq!(hv.mmu_sync.new_root, None);
    // A second writable alias, then both made read-only: now X may be pinned.
    assert_eq!(map_scratch(&mut hv, &mem, 2, x | 7), 1);
    assert_eq!(hv.types.writable_mappings(x), 2);
    assert_eq!(map_scratch(&mut hv, &mem, 1, x | 5), 1);
    assert_eq!(map_scratch(&mut hv, &mem, 2, 0), 1);
    assert_eq!(hv.types.writable_mappings(x), 0);
    assert_eq!(ret(hv.call(&mem, Hypercall::NewBaseptr, [x, 0, 0])), 0);
    // The reverse order: a pinned X is never mapped writable again.
    assert_eq!(map_scratch(&mut hv, &mem, 3, x | 7), errno::EPERM);
    assert_eq!(map_scratch(&mut hv, &mem, 3, x | 5), 1);
    // The counts are the scratch table's, recomputed.
    let recount = hv
        .types
        .scratch
        .iter()
        .filter(|&&e| PageTypes::writable_frame(e) == Some(x))
        .count();
    assert_eq!(recount as u32, hv.types.writable_mappings(x));
}

#[test]
fn a_batch_that_aliases_then_a_pin_in_one_multicall_is_refused() {
    let (mut hv, mem) = setup();
    let x = 0x18_0000;
    valid_root(&mem, x);
    let (reqs, calls) = (0x20_000, 0x21_000);
    Hypervisor::write_u64(&mem, reqs, layout::SCRATCH_PT + 8).unwrap();
    Hypervisor::write_u64(&mem, reqs + 8, x | 7).unwrap();
    for (i, (nr, a0, a1)) in [
        (Hypercall::MmuUpdate.number(), reqs, 1),
        (Hypercall::NewBaseptr.number(), x, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let at = calls + i as u64 * multicall::ENTRY_SIZE;
        for (k, v) in [nr, a0, a1, 0, 0].into_iter().enumerate() {
            Hypervisor::write_u64(&mem, at + k as u64 * 8, v).unwrap();
        }
    }
    assert_eq!(ret(hv.call(&mem, Hypercall::Multicall, [calls, 2, 0])), 0);
    let second: u64 = mem
        .read_obj(GuestAddress(
            calls + multicall::ENTRY_SIZE + multicall::RESULT,
        ))
        .unwrap();
    assert_eq!(second as i64, errno::EPERM);
    assert_eq!(hv.mmu_sync.new_root, None);
}

#[test]
fn a_multicall_that_pins_its_own_page_gets_no_result_written_there() {
    let (mut hv, mem) = setup();
    // The list sits in page P at +0x800; its entries look "not present" to the root
    // check (bit 0 clear), so P passes as a copy of the VMM's root.
    let p = 0x19_0000;
    valid_root(&mem, p);
    let calls = p + 0x800;
    let sentinel = 0x54u64; // bit 0 clear: not a present entry
    for (i, (nr, a0)) in [
        (Hypercall::NewBaseptr.number(), p),
        (Hypercall::SetTpr.number(), 4),
    ]
    .into_iter()
    .enumerate()
    {
        let at = calls + i as u64 * multicall::ENTRY_SIZE;
        for (k, v) in [nr, a0, 0, 0, sentinel].into_iter().enumerate() {
            Hypervisor::write_u64(&mem, at + k as u64 * 8, v).unwrap();
        }
    }
    assert_eq!(
        ret(hv.call(&mem, Hypercall::Multicall, [calls, 2, 0])),
        errno::EFAULT
    );
    // P is pinned, and not one byte of it was written by the VMM.
    assert_eq!(hv.mmu_sync.new_root, Some(p));
    for i in 0..2 {
        let at = calls + i * multicall::ENTRY_SIZE + multicall::RESULT;
        let v: u64 = mem.read_obj(GuestAddress(at)).unwrap();
        assert_eq!(v, sentinel, "entry {i}");
    }
    // The second entry never ran.
    assert_eq!(Hypervisor::tpr(&mem), 0);
}
