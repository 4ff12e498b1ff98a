//! The virtlab contract: what an engine is, what it runs and what it returns — serde
//! data and traits, with no KVM, no guest-memory mapping and no libc.
//!
//! An [`Engine`] runs a [`GuestImage`] under [`RunOptions`] and returns a [`RunRecord`]:
//! how the run ended, every VM exit counted by [`ExitKind`] with host-side latency
//! histograms, traps and hypercalls by name, KVM's own statistics, and what the guest
//! measured itself. The image carries its [`Oracle`]: the exact counts each mode must
//! produce, judged by the harness with typed [`CountKey`]s, which the record keeps as its
//! expected counts and mismatches. A run the VMM could not carry out at all is a
//! [`RunFailure`]. [`abi`] is the guest ABI and the hypercall ABI; [`x86`] the
//! architecture constants every engine shares.
//!
//! The KVM machine engines run on is the `machine` crate; the engines are
//! `hw-assisted`, `trap-emulate` and `paravirt`.
//!
//! ```
//! use contract::{CountKey, ExitKind, GuestImage, Mode};
//!
//! // hlt: the shortest guest there is.
//! let image = GuestImage::flat("halt", vec![0xF4], 0x10_0000, 0x10_0000);
//! assert_eq!(image.entry, 0x10_0000);
//! assert_eq!("trap-emulate".parse::<Mode>()?, Mode::TrapEmulate);
//! assert_eq!(CountKey::Exits(ExitKind::Halt).to_string(), "exits:Halt");
//! assert_eq!("port_writes:0xe9".parse::<CountKey>()?, CountKey::PortWrites(0xe9));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod abi;
pub mod caps;
pub mod count_key;
pub mod cpuid;
pub mod disk;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod host;
pub mod image;
pub mod metrics;
pub mod overcommit;
pub mod record;
pub mod state;
pub mod trace;
pub mod x86;

pub use count_key::{CountKey, UnknownCountKey};
pub use disk::{BlockBackend, DiskOptions};
pub use engine::{Engine, Limits, RunOptions, RunSettings, Setting};
pub use error::{Error, Result};
pub use fleet::{Gate, GateRef, HostRecord, SchedulerKind, VmShare};
pub use host::{Backend, HostInfo};
pub use image::{
    Condition, Expectations, Flavour, GuestImage, KnownDivergence, Oracle, OracleVariant,
};
pub use metrics::{ExitMetrics, Latency, LatencySummary, NamedCounters};
pub use record::{
    Ending, ExitKind, FaultKind, GuestMeasurement, Limit, Mode, Outcome, PortCounts, RunFailure,
    RunRecord, UnknownMode,
};
pub use trace::{TraceEvent, TraceNote};
