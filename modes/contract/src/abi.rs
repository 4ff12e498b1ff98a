//! The guest ABI: the one source of truth for what a guest sees.
//!
//! Both sides use these constants: `guests` assembles workloads against them and the
//! engines implement them. `docs/guest-abi.md` explains them in prose.
//!
//! Guest-physical memory map (identity-mapped: every address below is also the virtual
//! address the guest uses):
//!
//! ```text
//! 0x0000_0000  guest RAM, all of it the guest's from address 0 (RunOptions::ram_size,
//!              16 MiB by default); page 0 is ordinary RAM
//! 0x0010_0000  default load address and entry; the default stack grows down from here
//! 0x3FC0_0000  SCRATCH_VA: a 4 KiB virtual page whose PTE the guest may rewrite
//! 0x3FE0_0000  MMIO device page (no RAM behind it: every access exits)
//! 0x4000_0000  the monitor's region (a second memory slot, not guest RAM): page tables,
//!              GDT, IDT, TSS + I/O bitmap, fault stubs, monitor stack, the monitor's
//!              CPL 0 routine (supervisor-only), then the pages shared with the guest: boot-info page,
//!              scratch page table and frames, shared-info page; then each engine's own
//!              pages (binary translation's code cache, paravirt's user-root slot)
//! 0x4020_0000  SHADOW_BASE: the shadow page tables of the deprivileged engines (the
//!              second 2 MiB of the monitor's slot, supervisor-only)
//! ```
//!
//! The monitor's region is the "hypervisor hole" of Xen and VMware: mapped into every
//! guest address space, supervisor-only where it holds the VMM's structures, and never part
//! of the RAM the guest owns.

/// Version of this ABI, written into the boot-info page (2: guest RAM from 0, the VMM's
/// structures in the monitor's region above it).
pub const ABI_VERSION: u64 = 2;

/// Magic value at offset 0 of the boot-info page: `"VIRTLAB\0"` read as a little-endian u64.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"VIRTLAB\0");

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;

/// Guest-physical layout: guest RAM from 0, and the monitor's region above it.
pub mod layout {
    /// Base of the monitor's region (its own memory slot, above the largest RAM).
    pub const MONITOR_BASE: u64 = 0x4000_0000;
    /// Size of the monitor's memory slot: its structures in the first 2 MiB, the shadow
    /// page tables in the second ([`SHADOW_BASE`]).
    pub const MONITOR_SIZE: u64 = 4 << 20;
    /// The shadow page tables the deprivileged engines build (trap-and-emulate, binary
    /// translation): a pool of 4 KiB pages, mapped supervisor-only with one 2 MiB page in
    /// every address space, never guest RAM.
    pub const SHADOW_BASE: u64 = MONITOR_BASE + (2 << 20);
    /// Size of the shadow pool.
    pub const SHADOW_SIZE: u64 = 2 << 20;
    /// PML4 (top-level page table).
    pub const PML4: u64 = MONITOR_BASE;
    /// Page-directory-pointer table.
    pub const PDPT: u64 = MONITOR_BASE + 0x1000;
    /// Page directory covering the first GiB (guest RAM, the scratch page, MMIO).
    pub const PD: u64 = MONITOR_BASE + 0x2000;
    /// Page table covering the first 2 MiB of guest RAM with 4 KiB pages (so single
    /// pages there can be made read-only: paravirt pins page tables in it).
    pub const PT0: u64 = MONITOR_BASE + 0x3000;
    /// Page directory covering the second GiB (the monitor's region).
    pub const PD_MONITOR: u64 = MONITOR_BASE + 0x4000;
    /// Page table of the monitor's region, with 4 KiB pages.
    pub const PT_MONITOR: u64 = MONITOR_BASE + 0x5000;
    /// Global descriptor table.
    pub const GDT: u64 = MONITOR_BASE + 0x6000;
    /// Interrupt descriptor table installed by the VMM (256 gates).
    pub const IDT: u64 = MONITOR_BASE + 0x7000;
    /// Task-state segment; its I/O permission bitmap follows at `TSS + TSS_IOMAP_OFFSET`.
    pub const TSS: u64 = MONITOR_BASE + 0x8000;
    /// Offset of the I/O permission bitmap inside the TSS.
    pub const TSS_IOMAP_OFFSET: u64 = 0x68;
    /// Code of the VMM's interrupt/fault stubs.
    pub const STUBS: u64 = MONITOR_BASE + 0xB000;
    /// Lowest address of the monitor stack. Its bottom part holds the mailbox of the
    /// monitor's routine (the stubs' frames, one at a time at its top, never reach it).
    pub const MONITOR_STACK_BOTTOM: u64 = MONITOR_BASE + 0xC000;
    /// Top of the monitor stack (TSS.RSP0).
    pub const MONITOR_STACK_TOP: u64 = MONITOR_BASE + 0x1_0000;
    /// The monitor's CPL 0 routine, shared by the deprivileged engines (validated PTE
    /// stores, `invlpg`, a CR3 reload, applied inside the guest): the page above the
    /// monitor stack.
    pub const MONITOR_ROUTINE: u64 = MONITOR_BASE + 0x1_0000;
    /// End (exclusive) of the supervisor-only part of the monitor's region.
    pub const MONITOR_PRIVATE_END: u64 = MONITOR_BASE + 0x1_1000;
    /// Boot-info page; RDI points here at entry (shared: the guest reads and writes it).
    pub const BOOT_INFO: u64 = MONITOR_BASE + 0x1_1000;
    /// Page table that maps [`SCRATCH_VA`] (its entry 0 is the scratch PT).
    pub const SCRATCH_PT: u64 = MONITOR_BASE + 0x1_2000;
    /// First frame the scratch PTE can point to.
    pub const SCRATCH_FRAME_A: u64 = MONITOR_BASE + 0x1_3000;
    /// Second frame the scratch PTE can point to.
    pub const SCRATCH_FRAME_B: u64 = MONITOR_BASE + 0x1_4000;
    /// Shared-info page of paravirtual guests (see [`super::hypercall::shared_info`]).
    pub const SHARED_INFO: u64 = MONITOR_BASE + 0x1_5000;
    /// End (exclusive) of the part of the monitor's region in use by every engine; from
    /// here to [`EVENT_STACK`] each engine keeps what it needs (binary translation its
    /// data page, lookup table and translation cache; paravirt the user-root slot).
    pub const MONITOR_END: u64 = MONITOR_BASE + 0x1_6000;
    /// Paravirt: the VMM's page-directory-pointer table for the user roots of
    /// paravirtual guest kernels (the VMM slot of a user root; Xen x86-64 PV's second
    /// page table per process): guest RAM and the monitor's region, every page
    /// supervisor-only but the boot-info page, so a user process reaches neither its
    /// kernel's memory nor the other shared pages. Never mapped itself (the MMU reads
    /// page tables by their physical address).
    pub const PDPT_USER: u64 = MONITOR_END;
    /// Paravirt: page directory of [`PDPT_USER`]'s first GiB: guest RAM, supervisor-only.
    pub const PD_USER: u64 = MONITOR_END + 0x1000;
    /// Paravirt: page directory of [`PDPT_USER`]'s second GiB: the monitor's region.
    pub const PD_MONITOR_USER: u64 = MONITOR_END + 0x2000;
    /// Paravirt: page table of [`PD_MONITOR_USER`]: the monitor's pages.
    pub const PT_MONITOR_USER: u64 = MONITOR_END + 0x3000;
    /// The stack the deprivileged engines deliver an event from guest user mode on (the
    /// virtual TSS.RSP0 is its top): the guest kernel's handler runs on it, so it is
    /// shared, like the monitor stack the boot TSS gives a guest kernel at CPL 0. The last
    /// page before the shadow pool.
    pub const EVENT_STACK: u64 = SHADOW_BASE - super::PAGE_SIZE;
    /// Default load address and entry point of an image.
    pub const DEFAULT_LOAD: u64 = 0x10_0000;
    /// Default initial stack pointer (the stack grows down from the load address).
    pub const DEFAULT_STACK_TOP: u64 = 0x10_0000;
    /// Default guest RAM size.
    pub const DEFAULT_RAM_SIZE: u64 = 16 << 20;
    /// Largest guest RAM size the page tables can map (the scratch and MMIO windows sit
    /// above it in the first GiB, the monitor's region in the second).
    pub const MAX_RAM_SIZE: u64 = 0x3FC0_0000;
    /// Virtual address of the scratch page (a flat guest may rewrite its PTE).
    pub const SCRATCH_VA: u64 = 0x3FC0_0000;
    /// Guest-physical base of the MMIO device page.
    pub const MMIO_BASE: u64 = 0x3FE0_0000;
    /// Size of the MMIO device window.
    pub const MMIO_SIZE: u64 = 0x1000;

    /// Whether `addr` lies in the monitor's region.
    pub const fn is_monitor(addr: u64) -> bool {
        addr >= MONITOR_BASE && addr < MONITOR_BASE + MONITOR_SIZE
    }

    /// Whether `[addr, addr + len)` touches the monitor's region.
    pub const fn overlaps_monitor(addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        addr < MONITOR_BASE + MONITOR_SIZE && end > MONITOR_BASE
    }

    /// The 4 KiB page-table entry that maps `page` in the VMM's tables: pages of the first
    /// 2 MiB of guest RAM (in [`PT0`]) and of the monitor's region (in [`PT_MONITOR`]) have
    /// one; elsewhere guest RAM is mapped with 2 MiB pages.
    pub const fn pte_address(page: u64) -> Option<u64> {
        const SMALL: u64 = 2 << 20;
        if page < SMALL {
            Some(PT0 + page / super::PAGE_SIZE * 8)
        } else if page >= MONITOR_BASE && page < MONITOR_BASE + SMALL {
            Some(PT_MONITOR + (page - MONITOR_BASE) / super::PAGE_SIZE * 8)
        } else {
            None
        }
    }

    /// Whether `addr` is one of the monitor's pages the guest may use (boot-info, scratch
    /// page table and frames, shared-info, the event stack).
    pub const fn is_shared_page(addr: u64) -> bool {
        (addr >= MONITOR_PRIVATE_END && addr < MONITOR_END)
            || (addr >= EVENT_STACK && addr < EVENT_STACK + super::PAGE_SIZE)
    }

    // The monitor's structures stay in order and inside the slot.
    const _: () = assert!(MAX_RAM_SIZE <= SCRATCH_VA && MMIO_BASE + MMIO_SIZE <= MONITOR_BASE);
    const _: () = assert!(MONITOR_END <= SHADOW_BASE);
    const _: () = assert!(SHADOW_BASE + SHADOW_SIZE == MONITOR_BASE + MONITOR_SIZE);
    const _: () = assert!(MONITOR_BASE + MONITOR_SIZE <= 1 << 31); // reachable with disp32
}

/// I/O ports of the devices every mode provides.
pub mod port {
    /// Debug console: one byte out is one character (the Bochs/QEMU convention).
    pub const CONSOLE: u16 = 0xE9;
    /// Exit: a 32-bit (or narrower) `out` ends the run; the value is the exit code and
    /// RBX holds the result.
    pub const EXIT: u16 = 0xF4;
    /// One-shot timer: a 32-bit `out` arms it to fire [`super::TIMER_VECTOR`] after that
    /// many microseconds (0 = as soon as the guest can take it); an `in` reads how many
    /// times it has fired.
    pub const TIMER: u16 = 0xF0;
    /// Used by the VMM's own fault stubs to report an exception; not for guests.
    pub const FAULT: u16 = 0xF8;
}

/// Vector the one-shot timer raises.
pub const TIMER_VECTOR: u8 = 0x20;

/// Registers of the MMIO device at [`layout::MMIO_BASE`] (offsets; 8-byte accesses).
pub mod mmio {
    /// Read: returns a counter that increments on every read (1, 2, 3, …). Write: ignored.
    pub const TICKET: u64 = 0x00;
    /// Read/write scratch register.
    pub const SCRATCH: u64 = 0x08;
    /// Read: the device identifier [`DEVICE_ID`].
    pub const ID: u64 = 0x10;
    /// Identifier returned by the `ID` register: `"VLABMMIO"`.
    pub const DEVICE_ID: u64 = u64::from_le_bytes(*b"VLABMMIO");
}

/// The disk: one image file behind two device models (see `docs/io.md`).
///
/// - **virtio-blk** at [`blk::VIRTIO_BASE`], an MMIO register page after the MMIO device's:
///   the driver writes its split virtqueue's addresses and size, sets it ready, and
///   notifies through [`blk::QUEUE_NOTIFY`] (the doorbell; one exit per batch). Requests
///   are virtio-blk's: a 16-byte header `{type: u32, reserved: u32, sector: u64}`, the
///   data, and one status byte the device writes.
/// - **ATA PIO** on ports [`blk::ATA_DATA`]…[`blk::ATA_COMMAND`] (the primary IDE channel):
///   LBA28 READ/WRITE SECTORS, status polling, data through the 16-bit data port
///   (`rep insw` / `rep outsw`). Every register access is an exit or a trap.
pub mod blk {
    /// Bytes in a sector, for both device models.
    pub const SECTOR_SIZE: u64 = 512;
    /// Guest-physical base of the virtio-blk register page.
    pub const VIRTIO_BASE: u64 = super::layout::MMIO_BASE + 0x1000;
    /// Size of the virtio-blk register page.
    pub const VIRTIO_SIZE: u64 = 0x1000;
    /// Read: [`VIRTIO_MAGIC`].
    pub const MAGIC: u64 = 0x00;
    /// Read: the disk's capacity in sectors.
    pub const CAPACITY: u64 = 0x08;
    /// Read: the largest queue size the device takes ([`QUEUE_SIZE_MAX_VALUE`]).
    pub const QUEUE_SIZE_MAX: u64 = 0x10;
    /// Write: the queue size (a power of two, at most the maximum).
    pub const QUEUE_SIZE: u64 = 0x18;
    /// Write: guest-physical address of the descriptor table.
    pub const QUEUE_DESC: u64 = 0x20;
    /// Write: guest-physical address of the available ring.
    pub const QUEUE_AVAIL: u64 = 0x28;
    /// Write: guest-physical address of the used ring.
    pub const QUEUE_USED: u64 = 0x30;
    /// Write 1: the queue is set up (the device checks it); read: 1 if ready.
    pub const QUEUE_READY: u64 = 0x38;
    /// Write (any value): the doorbell, "the available ring has new requests".
    pub const QUEUE_NOTIFY: u64 = 0x40;
    /// Value of the `MAGIC` register: `"VLABVBLK"`.
    pub const VIRTIO_MAGIC: u64 = u64::from_le_bytes(*b"VLABVBLK");
    /// The largest queue size the device accepts.
    pub const QUEUE_SIZE_MAX_VALUE: u16 = 256;
    /// The interrupt vector of a completion, where the device raises one (an irqfd
    /// routed to an MSI; see [`super::boot_info::BLK_COMPLETION_VECTOR`]).
    pub const COMPLETION_VECTOR: u8 = 0x21;
    /// virtio-blk request type: read sectors into the guest (`VIRTIO_BLK_T_IN`).
    pub const T_IN: u32 = 0;
    /// virtio-blk request type: write sectors from the guest (`VIRTIO_BLK_T_OUT`).
    pub const T_OUT: u32 = 1;
    /// virtio-blk request type: flush (`VIRTIO_BLK_T_FLUSH`).
    pub const T_FLUSH: u32 = 4;
    /// Status byte: done.
    pub const S_OK: u8 = 0;
    /// Status byte: I/O error (past the end of the disk, the image failed).
    pub const S_IOERR: u8 = 1;
    /// Status byte: request type not supported.
    pub const S_UNSUPP: u8 = 2;

    /// ATA data port (16-bit; `rep insw` / `rep outsw`).
    pub const ATA_DATA: u16 = 0x1F0;
    /// ATA error register (read).
    pub const ATA_ERROR: u16 = 0x1F1;
    /// ATA sector count (0 means 256).
    pub const ATA_SECTOR_COUNT: u16 = 0x1F2;
    /// ATA LBA bits 0–7.
    pub const ATA_LBA_LOW: u16 = 0x1F3;
    /// ATA LBA bits 8–15.
    pub const ATA_LBA_MID: u16 = 0x1F4;
    /// ATA LBA bits 16–23.
    pub const ATA_LBA_HIGH: u16 = 0x1F5;
    /// ATA drive/head: `0xE0 | LBA bits 24–27` selects drive 0 in LBA mode.
    pub const ATA_DRIVE: u16 = 0x1F6;
    /// ATA command (write) and status (read).
    pub const ATA_COMMAND: u16 = 0x1F7;
    /// Status: busy.
    pub const ATA_SR_BSY: u8 = 0x80;
    /// Status: drive ready.
    pub const ATA_SR_DRDY: u8 = 0x40;
    /// Status: data request (a sector can be moved through the data port).
    pub const ATA_SR_DRQ: u8 = 0x08;
    /// Status: error (see the error register).
    pub const ATA_SR_ERR: u8 = 0x01;
    /// Error: command aborted.
    pub const ATA_ER_ABRT: u8 = 0x04;
    /// Error: sector not found (past the end of the disk).
    pub const ATA_ER_IDNF: u8 = 0x10;
    /// Command: READ SECTORS (LBA28, PIO).
    pub const ATA_CMD_READ: u8 = 0x20;
    /// Command: WRITE SECTORS (LBA28, PIO).
    pub const ATA_CMD_WRITE: u8 = 0x30;
    /// Command: FLUSH CACHE.
    pub const ATA_CMD_FLUSH: u8 = 0xE7;

    const _: () = assert!(
        VIRTIO_BASE + VIRTIO_SIZE <= super::layout::MMIO_BASE + (2 << 20)
            && VIRTIO_BASE >= super::layout::MMIO_BASE + super::layout::MMIO_SIZE
    );
}

/// Offsets of the fields of the boot-info page (each a little-endian u64).
pub mod boot_info {
    /// [`super::BOOT_INFO_MAGIC`].
    pub const MAGIC: u64 = 0x00;
    /// [`super::ABI_VERSION`].
    pub const ABI_VERSION: u64 = 0x08;
    /// Size of guest RAM in bytes.
    pub const RAM_SIZE: u64 = 0x10;
    /// 0 = native flavour, 1 = paravirtual flavour.
    pub const FLAVOUR: u64 = 0x18;
    /// Guest-physical address of the shared-info page (paravirtual guests; else 0).
    pub const SHARED_INFO: u64 = 0x20;
    /// Hypercall port (paravirtual guests; else 0).
    pub const HYPERCALL_PORT: u64 = 0x28;
    /// [`super::layout::MMIO_BASE`].
    pub const MMIO_BASE: u64 = 0x30;
    /// [`super::layout::SCRATCH_VA`].
    pub const SCRATCH_VA: u64 = 0x38;
    /// Guest-physical address of the scratch PTE.
    pub const SCRATCH_PTE: u64 = 0x40;
    /// [`super::layout::SCRATCH_FRAME_A`].
    pub const SCRATCH_FRAME_A: u64 = 0x48;
    /// [`super::layout::SCRATCH_FRAME_B`].
    pub const SCRATCH_FRAME_B: u64 = 0x50;
    /// [`super::TIMER_VECTOR`].
    pub const TIMER_VECTOR: u64 = 0x58;
    /// TSC frequency in kHz as KVM reports it for the vCPU (0 if unknown).
    pub const TSC_KHZ: u64 = 0x60;
    /// [`super::layout::MONITOR_BASE`]: where the monitor's region starts.
    pub const MONITOR_BASE: u64 = 0x68;
    /// [`super::layout::MONITOR_SIZE`]: its size (a guest that builds its own page tables
    /// keeps this range mapped as it finds it).
    pub const MONITOR_SIZE: u64 = 0x70;
    /// The virtio-blk completion interrupt's vector when the device raises one (the guest
    /// enables its local APIC in x2APIC mode, waits with `sti; hlt` and EOIs); 0 when the
    /// driver polls the used ring.
    pub const BLK_COMPLETION_VECTOR: u64 = 0x78;
    /// Written by the guest: TSC cycles spent in its measured loop.
    pub const MEASURED_CYCLES: u64 = 0x100;
    /// Written by the guest: number of operations in its measured loop.
    pub const MEASURED_OPS: u64 = 0x108;
}

/// Guest flavour as written to the boot-info page.
pub mod flavour {
    /// Unmodified guest: executes sensitive instructions itself.
    pub const NATIVE: u64 = 0;
    /// Paravirtual guest: calls the hypervisor instead.
    pub const PARAVIRT: u64 = 1;
}

/// GDT selectors the VMM installs.
pub mod selector {
    /// 64-bit kernel code (DPL 0).
    pub const KERNEL_CODE: u16 = 0x08;
    /// Kernel data (DPL 0).
    pub const KERNEL_DATA: u16 = 0x10;
    /// User data (DPL 3), RPL 3.
    pub const USER_DATA: u16 = 0x18 | 3;
    /// 64-bit user code (DPL 3), RPL 3.
    pub const USER_CODE: u16 = 0x20 | 3;
    /// 64-bit TSS (16-byte descriptor).
    pub const TSS: u16 = 0x28;
    /// The CS the deprivileged engines write into the frame of an event from guest user
    /// mode, in place of [`USER_CODE`]: the TSS selector with RPL 3, which no IRETQ can
    /// load, so the guest kernel's IRETQ back to user mode traps and the VMM switches the
    /// virtual CPL and the shadow page tables (a value the guest can see: part of the
    /// x86 hole).
    pub const USER_FRAME_CS: u16 = TSS | 3;
}

/// Names of the 32 architectural exception vectors.
pub const EXCEPTION_NAMES: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF(9)", "#TS", "#NP", "#SS",
    "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
    "#26", "#27", "#HV", "#VC", "#SX", "#31",
];

/// Whether the CPU pushes an error code for this exception vector.
pub const fn pushes_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// A short name for an interrupt vector (`#GP`, `vector 0x20`, …).
pub fn vector_name(vector: u8) -> String {
    match EXCEPTION_NAMES.get(usize::from(vector)) {
        Some(name) => (*name).to_string(),
        None => format!("vector {vector:#04x}"),
    }
}

/// The paravirtual interface: hypercall numbers, register convention, error codes and the
/// shared-info page. `docs/hypercall-abi.md` explains it in prose.
///
/// A hypercall is `out PORT, eax` (or `out dx, eax` with DX = [`hypercall::PORT`]) from
/// CPL 3: the TSS I/O bitmap opens the port to paravirtual guests, so the `out` exits
/// straight to the VMM. The number is in RAX, up to three arguments in RDI, RSI and RDX,
/// and the result comes back in RAX (≥ 0 on success, a negative [`hypercall::errno`] on
/// failure). No other register changes, except where a hypercall says so (`iret`
/// restores the interrupted context).
pub mod hypercall {
    use std::fmt;

    /// I/O port of the hypercall gate.
    pub const PORT: u16 = 0xFC;

    /// Ports the VMM opens to CPL 3 for the gate: a 32-bit `out` needs the bitmap bits of
    /// all four bytes it touches, so 0xFC–0xFF (no other device lives there; an `out` to
    /// 0xFD–0xFF is a bad device access).
    pub const PORT_SPAN: u16 = 4;

    /// Guest-physical address of the shared-info page (also in the boot-info page).
    pub const SHARED_INFO: u64 = super::layout::SHARED_INFO;

    /// Most bytes one `console_write` may carry.
    pub const MAX_CONSOLE_WRITE: u64 = 4096;

    /// Most entries one `mmu_update` or `device_read` may carry.
    pub const MAX_BATCH: u64 = 512;

    /// Most entries one `multicall` may carry.
    pub const MAX_MULTICALL: u64 = 64;

    /// Largest trap table (`set_trap_table`): 256 gates of 16 bytes.
    pub const MAX_TRAP_TABLE: u64 = 256 * 16;

    /// The hypercalls, by number. One source of truth for the guest and the VMM.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    #[repr(u64)]
    pub enum Hypercall {
        /// `console_write(buf: RDI, len: RSI)`: appends `len` bytes to the console.
        /// Returns `len`.
        ConsoleWrite = 1,
        /// `exit(code: RDI)`: ends the run; the result is RBX. Does not return.
        Exit = 2,
        /// `block()`: enables events (clears the mask) and waits until one is delivered.
        /// With no event pending and no timer armed the guest is done: the run ends as
        /// halted. Returns 0 (after the event's callback has run and returned).
        Block = 3,
        /// `set_timer(micros: RDI)`: arms the one-shot timer. Returns 0.
        SetTimer = 4,
        /// `mmu_update(reqs: RDI, count: RSI, flags: RDX)`: applies `count` 16-byte
        /// `{ptr, val}` requests (write `val` to the PTE at guest-physical `ptr`), all or
        /// none after validating every one; with [`mmu::FLUSH_TLB`] in `flags` the TLB is
        /// flushed afterwards. Returns `count`.
        MmuUpdate = 5,
        /// `new_baseptr(pml4: RDI)`: switches to another top-level page table, which must
        /// map nothing the VMM's own table does not; the page is pinned read-only.
        /// Returns 0.
        NewBaseptr = 6,
        /// `cpuid(leaf: RDI, subleaf: RSI, out: RDX)`: writes EAX, EBX, ECX, EDX of the
        /// vCPU's CPUID as four u32 at `out`. Returns 0.
        Cpuid = 7,
        /// `multicall(calls: RDI, count: RSI)`: runs `count` 40-byte
        /// `{nr, arg0, arg1, arg2, result}` entries in order, writing each result back.
        /// `exit`, `block`, `iret` and `multicall` are not allowed inside. Returns 0.
        Multicall = 8,
        /// `set_trap_table(table: RDI, bytes: RSI)`: registers the guest's callbacks, in
        /// the layout of a 64-bit IDT (16-byte gates; present gates are used). Returns the
        /// number of callbacks registered.
        SetTrapTable = 9,
        /// `iret()`: returns from a callback. RSP points at `{rax, rip, cs, rflags, rsp,
        /// ss}` (the saved RAX, then the frame the VMM pushed); the VMM restores them and
        /// sets the event mask from the saved IF. Does not return to the caller.
        Iret = 10,
        /// `event_check()`: asks the VMM to deliver pending events now (called when the
        /// guest re-enables events and finds the pending flag set). Returns 0.
        EventCheck = 11,
        /// `set_tpr(value: RDI)`: sets the task priority (0–15); events of a lower or equal
        /// priority class wait. The value is mirrored in the shared-info page. Returns 0.
        SetTpr = 12,
        /// `device_read(addr: RDI, count: RSI, buf: RDX)`: reads the 8-byte device
        /// register at `addr` `count` times into `buf` (a string read, like `rep insd`).
        /// Returns `count`.
        DeviceRead = 13,
        /// `mmuext_op(op: RDI, frame: RSI, level: RDX)`: direct paging's page-table
        /// operations on the guest's own four-level tables ([`mmuext`]): pin `frame` as a
        /// table of `level` (1–4), validating it and everything it references, or unpin
        /// it. Returns 0.
        MmuextOp = 14,
        /// `set_callback(kind, address)`: registers the guest kernel's entry point for
        /// `kind` (1 = system call, [`callback::SYSCALL`]): the VMM bounces a SYSCALL of
        /// guest user mode there, on the kernel's root. Returns 0.
        SetCallback = 15,
    }

    impl Hypercall {
        /// Every hypercall, by number.
        pub const ALL: [Hypercall; 15] = [
            Hypercall::ConsoleWrite,
            Hypercall::Exit,
            Hypercall::Block,
            Hypercall::SetTimer,
            Hypercall::MmuUpdate,
            Hypercall::NewBaseptr,
            Hypercall::Cpuid,
            Hypercall::Multicall,
            Hypercall::SetTrapTable,
            Hypercall::Iret,
            Hypercall::EventCheck,
            Hypercall::SetTpr,
            Hypercall::DeviceRead,
            Hypercall::MmuextOp,
            Hypercall::SetCallback,
        ];

        /// The name counters and reports use.
        pub const fn name(self) -> &'static str {
            match self {
                Hypercall::ConsoleWrite => "console_write",
                Hypercall::Exit => "exit",
                Hypercall::Block => "block",
                Hypercall::SetTimer => "set_timer",
                Hypercall::MmuUpdate => "mmu_update",
                Hypercall::NewBaseptr => "new_baseptr",
                Hypercall::Cpuid => "cpuid",
                Hypercall::Multicall => "multicall",
                Hypercall::SetTrapTable => "set_trap_table",
                Hypercall::Iret => "iret",
                Hypercall::EventCheck => "event_check",
                Hypercall::SetTpr => "set_tpr",
                Hypercall::DeviceRead => "device_read",
                Hypercall::MmuextOp => "mmuext_op",
                Hypercall::SetCallback => "set_callback",
            }
        }

        /// The number the guest puts in RAX.
        pub const fn number(self) -> u64 {
            self as u64
        }

        /// How many of RDI, RSI, RDX the call takes as arguments.
        pub const fn arity(self) -> usize {
            match self {
                Hypercall::Block | Hypercall::Iret | Hypercall::EventCheck => 0,
                Hypercall::Exit
                | Hypercall::SetTimer
                | Hypercall::NewBaseptr
                | Hypercall::SetTpr => 1,
                Hypercall::ConsoleWrite
                | Hypercall::Multicall
                | Hypercall::SetTrapTable
                | Hypercall::SetCallback => 2,
                Hypercall::MmuUpdate
                | Hypercall::Cpuid
                | Hypercall::DeviceRead
                | Hypercall::MmuextOp => 3,
            }
        }

        /// Whether the call returns to its caller with a result in RAX.
        pub const fn returns(self) -> bool {
            !matches!(self, Hypercall::Exit | Hypercall::Iret)
        }
    }

    impl fmt::Display for Hypercall {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.name())
        }
    }

    /// Whether a name among a run record's hypercalls is a counter of what the calls did
    /// rather than a call: direct paging's batches, entries, pins, validations and
    /// refusals (`direct_paging:*`), and the guest kernel's bounces and root switches
    /// (`mode:*`).
    pub fn is_counter(name: &str) -> bool {
        name.starts_with("direct_paging:") || name.starts_with("mode:")
    }

    /// A hypercall number that does not exist.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("unknown hypercall number {0:#x}")]
    pub struct UnknownHypercall(pub u64);

    impl TryFrom<u64> for Hypercall {
        type Error = UnknownHypercall;
        fn try_from(nr: u64) -> Result<Self, Self::Error> {
            Hypercall::ALL
                .into_iter()
                .find(|h| h.number() == nr)
                .ok_or(UnknownHypercall(nr))
        }
    }

    /// Error codes returned in RAX (negated errno values, as Linux and Xen return them).
    pub mod errno {
        /// The operation is not allowed (for example a page the guest does not own).
        pub const EPERM: i64 = -1;
        /// A length or count is too large.
        pub const E2BIG: i64 = -7;
        /// An address is outside guest RAM, inside the VMM's region, or not writable.
        pub const EFAULT: i64 = -14;
        /// An argument is invalid.
        pub const EINVAL: i64 = -22;
        /// No hypercall has this number.
        pub const ENOSYS: i64 = -38;

        /// The name of an error code (`"EINVAL"`), for messages.
        pub fn name(code: i64) -> &'static str {
            match code {
                EPERM => "EPERM",
                E2BIG => "E2BIG",
                EFAULT => "EFAULT",
                EINVAL => "EINVAL",
                ENOSYS => "ENOSYS",
                _ => "error",
            }
        }
    }

    /// Offsets inside the shared-info page (the VMM and the guest both read and write it).
    pub mod shared_info {
        /// u8: the event mask, the virtual interrupt flag inverted (1 = events off, as
        /// after `cli`). Set to 1 at entry and whenever an event is delivered.
        pub const UPCALL_MASK: u64 = 0x00;
        /// u8: 1 when an event waits for the mask to clear. The VMM sets it; the guest
        /// checks it after clearing the mask and calls `event_check` if it is set.
        pub const UPCALL_PENDING: u64 = 0x01;
        /// u64: how many times the timer has fired.
        pub const TIMER_FIRED: u64 = 0x08;
        /// u64: the task priority last set with `set_tpr` (what `mov rax, cr8` reads).
        pub const TPR: u64 = 0x10;
        /// u64: the faulting address of the last page fault delivered to the guest.
        pub const FAULT_ADDR: u64 = 0x18;
    }

    /// `mmu_update` requests.
    pub mod mmu {
        /// Size of one `{ptr, val}` request.
        pub const REQUEST_SIZE: u64 = 16;
        /// Flag: flush the TLB after the updates.
        pub const FLUSH_TLB: u64 = 1;
    }

    /// `mmuext_op` operations (direct paging; see `docs/hypercall-abi.md`).
    pub mod mmuext {
        /// Pin a frame as a page table of the given level (Xen's `MMUEXT_PIN_Ln_TABLE`).
        pub const PIN: u64 = 1;
        /// Unpin a frame (Xen's `MMUEXT_UNPIN_TABLE`).
        pub const UNPIN: u64 = 2;
        /// Register the user root of the guest kernel (`frame`, pinned as an L4 whose VMM
        /// slot holds [`super::super::layout::PDPT_USER`]; 0 clears it): the root the VMM
        /// loads when the kernel returns to user mode with `iret` (Xen's
        /// `MMUEXT_NEW_USER_BASEPTR`).
        pub const NEW_USER_BASEPTR: u64 = 3;
        /// Flush the TLB entry of the virtual address `frame` (Xen's `MMUEXT_INVLPG_LOCAL`).
        pub const INVLPG: u64 = 4;
    }

    /// `set_callback` kinds.
    pub mod callback {
        /// The system-call entry (Xen's `CALLBACKTYPE_syscall`).
        pub const SYSCALL: u64 = 1;
    }

    /// `multicall` entries.
    pub mod multicall {
        /// Size of one `{nr, arg0, arg1, arg2, result}` entry.
        pub const ENTRY_SIZE: u64 = 40;
        /// Offset of the result the VMM writes back.
        pub const RESULT: u64 = 32;
    }
}

#[cfg(test)]
mod tests {
    use super::layout::*;

    #[test]
    fn small_pages_have_their_pte_in_pt0_or_the_monitors_table() {
        assert_eq!(pte_address(0), Some(PT0));
        assert_eq!(pte_address(0x1F_F000), Some(PT0 + 511 * 8));
        assert_eq!(pte_address(0x20_0000), None, "2 MiB pages above");
        assert_eq!(pte_address(SCRATCH_PT), Some(PT_MONITOR + 0x12 * 8));
        assert_eq!(pte_address(MONITOR_BASE + (2 << 20)), None);
        assert_eq!(pte_address(MMIO_BASE), None);
    }
}
