//! Scenarios: what to run (workloads with N and B, single values or lists to sweep, modes,
//! repeats, warm-up runs), turned into harness jobs.
//!
//! A scenario comes from a TOML file ([`parse`]), from the flags of `virtlab run
//! --workload …` ([`adhoc`]), or is the built-in default ([`CLASSROOM`]); whichever it is,
//! [`plan`] alone turns it into jobs and the images they run.

use std::sync::Arc;

use contract::{GuestImage, Mode};
use guests::Params;

use crate::engines;
use crate::harness::{Job, DEFAULT_B};

pub mod adhoc;
pub mod parse;
pub mod plan;

pub use adhoc::{AdHoc, AdHocError};
pub use parse::ScenarioError;
pub use plan::Plan;

/// The default scenario `virtlab run` uses, embedded in the binary.
pub const CLASSROOM: &str = include_str!("../../scenarios/classroom.toml");

/// What to run: a scenario file as parsed, or the same built from command-line flags.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Modes to run, in the order they run (default: every mode this build has, in report
    /// order). A file's list is put in report order without repeats when it is parsed.
    pub modes: Option<Vec<Mode>>,
    /// Measured repeats of every run.
    pub repeats: u32,
    /// Warm-up runs before the measured ones, discarded.
    pub warmup: u32,
    /// Wall-clock limit per run, in seconds.
    pub timeout_s: Option<f64>,
    /// A user's flat binary, run before the workloads (only from the command line: a file
    /// names workloads of the catalog).
    pub binary: Option<Arc<GuestImage>>,
    /// The workloads.
    pub workloads: Vec<WorkloadEntry>,
    /// The host several VMs share (with `vms`).
    pub host: Option<crate::fleet::HostSpec>,
    /// VMs that run at once (`[[vm]]` tables, each copy one entry); empty: the workloads
    /// run one after another.
    pub vms: Vec<VmEntry>,
}

/// One VM of a scenario that runs several at once.
#[derive(Debug, Clone)]
pub struct VmEntry {
    /// Its name in the run.
    pub name: String,
    /// Its workload.
    pub workload: &'static guests::Workload,
    /// The workload's parameters.
    pub params: Params,
    /// Its mode.
    pub mode: Mode,
    /// Weight (credit scheduler).
    pub weight: u32,
    /// Cap in percent of one host CPU (0: none).
    pub cap: u32,
}

/// One `[[workload]]` table.
#[derive(Debug, Clone)]
pub struct WorkloadEntry {
    /// Workload name from the catalog.
    pub name: String,
    /// Iterations: a number or a list to sweep (default: the workload's own).
    pub n: Option<Values>,
    /// Batch sizes: a number or a list to sweep.
    pub b: Option<Values>,
    /// Timer delay in µs (hlt-timer).
    pub delay_us: Option<u32>,
    /// Request sizes in bytes (the disk workloads): a number or a list to sweep.
    pub s: Option<Values>,
    /// Queue depths (blk-virtio): a number or a list to sweep.
    pub q: Option<Values>,
    /// Where the disk's device model runs (the disk workloads): each backend listed is
    /// a run of every combination; `None`: the run options' backend.
    pub backends: Option<Vec<contract::BlockBackend>>,
    /// Pages per address space (forkwait; default: the catalog's).
    pub k: Option<u64>,
    /// Listed for completeness but not in the catalog yet: reported as missing, not run.
    pub planned: bool,
    /// A remark shown with the results (for example what this workload stands for).
    pub note: Option<String>,
}

impl WorkloadEntry {
    /// Every (N, B, S, Q) combination of this entry, with the workload's defaults where unset.
    pub fn combinations(&self, workload: &guests::Workload) -> Vec<Params> {
        let ns = self
            .n
            .as_ref()
            .map_or(vec![workload.default_n], |v| v.0.clone());
        let bs = self.b.as_ref().map_or(vec![DEFAULT_B], |v| v.0.clone());
        let delay_us = self.delay_us.unwrap_or(0);
        let d = Params::default();
        let ss = self.s.as_ref().map_or(vec![d.s], |v| v.0.clone());
        let qs = self.q.as_ref().map_or(vec![d.q], |v| v.0.clone());
        let k = self.k.unwrap_or(d.k);
        let mut all = Vec::new();
        for &n in &ns {
            for &b in &bs {
                for &s in &ss {
                    for &q in &qs {
                        all.push(Params {
                            n,
                            b,
                            delay_us,
                            s,
                            q,
                            k,
                        });
                    }
                }
            }
        }
        all
    }

    /// The backends each combination runs with: the listed ones, or `[None]` (the run
    /// options' backend).
    pub fn backend_choices(&self) -> Vec<Option<contract::BlockBackend>> {
        match &self.backends {
            Some(list) => list.iter().copied().map(Some).collect(),
            None => vec![None],
        }
    }

    /// How many runs per mode the entry makes ([`WorkloadEntry::combinations`] × the
    /// backends), without making them; saturates instead of overflowing.
    fn combination_count(&self) -> usize {
        let len = |v: &Option<Values>| v.as_ref().map_or(1, |v| v.0.len());
        len(&self.n)
            .saturating_mul(len(&self.b))
            .saturating_mul(len(&self.s))
            .saturating_mul(len(&self.q))
            .saturating_mul(self.backends.as_ref().map_or(1, Vec::len))
    }
}

/// One number or a list of numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values(pub Vec<u64>);

/// `modes` in report order, each once.
pub fn report_order(modes: &[Mode]) -> Vec<Mode> {
    let mut m = modes.to_vec();
    m.sort();
    m.dedup();
    m
}

impl Scenario {
    /// The modes to run, in order: the listed ones or every mode of this build.
    pub fn modes(&self) -> Vec<Mode> {
        match &self.modes {
            None => engines::modes(),
            Some(list) => list.clone(),
        }
    }

    /// How many runs [`Scenario::jobs`] makes (warm-ups included), counted without
    /// making them; saturates instead of overflowing.
    pub fn run_count(&self) -> usize {
        let modes = self.modes();
        let rounds = self.warmup as usize + self.repeats as usize;
        // Each guest in every mode that can run it (a binary runs in every mode).
        let per_round = self
            .workloads
            .iter()
            .filter(|w| !w.planned)
            .map(|w| {
                let runnable = modes
                    .iter()
                    .filter(|m| guests::unsupported(&w.name, **m).is_none())
                    .count();
                w.combination_count().saturating_mul(runnable)
            })
            .fold(
                usize::from(self.binary.is_some()).saturating_mul(modes.len()),
                usize::saturating_add,
            );
        per_round.saturating_mul(rounds)
    }

    /// Workloads listed as planned, which this scenario cannot run yet.
    pub fn planned(&self) -> Vec<&WorkloadEntry> {
        self.workloads.iter().filter(|w| w.planned).collect()
    }

    /// Every job, without assembling any image: see [`plan::jobs`].
    pub fn jobs(&self) -> Vec<Job> {
        plan::jobs(self)
    }

    /// Every job and, assembled once each, the images they run: see [`Plan`].
    pub fn plan(&self) -> Plan {
        Plan::new(self)
    }

    /// The notes of the workload entries, by workload name.
    pub fn notes(&self) -> Vec<(String, String)> {
        self.workloads
            .iter()
            .filter_map(|w| w.note.clone().map(|n| (w.name.clone(), n)))
            .collect()
    }
}
