//! The harness: turns a list of jobs into records, keeping every result — a run that
//! fails never takes the others with it.

use std::time::Duration;

use guests::{Params, Workload};
use modes::{Engine, GuestImage, Mode, RunOptions, RunRecord};
use reports::RunFailure;

use crate::engines;

/// What to run.
#[derive(Debug, Clone)]
pub enum Guest {
    /// A workload of the catalog with its parameters.
    Workload(&'static Workload, Params),
    /// A user's flat binary.
    Binary(GuestImage),
}

impl Guest {
    /// Name for reports.
    pub fn name(&self) -> &str {
        match self {
            Guest::Workload(w, _) => w.name,
            Guest::Binary(img) => &img.name,
        }
    }

    /// The image for `engine` (the workload in the engine's flavour).
    pub fn image_for(&self, engine: &dyn Engine) -> Result<GuestImage, String> {
        match self {
            Guest::Workload(w, p) => w.image(engine.flavour(), *p).map_err(|e| e.to_string()),
            Guest::Binary(img) => Ok(img.clone()),
        }
    }
}

/// One run: a guest in a mode.
#[derive(Debug, Clone)]
pub struct Job {
    /// The guest.
    pub guest: Guest,
    /// The mode.
    pub mode: Mode,
    /// Repeat index.
    pub repeat: u32,
}

/// Batch size the default scenario uses for batched workloads.
pub const DEFAULT_B: u64 = 16;

/// The built-in default scenario: every workload in every mode this build has, with its
/// default N.
pub fn default_jobs() -> Vec<Job> {
    let mut jobs = Vec::new();
    for w in guests::WORKLOADS {
        let params = Params {
            n: w.default_n,
            b: DEFAULT_B,
            delay_us: 0,
        };
        for mode in engines::modes() {
            jobs.push(Job {
                guest: Guest::Workload(w, params),
                mode,
                repeat: 0,
            });
        }
    }
    jobs
}

/// Runs one job.
pub fn run_job(job: &Job, opts: &RunOptions) -> Result<RunRecord, RunFailure> {
    let fail = |error: String| RunFailure {
        workload: job.guest.name().to_string(),
        mode: job.mode.name().to_string(),
        repeat: job.repeat,
        error,
    };
    let engine = engines::for_mode(job.mode)
        .ok_or_else(|| fail(format!("this build has no {} engine", job.mode)))?;
    let image = job.guest.image_for(engine).map_err(&fail)?;
    let opts = RunOptions {
        repeat: job.repeat,
        ..opts.clone()
    };
    tracing::debug!(workload = job.guest.name(), mode = %job.mode, "run");
    engine.run(&image, &opts).map_err(|e| fail(e.to_string()))
}

/// Runs every job in order, calling `progress` after each one.
pub fn run_jobs(
    jobs: &[Job],
    opts: &RunOptions,
    mut progress: impl FnMut(&Job, &Result<RunRecord, RunFailure>),
) -> (Vec<RunRecord>, Vec<RunFailure>) {
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for job in jobs {
        let r = run_job(job, opts);
        progress(job, &r);
        match r {
            Ok(rec) => records.push(rec),
            Err(f) => failures.push(f),
        }
    }
    (records, failures)
}

/// Run options with a wall-clock limit in seconds.
pub fn options_with_timeout(secs: f64) -> RunOptions {
    let mut o = RunOptions::default();
    o.limits.wall = Duration::from_secs_f64(secs);
    o
}
