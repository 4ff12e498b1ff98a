//! Step-by-step traces of a run: one event per exit, trap or hypercall, for `virtlab
//! trace` and the labs. Tracing is off unless [`crate::Limits::trace_events`] is set, and
//! then costs one register read per exit.

use serde::{Deserialize, Serialize};

use crate::record::ExitKind;

/// What an engine says about the exit it just handled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceNote {
    /// Guest RIP of the instruction responsible (the faulting one for a trap), if the
    /// engine knows it better than the vCPU's RIP at the exit.
    pub rip: Option<u64>,
    /// The instruction, decoded (Intel syntax), if the engine decoded it.
    pub instruction: Option<String>,
    /// Short name of the event (`cli`, `console_write`, `IoOut 0xe9`, …).
    pub event: String,
    /// What the VMM did, e.g. `vIF 1 → 0` or `wrote 16 bytes`.
    pub action: String,
}

/// One traced exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// 0-based exit number within the run.
    pub seq: u64,
    /// The exit kind.
    pub kind: ExitKind,
    /// The vCPU's RIP when the exit reached the VMM (after an `out` or `hlt` this is the
    /// next instruction).
    pub exit_rip: Option<u64>,
    /// The engine's description, if it gave one.
    pub note: Option<TraceNote>,
    /// KVM_RUN round trip, ns.
    pub round_trip_ns: u64,
    /// Time in the VMM's handler, ns.
    pub handler_ns: u64,
}
