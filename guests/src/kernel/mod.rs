//! A small guest kernel with user mode: processes with their own page tables, SYSCALL
//! entry and exit, a page-fault handler that allocates demand-zero pages from a free
//! list, and a context switch. It is written once against [`KernelOps`] (the native
//! flavour runs the real instructions) and assembled together with the user programs of
//! the memory workloads (`ptemod`, `syscall`, `pgfault`, `ctxswitch`, `forkwait`,
//! `tlb-walk`).
//!
//! ```
//! use guests::{build, Params};
//! use contract::Flavour;
//!
//! let image = build("syscall", Flavour::Native, Params { n: 10, ..Params::default() })?;
//! assert_eq!(image.expected.result, Some(55)); // the kernel returns 1, 2, …, 10
//! # Ok::<(), guests::Error>(())
//! ```
//!
//! The address-space layout, the boot state it assumes and the instructions it uses are
//! the contract of `docs/guest-abi.md` ("The guest kernel").

pub mod ops;
pub mod workloads;

use contract::abi::{boot_info, layout};
use contract::x86::pte;
use iced_x86::code_asm::*;

use crate::ops::{AsmResult, GuestOps};
pub use ops::KernelOps;

/// The kernel's memory layout: guest-physical for the kernel's own structures (the kernel
/// maps RAM at its guest-physical address, supervisor-only), virtual for the user half.
pub mod map {
    /// Start of the user half: PML4 entry 1 (512 GiB). Entry 0 is the kernel half (RAM
    /// and the monitor's region, shared by every address space).
    pub const USER_BASE: u64 = 0x80_0000_0000;
    /// Where a process's code is mapped (read-only, user).
    pub const USER_CODE: u64 = USER_BASE;
    /// A process's data pages (read/write, user, mapped when it is created); its stack
    /// grows down from their end.
    pub const USER_DATA: u64 = USER_BASE + 0x10_0000;
    /// The process's heap: demand-zero pages (pgfault) or pages the kernel maps for it
    /// (forkwait, tlb-walk).
    pub const USER_HEAP: u64 = USER_BASE + 0x4000_0000;
    /// Largest number of heap pages a process may touch.
    pub const HEAP_PAGES: u64 = 1 << 16;
    /// First frame of the kernel's frame pool; the pool runs to the end of RAM. The image
    /// (at 1 MiB) must end below it.
    pub const POOL_START: u64 = 0x40_0000;
    /// Top of the kernel stack (the boot stack).
    pub const KERNEL_STACK_TOP: u64 = contract::abi::layout::DEFAULT_STACK_TOP;
    /// The kernel's entry page, mapped read-only in every process: `syscall; ret` where
    /// SYSCALL enters the kernel, `int3; ret` where it does not (see
    /// [`super::sys::DETECT`]). User code enters the kernel with `call` to it.
    pub const USER_VDSO: u64 = USER_BASE + 0x8_0000;
    /// A software bit of the PTE (bit 9, ignored by the MMU): the frame belongs to the
    /// process and goes back to the free list when its address space is torn down.
    pub const OWNED: u64 = 1 << 9;
}

/// How a run of the kernel ends: the exit code, with RBX the detail.
pub mod exit {
    /// Done: RBX is the workload's result.
    pub const OK: u32 = 0;
    /// A user process was killed by a page fault the kernel does not serve: the code is
    /// `KILLED | error code`, RBX the faulting address (CR2).
    pub const KILLED: u32 = 0x100;
    /// The frame pool is exhausted: RBX is the number of frames in use.
    pub const OUT_OF_MEMORY: u32 = 0x200;
    /// A system call the kernel does not know: the code is `BAD_SYSCALL`, RBX its number.
    pub const BAD_SYSCALL: u32 = 0x300;
    /// Tearing an address space down did not give every frame back: RBX the frames in
    /// use.
    pub const LEAK: u32 = 0x400;
    /// The kernel served another number of page faults than the workload made: RBX the
    /// number served.
    pub const FAULT_COUNT: u32 = 0x500;
}

/// System-call numbers (in RAX).
pub mod sys {
    /// Returns 1, 2, 3, … (the number of null calls so far); the fast path.
    pub const NULL: u32 = 0;
    /// Ends the process; its RBX is its result.
    pub const EXIT: u32 = 1;
    /// Gives the CPU to the other process.
    pub const YIELD: u32 = 2;
    /// Remaps the process's first data page to its second data frame and flushes the
    /// TLB entry (the probe's `invlpg` check).
    pub const REMAP: u32 = 3;
    /// The boot-time check of SYSCALL. SYSCALL from CPL 3 must arrive at LSTAR at CPL 0;
    /// where the host leaves the CPU at CPL 3 (measured on `kvm_pvm`, where `int n` from
    /// CPL 3 raises #UD as well), the kernel's entry page enters with `int3` instead, a
    /// trap through a DPL 3 gate that the kernel turns into SYSCALL's state.
    pub const DETECT: u32 = 4;
}

/// Offsets in a process descriptor.
mod proc {
    pub const ROOT: i32 = 0x00;
    pub const RIP: i32 = 0x08;
    pub const RFLAGS: i32 = 0x10;
    pub const RSP: i32 = 0x18;
    /// Frame of the first data page.
    pub const DATA_FRAME: i32 = 0x20;
    /// Frame of the second data page.
    pub const DATA_FRAME2: i32 = 0x28;
    /// Saved registers, in the order of [`super::SAVED`].
    pub const REGS: i32 = 0x30;
    /// The user root (0 where the flavour has one root per process).
    pub const UROOT: i32 = 0xF8;
    pub const SIZE: i32 = 0x100;
}

/// The user registers a process descriptor keeps (RCX and R11 carry RIP and RFLAGS
/// through SYSCALL; RSP has its own slot).
const SAVED: [AsmRegister64; 13] = [
    rax, rbx, rdx, rsi, rdi, rbp, r8, r9, r10, r12, r13, r14, r15,
];

fn saved_slot(r: AsmRegister64) -> i32 {
    let i = SAVED.iter().position(|s| *s == r).expect("saved register");
    proc::REGS + 8 * i as i32
}

/// Number of process descriptors.
pub const PROCS: i32 = 2;

/// The kernel's code and data labels, and the ops it is built with.
pub struct Kernel<'o> {
    /// The workload's ops (exit, console).
    pub ops: &'o dyn GuestOps,
    /// The kernel's ops.
    pub k: &'o dyn KernelOps,
    alloc_frame: CodeLabel,
    free_frame: CodeLabel,
    map_page: CodeLabel,
    new_space: CodeLabel,
    destroy_space: CodeLabel,
    run_user: CodeLabel,
    syscall_entry: CodeLabel,
    trap_entry: CodeLabel,
    landing: CodeLabel,
    detect: CodeLabel,
    detected: CodeLabel,
    pf_entry: CodeLabel,
    idt: CodeLabel,
    user_start: CodeLabel,
    user_end: CodeLabel,
    procs: CodeLabel,
    /// Kernel variables (one quadword each).
    pub var: Vars,
}

impl std::fmt::Debug for Kernel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("flavour", &self.ops.flavour())
            .finish_non_exhaustive()
    }
}

/// The kernel's variables.
#[derive(Debug, Clone, Copy)]
pub struct Vars {
    free_head: CodeLabel,
    bump_next: CodeLabel,
    pool_end: CodeLabel,
    /// Frames allocated and not freed.
    pub in_use: CodeLabel,
    kpdpt: CodeLabel,
    /// The kernel-only root (no user half).
    pub kroot: CodeLabel,
    current: CodeLabel,
    kernel_rsp: CodeLabel,
    user_rsp: CodeLabel,
    /// Null system calls served.
    pub null_calls: CodeLabel,
    /// Demand-zero faults served.
    pub faults: CodeLabel,
    /// Heap pages a process may demand (0: none).
    pub heap_limit: CodeLabel,
    /// General-purpose counters of a workload's kernel part.
    pub count: CodeLabel,
    /// A second counter.
    pub count2: CodeLabel,
    /// The result being accumulated.
    pub result: CodeLabel,
    /// TSC at the start of the measured part.
    pub tsc: CodeLabel,
    /// The frame of the entry page ([`map::USER_VDSO`]).
    vdso: CodeLabel,
    /// 1 if SYSCALL from CPL 3 entered the kernel at boot, else 0.
    pub syscall_ok: CodeLabel,
    /// 1 while the boot-time check of SYSCALL runs.
    detecting: CodeLabel,
}

impl<'o> Kernel<'o> {
    /// A kernel for `ops`; `None` if the flavour has no kernel operations.
    pub fn new(a: &mut CodeAssembler, ops: &'o dyn GuestOps) -> Option<Self> {
        let k = ops.kernel()?;
        let mut l = || a.create_label();
        let var = Vars {
            free_head: l(),
            bump_next: l(),
            pool_end: l(),
            in_use: l(),
            kpdpt: l(),
            kroot: l(),
            current: l(),
            kernel_rsp: l(),
            user_rsp: l(),
            null_calls: l(),
            faults: l(),
            heap_limit: l(),
            count: l(),
            count2: l(),
            result: l(),
            tsc: l(),
            vdso: l(),
            syscall_ok: l(),
            detecting: l(),
        };
        Some(Kernel {
            ops,
            k,
            alloc_frame: l(),
            free_frame: l(),
            map_page: l(),
            new_space: l(),
            destroy_space: l(),
            run_user: l(),
            syscall_entry: l(),
            trap_entry: l(),
            landing: l(),
            detect: l(),
            detected: l(),
            pf_entry: l(),
            idt: l(),
            user_start: l(),
            user_end: l(),
            procs: l(),
            var,
        })
    }

    /// Assembles the whole image: boot, `main` (the workload's kernel part, entered with
    /// the kernel running on its own root), the kernel's routines, the user program
    /// `user` in pages of its own, and the kernel's data.
    pub fn assemble(
        mut self,
        a: &mut CodeAssembler,
        main: impl FnOnce(&mut CodeAssembler, &mut Self) -> AsmResult,
        user: impl FnOnce(&mut CodeAssembler, &mut Self) -> AsmResult,
    ) -> AsmResult {
        self.boot(a)?;
        main(a, &mut self)?;
        // `main` ends the run; should it fall through, park.
        self.park(a)?;
        self.routines(a)?;
        // The user program in pages that hold nothing else.
        a.db(&[0xCC; contract::abi::PAGE_SIZE as usize])?;
        a.set_label(&mut self.user_start)?;
        a.int3()?;
        // The boot-time check of SYSCALL (see `sys::DETECT`).
        a.set_label(&mut self.detect)?;
        a.mov(eax, sys::DETECT)?;
        a.syscall()?;
        a.ud2()?;
        // Where LSTAR points during the check: at CPL 0 the jump reaches the kernel's
        // `detected`; at CPL 3 fetching it faults, and the fault handler reports.
        a.set_label(&mut self.landing)?;
        a.jmp(r8)?;
        user(a, &mut self)?;
        a.set_label(&mut self.user_end)?;
        a.db(&[0xCC; contract::abi::PAGE_SIZE as usize])?;
        self.data(a)
    }

    fn park(&self, a: &mut CodeAssembler) -> AsmResult {
        let mut park = a.create_label();
        a.set_label(&mut park)?;
        a.hlt()?;
        a.jmp(park)
    }

    /// Boot: the frame pool, the kernel half (RAM supervisor-only in 2 MiB pages, the
    /// monitor's region through the boot tables' own page directory), the kernel-only
    /// root, the trap table and the SYSCALL entry; then switches to the kernel-only root.
    fn boot(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        crate::asm::prologue(a)?;
        a.mov(rax, map::POOL_START)?;
        a.mov(qword_ptr(v.bump_next), rax)?;
        a.mov(rax, qword_ptr(r15 + boot_info::RAM_SIZE as i32))?;
        a.mov(qword_ptr(v.pool_end), rax)?;
        let mut kernel_root = a.create_label();
        if let Some(half) = self.k.kernel_half() {
            a.mov(rax, half)?;
            a.mov(qword_ptr(v.kpdpt), rax)?;
            a.jmp(kernel_root)?;
        }
        // The kernel's page directory of the first GiB: RAM in 2 MiB pages.
        a.call(self.alloc_frame)?;
        a.mov(r8, rax)?;
        a.mov(r9, qword_ptr(r15 + boot_info::RAM_SIZE as i32))?;
        a.shr(r9, 21)?;
        a.xor(r10d, r10d)?; // the 2 MiB page's index
        let mut fill = a.create_label();
        a.set_label(&mut fill)?;
        a.mov(rax, r10)?;
        a.shl(rax, 21)?;
        a.or(rax, (self.k.kernel_map_flags() | pte::PS) as i32)?;
        a.lea(rdi, ptr(r8 + r10 * 8))?;
        self.k.pte_store(a)?;
        a.inc(r10)?;
        a.cmp(r10, r9)?;
        a.jb(fill)?;
        // Its PDPT: the first GiB, and the monitor's region as the boot tables map it.
        a.call(self.alloc_frame)?;
        a.mov(qword_ptr(v.kpdpt), rax)?;
        a.mov(rdi, rax)?;
        a.mov(rax, r8)?;
        a.or(rax, self.k.kernel_map_flags() as i32)?;
        self.k.pte_store(a)?;
        a.add(rdi, 8)?;
        a.mov(rax, layout::PD_MONITOR | pte::P | pte::RW | pte::US)?;
        self.k.pte_store(a)?;
        // The kernel-only root.
        a.set_label(&mut kernel_root)?;
        a.call(self.alloc_frame)?;
        self.k.new_root(a)?;
        a.mov(qword_ptr(v.kroot), rax)?;
        a.mov(rdi, rax)?;
        a.mov(rax, qword_ptr(v.kpdpt))?;
        a.or(rax, (pte::P | pte::RW | pte::US) as i32)?;
        self.k.pte_store(a)?;
        self.k.pte_flush(a)?;
        self.k
            .install_traps(a, self.idt, self.pf_entry, self.trap_entry)?;
        a.mov(rax, qword_ptr(v.kroot))?;
        self.no_user_root(a)?;
        self.k.switch_address_space(a)?;
        self.detect_syscall(a)
    }

    /// Finds out whether SYSCALL from CPL 3 enters the kernel on this (virtual) CPU: a
    /// process makes one with LSTAR at `landing`, in its own code, which reports CS with
    /// a page fault. Then fills the entry page and points LSTAR at the real entry.
    fn detect_syscall(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        a.call(self.alloc_frame)?;
        a.mov(qword_ptr(v.vdso), rax)?;
        self.create_process(a, 0, self.detect, 1)?;
        self.proc_addr(a, rbx, 0)?;
        a.lea(rax, ptr(self.detected))?;
        a.mov(qword_ptr(rbx + saved_slot(r8)), rax)?;
        self.user_va(a, self.landing)?;
        self.k.set_syscall_entry(a)?;
        a.mov(qword_ptr(v.detecting), 1)?;
        self.switch_to(a, 0)?;
        self.run_user(a)?;
        a.mov(qword_ptr(v.detecting), 0)?;
        self.expect_sys(a, sys::DETECT)?;
        let mut write = a.create_label();
        a.mov(eax, 0x0000_C3CC)?; // int3; ret
        a.cmp(qword_ptr(v.syscall_ok), 0)?;
        a.je(write)?;
        a.mov(eax, 0x00C3_050F)?; // syscall; ret
        a.set_label(&mut write)?;
        a.mov(rdi, qword_ptr(v.vdso))?;
        a.mov(dword_ptr(rdi), eax)?;
        self.destroy_process(a, 0)?;
        a.lea(rax, ptr(self.syscall_entry))?;
        self.k.set_syscall_entry(a)
    }

    /// Where the boot-time check lands when SYSCALL did enter the kernel: back to
    /// `run_user`'s caller, as a system call would.
    fn emit_detected(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        a.set_label(&mut self.detected)?;
        a.mov(rsp, qword_ptr(v.kernel_rsp))?;
        a.mov(qword_ptr(v.syscall_ok), 1)?;
        a.mov(eax, sys::DETECT)?;
        a.ret()
    }

    /// The user address of `label` in the user program, into RAX (clobbers RCX).
    fn user_va(&self, a: &mut CodeAssembler, label: CodeLabel) -> AsmResult {
        a.lea(rax, ptr(label))?;
        a.lea(rcx, ptr(self.user_start))?;
        a.and(rcx, -0x1000)?;
        a.sub(rax, rcx)?;
        a.mov(rcx, map::USER_CODE)?;
        a.add(rax, rcx)
    }

    /// Ends the run with [`exit::BAD_SYSCALL`] unless RAX is `want`.
    pub fn expect_sys(&self, a: &mut CodeAssembler, want: u32) -> AsmResult {
        let mut ok = a.create_label();
        a.cmp(eax, want)?;
        a.je(ok)?;
        a.mov(rbx, rax)?;
        self.exit(a, exit::BAD_SYSCALL)?;
        a.set_label(&mut ok)
    }

    /// The kernel's routines, called with `call`.
    fn routines(&mut self, a: &mut CodeAssembler) -> AsmResult {
        self.emit_alloc_frame(a)?;
        self.emit_free_frame(a)?;
        self.emit_map_page(a)?;
        self.emit_new_space(a)?;
        self.emit_destroy_space(a)?;
        self.emit_run_user(a)?;
        self.emit_syscall_entry(a)?;
        self.emit_trap_entry(a)?;
        self.emit_detected(a)?;
        self.emit_pf_entry(a)
    }

    /// `alloc_frame`: a zeroed frame in RAX, from the free list or else the pool.
    /// Clobbers RCX, RDI. Ends the run with [`exit::OUT_OF_MEMORY`] when none is left.
    fn emit_alloc_frame(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        let (mut bump, mut zero, mut oom) = (a.create_label(), a.create_label(), a.create_label());
        a.set_label(&mut self.alloc_frame)?;
        a.mov(rax, qword_ptr(v.free_head))?;
        a.test(rax, rax)?;
        a.jz(bump)?;
        a.mov(rcx, qword_ptr(rax))?;
        a.mov(qword_ptr(v.free_head), rcx)?;
        a.jmp(zero)?;
        a.set_label(&mut bump)?;
        a.mov(rax, qword_ptr(v.bump_next))?;
        a.cmp(rax, qword_ptr(v.pool_end))?;
        a.jae(oom)?;
        a.lea(rcx, ptr(rax + 0x1000))?;
        a.mov(qword_ptr(v.bump_next), rcx)?;
        a.set_label(&mut zero)?;
        a.inc(qword_ptr(v.in_use))?;
        a.push(rax)?;
        a.mov(rdi, rax)?;
        a.mov(ecx, 512)?;
        a.xor(eax, eax)?;
        a.rep().stosq()?;
        a.pop(rax)?;
        a.ret()?;
        a.set_label(&mut oom)?;
        a.mov(rbx, qword_ptr(v.in_use))?;
        a.mov(eax, exit::OUT_OF_MEMORY)?;
        self.ops.exit(a)?;
        self.park(a)
    }

    /// `free_frame`: puts the frame in RAX on the free list. Clobbers RCX.
    fn emit_free_frame(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        a.set_label(&mut self.free_frame)?;
        a.mov(rcx, qword_ptr(v.free_head))?;
        a.mov(qword_ptr(rax), rcx)?;
        a.mov(qword_ptr(v.free_head), rax)?;
        a.dec(qword_ptr(v.in_use))?;
        a.ret()
    }

    /// `map_page`: in the address space of root R8, maps the virtual page R9 with the
    /// PTE value R10, building the missing tables (user, writable); RDI is left at the
    /// PTE stored. Clobbers RAX, RCX, RDX, RSI.
    fn emit_map_page(&mut self, a: &mut CodeAssembler) -> AsmResult {
        a.set_label(&mut self.map_page)?;
        a.mov(rdx, r8)?;
        for shift in [39u32, 30, 21] {
            let mut present = a.create_label();
            a.mov(rsi, r9)?;
            a.shr(rsi, shift)?;
            a.and(esi, 511)?;
            a.lea(rdi, ptr(rdx + rsi * 8))?;
            a.mov(rax, qword_ptr(rdi))?;
            a.test(al, 1)?;
            a.jnz(present)?;
            a.push(rdi)?;
            a.call(self.alloc_frame)?;
            a.pop(rdi)?;
            a.or(rax, (pte::P | pte::RW | pte::US) as i32)?;
            self.k.pte_store(a)?;
            self.k.pte_flush(a)?;
            a.set_label(&mut present)?;
            a.and(rax, -0x1000)?;
            a.mov(rdx, rax)?;
        }
        a.mov(rsi, r9)?;
        a.shr(rsi, 12)?;
        a.and(esi, 511)?;
        a.lea(rdi, ptr(rdx + rsi * 8))?;
        a.mov(rax, r10)?;
        self.k.pte_store(a)?;
        a.ret()
    }

    /// `new_space`: a new address space in RAX: a root with the kernel half, and the
    /// user program mapped read-only at [`map::USER_CODE`]; where the flavour has user
    /// roots ([`KernelOps::user_slot`]), the user root in RDX (else RDX = 0): the same
    /// user half, under the slot's kernel half. Clobbers RCX, RSI, RDI, R8–R11.
    fn emit_new_space(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let user = (pte::P | pte::RW | pte::US) as i32;
        a.set_label(&mut self.new_space)?;
        a.call(self.alloc_frame)?;
        self.k.new_root(a)?;
        a.mov(r8, rax)?;
        a.mov(rdi, rax)?;
        a.mov(rax, qword_ptr(self.var.kpdpt))?;
        a.or(rax, user)?;
        self.k.pte_store(a)?;
        if let Some(slot) = self.k.user_slot() {
            a.call(self.alloc_frame)?;
            self.k.new_root(a)?;
            a.mov(r11, rax)?;
            a.mov(rdi, rax)?;
            a.mov(rax, slot | pte::P | pte::RW | pte::US)?;
            self.k.pte_store(a)?;
            // The user half's table, in both roots.
            a.call(self.alloc_frame)?;
            a.or(rax, user)?;
            a.lea(rdi, ptr(r8 + 8))?;
            self.k.pte_store(a)?;
            a.lea(rdi, ptr(r11 + 8))?;
            self.k.pte_store(a)?;
            // `map_page` reads the root next.
            self.k.pte_flush(a)?;
        }
        // The entry page.
        a.mov(r9, map::USER_VDSO)?;
        a.mov(r10, qword_ptr(self.var.vdso))?;
        a.or(r10, (pte::P | pte::US) as i32)?;
        a.push(r8)?;
        a.call(self.map_page)?;
        a.pop(r8)?;
        // The pages of the user program (two: it may straddle a page boundary).
        a.mov(r9, map::USER_CODE)?;
        a.lea(r10, ptr(self.user_start))?;
        a.and(r10, -0x1000)?;
        a.or(r10, (pte::P | pte::US) as i32)?;
        for _ in 0..2 {
            a.push(r8)?;
            a.push(r9)?;
            a.push(r10)?;
            a.call(self.map_page)?;
            a.pop(r10)?;
            a.pop(r9)?;
            a.pop(r8)?;
            a.add(r9, 0x1000)?;
            a.add(r10, 0x1000)?;
        }
        self.k.pte_flush(a)?;
        a.mov(rax, r8)?;
        if self.k.user_slot().is_some() {
            a.mov(rdx, r11)?;
        }
        a.ret()
    }

    /// `destroy_space`: tears down the address space of root R8 (not the current one):
    /// every frame of its user half marked [`map::OWNED`], every table of that half and
    /// the root go back to the free list. Clobbers RAX, RCX, RDX, RSI, RDI, R8–R11.
    fn emit_destroy_space(&mut self, a: &mut CodeAssembler) -> AsmResult {
        a.set_label(&mut self.destroy_space)?;
        // R9: PDPT, R10: PD, R11: PT; RSI, RDX, RDI: the indexes at each level.
        a.mov(r9, qword_ptr(r8 + 8))?;
        a.test(r9b, 1)?;
        let mut no_pdpt = a.create_label();
        a.jz(no_pdpt)?;
        a.and(r9, -0x1000)?;
        self.scan(a, r9, rsi, |k, a, _| {
            a.mov(r10, qword_ptr(r9 + rsi * 8))?;
            a.and(r10, -0x1000)?;
            k.scan(a, r10, rdx, |k, a, _| {
                a.mov(r11, qword_ptr(r10 + rdx * 8))?;
                a.and(r11, -0x1000)?;
                k.scan(a, r11, rdi, |k, a, next| {
                    a.mov(rax, qword_ptr(r11 + rdi * 8))?;
                    a.bt(rax, 9)?; // OWNED
                    a.jnc(next)?;
                    a.and(rax, -0x1000)?;
                    k.call_free(a)
                })?;
                a.mov(rax, r11)?;
                k.call_free(a)
            })?;
            a.mov(rax, r10)?;
            k.call_free(a)
        })?;
        a.mov(rax, r9)?;
        self.call_free(a)?;
        a.set_label(&mut no_pdpt)?;
        a.mov(rax, r8)?;
        self.call_free(a)?;
        a.ret()
    }

    /// `call free_frame` (clobbers RCX).
    fn call_free(&self, a: &mut CodeAssembler) -> AsmResult {
        a.call(self.free_frame)
    }

    /// For every present entry of the table at `table`, with its index in `index`, runs
    /// `body` (which must keep `table` and `index`, and may jump to the label it is given
    /// to go on with the next entry).
    fn scan(
        &self,
        a: &mut CodeAssembler,
        table: AsmRegister64,
        index: AsmRegister64,
        body: impl FnOnce(&Self, &mut CodeAssembler, CodeLabel) -> AsmResult,
    ) -> AsmResult {
        let (mut top, mut next) = (a.create_label(), a.create_label());
        a.xor(index, index)?;
        a.set_label(&mut top)?;
        a.test(byte_ptr(table + index * 8), 1)?;
        a.jz(next)?;
        body(self, a, next)?;
        a.set_label(&mut next)?;
        a.inc(index)?;
        a.cmp(index, 512)?;
        a.jb(top)
    }

    /// `run_user`: enters the current process in user mode; returns (RAX = the system
    /// call number) when it makes a system call other than the null one. Clobbers every
    /// register but RSP.
    fn emit_run_user(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        a.set_label(&mut self.run_user)?;
        a.mov(qword_ptr(v.kernel_rsp), rsp)?;
        a.mov(rax, qword_ptr(v.current))?;
        a.mov(rcx, qword_ptr(rax + proc::RIP))?;
        a.mov(r11, qword_ptr(rax + proc::RFLAGS))?;
        a.mov(rsp, qword_ptr(rax + proc::RSP))?;
        for r in SAVED.iter().skip(1) {
            a.mov(*r, qword_ptr(rax + saved_slot(*r)))?;
        }
        a.mov(rax, qword_ptr(rax + saved_slot(rax)))?;
        self.k.return_to_user(a)
    }

    /// The SYSCALL entry: the null call returns at once; any other saves the process and
    /// returns from `run_user` with its number.
    fn emit_syscall_entry(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        let mut slow = a.create_label();
        a.set_label(&mut self.syscall_entry)?;
        a.test(eax, eax)?;
        a.jnz(slow)?;
        a.inc(qword_ptr(v.null_calls))?;
        a.mov(rax, qword_ptr(v.null_calls))?;
        self.k.return_to_user(a)?;
        a.set_label(&mut slow)?;
        a.mov(qword_ptr(v.user_rsp), rsp)?;
        a.mov(rsp, qword_ptr(v.kernel_rsp))?;
        a.push(rax)?;
        a.mov(rax, qword_ptr(v.current))?;
        a.mov(qword_ptr(rax + proc::RIP), rcx)?;
        a.mov(qword_ptr(rax + proc::RFLAGS), r11)?;
        a.mov(rcx, qword_ptr(v.user_rsp))?;
        a.mov(qword_ptr(rax + proc::RSP), rcx)?;
        for r in SAVED.iter().skip(1) {
            a.mov(qword_ptr(rax + saved_slot(*r)), *r)?;
        }
        a.pop(rcx)?;
        a.mov(qword_ptr(rax + saved_slot(rax)), rcx)?;
        a.mov(rax, rcx)?;
        a.ret()
    }

    /// The trap entry (`int3` from user mode, vector 3 through a DPL 3 gate): turns the
    /// interrupt frame into SYSCALL's state (RCX the return address, R11 RFLAGS, RSP the
    /// user's) and goes on as the SYSCALL entry.
    fn emit_trap_entry(&mut self, a: &mut CodeAssembler) -> AsmResult {
        a.set_label(&mut self.trap_entry)?;
        a.mov(rcx, qword_ptr(rsp))?;
        a.mov(r11, qword_ptr(rsp + 16))?;
        a.mov(rsp, qword_ptr(rsp + 24))?;
        a.jmp(self.syscall_entry)
    }

    /// The page-fault handler: a user fault on a missing page of the heap, within
    /// `heap_limit` pages, gets a zeroed frame; any other fault kills the process (the
    /// run ends with [`exit::KILLED`]).
    fn emit_pf_entry(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = self.var;
        let mut kill = a.create_label();
        let pushed = [rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11];
        a.set_label(&mut self.pf_entry)?;
        for r in pushed {
            a.push(r)?;
        }
        let err = 8 * pushed.len() as i32;
        // The boot-time check of SYSCALL landed at CPL 3: SYSCALL does not enter the
        // kernel here. Back to `run_user`'s caller, as a system call would.
        let mut serve = a.create_label();
        a.cmp(qword_ptr(v.detecting), 0)?;
        a.je(serve)?;
        a.mov(rsp, qword_ptr(v.kernel_rsp))?;
        a.mov(eax, sys::DETECT)?;
        a.ret()?;
        a.set_label(&mut serve)?;
        self.k.read_fault_address(a)?;
        a.mov(rcx, qword_ptr(rsp + err))?;
        // Only a user access (bit 2) to a page that is not present (bit 0 clear).
        a.mov(edx, ecx)?;
        a.and(edx, 5)?;
        a.cmp(edx, 4)?;
        a.jne(kill)?;
        a.mov(rdx, rax)?;
        a.mov(rsi, map::USER_HEAP)?;
        a.sub(rdx, rsi)?;
        a.jb(kill)?;
        a.shr(rdx, 12)?;
        a.cmp(rdx, qword_ptr(v.heap_limit))?;
        a.jae(kill)?;
        a.mov(r9, rax)?;
        a.and(r9, -0x1000)?;
        a.call(self.alloc_frame)?;
        a.mov(r10, rax)?;
        a.or(r10, (pte::P | pte::RW | pte::US | map::OWNED) as i32)?;
        a.mov(r8, qword_ptr(v.current))?;
        a.mov(r8, qword_ptr(r8 + proc::ROOT))?;
        a.call(self.map_page)?;
        self.k.pte_flush(a)?;
        a.inc(qword_ptr(v.faults))?;
        for r in pushed.iter().rev() {
            a.pop(*r)?;
        }
        a.add(rsp, 8)?;
        self.k.fault_return(a)?;
        a.set_label(&mut kill)?;
        // RBX: CR2; RDX, RSI: the faulting RIP and CS (for a reader of the registers).
        a.mov(rbx, rax)?;
        a.mov(rdx, qword_ptr(rsp + err + 8))?;
        a.mov(rsi, qword_ptr(rsp + err + 16))?;
        a.mov(eax, ecx)?;
        a.and(eax, 0xFF)?;
        a.or(eax, exit::KILLED as i32)?;
        self.ops.exit(a)?;
        self.park(a)
    }

    /// The kernel's data: variables, process descriptors and the trap table, in pages
    /// after the code's last.
    fn data(&mut self, a: &mut CodeAssembler) -> AsmResult {
        let v = &mut self.var;
        for l in [
            &mut v.free_head,
            &mut v.bump_next,
            &mut v.pool_end,
            &mut v.in_use,
            &mut v.kpdpt,
            &mut v.kroot,
            &mut v.current,
            &mut v.kernel_rsp,
            &mut v.user_rsp,
            &mut v.null_calls,
            &mut v.faults,
            &mut v.heap_limit,
            &mut v.count,
            &mut v.count2,
            &mut v.result,
            &mut v.tsc,
            &mut v.vdso,
            &mut v.syscall_ok,
            &mut v.detecting,
        ] {
            a.set_label(l)?;
            a.dq(&[0])?;
        }
        a.set_label(&mut self.procs)?;
        a.db(&vec![0u8; (PROCS * proc::SIZE) as usize])?;
        a.set_label(&mut self.idt)?;
        a.db(&self.k.trap_table_template())
    }

    // ------------------------------------------------ what a workload's `main` uses

    /// Loads the address of process descriptor `i` into `reg`.
    pub fn proc_addr(&self, a: &mut CodeAssembler, reg: AsmRegister64, i: i32) -> AsmResult {
        a.lea(reg, ptr(self.procs))?;
        if i != 0 {
            a.add(reg, i * proc::SIZE)?;
        }
        Ok(())
    }

    /// Creates process `i` entering user mode at `entry` (a label of the user program):
    /// a new address space with `data_pages` zeroed data pages at [`map::USER_DATA`]
    /// (the stack at their end), R15 the boot-info page, every other register 0.
    /// Clobbers every register but RSP and R15.
    pub fn create_process(
        &self,
        a: &mut CodeAssembler,
        i: i32,
        entry: CodeLabel,
        data_pages: u32,
    ) -> AsmResult {
        a.call(self.new_space)?;
        self.proc_addr(a, rbx, i)?;
        // A fresh descriptor.
        for off in (0..proc::SIZE).step_by(8) {
            a.mov(qword_ptr(rbx + off), 0)?;
        }
        a.mov(qword_ptr(rbx + proc::ROOT), rax)?;
        if self.k.user_slot().is_some() {
            a.mov(qword_ptr(rbx + proc::UROOT), rdx)?;
        }
        a.mov(qword_ptr(rbx + saved_slot(r15)), r15)?;
        a.mov(
            qword_ptr(rbx + proc::RFLAGS),
            contract::x86::rflags::FIXED as i32,
        )?;
        self.user_va(a, entry)?;
        a.mov(qword_ptr(rbx + proc::RIP), rax)?;
        a.mov(rax, map::USER_DATA + u64::from(data_pages) * 0x1000)?;
        a.mov(qword_ptr(rbx + proc::RSP), rax)?;
        for page in 0..data_pages {
            a.call(self.alloc_frame)?;
            if page < 2 {
                let slot = if page == 0 {
                    proc::DATA_FRAME
                } else {
                    proc::DATA_FRAME2
                };
                a.mov(qword_ptr(rbx + slot), rax)?;
            }
            a.mov(r10, rax)?;
            a.or(r10, (pte::P | pte::RW | pte::US | map::OWNED) as i32)?;
            a.mov(r8, qword_ptr(rbx + proc::ROOT))?;
            a.mov(r9, map::USER_DATA + u64::from(page) * 0x1000)?;
            a.call(self.map_page)?;
        }
        self.k.pte_flush(a)
    }

    /// Maps, in process `i`, the heap page `R9` (a virtual address) to a new zeroed frame
    /// owned by the process, and leaves the frame in RAX. Clobbers RCX, RDX, RSI, RDI,
    /// R8, R10.
    pub fn map_heap_page(&self, a: &mut CodeAssembler, i: i32) -> AsmResult {
        a.call(self.alloc_frame)?;
        a.push(rax)?;
        a.mov(r10, rax)?;
        a.or(r10, (pte::P | pte::RW | pte::US | map::OWNED) as i32)?;
        self.proc_addr(a, r8, i)?;
        a.mov(r8, qword_ptr(r8 + proc::ROOT))?;
        a.call(self.map_page)?;
        a.pop(rax)
    }

    /// Maps, in process `i`, the virtual page R9 with the PTE value R10 (building the
    /// tables it needs), and leaves RDI at the guest-physical address of the PTE it
    /// stored. Clobbers RAX, RCX, RDX, RSI, R8.
    pub fn map(&self, a: &mut CodeAssembler, i: i32) -> AsmResult {
        self.proc_addr(a, r8, i)?;
        a.mov(r8, qword_ptr(r8 + proc::ROOT))?;
        a.call(self.map_page)
    }

    /// Loads the root of process `i` into `dst`.
    pub fn root(&self, a: &mut CodeAssembler, i: i32, dst: AsmRegister64) -> AsmResult {
        self.proc_addr(a, dst, i)?;
        a.mov(dst, qword_ptr(dst + proc::ROOT))
    }

    /// A zeroed frame in RAX (clobbers RCX, RDI).
    pub fn alloc(&self, a: &mut CodeAssembler) -> AsmResult {
        a.call(self.alloc_frame)
    }

    /// Makes process `i` current and switches to its address space, every PTE store so
    /// far in effect (clobbers RAX, RDX).
    pub fn switch_to(&self, a: &mut CodeAssembler, i: i32) -> AsmResult {
        self.k.pte_flush(a)?;
        self.proc_addr(a, rax, i)?;
        a.mov(qword_ptr(self.var.current), rax)?;
        if self.k.user_slot().is_some() {
            a.mov(rdx, qword_ptr(rax + proc::UROOT))?;
        }
        a.mov(rax, qword_ptr(rax + proc::ROOT))?;
        self.k.switch_address_space(a)
    }

    /// RDX = 0 (no user root) for a switch to a kernel-only root, where the flavour has
    /// user roots.
    fn no_user_root(&self, a: &mut CodeAssembler) -> AsmResult {
        if self.k.user_slot().is_some() {
            a.xor(edx, edx)?;
        }
        Ok(())
    }

    /// Runs the current process until its next system call other than the null one;
    /// its number in RAX. Clobbers every register but RSP; R15 is reloaded (the
    /// boot-info page).
    pub fn run_user(&self, a: &mut CodeAssembler) -> AsmResult {
        a.call(self.run_user)?;
        a.mov(rcx, qword_ptr(self.var.current))?;
        a.mov(r15, qword_ptr(rcx + saved_slot(r15)))
    }

    /// Switches to the kernel-only root and tears down process `i`'s address space.
    /// Clobbers every register but RSP, RBX, R12–R15.
    pub fn destroy_process(&self, a: &mut CodeAssembler, i: i32) -> AsmResult {
        a.mov(rax, qword_ptr(self.var.kroot))?;
        self.no_user_root(a)?;
        self.k.switch_address_space(a)?;
        self.proc_addr(a, r8, i)?;
        if self.k.user_slot().is_some() {
            // Both roots given up first: every table of the space is an ordinary frame
            // again when it goes back to the free list.
            a.mov(rax, qword_ptr(r8 + proc::UROOT))?;
            self.k.release_root(a)?;
            a.mov(rax, qword_ptr(r8 + proc::ROOT))?;
            self.k.release_root(a)?;
            a.push(qword_ptr(r8 + proc::UROOT))?;
        }
        a.mov(r8, qword_ptr(r8 + proc::ROOT))?;
        a.call(self.destroy_space)?;
        if self.k.user_slot().is_some() {
            a.pop(rax)?;
            self.call_free(a)?;
        }
        self.k.pte_flush(a)
    }

    /// Loads a saved user register of process `i` into `dst`.
    pub fn user_reg(
        &self,
        a: &mut CodeAssembler,
        i: i32,
        dst: AsmRegister64,
        reg: AsmRegister64,
    ) -> AsmResult {
        self.proc_addr(a, dst, i)?;
        a.mov(dst, qword_ptr(dst + saved_slot(reg)))
    }

    /// Sets the saved RAX (the system call's return value) of process `i` from `src`
    /// (clobbers RCX).
    pub fn set_user_rax(&self, a: &mut CodeAssembler, i: i32, src: AsmRegister64) -> AsmResult {
        self.proc_addr(a, rcx, i)?;
        a.mov(qword_ptr(rcx + saved_slot(rax)), src)
    }

    /// Loads the frame of process `i`'s first (`second = false`) or second data page
    /// into `dst`.
    pub fn data_frame(
        &self,
        a: &mut CodeAssembler,
        i: i32,
        second: bool,
        dst: AsmRegister64,
    ) -> AsmResult {
        self.proc_addr(a, dst, i)?;
        let slot = if second {
            proc::DATA_FRAME2
        } else {
            proc::DATA_FRAME
        };
        a.mov(dst, qword_ptr(dst + slot))
    }

    /// Reads the TSC into the `tsc` variable (clobbers RAX, RDX).
    pub fn start_clock(&self, a: &mut CodeAssembler) -> AsmResult {
        a.lfence()?;
        a.rdtsc()?;
        a.shl(rdx, 32)?;
        a.or(rax, rdx)?;
        a.mov(qword_ptr(self.var.tsc), rax)
    }

    /// Stores the cycles since [`Kernel::start_clock`] and `n` operations in the
    /// boot-info page (R15) (clobbers RAX, RDX).
    pub fn stop_clock(&self, a: &mut CodeAssembler, n: u64) -> AsmResult {
        a.lfence()?;
        a.rdtsc()?;
        a.shl(rdx, 32)?;
        a.or(rax, rdx)?;
        a.sub(rax, qword_ptr(self.var.tsc))?;
        a.mov(qword_ptr(r15 + boot_info::MEASURED_CYCLES as i32), rax)?;
        a.mov(rax, n)?;
        a.mov(qword_ptr(r15 + boot_info::MEASURED_OPS as i32), rax)
    }

    /// Ends the run with `code` and RBX as the result.
    pub fn exit(&self, a: &mut CodeAssembler, code: u32) -> AsmResult {
        a.mov(eax, code)?;
        self.ops.exit(a)
    }

    /// Ends the run with `code` (RBX the detail) unless `var` equals `want`.
    pub fn check_var(
        &self,
        a: &mut CodeAssembler,
        var: CodeLabel,
        want: u64,
        code: u32,
    ) -> AsmResult {
        let mut ok = a.create_label();
        a.mov(rax, want)?;
        a.cmp(qword_ptr(var), rax)?;
        a.je(ok)?;
        a.mov(rbx, qword_ptr(var))?;
        self.exit(a, code)?;
        a.set_label(&mut ok)
    }
}
