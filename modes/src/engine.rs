//! The contract every engine implements.

use std::time::Duration;

use crate::abi::layout;
use crate::error::Result;
use crate::host::HostInfo;
use crate::image::{Flavour, GuestImage};
use crate::record::{Mode, RunRecord};

/// Limits that end a runaway guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from the first KVM_RUN; the watchdog kicks the vCPU after it.
    pub wall: Duration,
    /// Most exits allowed.
    pub max_exits: u64,
    /// Most console bytes kept (more ends the run).
    pub max_console_bytes: usize,
    /// How many exits to record step by step in `RunRecord::trace` (0: no tracing).
    pub trace_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(20),
            max_exits: 5_000_000,
            max_console_bytes: 1 << 20,
            trace_events: 0,
        }
    }
}

/// Options of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub ram_size: u64,
    /// Limits.
    pub limits: Limits,
    /// Repeat index, copied into the record.
    pub repeat: u32,
    /// Trap-and-emulate: make CPUID fault at CPL 3 (MSR 0x140) so it can be emulated.
    pub cpuid_faulting: bool,
    /// Trap-and-emulate: set CR4.UMIP so SGDT/SIDT/SLDT/SMSW/STR fault at CPL 3.
    pub umip: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            ram_size: layout::DEFAULT_RAM_SIZE,
            limits: Limits::default(),
            repeat: 0,
            cpuid_faulting: true,
            umip: false,
        }
    }
}

/// A virtualization strategy that can run guest images.
pub trait Engine {
    /// Which strategy this is.
    fn mode(&self) -> Mode;

    /// The guest flavour this engine runs: the harness builds each workload's image in
    /// this flavour before it calls [`Engine::run`].
    fn flavour(&self) -> Flavour {
        Flavour::Native
    }

    /// Whether this host can run the engine, and on what backend.
    fn probe(&self) -> Result<HostInfo>;

    /// Runs one image to its end. Guest misbehaviour is an `Ok` record with a classified
    /// outcome; `Err` means the VMM itself could not do its job.
    fn run(&self, image: &GuestImage, opts: &RunOptions) -> Result<RunRecord>;
}
