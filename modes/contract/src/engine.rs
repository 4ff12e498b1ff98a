//! The contract every engine implements.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::abi::layout;
use crate::error::Result;
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
    /// Trap-and-emulate and binary translation: keep each guest root's shadow page tables
    /// across CR3 loads (off: every CR3 load rebuilds the shadow from nothing).
    pub shadow_cache: bool,
    /// Capture the final register file into the record.
    pub show_regs: bool,
    /// Guest memory to capture into the record after the run.
    pub peeks: Vec<crate::state::PeekRequest>,
    /// A VMM-level scheduler's hold on this run's vCPU, when several VMs share the host
    /// CPUs under one ([`crate::fleet`]); `None`: the vCPU thread is Linux's to schedule.
    pub gate: Option<crate::fleet::GateRef>,
    /// The disk the block devices use, if the run has one.
    pub disk: Option<crate::disk::DiskOptions>,
    /// Page sharing and host swapping for this run's guest RAM ([`crate::overcommit`]).
    pub memory: crate::overcommit::MemoryOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            ram_size: layout::DEFAULT_RAM_SIZE,
            limits: Limits::default(),
            repeat: 0,
            cpuid_faulting: true,
            umip: false,
            shadow_cache: true,
            show_regs: false,
            peeks: Vec::new(),
            gate: None,
            disk: None,
            memory: Default::default(),
        }
    }
}

/// One host-dependent option: what the run asked for and what the host made of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// Asked for (by default or on the command line).
    pub requested: bool,
    /// In effect: asked for *and* measured to work on this host.
    pub effective: bool,
}

impl Setting {
    /// `requested`, in effect only where the host's probe says `available`.
    pub fn resolve(requested: bool, available: bool) -> Self {
        Setting {
            requested,
            effective: requested && available,
        }
    }

    /// Asked for, but the host cannot honour it.
    pub fn lacking(self) -> bool {
        self.requested && !self.effective
    }
}

/// The options of a run that depend on the host, as the engine applied them. `None`: the
/// option means nothing in this mode (the guest kernel runs at CPL 0, or calls the VMM).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
    /// CPUID faulting (MSR 0x140): CPUID at CPL 3 traps to the VMM.
    pub cpuid_faulting: Option<Setting>,
    /// CR4.UMIP: SGDT/SIDT/SLDT/SMSW/STR at CPL 3 trap to the VMM.
    pub umip: Option<Setting>,
    /// The shadow cache: each guest root's shadow page tables kept across CR3 loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_cache: Option<Setting>,
}

impl RunSettings {
    /// Every setting with its name, for CSV rows and tables.
    pub fn rows(&self) -> Vec<(&'static str, Setting)> {
        [
            ("cpuid_faulting", self.cpuid_faulting),
            ("umip", self.umip),
            ("shadow_cache", self.shadow_cache),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.map(|s| (n, s)))
        .collect()
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

    /// Runs one image to its end. Guest misbehaviour is an `Ok` record with a classified
    /// outcome; `Err` means the VMM itself could not do its job. The record is not judged:
    /// the harness compares it with the image's oracle ([`GuestImage::judge`]).
    fn run(&self, image: &GuestImage, opts: &RunOptions) -> Result<RunRecord>;
}
