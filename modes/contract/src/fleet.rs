//! Many VMs on one host: the hook through which a VMM-level scheduler decides when a vCPU
//! may run ([`Gate`]), and the host-level record of a run of several VMs
//! ([`HostRecord`]). Both are free of KVM: the machine calls the gate, the `machine`
//! crate's scheduler implements it, the harness fills the record.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::metrics::LatencySummary;
use crate::record::Mode;

/// A scheduler's hold on one vCPU, consulted by the machine's exit loop. The machine calls
/// [`Gate::attach`] on the vCPU thread when a run starts, [`Gate::enter`] before every
/// `KVM_RUN`, [`Gate::block`] and [`Gate::wake`] around the wait of a halted guest,
/// [`Gate::preempted`] when `KVM_RUN` came back because the scheduler kicked the vCPU
/// (not an exit of the guest: it is not counted as one), and [`Gate::detach`] when the
/// run ends. A run without a gate pays nothing for any of this.
pub trait Gate: Send + Sync + fmt::Debug {
    /// The calling thread is about to run this vCPU: kicks go to it from now on.
    fn attach(&self);
    /// Before every entry into the guest: returns when the vCPU may run (a scheduler
    /// parks the thread here while the vCPU is descheduled).
    fn enter(&self);
    /// `KVM_RUN` returned because the scheduler kicked the vCPU.
    fn preempted(&self);
    /// The vCPU waits for its timer (a halted or blocked guest): its CPU may go to another.
    fn block(&self);
    /// The wait is over; the guest's timer was due at `due` (the wake-up latency runs from
    /// there to the next [`Gate::enter`] that returns).
    fn wake(&self, due: Instant);
    /// The run is over: no more kicks to this thread.
    fn detach(&self);
}

/// A shared [`Gate`], as [`crate::RunOptions`] carries it. Two handles are equal when they
/// are the same gate.
#[derive(Clone)]
pub struct GateRef(pub Arc<dyn Gate>);

impl fmt::Debug for GateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for GateRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for GateRef {}

/// Who decides which vCPU runs when vCPUs outnumber host CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// Every vCPU thread is free; Linux schedules them (the baseline).
    Linux,
    /// The VMM: at most one vCPU per host CPU, each for a time slice, in turn.
    RoundRobin,
    /// The VMM: Xen's credit scheduler (weights, caps, boost on wake-up).
    Credit,
}

impl SchedulerKind {
    /// The name scenarios and reports use.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Linux => "linux",
            SchedulerKind::RoundRobin => "round-robin",
            SchedulerKind::Credit => "credit",
        }
    }

    /// Every scheduler, in report order.
    pub const ALL: [SchedulerKind; 3] = [
        SchedulerKind::Linux,
        SchedulerKind::RoundRobin,
        SchedulerKind::Credit,
    ];
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown scheduler `{s}` (known: linux, round-robin, credit)"))
    }
}

/// One VM of a host-level run, as the host saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmShare {
    /// The VM's name in the run (`vm0`, `vm1`… or the scenario's).
    pub name: String,
    /// Its workload.
    pub workload: String,
    /// Its mode.
    pub mode: Mode,
    /// Its weight.
    pub weight: u32,
    /// Its cap in percent of one host CPU (0: none).
    pub cap: u32,
    /// Runs it made (each is a record of its own).
    pub runs: u32,
    /// Host CPU time its thread used during the measured window, in nanoseconds.
    pub cpu_ns: u64,
    /// Its part of the CPU time all VMs used (0–1).
    pub share: f64,
    /// Its weight's part of all weights (0–1): the share a weighted scheduler aims at.
    pub target: f64,
    /// Host CPU time the VMM scheduler granted it during the window, in nanoseconds (0
    /// under `linux`): what the scheduler decided, where `cpu_ns` is what it got.
    pub granted_ns: u64,
    /// Times the scheduler kicked it off a host CPU.
    pub preemptions: u64,
    /// CPU time its thread used during the window while the VMM scheduler had not
    /// granted it a host CPU, in nanoseconds: builds between runs and the way to its gate
    /// after a kick (charged to it all the same; 0 under `linux`).
    #[serde(default)]
    pub overrun_ns: u64,
    /// From the VMM scheduler taking its CPU to its thread stopping at its gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_latency_ns: Option<LatencySummary>,
    /// CPU time its thread used between two runs (one VM torn down, the next built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between_runs_cpu_ns: Option<LatencySummary>,
    /// From a timer being due to the vCPU running again, for a VM that waits in `hlt`.
    pub wake_latency_ns: Option<LatencySummary>,
}

/// The host-level record of a run of several VMs at once (each VM's runs keep their own
/// [`crate::RunRecord`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Who scheduled the vCPUs.
    pub scheduler: SchedulerKind,
    /// Host CPUs the vCPU threads were given.
    pub cpus: u32,
    /// The scheduler's time slice, in milliseconds (VMM schedulers).
    pub slice_ms: u32,
    /// Wall time of the measured window, in nanoseconds.
    pub wall_ns: u64,
    /// Every VM.
    pub vms: Vec<VmShare>,
    /// Jain's fairness index of the shares each divided by its target (1: every VM got
    /// exactly its weight's part; 1/K: one VM got everything).
    pub fairness: f64,
    /// How far a share may be from its target, relative to the target (0.1: ±10 %),
    /// for [`HostRecord::within_tolerance`].
    pub tolerance: f64,
    /// Whether the scheduler let a vCPU in debt take a CPU no one else wanted (false: the
    /// credit scheduler left it to the host's other processes).
    #[serde(default = "work_conserving_by_default")]
    pub work_conserving: bool,
    /// Memory over the run: page sharing, swapping budgets, resident memory over time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::overcommit::HostMemory>,
    /// Every VM's CPU time over the window, sampled (for shares over time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<CpuSample>,
}

/// The VMs' CPU time at one moment of a run of several VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSample {
    /// Since the start of the measured window, in ms.
    pub t_ms: u64,
    /// Each VM's host CPU time since the start of the window, in ns, in [`HostRecord::vms`]
    /// order.
    pub cpu_ns: Vec<u64>,
}

fn work_conserving_by_default() -> bool {
    true
}

impl HostRecord {
    /// Each VM's share of the CPU time used between consecutive samples: `(t_ms at the
    /// interval's end, shares in VM order)`; intervals in which no VM ran are left out.
    pub fn shares_over_time(&self) -> Vec<(u64, Vec<f64>)> {
        self.timeline
            .windows(2)
            .filter_map(|w| {
                let d: Vec<u64> = w[1]
                    .cpu_ns
                    .iter()
                    .zip(&w[0].cpu_ns)
                    .map(|(b, a)| b.saturating_sub(*a))
                    .collect();
                let total: u64 = d.iter().sum();
                (total > 0).then(|| {
                    (
                        w[1].t_ms,
                        d.iter().map(|x| *x as f64 / total as f64).collect(),
                    )
                })
            })
            .collect()
    }
}

impl HostRecord {
    /// Whether VM `vm`'s share is within the tolerance of its target.
    pub fn within_tolerance(&self, vm: usize) -> bool {
        let v = &self.vms[vm];
        v.target > 0.0 && (v.share / v.target - 1.0).abs() <= self.tolerance
    }
}

/// Jain's fairness index of `x`: (Σx)² / (n·Σx²), 1 when all are equal, 1/n when one has
/// everything; 1 for an empty list or all zeros.
pub fn jain_index(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || sq == 0.0 {
        1.0
    } else {
        sum * sum / (x.len() as f64 * sq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index_is_one_for_equal_and_one_over_n_for_one_taking_all() {
        assert_eq!(jain_index(&[2.0, 2.0, 2.0, 2.0]), 1.0);
        assert!((jain_index(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        assert_eq!(jain_index(&[]), 1.0);
        // Two VMs at 1 and 3: 16 / (2 · 10) = 0.8.
        assert!((jain_index(&[1.0, 3.0]) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn scheduler_names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>(), Ok(k));
        }
        assert!("cfs".parse::<SchedulerKind>().is_err());
    }
}
