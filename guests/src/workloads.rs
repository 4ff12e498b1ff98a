//! The workload catalog. Each workload is written once against [`GuestOps`] and declares
//! its expected result, console output and, per mode, the exact counts it must produce.

use contract::abi::{boot_info, mmio, TIMER_VECTOR};
use contract::{Expectations, KnownDivergence, Mode};
use iced_x86::code_asm::*;

use crate::asm::{self, counted_loop};
use crate::kernel::workloads as kernel;
use crate::ops::{AsmResult, GuestOps};

/// Parameters of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Iterations of the measured loop.
    pub n: u64,
    /// Batch size for batched operations (paravirtual flavour).
    pub b: u64,
    /// Timer delay in microseconds (hlt-timer).
    pub delay_us: u32,
    /// Request size in bytes (the disk workloads; a multiple of 512).
    pub s: u64,
    /// Queue depth: requests per doorbell (blk-virtio).
    pub q: u64,
    /// Pages of each address space forkwait builds.
    pub k: u64,
}

/// One workload of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Name used on the command line.
    pub name: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// N used by the default scenario.
    pub default_n: u64,
    /// Largest N accepted (see [`Workload::check`] for how the limits are chosen).
    pub max_n: u64,
    /// Whether B (batch size) changes what the paravirtual flavour does.
    pub batched: bool,
    pub(crate) build: fn(&mut CodeAssembler, &dyn GuestOps, &Params) -> AsmResult,
    pub(crate) expect: fn(&Params) -> Expectations,
}

/// The catalog, in the order reports list it.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "compute",
        summary: "integer checksum loop: no sensitive instruction at all",
        default_n: 1000,
        max_n: 10_000_000,
        batched: false,
        build: compute,
        expect: compute_expect,
    },
    Workload {
        name: "pio",
        summary: "N bytes to the debug console with OUT (port 0xE9)",
        default_n: 200,
        max_n: 65_536,
        batched: true,
        build: pio,
        expect: pio_expect,
    },
    Workload {
        name: "cpuid",
        summary: "N x CPUID leaf 0, checking the vendor stays the same",
        default_n: 200,
        max_n: 1_000_000,
        batched: false,
        build: cpuid,
        expect: cpuid_expect,
    },
    Workload {
        name: "irq-toggle",
        summary: "N x (CLI; work; STI): the interrupt flag, privileged",
        default_n: 200,
        max_n: 1_000_000,
        batched: false,
        build: irq_toggle,
        expect: irq_toggle_expect,
    },
    Workload {
        name: "popf",
        summary: "CLI, then PUSHF/POPF read and write IF: sensitive but not privileged",
        default_n: 100,
        max_n: 1_000_000,
        batched: false,
        build: popf,
        expect: popf_expect,
    },
    Workload {
        name: "cr8wr",
        summary: "N x MOV to CR8 (task priority), then one read back",
        default_n: 200,
        max_n: 1_000_000,
        batched: true,
        build: cr8wr,
        expect: cr8wr_expect,
    },
    Workload {
        name: "mmio",
        summary: "N reads of the MMIO device's ticket register",
        default_n: 200,
        max_n: 1_000_000,
        batched: true,
        build: mmio_reads,
        expect: mmio_expect,
    },
    Workload {
        name: "hlt-timer",
        summary: "N x (arm timer; STI; HLT; timer interrupt; IRETQ; CLI)",
        default_n: 100,
        max_n: 500_000,
        batched: false,
        build: hlt_timer,
        expect: hlt_timer_expect,
    },
    Workload {
        name: "divzero",
        summary: "N x divide by zero, each #DE handled by the guest's own handler",
        default_n: 100,
        max_n: 1_000_000,
        batched: false,
        build: divzero,
        expect: divzero_expect,
    },
    Workload {
        name: "ptemod",
        summary: "N x (the guest kernel rewrites a user PTE; INVLPG; reads through it), B a batch",
        default_n: 200,
        max_n: 1_000_000,
        batched: true,
        build: kernel::ptemod,
        expect: kernel::ptemod_expect,
    },
    Workload {
        name: "syscall",
        summary: "N x null system call from guest user mode (SYSCALL/SYSRETQ)",
        default_n: 200,
        max_n: 1_000_000,
        batched: false,
        build: kernel::syscall_workload,
        expect: kernel::syscall_expect,
    },
    Workload {
        name: "pgfault",
        summary: "N demand-zero page faults in user mode, served by the guest kernel",
        default_n: 200,
        max_n: 2_500,
        batched: false,
        build: kernel::pgfault,
        expect: kernel::pgfault_expect,
    },
    Workload {
        name: "ctxswitch",
        summary: "N switches between two processes (MOV CR3), each touching its own pages",
        default_n: 200,
        max_n: 1_000_000,
        batched: false,
        build: kernel::ctxswitch,
        expect: kernel::ctxswitch_expect,
    },
    Workload {
        name: "forkwait",
        summary: "N x (build an address space of K pages, run in it, tear it down)",
        default_n: 20,
        max_n: 100_000,
        batched: false,
        build: kernel::forkwait,
        expect: kernel::forkwait_expect,
    },
    Workload {
        name: "tlb-walk",
        summary: "N user-mode reads over 4096 pages (16 MiB), beyond the TLB's reach",
        default_n: 10_000,
        max_n: 10_000_000,
        batched: false,
        build: kernel::tlb_walk,
        expect: kernel::tlb_walk_expect,
    },
    Workload {
        name: "call-ret",
        summary: "N x CALL/RET: innocuous control flow, the baseline",
        default_n: 1000,
        max_n: 10_000_000,
        batched: false,
        build: call_ret,
        expect: call_ret_expect,
    },
    Workload {
        name: "blk-emulated",
        summary: "N requests of S bytes written, read back and checked on an ATA PIO disk",
        default_n: 16,
        max_n: 4096,
        batched: false,
        build: crate::blk::emulated,
        expect: crate::blk::expect,
    },
    Workload {
        name: "blk-virtio",
        summary: "N requests of S bytes written, read back and checked through virtio-blk, Q per doorbell",
        default_n: 16,
        max_n: 65_536,
        batched: false,
        build: crate::blk::virtio,
        expect: crate::blk::expect,
    },
    Workload {
        name: "balloon",
        summary: "touch N pages, hold delay_us, inflate the balloon by B of them, deflate, verify",
        default_n: 256,
        max_n: crate::memory::REGION_PAGES,
        batched: false,
        build: crate::memory::balloon,
        expect: crate::memory::balloon_expect,
    },
];

/// Result and console of a workload; the oracles are added per mode by
/// [`crate::oracles`].
fn expectations(result: u64, console: &str) -> Expectations {
    Expectations {
        exit_code: Some(0),
        result: Some(result),
        console: Some(console.to_string()),
        oracles: Default::default(),
        divergences: Default::default(),
        variants: Vec::new(),
    }
}

// ---------------------------------------------------------------- compute

/// Multiplier of the checksum's linear congruential step (Knuth's MMIX constant).
const LCG_MUL: u64 = 6_364_136_223_846_793_005;

/// What the compute loop produces: from x = 1 and sum = 0, for i in 0..n,
/// x ← x·LCG_MUL + i and sum ← sum + x (all mod 2⁶⁴).
///
/// The step is linear in the state (x, i, sum, 1), so n steps are one power of its 4×4
/// matrix: O(log n) work on the host, whatever N the guest is given.
pub fn compute_checksum(n: u64) -> u64 {
    const STEP: Matrix = [
        [LCG_MUL, 1, 0, 0], // x'   = a·x + i
        [0, 1, 0, 1],       // i'   = i + 1
        [LCG_MUL, 1, 1, 0], // sum' = sum + a·x + i
        [0, 0, 0, 1],       // 1
    ];
    let m = matrix_pow(STEP, n);
    // Applied to the start state (x, i, sum, 1) = (1, 0, 0, 1).
    m[2][0].wrapping_add(m[2][3])
}

/// A 4×4 matrix over the integers mod 2⁶⁴.
type Matrix = [[u64; 4]; 4];

fn matrix_mul(a: &Matrix, b: &Matrix) -> Matrix {
    let mut c = [[0u64; 4]; 4];
    for (i, row) in c.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = (0..4).fold(0u64, |acc, k| {
                acc.wrapping_add(a[i][k].wrapping_mul(b[k][j]))
            });
        }
    }
    c
}

fn matrix_pow(mut base: Matrix, mut e: u64) -> Matrix {
    let mut acc: Matrix = std::array::from_fn(|i| std::array::from_fn(|j| u64::from(i == j)));
    while e > 0 {
        if e & 1 == 1 {
            acc = matrix_mul(&acc, &base);
        }
        base = matrix_mul(&base, &base);
        e >>= 1;
    }
    acc
}

fn compute(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    asm::prologue(a)?;
    a.mov(rsi, 1u64)?;
    a.mov(rdi, LCG_MUL)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        a.imul_2(rsi, rdi)?;
        a.add(rsi, r12)?;
        a.add(rbx, rsi)
    })?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)
}

fn compute_expect(p: &Params) -> Expectations {
    expectations(compute_checksum(p.n), "")
}

// ---------------------------------------------------------------- pio

/// The console text pio writes: 'a'..'z' repeated.
pub fn pio_text(n: u64) -> String {
    (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

fn pio(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    asm::prologue(a)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        a.mov(rax, r12)?;
        a.xor(edx, edx)?;
        a.mov(ecx, 26)?;
        a.div(rcx)?;
        a.lea(eax, ptr(rdx + i32::from(b'a')))?;
        ops.console_putc(a)?;
        a.inc(rbx)
    })?;
    ops.console_flush(a)?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)
}

fn pio_expect(p: &Params) -> Expectations {
    expectations(p.n, &pio_text(p.n))
}

// ---------------------------------------------------------------- cpuid

fn cpuid(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    asm::prologue(a)?;
    // The vendor string of leaf 0, once, in R8/R9/R10.
    a.xor(eax, eax)?;
    a.xor(ecx, ecx)?;
    ops.cpuid(a)?;
    a.mov(r8d, ebx)?;
    a.mov(r9d, ecx)?;
    a.mov(r10d, edx)?;
    a.xor(r11d, r11d)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        let mut differs = a.create_label();
        a.xor(eax, eax)?;
        a.xor(ecx, ecx)?;
        ops.cpuid(a)?;
        a.cmp(ebx, r8d)?;
        a.jne(differs)?;
        a.cmp(ecx, r9d)?;
        a.jne(differs)?;
        a.cmp(edx, r10d)?;
        a.jne(differs)?;
        a.inc(r11)?;
        a.set_label(&mut differs)
    })?;
    asm::stop_clock(a, p.n)?;
    a.mov(rbx, r11)?;
    asm::finish(a, ops)
}

fn cpuid_expect(p: &Params) -> Expectations {
    expectations(p.n, "")
}

// ---------------------------------------------------------------- irq-toggle

fn irq_toggle(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    asm::prologue(a)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        ops.irq_disable(a)?;
        a.add(rbx, r12)?;
        ops.irq_enable(a)
    })?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)
}

fn irq_toggle_expect(p: &Params) -> Expectations {
    expectations(triangle(p.n), "")
}

/// 0 + 1 + … + (n-1).
fn triangle(n: u64) -> u64 {
    n.wrapping_mul(n.wrapping_sub(1)) / 2
}

// ---------------------------------------------------------------- popf

const RFLAGS_IF: i32 = 1 << 9;

/// Reads RFLAGS through the ops and counts in RBX when IF equals `want`.
fn check_if(a: &mut CodeAssembler, ops: &dyn GuestOps, want: bool) -> AsmResult {
    let mut skip = a.create_label();
    ops.save_flags(a)?;
    a.bt(rax, 9)?;
    if want {
        a.jnc(skip)?;
    } else {
        a.jc(skip)?;
    }
    a.inc(rbx)?;
    a.set_label(&mut skip)
}

fn popf(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    asm::prologue(a)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        ops.irq_disable(a)?;
        check_if(a, ops, false)?; // after CLI, PUSHF must show IF = 0
        ops.save_flags(a)?;
        a.or(rax, RFLAGS_IF)?;
        ops.restore_flags(a)?; // POPF with IF = 1 enables interrupts
        check_if(a, ops, true)?;
        ops.save_flags(a)?;
        a.and(rax, !RFLAGS_IF)?;
        ops.restore_flags(a)?; // POPF with IF = 0 disables them again
        check_if(a, ops, false)?;
        ops.irq_enable(a)
    })?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)
}

fn popf_expect(p: &Params) -> Expectations {
    let mut e = expectations(3 * p.n, "");
    e.divergences.insert(
        Mode::TrapEmulate,
        KnownDivergence {
            result: p.n,
            why: "PUSHF and POPF are sensitive but not privileged: at CPL 3 they never trap. \
                  PUSHF shows the real IF (1) instead of the virtual IF the guest cleared \
                  with CLI, and POPF silently ignores the IF bit (IOPL 0), so 2 of the 3 \
                  checks per iteration fail — the x86 hole of Popek & Goldberg / Robin & \
                  Irvine"
                .into(),
        },
    );
    e
}

// ---------------------------------------------------------------- cr8wr

fn cr8wr(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    asm::prologue(a)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        a.mov(rax, r12)?;
        a.and(eax, 15)?;
        ops.write_cr8(a)
    })?;
    asm::stop_clock(a, p.n)?;
    ops.read_cr8(a)?;
    a.mov(rbx, rax)?;
    a.xor(eax, eax)?;
    ops.write_cr8(a)?;
    asm::finish(a, ops)
}

fn cr8wr_expect(p: &Params) -> Expectations {
    expectations(p.n.saturating_sub(1) & 15, "")
}

// ---------------------------------------------------------------- mmio

fn mmio_reads(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    asm::prologue(a)?;
    a.mov(rsi, qword_ptr(r15 + boot_info::MMIO_BASE as i32))?;
    a.add(rsi, mmio::TICKET as i32)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        ops.mmio_read(a)?;
        a.add(rbx, rax)
    })?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)
}

fn mmio_expect(p: &Params) -> Expectations {
    // Tickets 1..=N.
    expectations(triangle(p.n + 1), "")
}

// ---------------------------------------------------------------- hlt-timer

fn hlt_timer(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let mut idt = a.create_label();
    let mut handler = a.create_label();
    let mut main = a.create_label();
    asm::prologue(a)?;
    asm::set_gate(a, idt, TIMER_VECTOR, handler)?;
    asm::load_idt(a, ops, idt)?;
    a.jmp(main)?;

    a.set_label(&mut handler)?;
    a.inc(rbx)?;
    ops.iret(a)?;

    a.set_label(&mut main)?;
    asm::start_clock(a)?;
    let delay = p.delay_us;
    counted_loop(a, p.n, |a| {
        a.mov(eax, delay)?;
        ops.arm_timer(a)?;
        ops.safe_halt(a)?;
        ops.irq_disable(a)
    })?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)?;
    asm::idt_storage(a, &mut idt)
}

fn hlt_timer_expect(p: &Params) -> Expectations {
    expectations(p.n, "")
}

// ---------------------------------------------------------------- divzero

fn divzero(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let mut idt = a.create_label();
    let mut handler = a.create_label();
    let mut main = a.create_label();
    asm::prologue(a)?;
    asm::set_gate(a, idt, 0, handler)?;
    asm::load_idt(a, ops, idt)?;
    a.jmp(main)?;

    // #DE handler: count it and resume after the 2-byte `div ecx`.
    a.set_label(&mut handler)?;
    a.inc(rbx)?;
    a.add(qword_ptr(rsp), 2)?;
    ops.iret(a)?;

    a.set_label(&mut main)?;
    a.xor(ecx, ecx)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| {
        a.mov(eax, 1)?;
        a.xor(edx, edx)?;
        a.div(ecx) // F7 F1: #DE
    })?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)?;
    asm::idt_storage(a, &mut idt)
}

fn divzero_expect(p: &Params) -> Expectations {
    expectations(p.n, "")
}

// ---------------------------------------------------------------- call-ret

fn call_ret(a: &mut CodeAssembler, ops: &dyn GuestOps, p: &Params) -> AsmResult {
    let mut func = a.create_label();
    let mut main = a.create_label();
    asm::prologue(a)?;
    a.jmp(main)?;
    a.set_label(&mut func)?;
    a.add(rbx, r12)?;
    a.ret()?;
    a.set_label(&mut main)?;
    asm::start_clock(a)?;
    counted_loop(a, p.n, |a| a.call(func))?;
    asm::stop_clock(a, p.n)?;
    asm::finish(a, ops)
}

fn call_ret_expect(p: &Params) -> Expectations {
    expectations(triangle(p.n), "")
}
