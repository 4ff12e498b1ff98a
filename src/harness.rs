//! The harness: turns a list of jobs into records, keeping every result — a run that
//! fails never takes the others with it.

use std::sync::Arc;
use std::time::Duration;

use contract::{GuestImage, Mode, RunOptions, RunRecord};
use guests::{Params, Workload};
use reports::RunFailure;

use crate::engines;
use crate::images::Images;

/// What to run.
#[derive(Debug, Clone)]
pub enum Guest {
    /// A workload of the catalog with its parameters.
    Workload(&'static Workload, Params),
    /// A user's flat binary.
    Binary(GuestImage),
    /// A user's flat binary shared by every job that runs it, as a plan holds it: cloning
    /// the job does not copy the image.
    Shared(Arc<GuestImage>),
}

impl Guest {
    /// Name for reports.
    pub fn name(&self) -> &str {
        match self {
            Guest::Workload(w, _) => w.name,
            Guest::Binary(img) => &img.name,
            Guest::Shared(img) => &img.name,
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
    /// Where a disk workload's device model runs (a scenario's `backends` sweep); `None`:
    /// the run options' (`--backend`, inline by default).
    pub backend: Option<contract::BlockBackend>,
}

/// Batch size used when none is given.
pub const DEFAULT_B: u64 = 16;

/// Most runs one invocation makes (warm-ups included): every finished run is kept in
/// memory until the results are written, and at a tenth of a second or more a run, this
/// is hours of work already.
pub const MAX_RUNS: usize = 10_000;

/// Runs one job with its image from `images` (assembled there if it is not yet), and
/// judges the record against the image's expectations.
pub fn run_job(job: &Job, images: &mut Images, opts: &RunOptions) -> Result<RunRecord, RunFailure> {
    let fail = |error: String| RunFailure {
        workload: job.guest.name().to_string(),
        mode: job.mode,
        repeat: job.repeat,
        error,
    };
    let engine = engines::for_mode(job.mode)
        .ok_or_else(|| fail(format!("this build has no {} engine", job.mode)))?;
    let image = images.get(&job.guest, engine.flavour()).map_err(&fail)?;
    let mut opts = RunOptions {
        repeat: job.repeat,
        ..opts.clone()
    };
    if let Some(backend) = job.backend {
        opts.disk = Some(contract::DiskOptions {
            backend,
            ..opts.disk.unwrap_or_default()
        });
    }
    // A disk backend this host (or this run's options) cannot do is declared in the
    // run's record, not run into as a failure.
    if let Guest::Workload(w, _) = &job.guest {
        let disk = opts.disk.clone().unwrap_or_default();
        if guests::blk::needs_disk(w.name) {
            if let Some(why) = machine::disk::unavailable(&disk) {
                return Ok(unavailable(job, image, disk.backend, why));
            }
        }
    }
    // A disk workload gets its image (made for it unless the user gave one); it is
    // checked on the host after the run and a temporary one removed.
    let disk = match &job.guest {
        Guest::Workload(w, p) => crate::disk::prepare(w, p, &opts).map_err(&fail)?,
        _ => None,
    };
    match (&disk, &job.guest) {
        (Some((d, _)), _) => opts.disk = Some(d.clone()),
        // A workload without a disk gets none, whatever the flags asked for.
        (None, Guest::Workload(..)) => opts.disk = None,
        // A user's binary gets the user's image, if one was named.
        (None, _) => opts.disk = opts.disk.filter(|d| d.path.is_some()),
    }
    tracing::debug!(workload = job.guest.name(), mode = %job.mode, "run");
    let run = || {
        engine.run(image, &opts).map(|mut record| {
            record.block_backend = disk.as_ref().map(|(d, _)| d.backend);
            crate::disk::judge(image, opts.disk.as_ref(), &mut record);
            if let (Some((d, _)), Guest::Workload(_, p)) = (&disk, &job.guest) {
                crate::disk::verify(d, p, &mut record);
            }
            record
        })
    };
    // A bug in an engine must not take the other runs with it.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
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

/// The record of `job`, not run: its disk `backend` is unavailable, for `why`.
fn unavailable(
    job: &Job,
    image: &GuestImage,
    backend: contract::BlockBackend,
    why: String,
) -> RunRecord {
    // Without KVM no run is made anyway; the API version is then the only one KVM has.
    let host = machine::host::probe().unwrap_or_else(|_| contract::host::HostInfo::gather(12));
    let mut r = RunRecord::not_run(
        job.mode,
        job.guest.name().to_string(),
        image.params.clone(),
        job.repeat,
        host,
        contract::Outcome::Unavailable { why: why.clone() },
    );
    r.block_backend = Some(backend);
    r.notes.push(format!("unavailable: {why}"));
    r
}

/// Runs every job in order, calling `progress` after each one; warm-up results are
/// discarded. Each image is assembled once, however many jobs run it.
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
    progress: impl FnMut(&Job, &Result<RunRecord, RunFailure>),
) -> Finished {
    run_jobs_with(jobs, &mut Images::new(), opts, stop, progress)
}

/// Like [`run_jobs_until`], with the images taken from (or assembled into) `images`: a
/// plan's, assembled before the first run.
pub fn run_jobs_with(
    jobs: &[Job],
    images: &mut Images,
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
        let r = run_job(job, images, opts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_whose_image_cannot_be_assembled_fails_alone_and_the_image_is_tried_once() {
        let pio = guests::find("pio").unwrap();
        let over = Params {
            n: pio.max_n + 1,
            ..Params::default()
        };
        let jobs: Vec<Job> = (0..3)
            .map(|repeat| Job {
                guest: Guest::Workload(pio, over),
                mode: Mode::HwAssisted,
                repeat,
                warmup: repeat == 0,
                backend: None,
            })
            .collect();
        let mut images = Images::new();
        let mut seen = 0;
        let done = run_jobs_with(
            &jobs,
            &mut images,
            &RunOptions::default(),
            || false,
            |_, r| {
                assert!(r.is_err());
                seen += 1;
            },
        );
        assert_eq!((seen, done.started, done.records.len()), (3, 3, 0));
        // The warm-up's failure is discarded like its record would be.
        assert_eq!(done.failures.len(), 2);
        assert_eq!(done.failures[1].repeat, 2);
        assert!(
            done.failures[0].error.contains("over the limit"),
            "{}",
            done.failures[0].error
        );
        assert_eq!(images.assembled(), 1);
    }
}
