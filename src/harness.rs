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
    /// A warm-up run: executed, then discarded.
    pub warmup: bool,
}

/// Batch size used when none is given.
pub const DEFAULT_B: u64 = 16;

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

/// Runs every job in order, calling `progress` after each one; warm-up results are
/// discarded.
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
        if job.warmup {
            continue;
        }
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
