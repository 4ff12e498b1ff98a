//! What the emulator needs from the machine: guest memory as the guest addresses it,
//! the devices, the timer, CPUID values and a TLB flush. The KVM engine implements it on
//! the real vCPU; the unit tests implement it with a plain in-memory mock.

use contract::Outcome;

/// Why a guest memory access cannot be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemError {
    /// The page belongs to the monitor (supervisor-only).
    Supervisor {
        /// Guest virtual address.
        addr: u64,
    },
    /// The page is mapped read-only.
    ReadOnly {
        /// Guest virtual address.
        addr: u64,
    },
    /// No translation (not present or non-canonical).
    NotMapped {
        /// Guest virtual address.
        addr: u64,
    },
    /// The translation leads outside guest RAM (the MMIO page, for example).
    NotRam {
        /// Guest virtual address.
        addr: u64,
    },
}

impl MemError {
    /// The address that failed.
    pub fn addr(&self) -> u64 {
        match self {
            MemError::Supervisor { addr }
            | MemError::ReadOnly { addr }
            | MemError::NotMapped { addr }
            | MemError::NotRam { addr } => *addr,
        }
    }
}

/// Result of an emulated port access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortResult {
    /// Done; the guest continues.
    Done,
    /// The access ends the run (the exit port, a full console).
    Stop(Outcome),
    /// No device answers at this port.
    NoDevice,
}

/// What waiting in HLT ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The timer is due.
    TimerDue,
    /// Nothing is armed: nothing can ever wake the guest.
    NothingArmed,
    /// The run's wall-clock limit came first.
    Deadline,
}

/// The machine as the emulator sees it.
pub trait Platform {
    /// Reads guest memory at a guest virtual address with the guest's access rights
    /// (user pages only: the monitor's pages are out of reach).
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Writes guest memory at a guest virtual address (user, writable pages only).
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemError>;
    /// Reads guest-physical memory (for the VMM's own use, e.g. page tables).
    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Writes guest-physical memory (for the VMM's own use, e.g. page tables).
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;
    /// Guest RAM size in bytes.
    fn ram_size(&self) -> u64;
    /// `out` to a device.
    fn port_out(&mut self, port: u16, data: &[u8]) -> PortResult;
    /// `in` from a device.
    fn port_in(&mut self, port: u16, data: &mut [u8]) -> PortResult;
    /// CPUID as the virtual CPU reports it: [EAX, EBX, ECX, EDX].
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Invalidates the real vCPU's translation of `gva` (the effect of INVLPG).
    fn invlpg(&mut self, gva: u64) -> Result<(), String>;
    /// Flushes the real vCPU's whole TLB (the effect of a CR3 reload).
    fn flush_tlb(&mut self) -> Result<(), String>;
    /// Stores a validated page-table entry at guest-physical `gpa` so that the real vCPU's
    /// MMU sees the store (KVM tracks guest stores to page tables, not the VMM's).
    fn write_pte(&mut self, gpa: u64, value: u64) -> Result<(), String>;
    /// Makes a shadow MMU's effects happen on the real vCPU: the stores into shadow
    /// pages, the `invlpg`s, the flush or the CR3 load (see [`crate::shadow::Effects`]).
    fn apply_shadow(&mut self, fx: crate::shadow::Effects) -> Result<(), String> {
        let _ = fx;
        Err("this platform has no shadow paging".into())
    }
    /// Where the VMM's walks of guest-virtual addresses start: `Some(root)` walks the
    /// guest's own tables (a shadow is active), with `supervisor` the guest kernel's right
    /// to its supervisor pages; `None` walks the boot tables.
    fn set_walk(&mut self, root: Option<u64>, supervisor: bool) {
        let _ = (root, supervisor);
    }
    /// Whether the timer's interrupt is due.
    fn timer_due(&self) -> bool;
    /// Marks the timer's interrupt as delivered.
    fn ack_timer(&mut self);
    /// Sleeps until the timer is due (HLT).
    fn wait_for_timer(&mut self) -> Wake;
    /// The outcome of a guest that halted with nothing left to wake it (`rbx` is the
    /// result, per the guest ABI).
    fn halted(&mut self, rbx: u64) -> Outcome {
        Outcome::Completed {
            exit_code: 0,
            result: rbx,
            ending: contract::Ending::Halted,
        }
    }
}
