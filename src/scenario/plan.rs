//! From a scenario to what runs: the jobs, in order, and the images they run, assembled
//! once each. This is the only place jobs are made.

use contract::{BlockBackend, Mode};

use super::Scenario;
use crate::harness::{Guest, Job};
use crate::images::Images;

/// A scenario ready to run: its jobs and their images.
#[derive(Debug)]
pub struct Plan {
    /// Every job: the warm-up rounds (flagged, to be discarded), then the measured
    /// repeats.
    pub jobs: Vec<Job>,
    /// The image of every job, assembled once per (workload, flavour, parameters): the
    /// modes of one flavour, the repeats and the warm-ups share it.
    pub images: Images,
}

impl Plan {
    /// The jobs of `scenario` and, assembled now, their images.
    pub fn new(scenario: &Scenario) -> Self {
        let jobs = jobs(scenario);
        let images = Images::for_jobs(&jobs);
        Plan { jobs, images }
    }

    /// How many of the jobs are measured (not warm-ups).
    pub fn measured(&self) -> usize {
        self.jobs.iter().filter(|j| !j.warmup).count()
    }
}

/// The VMs of a scenario that runs several at once, each with its job (the fleet counts
/// the repeats up as it runs them).
pub fn vms(scenario: &Scenario) -> Vec<crate::fleet::VmSpec> {
    scenario
        .vms
        .iter()
        .map(|v| crate::fleet::VmSpec {
            name: v.name.clone(),
            job: Job {
                guest: Guest::Workload(v.workload, v.params),
                mode: v.mode,
                repeat: 0,
                warmup: false,
                backend: None,
            },
            weight: v.weight,
            cap: v.cap,
            wall: None,
        })
        .collect()
}

/// One round of `scenario`: its binary, then every workload × N × B (× S × Q × backend
/// for the disk), each in every mode.
fn round(scenario: &Scenario) -> Vec<(Guest, Mode, Option<BlockBackend>)> {
    let modes = scenario.modes();
    let mut guests = Vec::new();
    if let Some(img) = &scenario.binary {
        guests.push((Guest::Shared(img.clone()), None));
    }
    for w in scenario.workloads.iter().filter(|w| !w.planned) {
        let Ok(wl) = guests::find(&w.name) else {
            continue;
        };
        let backends = w.backend_choices();
        for params in w.combinations(wl) {
            guests.extend(backends.iter().map(|b| (Guest::Workload(wl, params), *b)));
        }
    }
    guests
        .into_iter()
        .flat_map(|(g, b)| modes.iter().map(move |m| (g.clone(), *m, b)))
        .filter(|(g, m, _)| match g {
            Guest::Workload(w, _) => guests::unsupported(w.name, *m).is_none(),
            _ => true,
        })
        .collect()
}

/// Every job of `scenario`, without assembling any image: the warm-up rounds (flagged, to
/// be discarded), then the measured repeats, each round covering the binary and workloads
/// × N × B, each in every mode.
pub fn jobs(scenario: &Scenario) -> Vec<Job> {
    let per_round = round(scenario);
    let mut jobs = Vec::new();
    for r in 0..scenario.warmup + scenario.repeats {
        let warmup = r < scenario.warmup;
        let repeat = if warmup { r } else { r - scenario.warmup };
        jobs.extend(per_round.iter().map(|(g, m, b)| Job {
            guest: g.clone(),
            mode: *m,
            repeat,
            warmup,
            backend: *b,
        }));
    }
    jobs
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use contract::GuestImage;

    use super::*;

    const SWEEP: &str = r#"
name = "t"
description = "test"
repeats = 3
warmup = 2

[[workload]]
name = "pio"
n = [10, 20]
b = [1, 4]

[[workload]]
name = "pio"
n = 10
b = 1
"#;

    /// The distinct (workload, flavour, parameters) of `jobs`.
    fn distinct_images(jobs: &[Job]) -> usize {
        let mut keys = Vec::new();
        for j in jobs {
            let flavour = crate::engines::for_mode(j.mode).unwrap().flavour();
            let Guest::Workload(w, p) = &j.guest else {
                continue;
            };
            let key = (w.name, flavour, *p);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys.len()
    }

    #[test]
    fn a_plan_assembles_each_image_once_for_every_mode_repeat_and_warm_up() {
        let s = Scenario::parse(SWEEP, "t.toml").unwrap();
        let plan = s.plan();
        // (2 warm-ups + 3 repeats) × (2 N × 2 B + 1) × every mode.
        assert_eq!(plan.jobs.len(), 5 * 5 * crate::engines::modes().len());
        assert_eq!(plan.measured(), 3 * 5 * crate::engines::modes().len());
        // 4 parameter sets (the second entry repeats one), once per flavour.
        let mut flavours: Vec<contract::Flavour> = Vec::new();
        for e in crate::engines::all() {
            if !flavours.contains(&e.flavour()) {
                flavours.push(e.flavour());
            }
        }
        assert_eq!(distinct_images(&plan.jobs), 4 * flavours.len());
        assert_eq!(plan.images.assembled(), 4 * flavours.len());
    }

    #[test]
    fn the_plan_runs_the_jobs_the_scenario_lists() {
        let s = Scenario::parse(SWEEP, "t.toml").unwrap();
        let summary = |jobs: &[Job]| -> Vec<(String, Mode, u32, bool)> {
            jobs.iter()
                .map(|j| (format!("{:?}", j.guest), j.mode, j.repeat, j.warmup))
                .collect()
        };
        assert_eq!(summary(&s.plan().jobs), summary(&s.jobs()));
        assert_eq!(s.jobs().len(), s.run_count());
    }

    #[test]
    fn a_binary_runs_first_in_every_round_and_is_shared_not_copied() {
        let mut s = Scenario::parse(SWEEP, "t.toml").unwrap();
        s.modes = Some(vec![Mode::HwAssisted]);
        s.repeats = 2;
        s.warmup = 0;
        s.workloads.truncate(1);
        let img = Arc::new(GuestImage::flat("mine", vec![0xF4], 0x10_0000, 0x10_0000));
        s.binary = Some(img.clone());
        let jobs = s.jobs();
        assert_eq!(jobs.len(), s.run_count());
        assert_eq!(jobs.len(), 2 * (1 + 4));
        for first in [&jobs[0], &jobs[5]] {
            let Guest::Shared(shared) = &first.guest else {
                panic!("{:?}", first.guest)
            };
            assert!(Arc::ptr_eq(shared, &img));
        }
        assert_eq!(jobs[5].repeat, 1);
    }
}
