//! The paravirtual hypervisor's state and its hypercalls: argument validation, the
//! shared-info page, the trap table and event delivery.
//!
//! Nothing here touches KVM: it works on guest memory and a copy of the registers, so
//! the tests drive it directly.

use std::collections::BTreeMap;
use std::time::Instant;

use contract::abi::hypercall::{self, errno, shared_info, Hypercall};
use contract::abi::{layout, PAGE_SIZE, TIMER_VECTOR};
use contract::x86::rflags;
use machine::setup::{pte, set_page_flags};
use machine::Devices;

mod batches;
mod console;
mod cpu;
mod devices;
mod direct;
mod events;
mod mmu;
mod page_types;

use contract::record::{Limit, Outcome};
use contract::{Limits, NamedCounters};
use page_types::PageTypes;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// RFLAGS bits a guest may set through `iret`: the arithmetic flags (CF, PF, AF, ZF, SF,
/// OF), TF and DF.
const RFLAGS_USER: u64 = rflags::ARITHMETIC | rflags::TF | rflags::DF;
/// Bits a PTE written through `mmu_update` may carry besides the frame: P, RW, US, PWT,
/// PCD, A, D and NX. Large pages, global pages and the ignored bits are refused.
const PTE_ALLOWED_FLAGS: u64 = 0x7F | (1 << 63);
/// Frame bits of a PTE.
const PTE_FRAME: u64 = contract::x86::pte::FRAME;
/// Page tables the guest may pin as a new root must lie in the first 2 MiB, which the
/// VMM maps with 4 KiB pages and can therefore make read-only page by page.
const PINNABLE_END: u64 = 2 << 20;

pub use contract::cpuid::{CpuidLeaf, CpuidTable};

/// What a hypercall asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Put this value in RAX and resume after the `out`.
    Return(i64),
    /// End the run with this exit code (result in RBX).
    Exit(u32),
    /// Enable events and wait for one.
    Block,
    /// Return from a callback through the frame at RSP.
    Iret,
    /// End the run (a limit).
    Stop(Outcome),
}

/// What the VMM must do to the vCPU's MMU after a hypercall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MmuSync {
    /// Validated PTE writes `(ptr, val)`, in order. The monitor performs them at CPL 0
    /// inside the guest, so that KVM's MMU sees them as guest writes (a write from the
    /// VMM's side of guest memory would bypass the shadow MMU's write tracking).
    pub writes: Vec<(u64, u64)>,
    /// Flush the TLB after the writes.
    pub flush: bool,
    /// Load this page-table root.
    pub new_root: Option<u64>,
}

/// The paravirtual hypervisor of one run.
#[derive(Debug)]
pub struct Hypervisor {
    ram_size: u64,
    /// The standard devices (console, timer, MMIO device page).
    pub devices: Devices,
    /// Callbacks by vector, from `set_trap_table`.
    trap_table: BTreeMap<u8, u64>,
    cpuid: CpuidTable,
    /// Page types, as Xen keeps them: which frames are page tables, and how many writable
    /// mappings each frame has. A frame is never both.
    types: PageTypes,
    /// Hypercalls by name, with their latency.
    pub counters: NamedCounters,
    /// Events and exceptions delivered to guest callbacks.
    pub injections: u64,
    /// MMU work for the engine.
    pub mmu_sync: MmuSync,
    /// Direct paging: the guest's own four-level page tables, as validated.
    pub direct: crate::direct_paging::DirectPaging,
    /// The original entries, in the VMM's map of RAM, of the frames direct paging made
    /// page tables (supervisor-only while they are).
    protected: BTreeMap<u64, u64>,
    /// The page-table root the guest runs on (its kernel's root when it has a user root).
    root: u64,
    /// The guest kernel's user root ([`mmuext::NEW_USER_BASEPTR`]), loaded when it
    /// returns to user mode with `iret`.
    user_root: Option<u64>,
    /// Whether the guest runs in (virtual) user mode: on its user root, with hypercalls
    /// refused and every exception and SYSCALL bounced to its kernel.
    pub in_user: bool,
    /// The guest kernel's system-call entry ([`Hypercall::SetCallback`]).
    syscall_callback: Option<u64>,
    /// What the kernel/user split did: `syscalls_bounced`, `faults_bounced`,
    /// `traps_bounced`, `root_switches`, `refused_from_user`.
    pub mode_counters: BTreeMap<&'static str, u64>,
}

/// Result of a check: `Err` carries the error code for the guest.
type Check<T = ()> = Result<T, i64>;

/// What the hypervisor needs in memory before the run ([`Hypervisor::initial_memory`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMemory {
    /// `(address, bytes)` to write.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// `(page, flags)` to remap.
    pub page_flags: Vec<(u64, u64)>,
}

impl Hypervisor {
    /// A hypervisor for `ram_size` bytes of guest RAM and a vCPU with these CPUID leaves.
    pub fn new(ram_size: u64, limits: &Limits, cpuid: CpuidTable) -> Self {
        Hypervisor {
            ram_size,
            devices: Devices::new(limits),
            trap_table: BTreeMap::new(),
            cpuid,
            types: PageTypes::new(Vec::new()),
            counters: NamedCounters::default(),
            injections: 0,
            mmu_sync: MmuSync::default(),
            direct: crate::direct_paging::DirectPaging::new(
                ram_size,
                &[layout::PDPT, layout::PDPT_USER],
            ),
            protected: BTreeMap::new(),
            root: layout::PML4,
            user_root: None,
            in_user: false,
            syscall_callback: None,
            mode_counters: BTreeMap::new(),
        }
    }

    /// Bytes of guest RAM.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// Takes the MMU work for the engine, whose monitor routine makes its writes before
    /// the guest runs again: direct paging then reads them in guest memory
    /// ([`crate::direct_paging::DirectPaging::writes_applied`]).
    pub fn take_mmu_sync(&mut self) -> MmuSync {
        self.direct.writes_applied();
        std::mem::take(&mut self.mmu_sync)
    }

    /// Counts one event of the kernel/user split.
    pub fn count_mode(&mut self, what: &'static str) {
        *self.mode_counters.entry(what).or_default() += 1;
    }

    /// What the machine writes before the run, as data: the shared-info page with
    /// events masked (the guest starts with interrupts off); the scratch page table
    /// remapped supervisor-only, so the guest changes it only through `mmu_update` (the
    /// monitor writes it at CPL 0); all of guest RAM in 4 KiB pages (so that any frame
    /// can become a page table, read-only to the guest), their page tables in the
    /// monitor's second 2 MiB, which holds shadow tables in the other deprivileged modes
    /// and nothing in this one; and the VMM slot of user roots ([`layout::PDPT_USER`]).
    pub fn initial_memory(ram_size: u64) -> InitialMemory {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        page[shared_info::UPCALL_MASK as usize] = 1;
        let mut writes = vec![(hypercall::SHARED_INFO, page)];
        let user = pte::P | pte::RW | pte::US;
        let table = |entries: &mut dyn Iterator<Item = (u64, u64)>| {
            let mut t = vec![0u8; PAGE_SIZE as usize];
            for (i, e) in entries {
                t[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&e.to_le_bytes());
            }
            t
        };
        let regions = ram_size.min(layout::MAX_RAM_SIZE) >> 21;
        let mut pd = Vec::new();
        for r in 1..regions {
            let pt = ram_pt(r);
            writes.push((
                pt,
                table(&mut (0..512).map(|j| (j, ((r << 21) + j * PAGE_SIZE) | user))),
            ));
            pd.push((layout::PD + r * 8, pt | user));
        }
        for (at, e) in pd {
            writes.push((at, e.to_le_bytes().to_vec()));
        }
        // The monitor routine's window on RAM (supervisor-only, writable: page tables are
        // read-only in the guest's map, and CR0.WP holds at CPL 0 too).
        writes.push((
            layout::PDPT + 16,
            (layout::PD_USER | pte::P | pte::RW).to_le_bytes().to_vec(),
        ));
        writes.push((
            layout::PDPT_USER,
            table(
                &mut [
                    (0, layout::PD_USER | user),
                    (1, layout::PD_MONITOR_USER | user),
                ]
                .into_iter(),
            ),
        ));
        writes.push((
            layout::PD_USER,
            table(&mut (0..regions).map(|r| (r, (r << 21) | pte::P | pte::RW | pte::PS))),
        ));
        writes.push((
            layout::PD_MONITOR_USER,
            table(
                &mut [
                    (0, layout::PT_MONITOR_USER | user),
                    (1, layout::SHADOW_BASE | pte::P | pte::RW | pte::PS),
                ]
                .into_iter(),
            ),
        ));
        let monitor_pages = (layout::MONITOR_BASE..layout::MONITOR_END)
            .step_by(PAGE_SIZE as usize)
            .chain([layout::EVENT_STACK]);
        writes.push((
            layout::PT_MONITOR_USER,
            table(&mut monitor_pages.map(|p| {
                // The boot-info page stays the user's, as in every mode (a workload's
                // user program reports its measurement there); the rest is the VMM's
                // and the kernel's.
                let flags = if p == layout::BOOT_INFO {
                    user
                } else {
                    pte::P | pte::RW
                };
                ((p - layout::MONITOR_BASE) >> 12, p | flags)
            })),
        ));
        InitialMemory {
            writes,
            page_flags: vec![(layout::SCRATCH_PT, pte::P | pte::RW)],
        }
    }

    /// Learns the scratch page table's entries as the machine built them.
    pub fn learn(&mut self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let scratch = (0..512)
            .map(|i| Self::read_u64(mem, layout::SCRATCH_PT + i * 8).map_err(|e| e.to_string()))
            .collect::<Result<Vec<u64>, String>>()?;
        self.types = PageTypes::new(scratch);
        Ok(())
    }

    /// Applies [`Hypervisor::initial_memory`] to `mem` and learns from it (what the machine
    /// does before a run; unit tests build the memory without KVM).
    pub fn setup(&mut self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let init = Self::initial_memory(self.ram_size);
        for (addr, bytes) in init.writes {
            mem.write_slice(&bytes, GuestAddress(addr))
                .map_err(|e| e.to_string())?;
        }
        for (page, f) in init.page_flags {
            set_page_flags(mem, page, f)?;
        }
        self.learn(mem)
    }

    /// Pins a page-table page: read-only to the guest.
    fn pin(&self, mem: &GuestMemoryMmap, page: u64) -> Result<(), String> {
        set_page_flags(mem, page, pte::P | pte::US)
    }

    // ------------------------------------------------------------ shared-info page

    fn shared_u8(mem: &GuestMemoryMmap, off: u64) -> u8 {
        mem.read_obj(GuestAddress(hypercall::SHARED_INFO + off))
            .unwrap_or(0)
    }

    fn set_shared<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, off: u64, v: T) {
        // The shared-info page is inside guest RAM (checked at setup), so this cannot fail.
        let _ = mem.write_obj(v, GuestAddress(hypercall::SHARED_INFO + off));
    }

    /// Whether events are masked (the virtual IF is clear).
    pub fn masked(&self, mem: &GuestMemoryMmap) -> bool {
        Self::shared_u8(mem, shared_info::UPCALL_MASK) != 0
    }

    /// Sets the event mask.
    pub fn set_mask(&self, mem: &GuestMemoryMmap, masked: bool) {
        Self::set_shared(mem, shared_info::UPCALL_MASK, u8::from(masked));
    }

    /// Whether an event waits.
    pub fn pending(&self, mem: &GuestMemoryMmap) -> bool {
        Self::shared_u8(mem, shared_info::UPCALL_PENDING) != 0
    }

    fn tpr(mem: &GuestMemoryMmap) -> u64 {
        mem.read_obj(GuestAddress(hypercall::SHARED_INFO + shared_info::TPR))
            .unwrap_or(0)
    }

    /// Fires the timer if it is due: the event becomes pending.
    pub fn poll_timer(&mut self, mem: &GuestMemoryMmap) {
        if self.devices.timer.due(Instant::now()) {
            self.devices.timer.fire();
            Self::set_shared(mem, shared_info::TIMER_FIRED, self.devices.timer.fired());
            Self::set_shared(mem, shared_info::UPCALL_PENDING, 1u8);
        }
    }

    /// Whether the pending event can be delivered now: not masked, above the task
    /// priority, and the guest registered a callback for it.
    pub fn deliverable(&self, mem: &GuestMemoryMmap) -> bool {
        self.pending(mem)
            && !self.masked(mem)
            && u64::from(TIMER_VECTOR >> 4) > Self::tpr(mem)
            && self.trap_table.contains_key(&TIMER_VECTOR)
    }

    /// The callback the guest registered for `vector`.
    pub fn callback(&self, vector: u8) -> Option<u64> {
        self.trap_table.get(&vector).copied()
    }

    // ------------------------------------------------------------ validation

    /// A range of guest RAM the guest may name: inside RAM (never the monitor's region
    /// above it), at most `max` bytes.
    fn guest_range(&self, addr: u64, len: u64, max: u64) -> Check {
        if len > max {
            return Err(errno::E2BIG);
        }
        let end = addr.checked_add(len).ok_or(errno::EFAULT)?;
        if end > self.ram_size {
            return Err(errno::EFAULT);
        }
        Ok(())
    }

    /// A range the VMM will write for the guest: also not a pinned page table (the VMM
    /// must not write what the guest itself may not).
    fn writable_range(&self, addr: u64, len: u64, max: u64) -> Check {
        self.guest_range(addr, len, max)?;
        if self.types.touches_pinned(addr, len) || self.direct.touches_table(addr, len) {
            return Err(errno::EFAULT);
        }
        Ok(())
    }

    fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> Check<u64> {
        mem.read_obj(GuestAddress(addr)).map_err(|_| errno::EFAULT)
    }

    fn write_u64(mem: &GuestMemoryMmap, addr: u64, v: u64) -> Check {
        mem.write_obj(v, GuestAddress(addr))
            .map_err(|_| errno::EFAULT)
    }

    // ------------------------------------------------------------ dispatch

    /// Runs hypercall `h` with `args`. The caller counts and times it.
    pub fn call(&mut self, mem: &GuestMemoryMmap, h: Hypercall, args: [u64; 3]) -> Effect {
        let [a0, a1, a2] = args;
        let ret = |r: Check<i64>| Effect::Return(r.unwrap_or_else(|e| e));
        match h {
            Hypercall::ConsoleWrite => match self.console_write(mem, a0, a1) {
                Ok(true) => Effect::Return(a1 as i64),
                Ok(false) => Effect::Stop(Outcome::TimedOut {
                    limit: Limit::ConsoleBytes,
                    rip: None,
                }),
                Err(e) => Effect::Return(e),
            },
            Hypercall::Exit => match u32::try_from(a0) {
                Ok(code) => Effect::Exit(code),
                Err(_) => Effect::Return(errno::EINVAL),
            },
            Hypercall::Block => Effect::Block,
            Hypercall::SetTimer => ret(self.set_timer(a0)),
            Hypercall::MmuUpdate => ret(self.mmu_update(mem, a0, a1, a2)),
            Hypercall::NewBaseptr => ret(self.new_baseptr(mem, a0)),
            Hypercall::Cpuid => ret(self.cpuid(mem, a0, a1, a2)),
            Hypercall::Multicall => match self.multicall(mem, a0, a1) {
                Ok(None) => Effect::Return(0),
                Ok(Some(stop)) => stop,
                Err(e) => Effect::Return(e),
            },
            Hypercall::SetTrapTable => ret(self.set_trap_table(mem, a0, a1)),
            Hypercall::Iret => Effect::Iret,
            Hypercall::EventCheck => Effect::Return(0),
            Hypercall::SetTpr => ret(self.set_tpr(mem, a0)),
            Hypercall::DeviceRead => ret(self.device_read(mem, a0, a1, a2)),
            Hypercall::MmuextOp => ret(self.mmuext_op(mem, a0, a1, a2)),
            Hypercall::SetCallback => ret(self.set_callback(a0, a1)),
        }
    }
}

/// Where the monitor routine reaches guest RAM: the VMM slot's third GiB maps RAM
/// supervisor-only and writable ([`layout::PD_USER`]'s 2 MiB pages), so the routine can
/// store into page tables that are read-only in the guest's map.
pub const RAM_WINDOW: u64 = 2 << 30;

/// The 4 KiB page table through which the VMM maps the 2 MiB region `region` (≥ 1) of
/// guest RAM: a page of the monitor's second 2 MiB.
const fn ram_pt(region: u64) -> u64 {
    layout::SHADOW_BASE + region * PAGE_SIZE
}

/// The entry of the VMM's map of guest RAM that maps `frame` (4 KiB pages everywhere in
/// this mode); `None` beyond the largest RAM.
pub fn ram_pte_address(frame: u64) -> Option<u64> {
    let region = frame >> 21;
    if region == 0 {
        layout::pte_address(frame)
    } else if frame < layout::MAX_RAM_SIZE {
        Some(ram_pt(region) + ((frame >> 12) & 511) * 8)
    } else {
        None
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod direct_tests;
