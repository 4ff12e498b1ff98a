//! A scenario from command-line flags: `virtlab run --workload pio -m hw-assisted -n 200`
//! (or `--guest-bin`) is the scenario with one `[[workload]]` table per `--workload`, run
//! like a file's.

use std::sync::Arc;

use contract::{GuestImage, Mode};

use super::{Scenario, Values, WorkloadEntry};
use crate::harness::MAX_RUNS;

/// What `virtlab run` was asked for without a scenario file.
#[derive(Debug, Clone, Default)]
pub struct AdHoc {
    /// Workloads of the catalog, in order (repeats allowed: each runs as often as named).
    pub workloads: Vec<String>,
    /// A user's flat binary, already read and checked against the guest ABI.
    pub binary: Option<GuestImage>,
    /// Modes in the order they run (empty: every mode of this build, in report order).
    pub modes: Vec<Mode>,
    /// Iterations of every workload (default: each workload's own).
    pub n: Option<u64>,
    /// Batch size of every workload (default: [`crate::harness::DEFAULT_B`]).
    pub b: Option<u64>,
    /// Timer delay in µs (hlt-timer).
    pub delay_us: Option<u32>,
    /// Request size in bytes of the disk workloads.
    pub s: Option<u64>,
    /// Queue depth of blk-virtio.
    pub q: Option<u64>,
    /// Pages per address space (forkwait).
    pub k: Option<u64>,
    /// Measured repeats of every run (default 1).
    pub repeats: Option<u32>,
    /// Warm-up runs before the measured ones (default 0).
    pub warmup: Option<u32>,
    /// Wall-clock limit per run, in seconds.
    pub timeout_s: Option<f64>,
    /// Run K copies of every job at once, as VMs sharing the host (`--vms K`).
    pub vms: Option<u32>,
}

/// Most VMs `--vms` makes in all (copies × workloads × modes).
pub const MAX_VMS: usize = 256;

/// Why flags do not make a scenario.
#[derive(Debug, thiserror::Error)]
pub enum AdHocError {
    /// An unknown workload, or parameters over a workload's limits.
    #[error(transparent)]
    Workload(#[from] guests::Error),
    /// More runs than one invocation makes.
    #[error(
        "{runs} runs (guests × modes × (warm-up + repeats)) is over the limit of {MAX_RUNS} \
         runs an invocation makes"
    )]
    TooManyRuns {
        /// The runs asked for (saturated).
        runs: usize,
    },
    /// `--vms` with a flat binary: VMs run catalog workloads.
    #[error("--vms runs copies of catalog workloads (--workload); a --guest-bin cannot be one")]
    VmsOfBinary,
    /// `--vms` asked for more VMs than a run holds.
    #[error("--vms makes {vms} VMs (copies × workloads × modes); at most {MAX_VMS}")]
    TooManyVms {
        /// The VMs asked for (saturated).
        vms: usize,
    },
}

impl AdHoc {
    /// The scenario these flags stand for, checked as a file's is: every workload exists,
    /// its parameters are within its limits, and the runs are at most [`MAX_RUNS`]. It is
    /// named after its guests (`pio+cpuid`).
    pub fn scenario(self) -> Result<Scenario, AdHocError> {
        let mut names = Vec::new();
        if let Some(img) = &self.binary {
            names.push(img.name.clone());
        }
        let mut workloads = Vec::new();
        for name in &self.workloads {
            let entry = WorkloadEntry {
                backends: None,
                name: name.clone(),
                n: self.n.map(|n| Values(vec![n])),
                b: self.b.map(|b| Values(vec![b])),
                delay_us: self.delay_us,
                s: self.s.map(|s| Values(vec![s])),
                q: self.q.map(|q| Values(vec![q])),
                k: self.k,
                planned: false,
                note: None,
            };
            let w = guests::find(name)?;
            // Parameters over a workload's limits are refused before anything runs.
            for params in entry.combinations(w) {
                w.check(&params)?;
            }
            names.push(w.name.to_string());
            workloads.push(entry);
        }
        let scenario = Scenario {
            name: names.join("+"),
            description: "given on the command line".into(),
            modes: (!self.modes.is_empty()).then_some(self.modes),
            repeats: self.repeats.unwrap_or(1).max(1),
            warmup: self.warmup.unwrap_or(0),
            timeout_s: self.timeout_s,
            binary: self.binary.map(Arc::new),
            workloads,
            host: None,
            vms: Vec::new(),
        };
        let runs = scenario.run_count();
        if runs > MAX_RUNS {
            return Err(AdHocError::TooManyRuns { runs });
        }
        match self.vms {
            Some(k) => copies(scenario, k as usize),
            None => Ok(scenario),
        }
    }
}

/// `scenario` as K copies of each of its jobs (workload × parameters × mode) running at
/// once on the default host: the VMs are named `vm0`, `vm1`… in that order.
fn copies(mut scenario: Scenario, k: usize) -> Result<Scenario, AdHocError> {
    if scenario.binary.is_some() {
        return Err(AdHocError::VmsOfBinary);
    }
    let modes = scenario.modes();
    let mut vms = Vec::new();
    for entry in &scenario.workloads {
        let w = guests::find(&entry.name)?;
        for params in entry.combinations(w) {
            for &mode in &modes {
                for _ in 0..k {
                    if vms.len() == MAX_VMS {
                        return Err(AdHocError::TooManyVms {
                            vms: k
                                .saturating_mul(modes.len())
                                .saturating_mul(scenario.workloads.len()),
                        });
                    }
                    vms.push(super::VmEntry {
                        name: format!("vm{}", vms.len()),
                        workload: w,
                        params,
                        mode,
                        weight: 1,
                        cap: 0,
                    });
                }
            }
        }
    }
    scenario.vms = vms;
    scenario.host = Some(crate::fleet::HostSpec::default());
    Ok(scenario)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Guest, Job};

    /// What a job runs, comparable.
    fn summary(jobs: &[Job]) -> Vec<(String, Option<guests::Params>, Mode, u32, bool)> {
        jobs.iter()
            .map(|j| {
                let params = match &j.guest {
                    Guest::Workload(_, p) => Some(*p),
                    _ => None,
                };
                (
                    j.guest.name().to_string(),
                    params,
                    j.mode,
                    j.repeat,
                    j.warmup,
                )
            })
            .collect()
    }

    #[test]
    fn flags_and_the_same_scenario_file_make_the_same_jobs() {
        let flags = AdHoc {
            workloads: vec!["pio".into(), "cpuid".into()],
            modes: vec![Mode::HwAssisted, Mode::Paravirt],
            n: Some(100),
            b: Some(4),
            repeats: Some(2),
            warmup: Some(1),
            ..AdHoc::default()
        }
        .scenario()
        .unwrap();
        let file = Scenario::parse(
            r#"
name = "pio+cpuid"
description = "d"
modes = ["paravirt", "hw-assisted"]
repeats = 2
warmup = 1

[[workload]]
name = "pio"
n = 100
b = 4

[[workload]]
name = "cpuid"
n = 100
b = 4
"#,
            "f.toml",
        )
        .unwrap();
        assert_eq!(flags.name, file.name);
        assert_eq!(flags.run_count(), file.run_count());
        assert_eq!(summary(&flags.jobs()), summary(&file.jobs()));
        assert_eq!(flags.jobs().len(), 3 * 2 * 2);
    }

    #[test]
    fn defaults_are_each_workloads_own_and_every_mode() {
        let s = AdHoc {
            workloads: vec!["compute".into()],
            ..AdHoc::default()
        }
        .scenario()
        .unwrap();
        let compute = guests::find("compute").unwrap();
        assert_eq!(s.modes(), crate::engines::modes());
        assert_eq!((s.repeats, s.warmup, s.timeout_s), (1, 0, None));
        let jobs = s.jobs();
        assert_eq!(jobs.len(), crate::engines::modes().len());
        let Guest::Workload(w, p) = &jobs[0].guest else {
            panic!("{:?}", jobs[0].guest)
        };
        assert_eq!((w.name, p.n, p.b), ("compute", compute.default_n, 16));
    }

    #[test]
    fn modes_run_in_the_order_given() {
        let s = AdHoc {
            workloads: vec!["pio".into()],
            modes: vec![Mode::Paravirt, Mode::HwAssisted],
            ..AdHoc::default()
        }
        .scenario()
        .unwrap();
        let modes: Vec<Mode> = s.jobs().iter().map(|j| j.mode).collect();
        assert_eq!(modes, [Mode::Paravirt, Mode::HwAssisted]);
    }

    #[test]
    fn a_binary_names_the_scenario_and_runs_in_every_mode() {
        let img = GuestImage::flat("mine.bin", vec![0xF4], 0x10_0000, 0x10_0000);
        let s = AdHoc {
            binary: Some(img),
            modes: vec![Mode::HwAssisted],
            repeats: Some(3),
            ..AdHoc::default()
        }
        .scenario()
        .unwrap();
        assert_eq!(s.name, "mine.bin");
        let jobs = s.jobs();
        assert_eq!(jobs.len(), 3);
        assert!(jobs.iter().all(|j| matches!(j.guest, Guest::Shared(_))));
    }

    #[test]
    fn unknown_workloads_parameters_over_limits_and_too_many_runs_are_refused() {
        let refused = |flags: AdHoc| flags.scenario().unwrap_err().to_string();
        let e = refused(AdHoc {
            workloads: vec!["pio".into(), "warp".into()],
            ..AdHoc::default()
        });
        assert!(
            e.contains("unknown workload `warp`") && e.contains("call-ret"),
            "{e}"
        );
        let e = refused(AdHoc {
            workloads: vec!["pio".into()],
            b: Some(513),
            ..AdHoc::default()
        });
        assert!(e.contains("b = 513 is over the limit of 512"), "{e}");
        let e = refused(AdHoc {
            workloads: vec!["pio".into(), "cpuid".into(), "mmio".into()],
            repeats: Some(1000),
            warmup: Some(1000),
            ..AdHoc::default()
        });
        assert!(e.contains("over the limit of 10000 runs"), "{e}");
    }

    #[test]
    fn vms_makes_k_copies_of_every_job() {
        let s = AdHoc {
            workloads: vec!["compute".into(), "balloon".into()],
            modes: vec![Mode::TrapEmulate, Mode::HwAssisted],
            n: Some(200),
            vms: Some(3),
            ..AdHoc::default()
        }
        .scenario()
        .unwrap();
        assert_eq!(s.vms.len(), 12);
        assert!(s.host.is_some());
        let names: Vec<_> = s.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names[0], "vm0");
        assert_eq!(names[11], "vm11");
        assert_eq!(
            s.vms
                .iter()
                .filter(|v| v.workload.name == "balloon" && v.mode == Mode::HwAssisted)
                .count(),
            3
        );
        assert!(s.vms.iter().all(|v| v.params.n == 200));
        let jobs = crate::scenario::plan::vms(&s);
        assert_eq!(jobs.len(), 12);
        assert_eq!(jobs[3].job.mode, Mode::HwAssisted);
    }

    #[test]
    fn vms_refuses_a_binary_and_too_many() {
        let bin = AdHoc {
            binary: Some(GuestImage::flat("b", vec![0xF4], 0x10_0000, 0x10_0000)),
            vms: Some(2),
            ..AdHoc::default()
        };
        assert!(matches!(bin.scenario(), Err(AdHocError::VmsOfBinary)));
        let many = AdHoc {
            workloads: vec!["compute".into()],
            modes: vec![Mode::TrapEmulate],
            vms: Some(257),
            ..AdHoc::default()
        };
        assert!(matches!(
            many.scenario(),
            Err(AdHocError::TooManyVms { .. })
        ));
    }
}
