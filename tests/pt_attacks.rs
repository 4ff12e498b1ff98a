//! Hostile page-table guests, one test per family of attack, over every mode the attack
//! applies to. Each attack ends classified — refused with its exact error code, killed
//! with its named fault, or a declared limit — and never reaches the monitor's region or
//! a page table writable. `docs/security.md` lists the families and their outcomes.

mod common;

use common::direct_paging::*;
use common::kvm_or_skip;
use contract::abi::hypercall::{errno, mmu, mmuext, Hypercall, PORT};
use contract::abi::layout;
use contract::{GuestImage, Outcome, RunOptions, RunRecord};
use iced_x86::code_asm::*;
use paravirt::Paravirt;

/// A frame of plain guest RAM the attacks try to turn into a page table they can write.
const VICTIM: u64 = 0x31_0000;

/// One `mmu_update` batch of `reqs`, whose result must be `want`.
fn batch(a: &mut CodeAssembler, reqs: &[(u64, u64)], want: i64) -> Result<(), IcedError> {
    for (i, &(ptr, val)) in reqs.iter().enumerate() {
        store(a, REQS + 16 * i as u64, ptr)?;
        store(a, REQS + 16 * i as u64 + 8, val)?;
    }
    expect(
        a,
        Hypercall::MmuUpdate,
        [REQS, reqs.len() as u64, mmu::FLUSH_TLB],
        want,
    )
}

/// The guest's tables: the VMM's slot, then USER → DATA (writable) and USER + 4 KiB → the
/// L1 itself (read-only); pinned and loaded.
fn own_tables(a: &mut CodeAssembler) -> Result<(), IcedError> {
    store(a, L4, layout::PDPT | PWU)?;
    store(a, L4 + 8, L3 | PWU)?;
    store(a, L3, L2 | PWU)?;
    store(a, L2, L1 | PWU)?;
    store(a, L1, DATA | PWU)?;
    store(a, L1 + 8, L1 | PU)?;
    pin(a, L4, 4, 0)?;
    expect(a, Hypercall::NewBaseptr, [L4, 0, 0], 0)
}

/// Family: a batch whose later entries drop a table's type and take it again. The table
/// is validated anew from guest memory, where the batch's earlier write to it is not yet
/// made (the monitor makes the writes after the hypercall): a writable mapping written
/// by the batch would escape the count, and the frame it maps could become a page table
/// the guest writes. Paravirt only (the other modes have no batches).
#[test]
fn a_batch_that_retypes_a_table_it_wrote_keeps_the_write_counted() {
    if !kvm_or_skip("a_batch_that_retypes_a_table_it_wrote_keeps_the_write_counted") {
        return;
    }
    let img = image("retype-in-batch", |a| {
        a.xor(ebx, ebx)?;
        own_tables(a)?; // 1, 2
                        // USER + 8 KiB → VICTIM writable; then the L1 loses its only reference and takes
                        // it again, all in one batch: accepted.
        batch(a, &[(L1 + 16, VICTIM | PWU), (L2, 0), (L2, L1 | PWU)], 3)?; // 3
                                                                           // VICTIM is mapped writable: it may not become a page table, pinned …
        pin(a, VICTIM, 1, errno::EPERM)?; // 4
                                          // … or referenced, after the guest wrote a mapping of the monitor into it.
        store(a, USER + 0x2000, layout::PML4 | PWU)?;
        batch(a, &[(L2 + 8, VICTIM | PWU)], errno::EPERM)?; // 5
                                                            // Had the escape worked, USER + 2 MiB would map the monitor's PML4: read it.
        let mut safe = a.create_label();
        a.cmp(rax, 1)?;
        a.jne(safe)?;
        a.mov(rax, USER + 0x20_0000)?;
        a.mov(rax, qword_ptr(rax))?;
        a.add(rbx, 100)?;
        a.set_label(&mut safe)?;
        a.nop()?;
        exit(a)
    });
    let r = run(&img);
    assert_eq!(r.outcome, completed(5), "{:?}", r.hypercalls);
    let h = &r.hypercalls;
    assert_eq!(h["direct_paging:refused:writable_page_table"], 2);
    assert_eq!(h["rejected:mmuext_op"], 1);
    assert_eq!(h["rejected:mmu_update"], 1);
}

/// The user root of [`own_tables`]: the VMM's user slot, and the same user half.
const UL4: u64 = 0x18_4000;
/// Where the kernel writes the user code (the USER page, DATA).
const USER_CODE_AT: u64 = DATA;

/// A paravirtual kernel on [`own_tables`] with a user root, whose user process runs
/// `user` (copied to USER); `handler` is its system-call entry, `setup` runs before it
/// returns to user mode with `iret` (RFLAGS `user_flags`).
fn pv_kernel(
    name: &str,
    user: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    user_flags: u64,
    handler: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> GuestImage {
    pv_kernel_with(name, user, user_flags, Some(0), handler, |_| Ok(()))
}

/// [`pv_kernel`] with the system-call entry at `callback` (`Some(0)`: `handler`; `None`:
/// none registered).
fn pv_kernel_with(
    name: &str,
    user: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    user_flags: u64,
    callback: Option<u64>,
    handler: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    setup: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> GuestImage {
    let mut u = CodeAssembler::new(64).unwrap();
    user(&mut u).unwrap();
    let mut code = u.assemble(USER).unwrap();
    code.resize(code.len().div_ceil(8) * 8, 0x90);
    image(name, |a| {
        let mut entry = a.create_label();
        a.xor(ebx, ebx)?;
        for (i, q) in code.chunks(8).enumerate() {
            store(
                a,
                USER_CODE_AT + 8 * i as u64,
                u64::from_le_bytes(q.try_into().unwrap()),
            )?;
        }
        own_tables(a)?; // 1, 2
        store(a, UL4, layout::PDPT_USER | PWU)?;
        store(a, UL4 + 8, L3 | PWU)?;
        pin(a, UL4, 4, 0)?; // 3
        expect(
            a,
            Hypercall::MmuextOp,
            [mmuext::NEW_USER_BASEPTR, UL4, 0],
            0,
        )?; // 4
        match callback {
            Some(0) => a.lea(rsi, ptr(entry))?,
            Some(at) => a.mov(rsi, at)?,
            None => {}
        }
        if callback.is_some() {
            a.mov(rdi, contract::abi::hypercall::callback::SYSCALL)?;
            a.mov(rax, Hypercall::SetCallback.number())?;
            a.out(u32::from(PORT), eax)?;
            let mut skip = a.create_label();
            a.test(rax, rax)?;
            a.jne(skip)?;
            a.inc(rbx)?; // 5
            a.set_label(&mut skip)?;
            a.nop()?;
        }
        setup(a)?;
        // The iret frame {rax, rip, cs, rflags, rsp, ss}.
        a.sub(rsp, 48)?;
        for (i, v) in [
            0,
            USER,
            u64::from(contract::abi::selector::USER_CODE),
            user_flags,
            USER + 0xFF0,
            u64::from(contract::abi::selector::USER_DATA),
        ]
        .into_iter()
        .enumerate()
        {
            a.mov(rax, v)?;
            a.mov(qword_ptr(rsp + 8 * i as i32), rax)?;
        }
        a.mov(rax, Hypercall::Iret.number())?;
        a.out(u32::from(PORT), eax)?;
        // Not reached when the iret is accepted.
        exit(a)?;
        a.set_label(&mut entry)?;
        handler(a)?;
        exit(a)
    })
}

/// Family: a user process forging SYSCALL's saved RFLAGS. SYSCALL lands on the
/// monitor's page (its LSTAR) with the user's R11; a process that jumps there itself
/// chooses R11. The kernel's entry must run with flags user mode could have had — IOPL 0
/// (so neither it nor the process it returns to can `cli` or reach a port past the I/O
/// bitmap), and no VM, RF, VIF or VIP: the monitor's stub loads them with IRETQ at CPL 0.
/// Paravirt only (the native kernels take SYSCALL from the real CPU).
#[test]
fn a_forged_syscall_cannot_raise_privileged_flags() {
    if !kvm_or_skip("a_forged_syscall_cannot_raise_privileged_flags") {
        return;
    }
    use contract::x86::rflags::{IF, IOPL};
    const VM: u64 = 1 << 17;
    const RF: u64 = 1 << 16;
    const VIF: u64 = 1 << 19;
    const VIP: u64 = 1 << 20;
    let privileged = IOPL | VM | RF | VIF | VIP;
    for forged in [IOPL, VM, RF, VIF, VIP, privileged] {
        let img = pv_kernel(
            "forged-syscall",
            |u| {
                u.mov(r11, forged | IF | 0x2)?;
                u.mov(rax, paravirt::SYSCALL_LANDING)?;
                u.jmp(rax)
            },
            0x202,
            |a| {
                // The kernel's entry: RBX += its privileged flags (none expected) + 1.
                a.pushfq()?;
                a.pop(rax)?;
                a.mov(rcx, privileged)?;
                a.and(rax, rcx)?;
                a.add(rbx, rax)?;
                a.inc(rbx)
            },
        );
        let r = run(&img);
        assert_eq!(
            r.outcome,
            completed(6),
            "R11 {forged:#x}: {:?}",
            r.hypercalls
        );
        assert_eq!(r.hypercalls["mode:syscalls_bounced"], 1);
    }
}

/// A list of hypercalls with the exact result each must have: the guest stops at the
/// first that differs and reports `STOPPED + its index` (RAX in R12), else the number of
/// steps.
struct Steps<'a> {
    a: &'a mut CodeAssembler,
    n: u64,
    stop: CodeLabel,
}

const STOPPED: u64 = 0x1000;

impl<'a> Steps<'a> {
    fn new(a: &'a mut CodeAssembler) -> Self {
        let stop = a.create_label();
        Steps { a, n: 0, stop }
    }

    /// The last hypercall's RAX must be `want`.
    fn want(&mut self, want: i64) -> Result<(), IcedError> {
        let mut ok = self.a.create_label();
        self.a.mov(rcx, want)?;
        self.a.cmp(rax, rcx)?;
        self.a.je(ok)?;
        self.a.mov(r12, rax)?;
        self.a.mov(rbx, STOPPED + self.n)?;
        self.a.jmp(self.stop)?;
        self.a.set_label(&mut ok)?;
        self.a.nop()?;
        self.n += 1;
        Ok(())
    }

    fn call(&mut self, h: Hypercall, args: [u64; 3], want: i64) -> Result<(), IcedError> {
        hypercall(self.a, h, args)?;
        self.want(want)
    }

    fn batch(&mut self, reqs: &[(u64, u64)], want: i64) -> Result<(), IcedError> {
        for (i, &(ptr, val)) in reqs.iter().enumerate() {
            store(self.a, REQS + 16 * i as u64, ptr)?;
            store(self.a, REQS + 16 * i as u64 + 8, val)?;
        }
        let n = reqs.len() as u64;
        self.call(Hypercall::MmuUpdate, [REQS, n, mmu::FLUSH_TLB], want)
    }

    fn update(&mut self, ptr: u64, val: u64, want: i64) -> Result<(), IcedError> {
        self.batch(&[(ptr, val)], want)
    }

    fn ext(&mut self, op: u64, frame: u64, level: u64, want: i64) -> Result<(), IcedError> {
        self.call(Hypercall::MmuextOp, [op, frame, level], want)
    }

    /// The quadword at `addr` (without A and D) must be `want`.
    fn read(&mut self, addr: u64, want: u64) -> Result<(), IcedError> {
        self.a.mov(rax, addr)?;
        self.a.mov(rax, qword_ptr(rax))?;
        self.a.mov(rcx, !0x60u64)?;
        self.a.and(rax, rcx)?;
        self.want(want as i64)
    }

    /// Ends the guest: RBX is the number of steps when all went as wanted.
    fn end(mut self) -> Result<u64, IcedError> {
        self.a.mov(rbx, self.n)?;
        self.a.set_label(&mut self.stop)?;
        exit(self.a)?;
        Ok(self.n)
    }
}

/// Runs the steps `body` writes after [`own_tables`], and checks that every one had its
/// exact result.
fn pv_steps(name: &str, body: impl FnOnce(&mut Steps) -> Result<(), IcedError>) -> RunRecord {
    let mut steps = 0;
    let img = image(name, |a| {
        own_tables(a)?;
        let mut s = Steps::new(a);
        body(&mut s)?;
        steps = s.end()?;
        Ok(())
    });
    let r = run(&img);
    assert_eq!(r.outcome, completed(steps), "{name}: {:?}", r.hypercalls);
    r
}

const PS: u64 = 1 << 7;
const FAR: u64 = 1 << 40;

/// Family: `mmu_update` arguments — count 0, huge counts, a request list in the monitor
/// or wrapping, unknown flags, `ptr` misaligned, in the monitor, beyond RAM or in a page
/// that is no table; and batches all-or-none, whichever entry is refused.
#[test]
fn mmu_update_arguments_and_all_or_none_batches_end_refused() {
    if !kvm_or_skip("mmu_update_arguments_and_all_or_none_batches_end_refused") {
        return;
    }
    use errno::*;
    let r = pv_steps("mmu-update-args", |s| {
        s.call(Hypercall::MmuUpdate, [REQS, 0, 0], 0)?;
        s.call(Hypercall::MmuUpdate, [REQS, 513, 0], E2BIG)?;
        s.call(Hypercall::MmuUpdate, [REQS, u64::MAX, 0], E2BIG)?;
        s.call(Hypercall::MmuUpdate, [REQS, 1 << 60, 0], E2BIG)?;
        s.call(Hypercall::MmuUpdate, [layout::PML4, 1, 0], EFAULT)?;
        s.call(Hypercall::MmuUpdate, [u64::MAX - 7, 1, 0], EFAULT)?;
        s.call(Hypercall::MmuUpdate, [REQS, 1, 2], EINVAL)?;
        s.update(L1 + 4, DATA | PWU, EINVAL)?; // misaligned
        s.update(layout::PML4, DATA | PWU, EPERM)?; // the monitor's root
        s.update(layout::PML4 + 0x1000, 0, EPERM)?; // its PDPT
        s.update(FAR, DATA | PWU, EPERM)?; // beyond RAM
        s.update(u64::MAX - 7, 0, EPERM)?;
        s.update(DATA + 8, 0, EPERM)?; // a data page
                                       // All or none: the refused entry first, last, or after one that drops a type.
        let keep = (DATA + 0x2000) | PWU;
        s.batch(&[(L1 + 16, keep), (L1 + 24, L2 | PWU)], EPERM)?;
        s.batch(
            &[(L1 + 16, keep), (L1 + 24, keep), (L2 + 8, PS | L1 | PWU)],
            EINVAL,
        )?;
        s.batch(&[(L2, 0), (L1 + 16, keep)], EPERM)?; // L1 is no table once dropped
        s.batch(&[(L1 + 16, VICTIM | PWU), (L2 + 8, VICTIM | PWU)], EPERM)?;
        s.batch(&[(L2 + 8, VICTIM | PWU), (L1 + 16, VICTIM | PWU)], EPERM)?;
        s.read(USER + 0x1000 + 16, 0)?; // none of them applied
        s.read(USER + 0x1000 + 24, 0)?;
        s.read(USER, 0)?; // DATA still mapped (it holds 0)
                          // 512 entries go; the batch's writes and the monitor's stores stay in one limit.
        let reqs: Vec<(u64, u64)> = (0..4).map(|i| (L1 + 16 + 8 * i, keep)).collect();
        s.batch(&reqs, 4)?;
        s.read(USER + 0x1000 + 16, keep)?;
        s.batch(&[(L1 + 16, 0), (L1 + 24, 0), (L1 + 32, 0), (L1 + 40, 0)], 4)
    });
    let h = &r.hypercalls;
    assert_eq!(h["rejected:mmu_update"], 17, "{h:?}");
    for (name, n) in [
        ("misaligned", 1),
        ("not_a_page_table", 6),
        ("writable_page_table", 3),
        ("large_page", 1),
    ] {
        assert_eq!(
            h[&format!("direct_paging:refused:{name}")],
            n,
            "{name}: {h:?}"
        );
    }
}

/// Family: self-references and level confusion at every level — an entry pointing at
/// its own table (writable or not), at a table above it, at a table of the wrong level;
/// PS at L2, L3 and L4; reserved bits (PAT, G, bit 52); frames beyond RAM and in the
/// monitor at each level; the VMM's slot rewritten.
#[test]
fn loops_large_pages_and_wild_frames_are_refused_at_every_level() {
    if !kvm_or_skip("loops_large_pages_and_wild_frames_are_refused_at_every_level") {
        return;
    }
    use errno::*;
    let r = pv_steps("pt-loops", |s| {
        s.update(L1 + 16, L1 | PWU, EPERM)?; // the L1 writable through itself
        s.update(L2 + 8, L2 | PWU, EPERM)?; // the L2 as its own L1
        s.update(L3 + 8, L3 | PWU, EPERM)?;
        s.update(L4 + 16, L4 | PWU, EPERM)?;
        s.update(L2 + 8, L3 | PWU, EPERM)?; // a table above
        s.update(L2 + 8, L4 | PWU, EPERM)?;
        s.update(L3 + 8, L4 | PWU, EPERM)?;
        s.update(L3 + 8, L1 | PWU, EPERM)?; // a table below the level wanted
        s.update(L4 + 16, L2 | PWU, EPERM)?;
        s.update(L4 + 16, L1 | PWU, EPERM)?;
        s.update(L1 + 16, L4 | PWU, EPERM)?; // any table, writable
        s.update(L1 + 16, L3 | PWU, EPERM)?;
        s.update(L1 + 16, L2 | PWU, EPERM)?;
        s.update(L1 + 8, L1 | PWU, EPERM)?; // its read-only self-map made writable
        for (table, val) in [(L2 + 8, DATA), (L3 + 8, 0), (L4 + 16, 0)] {
            s.update(table, val | PS | PWU, EINVAL)?;
        }
        s.update(L1 + 16, DATA | PS | PWU, EINVAL)?; // PAT
        s.update(L1 + 16, DATA | 0x100 | PWU, EINVAL)?; // G
        s.update(L1 + 16, DATA | (1 << 52) | PWU, EINVAL)?;
        s.update(L2 + 8, L1 | 0x100 | PWU, EINVAL)?;
        for table in [L1, L2, L3, L4] {
            s.update(table + 16, FAR | PU, EFAULT)?;
            s.update(table + 16, (16 << 20) | PU, EFAULT)?; // the first frame past RAM
            s.update(table + 16, layout::PML4 | PU, EFAULT)?;
            s.update(table + 16, layout::MONITOR_ROUTINE | PU, EFAULT)?;
        }
        s.update(L4, L3 | PWU, EPERM)?; // the VMM's slot
        s.update(L4, layout::PDPT | PWU | PS, EPERM)?;
        s.update(L4, layout::PML4 | PWU, EPERM)?;
        // Read-only references to itself are no loop at L1: it maps its own page.
        s.update(L1 + 16, L4 | PU, 1)?;
        s.read(USER + 0x2000 + 8, L3 | PWU)?;
        s.update(L1 + 16, 0, 1)
    });
    let h = &r.hypercalls;
    for (name, n) in [
        ("writable_page_table", 5),
        ("loop", 6),
        ("wrong_type", 3),
        ("large_page", 3),
        ("reserved_bits", 4),
        ("beyond_ram", 8),
        ("monitor_region", 8),
        ("vmm_slot", 3),
    ] {
        assert_eq!(
            h[&format!("direct_paging:refused:{name}")],
            n,
            "{name}: {h:?}"
        );
    }
    assert_eq!(
        h["direct_paging:validations"], 4,
        "no table typed by a refusal"
    );
}

/// Family: roots and pins — `new_baseptr` and `NEW_USER_BASEPTR` to unpinned frames,
/// to L1 to L3 tables, to the kernel's root or a root without the VMM's slot; unpinning
/// the root in use, a table that is not pinned, pinning twice, at level 0 or 5, a frame
/// mapped writable, in the monitor, beyond RAM, misaligned; unknown operations.
#[test]
fn hostile_roots_and_pins_are_refused() {
    if !kvm_or_skip("hostile_roots_and_pins_are_refused") {
        return;
    }
    use errno::*;
    const USER_BASE: u64 = mmuext::NEW_USER_BASEPTR;
    let r = pv_steps("pt-roots", |s| {
        s.ext(USER_BASE, L4, 0, EPERM)?; // the kernel's root (the VMM's full slot)
        s.ext(USER_BASE, L1, 0, EPERM)?;
        s.ext(USER_BASE, L3, 0, EPERM)?;
        s.ext(USER_BASE, DATA, 0, EPERM)?; // not pinned
        s.ext(USER_BASE, FAR, 0, EPERM)?;
        s.ext(USER_BASE, L4, 1, EINVAL)?;
        s.ext(mmuext::PIN, VICTIM, 4, 0)?; // an empty root: no VMM slot
        s.ext(USER_BASE, VICTIM, 0, EPERM)?;
        s.call(Hypercall::NewBaseptr, [VICTIM, 0, 0], EPERM)?;
        s.call(Hypercall::NewBaseptr, [L1, 0, 0], EPERM)?;
        s.call(Hypercall::NewBaseptr, [L3, 0, 0], EPERM)?;
        s.call(Hypercall::NewBaseptr, [L4 + 8, 0, 0], EINVAL)?;
        s.call(Hypercall::NewBaseptr, [FAR, 0, 0], EINVAL)?;
        s.ext(mmuext::UNPIN, L4, 0, EPERM)?; // in use
        s.ext(mmuext::UNPIN, L3, 0, EINVAL)?; // typed, not pinned
        s.ext(mmuext::UNPIN, VICTIM, 1, EINVAL)?;
        s.ext(mmuext::PIN, L4, 4, EINVAL)?; // twice
        s.ext(mmuext::PIN, L3, 1, EPERM)?; // an L3 as an L1
        s.ext(mmuext::PIN, L1, 3, EPERM)?; // an L1 as an L3
        s.ext(mmuext::PIN, DATA, 1, EPERM)?; // mapped writable
        s.ext(mmuext::PIN, DATA + 8, 1, EINVAL)?;
        s.ext(mmuext::PIN, layout::PML4, 4, EFAULT)?;
        s.ext(mmuext::PIN, FAR, 1, EFAULT)?;
        s.ext(mmuext::PIN, !0xFFFu64, 1, EFAULT)?;
        s.ext(mmuext::PIN, VICTIM + 0x1000, 0, EINVAL)?;
        s.ext(mmuext::PIN, VICTIM + 0x1000, 5, EINVAL)?;
        s.ext(99, VICTIM, 1, EINVAL)?;
        s.ext(mmuext::INVLPG, USER, 1, EINVAL)?;
        // The pinned empty root is a table: not writable, then unpinned, a page again.
        s.update(L1 + 16, VICTIM | PWU, EPERM)?;
        s.ext(mmuext::UNPIN, VICTIM, 0, 0)?;
        s.update(L1 + 16, VICTIM | PWU, 1)?;
        s.update(L1 + 16, 0, 1)
    });
    let h = &r.hypercalls;
    assert_eq!(h["direct_paging:pins"], 2);
    assert_eq!(h["direct_paging:unpins"], 1);
}

// ------------------------------------------------------------ native guests' own tables

/// The native guest's tables (guest-physical, identity-mapped by its own 2 MiB pages), as
/// in tests/shadow_trap_emulate.rs.
const N_PML4: u64 = 0x20_0000;
const N_PDPT: u64 = 0x20_1000;
const N_PD: u64 = 0x20_2000;
const N_PT: u64 = 0x20_3000;
const N_FRAMES: u64 = 0x30_0000;
/// The window N_PT maps (PD entry 4).
const WINDOW: u64 = 0x80_0000;
const U: u64 = 7;
const LARGE: u64 = 0x87;

/// Every engine that runs a native guest at CPL 0 on its own tables.
const NATIVE_ENGINES: [&dyn contract::Engine; 3] = [
    &hw_assisted::HwAssisted,
    &trap_emulate::TrapEmulate,
    &binary_translation::BinaryTranslation,
];

/// A native guest that builds its tables (plus `extra` entries), loads them, then runs
/// `attack`; it exits with RBX as its result.
fn native(
    name: &str,
    extra: &[(u64, u64)],
    attack: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> GuestImage {
    let base = [
        (N_PML4, N_PDPT | U),
        (N_PDPT, N_PD | U),
        (N_PDPT + 8, layout::PD_MONITOR | U),
        (N_PD, LARGE),
        (N_PD + 8, 0x20_0000 | LARGE),
        (N_PD + 4 * 8, N_PT | U),
        (N_PT, N_FRAMES | U),
    ];
    common::assemble(name, |a| {
        a.xor(ebx, ebx)?;
        for &(at, v) in base.iter().chain(extra) {
            a.mov(rdi, at)?;
            a.mov(rax, v)?;
            a.mov(qword_ptr(rdi), rax)?;
        }
        a.mov(rax, N_PML4)?;
        a.mov(cr3, rax)?;
        attack(a)?;
        a.xor(eax, eax)?;
        a.out(u32::from(contract::abi::port::EXIT), eax)
    })
}

fn native_run(engine: &dyn contract::Engine, img: &GuestImage, cache: bool) -> RunRecord {
    let opts = RunOptions {
        shadow_cache: cache,
        ..common::short()
    };
    common::run(engine, img, &opts)
}

/// A native attack and what it must end as, in hw-assisted and in the shadow engines.
struct NativeCase {
    what: &'static str,
    image: GuestImage,
    /// hw-assisted: the guest owns its MMU (at CPL 0 it may map the monitor's region:
    /// docs/security.md), so the outcome is the CPU's.
    hw: Expect,
    /// trap-emulate and binary translation (one shadow MMU).
    shadow: Expect,
    /// Binary translation where it differs (its translator checks a jump's target
    /// before the shadow MMU faults on it).
    bt: Option<Expect>,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Completed, whatever the result: a hw-assisted guest at CPL 0 that maps the
    /// monitor's region reads what it holds (the guest owns its VM).
    Completes,
    /// Ended as this fault, its detail mentioning this.
    Fault(contract::FaultKind, &'static str),
}

fn judge_native(case: &NativeCase) {
    for engine in NATIVE_ENGINES {
        let want = match engine.mode() {
            contract::Mode::HwAssisted => case.hw,
            contract::Mode::BinaryTranslation => case.bt.unwrap_or(case.shadow),
            _ => case.shadow,
        };
        for cache in [true, false] {
            let r = native_run(engine, &case.image, cache);
            let at = format!("{} in {} (cache {cache})", case.what, engine.mode());
            match (want, &r.outcome) {
                (Expect::Completes, Outcome::Completed { exit_code: 0, .. }) => {}
                (
                    Expect::Fault(kind, mentions),
                    Outcome::GuestFault {
                        kind: k, detail, ..
                    },
                ) => {
                    assert_eq!(*k, kind, "{at}: {detail}");
                    assert!(detail.contains(mentions), "{at}: {detail}");
                }
                (w, o) => panic!("{at}: wanted {w:?}, got {o:?}"),
            }
        }
    }
}

/// Family: a native guest kernel's page tables written through a second alias (the
/// identity 2 MiB page over its tables, a PT entry mapping the PT, a PD used as its own
/// PT), CR3 beyond RAM, large pages over the monitor or beyond RAM. In the shadow
/// engines each write to a table traps and is emulated (the tables are read-only in the
/// shadows whatever alias the guest uses), and the mapping it makes is refused by name
/// when used; under hw-assisted the guest owns its MMU and the CPU decides.
#[test]
fn native_tables_written_through_aliases_or_mapping_the_monitor_end_classified() {
    if !kvm_or_skip("native_tables_written_through_aliases_or_mapping_the_monitor_end_classified") {
        return;
    }
    use contract::FaultKind::*;
    let monitor = "a page of the monitor";
    let cases = [
        NativeCase {
            what: "the PT written through the identity large page",
            image: native("alias-large", &[], |a| {
                a.mov(rsi, WINDOW)?;
                a.mov(rbx, qword_ptr(rsi))?;
                a.mov(rdi, N_PT)?;
                a.mov(rax, layout::IDT | U)?;
                a.mov(qword_ptr(rdi), rax)?;
                a.invlpg(qword_ptr(rsi))?;
                a.mov(rbx, qword_ptr(rsi))
            }),
            // The IDT's first quadword, read by a CPL 0 guest that owns its MMU.
            hw: Expect::Completes,
            shadow: Expect::Fault(MonitorViolation, monitor),
            bt: None,
        },
        NativeCase {
            what: "the PD written through itself used as a PT",
            image: native("alias-loop", &[(N_PD + 5 * 8, N_PD | U)], |a| {
                // Window 5's page 5 is the PD: overwrite its entry 4 with a PT in the
                // monitor, then use it.
                a.mov(rsi, 0xA0_0000u64 + 5 * 0x1000 + 4 * 8)?;
                a.mov(rax, layout::IDT | U)?;
                a.mov(qword_ptr(rsi), rax)?;
                a.mov(rax, N_PML4)?;
                a.mov(cr3, rax)?;
                a.mov(rsi, WINDOW)?;
                a.mov(rbx, qword_ptr(rsi))
            }),
            hw: Expect::Fault(Exception, ""),
            shadow: Expect::Fault(MonitorViolation, "in the monitor's region"),
            bt: None,
        },
        NativeCase {
            what: "the PT writable through its own entry",
            image: native("alias-pt", &[(N_PT + 8, N_PT | U)], |a| {
                a.mov(rsi, WINDOW + 0x1000)?;
                a.mov(rax, layout::PML4 | U)?;
                a.mov(qword_ptr(rsi + 16), rax)?;
                a.mov(rsi, WINDOW + 0x2000)?;
                a.mov(rbx, qword_ptr(rsi))
            }),
            hw: Expect::Completes,
            shadow: Expect::Fault(MonitorViolation, monitor),
            bt: None,
        },
        NativeCase {
            what: "CR3 beyond RAM",
            image: native("cr3-far", &[], |a| {
                a.mov(rax, 0x7FF0_0000u64)?;
                a.mov(cr3, rax)
            }),
            hw: Expect::Fault(Shutdown, "triple fault"),
            shadow: Expect::Fault(BadMemoryAccess, "not in guest RAM"),
            bt: None,
        },
        NativeCase {
            what: "a 1 GiB page over the monitor",
            image: native("pdpt-ps", &[(N_PDPT + 8, 0x4000_0000 | LARGE)], |a| {
                a.mov(rsi, 0x4000_0000u64)?;
                a.mov(rbx, qword_ptr(rsi))
            }),
            hw: Expect::Fault(Shutdown, "triple fault"),
            // The shadows carry the monitor's region as the VMM maps it.
            shadow: Expect::Fault(MonitorViolation, monitor),
            bt: None,
        },
        NativeCase {
            what: "a 2 MiB page over the monitor",
            image: native(
                "pd-ps-monitor",
                &[(N_PD + 6 * 8, 0x4000_0000 | LARGE)],
                |a| {
                    a.mov(rsi, 0xC0_0000u64)?;
                    a.mov(rbx, qword_ptr(rsi))
                },
            ),
            hw: Expect::Completes,
            shadow: Expect::Fault(MonitorViolation, monitor),
            bt: None,
        },
        NativeCase {
            what: "a 2 MiB page beyond RAM",
            image: native("pd-ps-far", &[(N_PD + 6 * 8, 0x7FE0_0000 | LARGE)], |a| {
                a.mov(rsi, 0xC0_0000u64)?;
                a.mov(rbx, qword_ptr(rsi))
            }),
            hw: Expect::Fault(BadDeviceAccess, "0x7fe00000"),
            shadow: Expect::Fault(BadMemoryAccess, "beyond guest RAM"),
            bt: None,
        },
    ];
    for case in &cases {
        judge_native(case);
    }
}

/// Family: storms — `invlpg` of one page 2,000 times and 100 CR3 loads of the same root,
/// each followed by a read through the window, with the shadow cache on and off. Each
/// completes with its result and exactly the shadow work its count gives (every load
/// with the cache off drops the shadows and builds them again); hw-assisted completes
/// alike, on its own MMU.
#[test]
fn invlpg_and_cr3_storms_complete_with_exact_shadow_counts() {
    if !kvm_or_skip("invlpg_and_cr3_storms_complete_with_exact_shadow_counts") {
        return;
    }
    const MARK: u64 = 0x1234;
    let storm = |name: &str, n: u32, reload: bool| {
        native(name, &[], |a| {
            let mut top = a.create_label();
            a.mov(rdi, N_FRAMES)?;
            a.mov(rax, MARK)?;
            a.mov(qword_ptr(rdi), rax)?;
            a.mov(ecx, n)?;
            a.mov(rdx, N_PML4)?;
            a.mov(rsi, WINDOW)?;
            a.set_label(&mut top)?;
            if reload {
                a.mov(cr3, rdx)?;
            } else {
                a.invlpg(qword_ptr(rsi))?;
            }
            a.add(rbx, qword_ptr(rsi))?;
            a.dec(ecx)?;
            a.jnz(top)
        })
    };
    let invlpg = storm("invlpg-storm", 2000, false);
    let switches = 100u64;
    let loads = storm("cr3-storm", switches as u32, true);
    for engine in NATIVE_ENGINES {
        for cache in [true, false] {
            let at = format!("in {} (cache {cache})", engine.mode());
            let opts = RunOptions {
                shadow_cache: cache,
                ..RunOptions::default()
            };
            let r = common::run(engine, &invlpg, &opts);
            assert_eq!(r.outcome, completed(2000 * MARK), "invlpg {at}");
            let r = common::run(engine, &loads, &opts);
            assert_eq!(r.outcome, completed(switches * MARK), "cr3 {at}");
            if engine.mode() == contract::Mode::HwAssisted {
                continue;
            }
            let s = |k: &str| r.shadow.get(k).copied().unwrap_or(0);
            // The first load of the guest's root is a miss; the storm's loads hit, or
            // with the cache off each misses and flushes.
            if cache {
                assert_eq!((s("cache_misses"), s("cache_hits")), (1, switches), "{at}");
                assert_eq!(s("flushes"), 0, "{at}");
            } else {
                assert_eq!(
                    (s("cache_misses"), s("cache_hits")),
                    (1 + switches, 0),
                    "{at}"
                );
                assert_eq!(s("flushes"), switches, "{at}");
                assert!(s("pages_built") > switches, "{at}: {:?}", r.shadow);
            }
        }
    }
}

/// Family: callbacks and `iret` from the kernel — a callback of an unknown kind or at a
/// non-canonical address, a trap table with handlers beyond RAM, in the monitor or too
/// big; `iret` frames with kernel selectors, RPL 0, a RIP that is non-canonical or in the
/// monitor, or lying in the monitor or wrapping. Each refused with its code, the guest
/// going on.
#[test]
fn forged_callbacks_and_iret_frames_are_refused() {
    if !kvm_or_skip("forged_callbacks_and_iret_frames_are_refused") {
        return;
    }
    use contract::abi::hypercall::callback::SYSCALL;
    use contract::abi::selector::{KERNEL_CODE, KERNEL_DATA, USER_CODE, USER_DATA};
    use errno::*;
    const FRAME: u64 = 0x20_1000;
    const TABLE: u64 = 0x20_2000;
    let r = pv_steps("forged-iret", |s| {
        s.call(Hypercall::SetCallback, [2, 0x1000, 0], EINVAL)?;
        s.call(Hypercall::SetCallback, [SYSCALL, 1 << 47, 0], EINVAL)?;
        s.call(Hypercall::SetCallback, [SYSCALL, u64::MAX, 0], EINVAL)?;
        s.call(Hypercall::SetCallback, [SYSCALL, 1 << 63, 0], EINVAL)?;
        // A trap table: vector 14's interrupt gate at `handler`.
        let gate = |a: &mut CodeAssembler, handler: u64| -> Result<(), IcedError> {
            let low = (handler & 0xFFFF)
                | (u64::from(KERNEL_CODE) << 16)
                | (0x8E00u64 << 32)
                | ((handler >> 16 & 0xFFFF) << 48);
            store(a, TABLE + 14 * 16, low)?;
            store(a, TABLE + 14 * 16 + 8, handler >> 32)
        };
        gate(s.a, 0x4000_0000)?;
        s.call(Hypercall::SetTrapTable, [TABLE, 15 * 16, 0], EINVAL)?;
        gate(s.a, 1 << 40)?;
        s.call(Hypercall::SetTrapTable, [TABLE, 15 * 16, 0], EINVAL)?;
        s.call(Hypercall::SetTrapTable, [layout::IDT, 16, 0], EFAULT)?;
        s.call(Hypercall::SetTrapTable, [TABLE, 15 * 16 + 8, 0], EINVAL)?;
        s.call(Hypercall::SetTrapTable, [TABLE, 1 << 20, 0], E2BIG)?;
        // Vector 14's handler at address 0 is guest RAM: accepted.
        gate(s.a, 0)?;
        s.call(Hypercall::SetTrapTable, [TABLE, 15 * 16, 0], 1)?;
        s.call(Hypercall::SetTrapTable, [TABLE, 0, 0], 0)?;
        // `iret` frames {rax, rip, cs, rflags, rsp, ss} at RSP.
        let good = [
            0,
            0x10_0000,
            u64::from(USER_CODE),
            0x202,
            0x10_0000,
            u64::from(USER_DATA),
        ];
        let forged = |s: &mut Steps, at: u64, patch: &[(usize, u64)], want| {
            let mut f = good;
            for &(i, v) in patch {
                f[i] = v;
            }
            for (i, v) in f.into_iter().enumerate() {
                store(s.a, FRAME + 8 * i as u64, v)?;
            }
            s.a.mov(r15, rsp)?;
            s.a.mov(rsp, at)?;
            hypercall(s.a, Hypercall::Iret, [0, 0, 0])?;
            s.a.mov(rsp, r15)?;
            s.want(want)
        };
        forged(s, FRAME, &[(2, u64::from(KERNEL_CODE))], EINVAL)?;
        forged(s, FRAME, &[(5, u64::from(KERNEL_DATA))], EINVAL)?;
        forged(s, FRAME, &[(2, u64::from(USER_CODE) & !3)], EINVAL)?;
        forged(s, FRAME, &[(5, u64::from(USER_DATA) & !3)], EINVAL)?;
        forged(s, FRAME, &[(1, 0x8000_0000_0000)], EFAULT)?;
        forged(s, FRAME, &[(1, 1 << 63)], EFAULT)?;
        forged(s, FRAME, &[(1, layout::MONITOR_ROUTINE)], EFAULT)?;
        forged(s, layout::PML4, &[], EFAULT)?;
        forged(s, u64::MAX - 15, &[], EFAULT)?;
        forged(s, (16 << 20) - 8, &[], EFAULT)
    });
    assert_eq!(r.hypercalls["rejected:iret"], 10, "{:?}", r.hypercalls);
    assert_eq!(r.hypercalls["rejected:set_callback"], 4);
}

/// Family: a user process against its kernel's entry points — SYSCALL with no entry
/// registered, SYSCALL to an entry in the monitor's region, `iret` (a hypercall) from
/// user mode, and `iret` to user mode with IOPL 3, NT, VM and AC in RFLAGS.
#[test]
fn user_mode_attacks_on_the_entry_points_end_classified() {
    if !kvm_or_skip("user_mode_attacks_on_the_entry_points_end_classified") {
        return;
    }
    use contract::x86::rflags;
    let syscall = |u: &mut CodeAssembler| u.syscall();
    // No entry: the SYSCALL is an exception of user mode with no callback.
    let none = |_: &mut CodeAssembler| Ok(());
    let r = run(&pv_kernel_with(
        "no-entry",
        syscall,
        0x202,
        None,
        |a| a.nop(),
        none,
    ));
    let (kind, detail) = common::fault_of(&r);
    assert_eq!(kind, contract::FaultKind::Exception, "{detail}");
    assert!(
        !r.hypercalls.contains_key("mode:syscalls_bounced"),
        "{:?}",
        r.hypercalls
    );
    // An entry in the monitor's region: bounced there, it faults in kernel mode (the
    // page is supervisor-only), with no callback for the fault.
    let at = layout::MONITOR_ROUTINE;
    let r = run(&pv_kernel_with(
        "monitor-entry",
        syscall,
        0x202,
        Some(at),
        |a| a.nop(),
        none,
    ));
    let (kind, detail) = common::fault_of(&r);
    assert_eq!(kind, contract::FaultKind::Exception, "{detail}");
    assert!(detail.contains("#PF at rip 0x40010000"), "{detail}");
    assert_eq!(r.hypercalls["mode:syscalls_bounced"], 1);
    // `iret` from user mode: refused (EPERM in RAX), then a SYSCALL reports RAX.
    let img = pv_kernel(
        "user-iret",
        |u| {
            u.mov(rax, Hypercall::Iret.number())?;
            u.out(u32::from(PORT), eax)?;
            u.mov(r13, rax)?;
            u.syscall()
        },
        0x202,
        |a| a.add(rbx, r13),
    );
    let r = run(&img);
    assert_eq!(
        r.outcome,
        completed((5 + errno::EPERM) as u64),
        "{:?}",
        r.hypercalls
    );
    assert_eq!(r.hypercalls["mode:refused_from_user"], 1);
    // RFLAGS with IOPL 3, NT, VM and AC: user mode runs with none of them.
    let hostile = rflags::IOPL | (1 << 14) | (1 << 17) | (1 << 18) | rflags::IF | 0x2;
    let img = pv_kernel(
        "iret-flags",
        |u| {
            u.pushfq()?;
            u.pop(r13)?;
            u.syscall()
        },
        hostile,
        |a| {
            a.mov(rax, rflags::IOPL | (1 << 14) | (1 << 17) | (1 << 18))?;
            a.and(rax, r13)?;
            a.add(rbx, rax)
        },
    );
    let r = run(&img);
    assert_eq!(r.outcome, completed(5), "{:?}", r.hypercalls);
}

/// Family: the VMM's own mappings from a paravirtual guest — its 4 KiB map of RAM (the
/// page tables in the shadow region that keep typed frames read-only), the monitor
/// routine's window on RAM at 2 GiB, the monitor's page tables — each written at CPL 3
/// after the guest pinned its tables: a page fault with no callback, classified, and the
/// guest's table unchanged.
#[test]
fn the_vmms_map_of_ram_and_its_window_are_out_of_reach() {
    if !kvm_or_skip("the_vmms_map_of_ram_and_its_window_are_out_of_reach") {
        return;
    }
    let window = 0x8000_0000u64;
    for (what, target) in [
        (
            "the VMM's PTE of the L1",
            paravirt::hypercalls::ram_pte_address(L1).unwrap(),
        ),
        (
            "the VMM's PTE of a frame past 2 MiB",
            paravirt::hypercalls::ram_pte_address(DATA).unwrap(),
        ),
        ("the L1 through the window", window + L1 + 16),
        ("the scratch frame through the window", window + DATA),
        ("the monitor's PDPT", layout::PDPT + 16),
    ] {
        let img = image("vmm-maps", |a| {
            a.xor(ebx, ebx)?;
            own_tables(a)?;
            store(a, target, layout::PML4 | PWU)?;
            a.add(rbx, 100)?;
            exit(a)
        });
        let r = run(&img);
        let (kind, detail) = common::fault_of(&r);
        assert_eq!(kind, contract::FaultKind::Exception, "{what}: {detail}");
        assert!(detail.contains("#PF"), "{what}: {detail}");
        assert_eq!(r.hypercalls["direct_paging:pins"], 1, "{what}");
        assert!(!r.hypercalls.contains_key("exit"), "{what}");
    }
}

/// Family: CR3 loads of a native kernel — of the shadow pool, the monitor's page tables
/// or IDT, a page table of the guest's that is no root, the last page of RAM (empty),
/// with PWT and PCD or ignored bits, and with reserved bits (bit 63 without PCIDE, a
/// frame past the physical address width, which masked off would alias frame 0).
#[test]
fn hostile_cr3_loads_end_classified() {
    if !kvm_or_skip("hostile_cr3_loads_end_classified") {
        return;
    }
    use contract::FaultKind::*;
    let load = |v: u64| {
        native("cr3", &[], move |a| {
            a.mov(rax, v)?;
            a.mov(cr3, rax)?;
            a.mov(rsi, WINDOW)?;
            a.mov(rbx, qword_ptr(rsi))
        })
    };
    let mut cases = Vec::new();
    for (what, v) in [
        ("the shadow pool", layout::SHADOW_BASE),
        ("the monitor's page table", layout::PT_MONITOR),
        ("the monitor's IDT", layout::IDT),
    ] {
        cases.push(NativeCase {
            what,
            image: load(v),
            hw: Expect::Fault(Shutdown, "triple fault"),
            shadow: Expect::Fault(MonitorViolation, "not in guest RAM"),
            bt: None,
        });
    }
    for (what, v) in [
        ("PWT and PCD", N_PML4 | 0x18),
        ("ignored bits", N_PML4 | 0x800),
    ] {
        cases.push(NativeCase {
            what,
            image: load(v),
            hw: Expect::Completes,
            shadow: Expect::Completes,
            bt: None,
        });
    }
    for (what, v) in [
        ("the guest's PT as a root", N_PT),
        ("the last page of RAM", (16 << 20) - 0x1000),
    ] {
        cases.push(NativeCase {
            what,
            image: load(v),
            // Nothing maps the code any more: the next fetch faults.
            hw: Expect::Fault(Shutdown, "triple fault"),
            shadow: Expect::Fault(Exception, "#PF (execute"),
            bt: Some(Expect::Fault(BadMemoryAccess, "not guest code")),
        });
    }
    for (what, v) in [("bit 63", N_PML4 | (1 << 63)), ("bit 52", 1 << 52)] {
        cases.push(NativeCase {
            what,
            image: load(v),
            hw: Expect::Fault(Exception, "#GP"),
            shadow: Expect::Fault(UnhandledInstruction, "reserved bits"),
            bt: None,
        });
    }
    for case in &cases {
        judge_native(case);
    }
}

/// Family: an event pending as the kernel returns to user mode. The `iret` unmasks
/// events; the timer's callback must then interrupt user mode as any event of user mode
/// does — on the kernel's root and the event stack — not run on the user's root with its
/// frame pushed on the user's stack (which would end the run, or hand the process its
/// kernel's frame).
#[test]
fn an_event_pending_at_the_return_to_user_mode_enters_the_kernel() {
    if !kvm_or_skip("an_event_pending_at_the_return_to_user_mode_enters_the_kernel") {
        return;
    }
    const TABLE: u64 = 0x20_2000;
    let img = pv_kernel_with(
        "event-at-iret",
        |u| {
            let mut spin = u.create_label();
            u.set_label(&mut spin)?;
            u.jmp(spin)
        },
        0x202,
        Some(0),
        |a| a.nop(),
        |a| {
            let mut tick = a.create_label();
            let mut over = a.create_label();
            a.jmp(over)?;
            // The timer's callback: in kernel mode on its own root, so its hypercalls
            // go through.
            a.set_label(&mut tick)?;
            a.add(rbx, 1000)?;
            exit(a)?;
            a.set_label(&mut over)?;
            // Its gate in the trap table (vector 0x20), then a 1 µs timer; events stay
            // masked until the `iret`.
            a.lea(rax, ptr(tick))?;
            a.mov(rdx, rax)?;
            a.and(edx, 0xFFFF)?;
            a.mov(rcx, 0x0000_8E00_0008_0000u64)?;
            a.or(rdx, rcx)?;
            a.mov(rcx, rax)?;
            a.shr(rcx, 16)?;
            a.and(ecx, 0xFFFF)?;
            a.shl(rcx, 48)?;
            a.or(rdx, rcx)?;
            a.mov(rdi, TABLE + 0x20 * 16)?;
            a.mov(qword_ptr(rdi), rdx)?;
            a.mov(qword_ptr(rdi + 8), 0)?;
            expect(a, Hypercall::SetTrapTable, [TABLE, 0x21 * 16, 0], 1)?; // 6
            expect(a, Hypercall::SetTimer, [1, 0, 0], 0)?; // 7
                                                           // Let the microsecond pass.
            let mut wait = a.create_label();
            a.mov(ecx, 100_000)?;
            a.set_label(&mut wait)?;
            a.dec(ecx)?;
            a.jnz(wait)?;
            // A hypercall notices the expired timer (its event stays pending: masked).
            expect(a, Hypercall::EventCheck, [0, 0, 0], 0)
        },
    );
    let r = run(&img);
    assert_eq!(r.outcome, completed(1008), "{:?}", r.hypercalls);
    assert_eq!(r.injections, 1);
    assert_eq!(r.hypercalls["mode:root_switches"], 2, "{:?}", r.hypercalls);
}

/// After hostile guests, a normal run in every engine is unchanged: the same outcome,
/// oracle met, and the same counts of its memory work (runs share nothing).
#[test]
fn a_normal_run_after_the_attacks_is_unchanged() {
    if !kvm_or_skip("a_normal_run_after_the_attacks_is_unchanged") {
        return;
    }
    let params = guests::Params {
        n: 20,
        ..guests::Params::default()
    };
    let engines: [&dyn contract::Engine; 4] = [
        &hw_assisted::HwAssisted,
        &trap_emulate::TrapEmulate,
        &Paravirt,
        &binary_translation::BinaryTranslation,
    ];
    let exact = |r: &RunRecord| {
        let keep = |k: &String| {
            k.starts_with("direct_paging:") || k.starts_with("mode:") || !k.contains(':')
        };
        (
            r.outcome.clone(),
            r.hypercalls
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect::<Vec<_>>(),
            r.traps.clone(),
            r.shadow.clone(),
        )
    };
    for engine in engines {
        let before = common::run_workload(engine, "pgfault", params);
        assert!(
            before.verdict_ok(),
            "{}: {:?}",
            engine.mode(),
            before.mismatches
        );
        // The attacks of this file that apply to the engine.
        if engine.mode() == contract::Mode::Paravirt {
            let img = image("retype-in-batch", |a| {
                own_tables(a)?;
                batch(a, &[(L1 + 16, VICTIM | PWU), (L2, 0), (L2, L1 | PWU)], 3)?;
                pin(a, VICTIM, 1, errno::EPERM)?;
                exit(a)
            });
            run(&img);
        } else {
            let img = native("alias-pt", &[(N_PT + 8, N_PT | U)], |a| {
                a.mov(rsi, WINDOW + 0x1000)?;
                a.mov(rax, layout::PML4 | U)?;
                a.mov(qword_ptr(rsi + 16), rax)?;
                a.mov(rsi, WINDOW + 0x2000)?;
                a.mov(rbx, qword_ptr(rsi))
            });
            native_run(engine, &img, false);
        }
        let after = common::run_workload(engine, "pgfault", params);
        assert!(
            after.verdict_ok(),
            "{}: {:?}",
            engine.mode(),
            after.mismatches
        );
        assert_eq!(exact(&before), exact(&after), "{}", engine.mode());
    }
}
