//! Hostile paravirtual guests: wild pointers, absurd lengths, unknown numbers, bad
//! frames and floods of hypercalls get error codes or a classified end within the
//! limits — and the engine keeps working afterwards.

mod common;

use std::time::Duration;

use common::kvm_or_skip;
use contract::abi::hypercall::{errno, Hypercall, PORT};
use contract::abi::{layout, mmio};
use contract::{FaultKind, Flavour, GuestImage, Limit, Limits, Outcome, RunOptions, RunRecord};
use guests::Params;
use iced_x86::code_asm::*;
use paravirt::Paravirt;

const LOAD: u64 = layout::DEFAULT_LOAD;

fn image(name: &str, body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestImage {
    let mut img = common::assemble(name, body);
    img.flavour = Flavour::Paravirt;
    img
}

fn run(img: &GuestImage, opts: &RunOptions) -> RunRecord {
    common::run(&Paravirt, img, opts)
}

/// `mov eax, nr; mov rdi/rsi/rdx, args; out PORT, eax`.
fn hypercall(a: &mut CodeAssembler, nr: u64, args: [u64; 3]) -> Result<(), IcedError> {
    a.mov(rdi, args[0])?;
    a.mov(rsi, args[1])?;
    a.mov(rdx, args[2])?;
    a.mov(rax, nr)?;
    a.out(u32::from(PORT), eax)
}

/// A hypercall whose result must be `want`: counts in RBX when it is.
fn expect(a: &mut CodeAssembler, nr: u64, args: [u64; 3], want: i64) -> Result<(), IcedError> {
    let mut skip = a.create_label();
    hypercall(a, nr, args)?;
    a.mov(rcx, want)?;
    a.cmp(rax, rcx)?;
    a.jne(skip)?;
    a.inc(rbx)?;
    a.set_label(&mut skip)?;
    a.nop()
}

fn exit(a: &mut CodeAssembler) -> Result<(), IcedError> {
    hypercall(a, Hypercall::Exit.number(), [0, 0, 0])?;
    a.hlt()
}

#[test]
fn wild_arguments_get_error_codes() {
    if !kvm_or_skip("wild_arguments_get_error_codes") {
        return;
    }
    let ram = layout::DEFAULT_RAM_SIZE;
    let cw = Hypercall::ConsoleWrite.number();
    let mmu = Hypercall::MmuUpdate.number();
    let scratch = 0x20_0000; // guest RAM the test uses as a buffer
    let checks: Vec<(u64, [u64; 3], i64)> = vec![
        (cw, [layout::PML4, 5, 0], errno::EFAULT), // the VMM's page tables
        (cw, [0, 5, 0], 5),                        // page 0 is the guest's RAM like any other
        (cw, [layout::MONITOR_BASE - 2, 5, 0], errno::EFAULT), // runs into the monitor's hole
        (cw, [ram - 2, 5, 0], errno::EFAULT),      // runs off the end of RAM
        (cw, [u64::MAX - 1, 5, 0], errno::EFAULT), // wraps around
        (cw, [LOAD, 1 << 40, 0], errno::E2BIG),    // absurd length
        (cw, [layout::MMIO_BASE, 8, 0], errno::EFAULT), // not RAM
        (0xDEAD, [0, 0, 0], errno::ENOSYS),
        (u64::MAX, [0, 0, 0], errno::ENOSYS),
        (0, [0, 0, 0], errno::ENOSYS),
        (mmu, [layout::PML4, 1, 0], errno::EFAULT), // requests in the VMM's region
        (mmu, [scratch, 1 << 30, 0], errno::E2BIG),
        (mmu, [scratch, 1, 0], errno::EPERM), // request: write the VMM's PML4
        (mmu, [scratch, 0, 0xFF], errno::EINVAL), // unknown flags
        (
            Hypercall::Cpuid.number(),
            [0, 0, layout::GDT],
            errno::EFAULT,
        ), // out = the GDT
        (
            Hypercall::Cpuid.number(),
            [0, 0, layout::SCRATCH_PT],
            errno::EFAULT,
        ),
        (
            Hypercall::SetTrapTable.number(),
            [LOAD, 17, 0],
            errno::EINVAL,
        ),
        (
            Hypercall::SetTrapTable.number(),
            [LOAD, 1 << 20, 0],
            errno::E2BIG,
        ),
        (
            Hypercall::Multicall.number(),
            [scratch, 1 << 20, 0],
            errno::E2BIG,
        ),
        (
            Hypercall::Multicall.number(),
            [layout::IDT, 1, 0],
            errno::EFAULT,
        ), // the IDT
        (
            Hypercall::DeviceRead.number(),
            [layout::MMIO_BASE + 4, 1, scratch],
            errno::EINVAL,
        ),
        (
            Hypercall::DeviceRead.number(),
            [layout::MMIO_BASE + mmio::TICKET, 1, layout::TSS],
            errno::EFAULT,
        ),
        (
            Hypercall::DeviceRead.number(),
            [layout::MMIO_BASE, 1 << 40, scratch],
            errno::E2BIG,
        ),
        (Hypercall::SetTpr.number(), [99, 0, 0], errno::EINVAL),
        (Hypercall::SetTimer.number(), [1 << 40, 0, 0], errno::EINVAL),
        (
            Hypercall::NewBaseptr.number(),
            [layout::PD, 0, 0],
            errno::EINVAL,
        ),
        (
            Hypercall::NewBaseptr.number(),
            [scratch + 1, 0, 0],
            errno::EINVAL,
        ),
        (Hypercall::Exit.number(), [1 << 40, 0, 0], errno::EINVAL),
    ];
    let n = checks.len() as u64;
    let img = image("wild", |a| {
        a.xor(ebx, ebx)?;
        // The one request mmu_update must refuse: write the VMM's PML4.
        a.mov(rax, scratch)?;
        a.mov(rcx, layout::PML4)?;
        a.mov(qword_ptr(rax), rcx)?;
        a.mov(qword_ptr(rax + 8), 0x7)?;
        for (nr, args, want) in &checks {
            expect(a, *nr, *args, *want)?;
        }
        // `iret` with a forged frame (kernel code selector) is refused, and the guest goes on.
        for w in [0x23u64, 0x12345, 0x202, 0x08, LOAD, 0] {
            a.mov(rax, w)?;
            a.push(rax)?;
        }
        expect(a, Hypercall::Iret.number(), [0, 0, 0], errno::EINVAL)?;
        a.add(rsp, 48)?;
        // … and so is a frame outside guest RAM.
        a.mov(rcx, rsp)?;
        a.mov(esp, (layout::MONITOR_STACK_TOP - 0x100) as u32)?;
        expect(a, Hypercall::Iret.number(), [0, 0, 0], errno::EFAULT)?;
        a.mov(rsp, rcx)?;
        exit(a)
    });
    let r = run(&img, &RunOptions::default());
    let want_result = n + 2;
    assert_eq!(
        r.outcome,
        Outcome::Completed {
            exit_code: 0,
            result: want_result,
            ending: contract::Ending::ExitPort
        },
        "{:?}",
        r.hypercalls
    );
    let rejected: u64 = r
        .hypercalls
        .iter()
        .filter(|(k, _)| k.starts_with("rejected:"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        rejected,
        want_result - 1,
        "every check but page 0 is refused"
    );
    assert_eq!(r.hypercalls["rejected:unknown"], 3);
    assert_eq!(r.hypercalls["rejected:console_write"], 6);
    assert_eq!(r.hypercalls["rejected:iret"], 2);
    assert_eq!(r.hypercalls["exit"], 1);
    assert_eq!(r.console, "\0\0\0\0\0", "five bytes of page 0");
}

#[test]
fn a_flood_of_hypercalls_ends_at_the_limits() {
    if !kvm_or_skip("a_flood_of_hypercalls_ends_at_the_limits") {
        return;
    }
    let flood = image("flood", |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        hypercall(a, 0xBAD, [u64::MAX, u64::MAX, u64::MAX])?;
        hypercall(a, Hypercall::ConsoleWrite.number(), [0x20_0000, 4096, 0])?; // zeros
        a.jmp(top)
    });
    let mut opts = RunOptions {
        limits: Limits {
            max_exits: 500,
            ..Limits::default()
        },
        ..RunOptions::default()
    };
    let r = run(&flood, &opts);
    assert!(
        matches!(
            r.outcome,
            Outcome::TimedOut {
                limit: Limit::ExitCount,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.total_exits(), 500);
    assert_eq!(r.hypercalls["rejected:unknown"], 250);

    // The console fills up first when it is small: a classified end too.
    opts.limits = Limits {
        max_console_bytes: 10_000,
        ..Limits::default()
    };
    let r = run(&flood, &opts);
    assert!(
        matches!(
            r.outcome,
            Outcome::TimedOut {
                limit: Limit::ConsoleBytes,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.console.len(), 10_000);

    // And the wall clock ends it when exits are plenty.
    opts.limits = Limits {
        wall: Duration::from_millis(300),
        max_exits: u64::MAX,
        max_console_bytes: usize::MAX,
        trace_events: 0,
    };
    let spin = image("spin", |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        hypercall(a, Hypercall::EventCheck.number(), [0, 0, 0])?;
        a.jmp(top)
    });
    let r = run(&spin, &opts);
    assert!(
        matches!(
            r.outcome,
            Outcome::TimedOut {
                limit: Limit::WallClock,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );

    // The engine still runs a normal guest correctly afterwards.
    let p = Params {
        b: 16,
        ..common::params("pio")
    };
    let r = common::run_workload(&Paravirt, "pio", p);
    assert!(r.verdict_ok(), "{:?} {:?}", r.outcome, r.mismatches);
    assert_eq!(r.hypercalls["console_write"], p.n.div_ceil(16));
}

#[test]
fn privileged_instructions_end_as_unported_and_name_the_instruction() {
    if !kvm_or_skip("privileged_instructions_end_as_unported_and_name_the_instruction") {
        return;
    }
    type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let cases: [(&str, Emit); 6] = [
        ("cli", |a| a.cli()),
        ("hlt", |a| a.hlt()),
        ("mov cr8,rax", |a| a.mov(cr8, rax)),
        ("invlpg [rsi]", |a| a.invlpg(byte_ptr(rsi))),
        ("out 0E9h,al", |a| a.out(0xE9, al)),
        ("lidt [rsp]", |a| a.lidt(ptr(rsp))),
    ];
    for (text, emit) in cases {
        let img = image(text, |a| {
            a.xor(eax, eax)?;
            emit(a)?;
            exit(a)
        });
        let r = run(&img, &RunOptions::default());
        match &r.outcome {
            Outcome::GuestFault { kind, rip, detail } => {
                assert_eq!(*kind, FaultKind::UnportedPrivilegedInstruction, "{detail}");
                assert_eq!(*rip, Some(LOAD + 2), "{text}");
                assert!(detail.starts_with(&format!("`{text}`")), "{detail}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn a_bad_stack_or_no_callback_ends_event_delivery_cleanly() {
    if !kvm_or_skip("a_bad_stack_or_no_callback_ends_event_delivery_cleanly") {
        return;
    }
    // A #DE with a registered callback but the stack pointing into the VMM's region.
    let img = image("bad-stack", |a| {
        let mut idt = a.create_label();
        let mut handler = a.create_label();
        let mut main = a.create_label();
        guests::asm::set_gate(a, idt, 0, handler)?;
        a.lea(rdi, ptr(idt))?;
        a.mov(esi, 16)?;
        a.mov(eax, Hypercall::SetTrapTable.number() as u32)?;
        a.out(u32::from(PORT), eax)?;
        a.jmp(main)?;
        a.set_label(&mut handler)?;
        exit(a)?;
        a.set_label(&mut main)?;
        a.mov(esp, layout::MONITOR_STACK_TOP as u32)?;
        a.xor(ecx, ecx)?;
        a.div(ecx)?;
        exit(a)?;
        a.set_label(&mut idt)?;
        a.db(&[0u8; 16])
    });
    let r = run(&img, &RunOptions::default());
    assert!(
        matches!(
            r.outcome,
            Outcome::GuestFault {
                kind: FaultKind::BadMemoryAccess,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.hypercalls["set_trap_table"], 1);

    // Blocking with the timer armed but no callback for it.
    let img = image("no-callback", |a| {
        hypercall(a, Hypercall::SetTimer.number(), [0, 0, 0])?;
        hypercall(a, Hypercall::Block.number(), [0, 0, 0])?;
        exit(a)
    });
    let r = run(&img, &RunOptions::default());
    assert!(
        matches!(
            r.outcome,
            Outcome::GuestFault {
                kind: FaultKind::Exception,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );

    // Blocking with nothing armed: done, as `hlt` would be.
    let img = image("block-forever", |a| {
        a.mov(ebx, 42)?;
        hypercall(a, Hypercall::Block.number(), [0, 0, 0])?;
        a.hlt()
    });
    let r = run(&img, &RunOptions::default());
    assert_eq!(
        r.outcome,
        Outcome::Completed {
            exit_code: 0,
            result: 42,
            ending: contract::Ending::Halted
        }
    );
}

#[test]
fn two_adjacent_hypercalls_at_the_start_are_hypercalls() {
    if !kvm_or_skip("two_adjacent_hypercalls_at_the_start_are_hypercalls") {
        return;
    }
    // set_tpr(3); then the same `out` again with RAX = 0 (the first call's result): an
    // unknown hypercall, refused with ENOSYS. Both addresses around RIP hold the gate
    // instruction at the first exit, so RIP's place must be known before it.
    let mut code = vec![0xB8, 12, 0, 0, 0, 0xBF, 3, 0, 0, 0, 0xE7, 0xFC, 0xE7, 0xFC];
    code.extend([0xB8, 2, 0, 0, 0, 0x31, 0xFF, 0xE7, 0xFC]); // exit(0)
    let img = contract::GuestImage::flat("adjacent", code, LOAD, LOAD);
    let r = run(&img, &RunOptions::default());
    assert!(
        matches!(r.outcome, Outcome::Completed { exit_code: 0, .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.hypercalls["set_tpr"], 1);
    assert_eq!(r.hypercalls["rejected:unknown"], 1);
    assert_eq!(r.hypercalls["exit"], 1);
}

/// Runs `img` and asserts it reached the exit hypercall with `result`.
fn run_to_exit(img: &GuestImage, result: u64) -> RunRecord {
    let r = run(img, &RunOptions::default());
    assert_eq!(
        r.outcome,
        Outcome::Completed {
            exit_code: 0,
            result,
            ending: contract::Ending::ExitPort
        },
        "{:?}",
        r.hypercalls
    );
    r
}

/// Writes `value` at `addr` (guest code).
fn store(a: &mut CodeAssembler, addr: u64, value: u64) -> Result<(), IcedError> {
    a.mov(rax, addr)?;
    a.mov(rcx, value)?;
    a.mov(qword_ptr(rax), rcx)
}

/// Writes one `mmu_update` request `{ptr, val}` at `reqs` (guest code).
fn request(a: &mut CodeAssembler, reqs: u64, ptr: u64, val: u64) -> Result<(), IcedError> {
    store(a, reqs, ptr)?;
    store(a, reqs + 8, val)
}

#[test]
fn the_alias_then_pin_escape_and_its_variants_are_refused() {
    if !kvm_or_skip("the_alias_then_pin_escape_and_its_variants_are_refused") {
        return;
    }
    use contract::abi::hypercall::mmu::FLUSH_TLB;
    let (x, reqs) = (0x18_0000u64, 0x20_0000u64);
    let mmu = Hypercall::MmuUpdate.number();
    let baseptr = Hypercall::NewBaseptr.number();
    let slot = |i: u64| layout::SCRATCH_PT + i * 8;
    let img = image("escape", |a| {
        a.xor(ebx, ebx)?;
        // X: a copy of the VMM's root, so new_baseptr would take it.
        store(a, x, layout::PDPT | 7)?;
        // (a) a writable alias of X through the scratch table: allowed, X is a plain page.
        request(a, reqs, slot(1), x | 7)?;
        expect(a, mmu, [reqs, 1, FLUSH_TLB], 1)?;
        // (b) pinning X while the alias is writable: refused.
        expect(a, baseptr, [x, 0, 0], errno::EPERM)?;
        // (c) so writing X through the alias changes no page table (X is not the root).
        store(a, layout::SCRATCH_VA + 0x1000 + 8, 0x87)?;
        // The reverse order: read-only alias, pin, then a writable alias is refused.
        request(a, reqs, slot(1), x | 5)?;
        expect(a, mmu, [reqs, 1, FLUSH_TLB], 1)?;
        store(a, x + 8, 0)?; // X must still be a copy of the VMM's root
        expect(a, baseptr, [x, 0, 0], 0)?;
        request(a, reqs, slot(2), x | 7)?;
        expect(a, mmu, [reqs, 1, 0], errno::EPERM)?;
        // A monitor frame through the scratch table: not guest RAM.
        request(a, reqs, slot(3), layout::IDT | 7)?;
        expect(a, mmu, [reqs, 1, 0], errno::EINVAL)?;
        expect(a, baseptr, [layout::PML4, 0, 0], 0)?;
        // What the guest can see of its privilege: CS's RPL.
        a.mov(eax, cs)?;
        a.and(eax, 3)?;
        a.shl(eax, 8)?;
        a.or(ebx, eax)?;
        exit(a)
    });
    let r = run_to_exit(&img, (3 << 8) | 7);
    assert_eq!(r.hypercalls["rejected:new_baseptr"], 1);
    assert_eq!(r.hypercalls["rejected:mmu_update"], 2);
    assert_eq!(r.hypercalls["new_baseptr"], 2);
}

#[test]
fn a_multicall_that_pins_its_own_page_is_stopped_before_writing_there() {
    if !kvm_or_skip("a_multicall_that_pins_its_own_page_is_stopped_before_writing_there") {
        return;
    }
    use contract::abi::hypercall::{multicall, shared_info};
    let p = 0x19_0000u64;
    let calls = p + 0x800;
    let sentinel = 0x54u64;
    let img = image("self-pin", |a| {
        a.xor(ebx, ebx)?;
        store(a, p, layout::PDPT | 7)?;
        for (i, (nr, a0)) in [
            (Hypercall::NewBaseptr.number(), p),
            (Hypercall::SetTpr.number(), 4),
        ]
        .into_iter()
        .enumerate()
        {
            let at = calls + i as u64 * multicall::ENTRY_SIZE;
            for (k, v) in [nr, a0, 0, 0, sentinel].into_iter().enumerate() {
                store(a, at + k as u64 * 8, v)?;
            }
        }
        expect(
            a,
            Hypercall::Multicall.number(),
            [calls, 2, 0],
            errno::EFAULT,
        )?;
        // The result slot still holds the sentinel, and the second entry never ran.
        let mut skip = a.create_label();
        a.mov(rax, calls + multicall::RESULT)?;
        a.cmp(qword_ptr(rax), sentinel as i32)?;
        a.jne(skip)?;
        a.mov(rax, layout::SHARED_INFO + shared_info::TPR)?;
        a.cmp(qword_ptr(rax), 0)?;
        a.jne(skip)?;
        a.inc(rbx)?;
        a.set_label(&mut skip)?;
        expect(a, Hypercall::NewBaseptr.number(), [layout::PML4, 0, 0], 0)?;
        exit(a)
    });
    let r = run_to_exit(&img, 3);
    assert_eq!(r.hypercalls["rejected:multicall"], 1);
}
