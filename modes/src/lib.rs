//! The virtlab contract, and the KVM machine every engine runs on.
//!
//! An [`Engine`] runs a [`GuestImage`] and returns a [`RunRecord`]: how the run ended,
//! every VM exit counted by [`ExitKind`] with host-side latency histograms, KVM's own
//! statistics, and what the guest measured itself. The [`machine`] module is the shared
//! substrate: one VM, one vCPU in 64-bit long mode per the guest ABI ([`abi`]), the
//! standard devices, and an exit loop with a watchdog.
//!
//! The shortest run — a guest that prints `hi` and exits with code 7, on the bare
//! machine with a minimal handler (engines do the same with more policy):
//!
//! ```
//! use modes::machine::{Action, Devices, ExitHandler, GuestPrivilege, Machine, MachineConfig, Vcpu};
//! use modes::{GuestImage, Limits, RunOptions};
//!
//! // mov al,'h'; out 0xe9,al; mov al,'i'; out 0xe9,al; mov eax,7; out 0xf4,eax
//! let code = vec![0xB0, b'h', 0xE6, 0xE9, 0xB0, b'i', 0xE6, 0xE9,
//!                 0xB8, 7, 0, 0, 0, 0xE7, 0xF4];
//! let image = GuestImage::flat("hi", code, 0x10_0000, 0x10_0000);
//! let opts = RunOptions::default();
//!
//! struct Minimal(Devices);
//! impl ExitHandler for Minimal {
//!     fn before_entry(&mut self, _: &mut Vcpu<'_>) -> Action { Action::Continue }
//!     fn io_out(&mut self, v: &mut Vcpu<'_>, port: u16, data: &[u8]) -> Action {
//!         self.0.io_out(v, port, data).unwrap_or(Action::Continue)
//!     }
//!     fn io_in(&mut self, _: u16, _: &mut [u8]) -> Action { Action::Continue }
//!     fn mmio_read(&mut self, a: u64, d: &mut [u8]) -> Action { self.0.mmio_read(a, d) }
//!     fn mmio_write(&mut self, _: &mut Vcpu<'_>, a: u64, d: &[u8]) -> Action { self.0.mmio_write(a, d) }
//!     fn halt(&mut self, v: &mut Vcpu<'_>) -> Action { self.0.halt(v) }
//! }
//!
//! let mut m = Machine::new(&MachineConfig::for_image(&image, &opts, GuestPrivilege::Kernel))?;
//! m.load(&image)?;
//! let mut h = Minimal(Devices::new(&opts.limits));
//! let summary = m.run(&mut h, &Limits::default())?;
//! assert_eq!(h.0.console.text(), "hi");
//! println!("{:?} after {} exits", summary.outcome, summary.metrics.total());
//! # Ok::<(), modes::Error>(())
//! ```

pub mod abi;
pub mod caps;
pub mod cpuid;
pub mod engine;
pub mod error;
pub mod host;
pub mod image;
pub mod kvm_stats;
pub mod machine;
pub mod metrics;
pub mod record;
pub mod state;
pub mod testing;
pub mod trace;
pub mod x86;

pub use engine::{Engine, Limits, RunOptions, RunSettings, Setting};
pub use error::{Error, Result};
pub use host::{Backend, HostInfo};
pub use image::{
    Condition, CountKey, Expectations, Flavour, GuestImage, KnownDivergence, Oracle, OracleVariant,
};
pub use metrics::{ExitMetrics, Latency, LatencySummary, NamedCounters};
pub use record::{
    Ending, ExitKind, FaultKind, GuestMeasurement, Limit, Mode, Outcome, PortCounts, RunRecord,
    UnknownMode,
};
pub use trace::{TraceEvent, TraceNote};
