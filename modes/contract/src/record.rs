//! What a run records: the mode, the outcome, counts, latencies, KVM statistics.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::count_key::CountKey;
use crate::host::HostInfo;
use crate::metrics::LatencySummary;

/// The four virtualization strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Guest kernel at CPL 0 inside the VM; the CPU runs sensitive instructions itself.
    HwAssisted,
    /// Unmodified guest deprivileged to CPL 3; privileged instructions trap to the VMM.
    TrapEmulate,
    /// Unmodified guest whose kernel code runs translated from a translation cache at
    /// CPL 3: sensitive instructions rewritten inline, privileged ones called out.
    BinaryTranslation,
    /// Modified guest at CPL 3 that calls the VMM through hypercalls.
    Paravirt,
}

impl Mode {
    /// Every mode, in the order reports show them.
    pub const ALL: [Mode; 4] = [
        Mode::HwAssisted,
        Mode::TrapEmulate,
        Mode::BinaryTranslation,
        Mode::Paravirt,
    ];

    /// The name used on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::HwAssisted => "hw-assisted",
            Mode::TrapEmulate => "trap-emulate",
            Mode::Paravirt => "paravirt",
            Mode::BinaryTranslation => "binary-translation",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a mode name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown mode `{0}` (known modes: hw-assisted, trap-emulate, binary-translation, paravirt)"
)]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// One taxonomy of VM exits for every mode, so that reports can put modes side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExitKind {
    /// `in` from a port.
    IoIn,
    /// `out` to a port.
    IoOut,
    /// Read from the MMIO device page.
    MmioRead,
    /// Write to the MMIO device page.
    MmioWrite,
    /// `hlt` reached user space.
    Halt,
    /// A paravirtual hypercall.
    Hypercall,
    /// A fault forwarded to the VMM by the monitor stub (trap-and-emulate).
    Trap,
    /// KVM reported that the guest can take an interrupt.
    InterruptWindow,
    /// The guest shut down (triple fault).
    Shutdown,
    /// KVM_RUN was interrupted by a signal (the watchdog's kick).
    Interrupted,
    /// KVM failed to enter the guest or hit an internal error.
    EntryFailure,
    /// Any other exit reason.
    Other,
}

impl ExitKind {
    /// Every kind, in report order.
    pub const ALL: [ExitKind; 12] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Halt,
        ExitKind::Hypercall,
        ExitKind::Trap,
        ExitKind::InterruptWindow,
        ExitKind::Shutdown,
        ExitKind::Interrupted,
        ExitKind::EntryFailure,
        ExitKind::Other,
    ];

    /// Name as printed in tables and CSV.
    pub const fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "IoIn",
            ExitKind::IoOut => "IoOut",
            ExitKind::MmioRead => "MmioRead",
            ExitKind::MmioWrite => "MmioWrite",
            ExitKind::Halt => "Halt",
            ExitKind::Hypercall => "Hypercall",
            ExitKind::Trap => "Trap",
            ExitKind::InterruptWindow => "InterruptWindow",
            ExitKind::Shutdown => "Shutdown",
            ExitKind::Interrupted => "Interrupted",
            ExitKind::EntryFailure => "EntryFailure",
            ExitKind::Other => "Other",
        }
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a completed run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// The guest wrote its exit code to the exit port (or called the exit hypercall).
    ExitPort,
    /// The guest executed `hlt` with nothing left that could wake it.
    Halted,
}

/// Classes of guest faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The guest raised a CPU exception it had no handler for (see `detail` for which).
    Exception,
    /// The guest triple-faulted; KVM shut the VM down.
    Shutdown,
    /// The guest touched guest-physical memory that does not exist.
    BadMemoryAccess,
    /// The guest used a port or device register that does not exist.
    BadDeviceAccess,
    /// The guest executed an instruction the engine cannot emulate.
    UnhandledInstruction,
    /// The guest tried to reach the monitor's memory or structures.
    MonitorViolation,
    /// A paravirtual guest executed a privileged instruction it should have replaced.
    UnportedPrivilegedInstruction,
    /// KVM refused to run the guest (invalid state).
    EntryFailure,
    /// KVM stopped with an internal error (for example an instruction it cannot emulate).
    KvmInternalError,
}

/// Why a run hit its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// The wall-clock limit passed; the watchdog kicked the vCPU out of KVM_RUN.
    WallClock,
    /// The guest made more exits than allowed.
    ExitCount,
    /// The guest wrote more console bytes than allowed.
    ConsoleBytes,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// The guest finished normally.
    Completed {
        /// Exit code the guest reported.
        exit_code: u32,
        /// RBX at the end: the workload's result.
        result: u64,
        /// Whether the guest used the exit port or halted.
        ending: Ending,
    },
    /// The guest did something the VMM will not allow or cannot handle.
    GuestFault {
        /// The class of fault.
        kind: FaultKind,
        /// Guest RIP at the fault, if known.
        rip: Option<u64>,
        /// What happened, in one sentence.
        detail: String,
    },
    /// The run hit one of its limits.
    TimedOut {
        /// Which limit.
        limit: Limit,
        /// Guest RIP when it was stopped, if known.
        rip: Option<u64>,
    },
    /// The guest completed but its result differs from the expected one.
    Diverged {
        /// What the workload should have produced.
        expected: String,
        /// What it produced.
        got: String,
        /// Why this mode diverges, when that is known and explained.
        why: String,
        /// Whether the workload declares this divergence for this mode (a known property
        /// of the strategy, not a failure).
        #[serde(default)]
        declared: bool,
        /// Whether the host caused it: a capability the run asked for is not effective
        /// here (for example CPUID faulting accepted by KVM but without effect).
        #[serde(default)]
        host_caused: bool,
        /// The result the guest produced (RBX), when it completed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<u64>,
    },
    /// The run was not made: something it needs is not on this host, as its probe
    /// found (a disk backend without a KVM ioeventfd, say). Declared, not a failure.
    Unavailable {
        /// What is missing and what the probe found, in one sentence.
        why: String,
    },
}

impl Outcome {
    /// A one-word status for tables: `ok`, `fault`, `timeout`, `diverged`,
    /// `unavailable`.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Completed { .. } => "ok",
            Outcome::GuestFault { .. } => "fault",
            Outcome::TimedOut { .. } => "timeout",
            Outcome::Diverged { .. } => "diverged",
            Outcome::Unavailable { .. } => "unavailable",
        }
    }

    /// The result, if the guest completed.
    pub fn result(&self) -> Option<u64> {
        match self {
            Outcome::Completed { result, .. } => Some(*result),
            _ => None,
        }
    }
}

/// Counts of I/O exits on one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounts {
    /// Number of `in` exits.
    pub reads: u64,
    /// Number of `out` exits.
    pub writes: u64,
}

/// What the guest measured itself with RDTSC around its loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuestMeasurement {
    /// TSC cycles the loop took.
    pub cycles: u64,
    /// Operations in the loop.
    pub ops: u64,
    /// cycles / ops.
    pub cycles_per_op: f64,
    /// cycles_per_op converted with the vCPU TSC frequency, if known.
    pub ns_per_op: Option<f64>,
}

/// Everything one run of one workload in one mode records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The engine's mode.
    pub mode: Mode,
    /// Workload (or user binary) name.
    pub workload: String,
    /// Workload parameters, such as `n` and `b`.
    pub params: BTreeMap<String, u64>,
    /// Repeat index within a scenario (0 for a single run).
    pub repeat: u32,
    /// The host the run happened on (with its probed capabilities).
    pub host: HostInfo,
    /// The run options that depend on the host: as asked for, and as in effect.
    #[serde(default)]
    pub options: crate::engine::RunSettings,
    /// How the run ended (after comparison with the expected result).
    pub outcome: Outcome,
    /// Every exit, counted by kind.
    pub exits: BTreeMap<ExitKind, u64>,
    /// I/O exits by port.
    pub io_ports: BTreeMap<u16, PortCounts>,
    /// Traps by mnemonic (trap-and-emulate).
    pub traps: BTreeMap<String, u64>,
    /// Hypercalls by name (paravirt).
    pub hypercalls: BTreeMap<String, u64>,
    /// Interrupts the VMM injected (hw-assisted) or reflected (trap-emulate, paravirt).
    pub injections: u64,
    /// Latency per trap mnemonic or hypercall name, in ns (host side).
    pub event_ns: BTreeMap<String, LatencySummary>,
    /// Expected counts from the workload's oracle (`exits:IoOut`, `traps:cli`, …).
    pub expected: BTreeMap<CountKey, u64>,
    /// Counts that differ from the oracle: key → (expected, measured).
    pub mismatches: BTreeMap<CountKey, (u64, u64)>,
    /// Host-side latency per exit kind: the whole KVM_RUN round trip, in ns.
    pub round_trip_ns: BTreeMap<ExitKind, LatencySummary>,
    /// Host-side latency per exit kind: time spent in the VMM's handler, in ns.
    pub handler_ns: BTreeMap<ExitKind, LatencySummary>,
    /// What the guest measured itself, if it did.
    pub guest: Option<GuestMeasurement>,
    /// Delta of every KVM per-vCPU statistic over the run (cumulative ones only).
    pub kvm_stats: BTreeMap<String, u64>,
    /// Wall time of the run from first KVM_RUN to the end, in ns.
    pub wall_ns: u64,
    /// Console output (lossy UTF-8).
    pub console: String,
    /// Whether the console output was what the workload expected (None if it declares none).
    pub console_ok: Option<bool>,
    /// Notes for the reader: divergence reasons, emulated kernel code, limits.
    pub notes: Vec<String>,
    /// Whether the guest's kernel code ran at CPL 0 on a backend that emulates it.
    #[serde(default)]
    pub kernel_code_emulated: bool,
    /// The final register file, when it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_regs: Option<crate::state::FinalRegs>,
    /// Guest memory read after the run, when it was asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peeks: Vec<crate::state::Peek>,
    /// The first exits step by step, when tracing was asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<crate::trace::TraceEvent>,
    /// Counters of a translating engine (blocks translated, instructions copied,
    /// rewritten inline, chains patched, lookups…); empty for the others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translation: BTreeMap<String, u64>,
    /// Counters of the devices that move data (the disk's `virtio:notifications`,
    /// `ata:commands`…); empty when the run had no disk.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device: BTreeMap<String, u64>,
    /// Guest memory: the balloon, page sharing and host swapping ([`crate::overcommit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::overcommit::MemoryRecord>,
    /// Counters of a shadow MMU (hidden and true faults, page-table writes emulated,
    /// shadow pages built, cache hits and misses, flushes); empty when no shadow was used.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shadow: BTreeMap<String, u64>,
    /// Where the disk's device model ran, for a run with a disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_backend: Option<crate::BlockBackend>,
}

impl RunRecord {
    /// The record of a run that was not made, with `outcome` saying why (an
    /// [`Outcome::Unavailable`]) and nothing counted.
    pub fn not_run(
        mode: Mode,
        workload: String,
        params: BTreeMap<String, u64>,
        repeat: u32,
        host: HostInfo,
        outcome: Outcome,
    ) -> RunRecord {
        RunRecord {
            mode,
            workload,
            params,
            repeat,
            host,
            options: Default::default(),
            outcome,
            exits: BTreeMap::new(),
            io_ports: BTreeMap::new(),
            traps: BTreeMap::new(),
            hypercalls: BTreeMap::new(),
            injections: 0,
            event_ns: BTreeMap::new(),
            expected: BTreeMap::new(),
            mismatches: BTreeMap::new(),
            round_trip_ns: BTreeMap::new(),
            handler_ns: BTreeMap::new(),
            guest: None,
            kvm_stats: BTreeMap::new(),
            wall_ns: 0,
            console: String::new(),
            console_ok: None,
            notes: Vec::new(),
            kernel_code_emulated: false,
            final_regs: None,
            peeks: Vec::new(),
            trace: Vec::new(),
            translation: BTreeMap::new(),
            device: BTreeMap::new(),
            memory: None,
            shadow: BTreeMap::new(),
            block_backend: None,
        }
    }

    /// Exits of one kind (0 if none).
    pub fn exit_count(&self, kind: ExitKind) -> u64 {
        self.exits.get(&kind).copied().unwrap_or(0)
    }

    /// Total exits of every kind.
    pub fn total_exits(&self) -> u64 {
        self.exits.values().sum()
    }

    /// `out` exits to one port.
    pub fn port_writes(&self, port: u16) -> u64 {
        self.io_ports.get(&port).map_or(0, |p| p.writes)
    }

    /// A short verdict: `ok`, `counts differ`, `console differs`, `diverged`, `fault`,
    /// `timeout`, `unavailable`.
    pub fn verdict(&self) -> &'static str {
        match &self.outcome {
            Outcome::Completed { .. } if !self.mismatches.is_empty() => "counts differ",
            Outcome::Completed { .. } if self.console_ok == Some(false) => "console differs",
            Outcome::Completed { .. } => "ok",
            Outcome::Diverged { .. } => "diverged",
            Outcome::GuestFault { .. } => "fault",
            Outcome::TimedOut { .. } => "timeout",
            Outcome::Unavailable { .. } => "unavailable",
        }
    }

    /// Whether the run went as expected: it completed with the expected result, counts and
    /// console, or diverged in a way its workload declares. With `counts_may_differ` (the
    /// run options differ from those the oracle assumes) count mismatches are allowed. A
    /// guest with no expectations at all (a user's binary) went as expected whatever
    /// classified end it reached, except a timeout.
    pub fn went_as_expected(&self, counts_may_differ: bool) -> bool {
        let no_expectations = self.expected.is_empty() && self.console_ok.is_none();
        let counts_ok = counts_may_differ || self.mismatches.is_empty();
        match &self.outcome {
            Outcome::Completed { .. } => counts_ok && self.console_ok != Some(false),
            Outcome::Diverged { declared, .. } => *declared && counts_ok,
            Outcome::GuestFault { .. } => no_expectations,
            Outcome::TimedOut { .. } => false,
            Outcome::Unavailable { .. } => true,
        }
    }

    /// Whether the run completed, matched its oracle and produced the expected console.
    pub fn verdict_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Completed { .. })
            && self.mismatches.is_empty()
            && self.console_ok != Some(false)
    }
}

/// A run the VMM could not carry out at all (as opposed to a guest that misbehaved, which
/// is a record with a classified outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailure {
    /// Workload.
    pub workload: String,
    /// The mode it was to run in.
    pub mode: Mode,
    /// Repeat index.
    pub repeat: u32,
    /// What went wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as `results.json` has always held one: counter keys as their names.
    const RECORD: &str = r#"{"mode":"trap-emulate","workload":"hlt-timer","params":{"delay_us":0,"n":100},"repeat":0,"host":{"backend":"kvm_intel","cpu_model":"cpu","kernel":"6.1","kvm_api_version":12,"tsc_khz":null,"umip":false,"tool_version":"0.1.0","git_revision":null},"options":{"cpuid_faulting":null,"umip":null},"outcome":{"status":"completed","exit_code":0,"result":100,"ending":"exit-port"},"exits":{"IoOut":1,"Halt":1,"Trap":101},"io_ports":{"97":{"reads":2,"writes":0},"233":{"reads":0,"writes":199},"244":{"reads":0,"writes":1}},"traps":{"cli":2,"hlt":100,"mov to cr8":0},"hypercalls":{"console_write":4},"injections":99,"event_ns":{},"expected":{"exits:Halt":0,"exits:IoOut":1,"exits:Trap":101,"hypercalls:console_write":3,"injections":100,"port_reads:0x61":2,"port_writes:0xe9":200,"port_writes:0xf4":1,"traps:cli":1,"traps:mov to cr8":0},"mismatches":{"exits:Halt":[0,1],"hypercalls:console_write":[3,4],"injections":[100,99],"port_writes:0xe9":[200,199],"traps:cli":[1,2]},"round_trip_ns":{},"handler_ns":{},"guest":null,"kvm_stats":{},"wall_ns":1000,"console":"","console_ok":true,"notes":[],"kernel_code_emulated":false}"#;

    #[test]
    fn a_record_in_the_names_format_loads_with_typed_keys_and_writes_back_byte_for_byte() {
        let r: RunRecord = serde_json::from_str(RECORD).unwrap();
        let expected = [
            (CountKey::Exits(ExitKind::Halt), 0),
            (CountKey::Exits(ExitKind::IoOut), 1),
            (CountKey::Exits(ExitKind::Trap), 101),
            (CountKey::Hypercalls("console_write".into()), 3),
            (CountKey::Injections, 100),
            (CountKey::PortReads(0x61), 2),
            (CountKey::PortWrites(0xe9), 200),
            (CountKey::PortWrites(0xf4), 1),
            (CountKey::Traps("cli".into()), 1),
            (CountKey::Traps("mov to cr8".into()), 0),
        ];
        assert_eq!(r.expected.clone().into_iter().collect::<Vec<_>>(), expected);
        for (key, (want, got)) in &r.mismatches {
            assert_eq!(r.expected[key], *want, "{key}");
            assert_eq!(key.measure(&r), *got, "{key}");
        }
        assert_eq!(r.mismatches.len(), 5);
        assert_eq!(serde_json::to_string(&r).unwrap(), RECORD);
    }

    #[test]
    fn a_failure_in_the_names_format_loads_with_a_typed_mode() {
        let json = r#"{"workload":"pio","mode":"paravirt","repeat":2,"error":"no engine"}"#;
        let f: RunFailure = serde_json::from_str(json).unwrap();
        assert_eq!(f.mode, Mode::Paravirt);
        assert_eq!(serde_json::to_string(&f).unwrap(), json);
    }

    #[test]
    fn an_unknown_counter_or_mode_in_a_file_is_an_error_that_names_it() {
        for (bad, said) in [
            ("\"exits:Halt\":0", "\"exits:Bogus\":0"),
            (
                "\"port_writes:0xe9\":[200,199]",
                "\"port_writes:233\":[200,199]",
            ),
            ("\"injections\":100", "\"injections:x\":100"),
            ("\"traps:cli\":1", "\"trap:cli\":1"),
        ] {
            let json = RECORD.replacen(bad, said, 1);
            assert_ne!(json, RECORD);
            let err = serde_json::from_str::<RunRecord>(&json)
                .unwrap_err()
                .to_string();
            let name = said.split('"').nth(1).unwrap();
            assert!(
                err.starts_with(&format!("unknown counter `{name}`: ")),
                "{err}"
            );
            assert!(err.contains(" at line 1 column "), "{err}");
        }
        let json = r#"{"workload":"pio","mode":"vmware","repeat":2,"error":"no engine"}"#;
        let err = serde_json::from_str::<RunFailure>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `vmware`"), "{err}");
    }
}
