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
    /// Pages per address space (forkwait).
    pub k: Option<u64>,
    /// Measured repeats of every run (default 1).
    pub repeats: Option<u32>,
    /// Warm-up runs before the measured ones (default 0).
    pub warmup: Option<u32>,
    /// Wall-clock limit per run, in seconds.
    pub timeout_s: Option<f64>,
}

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
                name: name.clone(),
                n: self.n.map(|n| Values(vec![n])),
                b: self.b.map(|b| Values(vec![b])),
                delay_us: self.delay_us,
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
        Ok(scenario)
    }
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
}
