//! The harness: turns a list of jobs into records, keeping every result — a run that
//! fails never takes the others with it.

use std::time::Duration;

use contract::{Engine, GuestImage, Mode, RunOptions, RunRecord};
use guests::{Params, Workload};
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

/// Most runs one invocation makes (warm-ups included): every finished run is kept in
/// memory until the results are written, and at a tenth of a second or more a run, this
/// is hours of work already.
pub const MAX_RUNS: usize = 10_000;

/// Runs one job.
pub fn run_job(job: &Job, opts: &RunOptions) -> Result<RunRecord, RunFailure> {
    let fail = |error: String| RunFailure {
        workload: job.guest.name().to_string(),
        mode: job.mode,
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
    // A bug in an engine must not take the other runs with it.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run(&image, &opts))) {
        Ok(r) => r.map_err(|e| fail(e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(fail(format!("the VMM failed unexpectedly (a bug): {what}")))
        }
    }
}

/// Runs every job in order, calling `progress` after each one; warm-up results are
/// discarded.
pub fn run_jobs(
    jobs: &[Job],
    opts: &RunOptions,
    progress: impl FnMut(&Job, &Result<RunRecord, RunFailure>),
) -> (Vec<RunRecord>, Vec<RunFailure>) {
    let done = run_jobs_until(jobs, opts, || false, progress);
    (done.records, done.failures)
}

/// What [`run_jobs_until`] made.
#[derive(Debug, Default)]
pub struct Finished {
    /// The measured runs that completed, in order.
    pub records: Vec<RunRecord>,
    /// The measured runs the VMM could not carry out.
    pub failures: Vec<RunFailure>,
    /// Jobs started (warm-ups included).
    pub started: usize,
    /// Whether `stop` ended the list early.
    pub stopped: bool,
}

/// Like [`run_jobs`], but asks `stop` before each job and, once it says so, starts no
/// more: what finished is kept.
pub fn run_jobs_until(
    jobs: &[Job],
    opts: &RunOptions,
    stop: impl Fn() -> bool,
    mut progress: impl FnMut(&Job, &Result<RunRecord, RunFailure>),
) -> Finished {
    let mut done = Finished::default();
    for job in jobs {
        if stop() {
            done.stopped = true;
            break;
        }
        done.started += 1;
        let r = run_job(job, opts);
        progress(job, &r);
        if job.warmup {
            continue;
        }
        match r {
            Ok(rec) => done.records.push(rec),
            Err(f) => done.failures.push(f),
        }
    }
    done
}

/// Longest wall-clock limit a run may have, in seconds (one day).
pub const MAX_TIMEOUT_S: f64 = 86_400.0;

/// Parses a wall-clock limit in seconds: a number in (0, [`MAX_TIMEOUT_S`]].
pub fn parse_timeout(s: &str) -> Result<f64, String> {
    let t: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a number of seconds: {e}"))?;
    if t > 0.0 && t <= MAX_TIMEOUT_S {
        Ok(t)
    } else {
        Err(format!(
            "the timeout must be more than 0 and at most {MAX_TIMEOUT_S} seconds"
        ))
    }
}

/// Run options with a wall-clock limit in seconds (clamped to a sane range).
pub fn options_with_timeout(secs: f64) -> RunOptions {
    let mut o = RunOptions::default();
    o.limits.wall =
        Duration::try_from_secs_f64(secs.clamp(0.001, MAX_TIMEOUT_S)).unwrap_or(o.limits.wall);
    o
}
