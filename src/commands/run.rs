//! `virtlab run`: a scenario — a file, the built-in default, or the one `--workload` or
//! `--guest-bin` flags make — planned, run with its progress shown, tabled, written, and
//! checked against a baseline.

use std::process::ExitCode;

use anyhow::Result;
use contract::{Mode, RunOptions};
use virtlab::engines;
use virtlab::harness::{self, Finished, MAX_RUNS};
use virtlab::interrupt;
use virtlab::output::{self, Output, Target};
use virtlab::scenario::{self, AdHoc, Plan, Scenario};

use super::usage;
use crate::cli::RunArgs;
use progress::Progress;

mod progress;

/// Status of an invocation stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// Status of a run that went as expected but differs from its baseline: a count changed
/// or a cost regressed beyond the threshold.
pub const BASELINE_CHANGED: u8 = 3;

/// Wall-clock limit per run, in seconds, when neither the flags nor the scenario set one.
const DEFAULT_TIMEOUT_S: f64 = 20.0;

/// Runs what `args` ask for and reports it; the status says how it went (see the
/// constants of this module).
pub fn run(args: RunArgs, color: bool) -> Result<ExitCode> {
    check_modes(&args.modes)?;
    let baseline = baseline(&args)?;
    let chosen = choose(&args)?;
    let opts = run_options(&args, chosen.scenario.timeout_s)?;
    if !chosen.scenario.vms.is_empty() {
        return run_fleet(&args, chosen, &opts, color);
    }
    let plan = chosen.scenario.plan();

    // Where the results go is settled, and checked for writing, before anything runs.
    if let Err(e) = interrupt::install() {
        tracing::warn!("Ctrl-C will end the run at once (no handler: {e})");
    }
    let Some(out) = prepare_output(&args, &chosen.scenario.name)? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(h) = &chosen.heading {
        let mut text = String::new();
        reports::table::write_wrapped(&mut text, h, reports::table::WIDTH);
        println!("{text}");
    }
    let (measured, total) = (plan.measured(), plan.jobs.len());
    let done = execute(plan, &opts);
    let width = line_width(args.wide);
    print_tables(&done, &chosen.scenario, &args, color);
    let finished = done.records.len() + done.failures.len();
    if done.stopped {
        println!(
            "interrupted: {} of {total} runs made ({finished} of {measured} measured ones)",
            done.started
        );
        if finished == 0 {
            println!("nothing finished, so nothing was written");
            return Ok(ExitCode::from(INTERRUPTED));
        }
    }
    // The oracles follow the options in effect (CPUID faulting switched off or without
    // effect on this host), so every count is judged exactly.
    let bad = done
        .records
        .iter()
        .filter(|r| reports::verdict::Verdict::of(r).is_failure())
        .count()
        + done.failures.len();
    let mut report = reports::Report::new(done.records, done.failures);
    report.interrupted = done.stopped;
    write(&report, out)?;
    let baseline_failed = match &baseline {
        Some((name, base)) => check_baseline(name, base, &report, args.threshold, width),
        None => false,
    };
    if let Some(name) = &args.save_baseline {
        if done.stopped {
            println!("interrupted: baseline {name} not saved");
        } else {
            let path = virtlab::baseline::save(name, &report)?;
            println!("saved baseline {name} as {}", path.display());
        }
    }
    let mut summary = String::new();
    let line = reports::table::summary_line(
        &chosen.scenario.name,
        &report.records,
        &report.failures,
        color,
    );
    reports::table::write_wrapped(&mut summary, &line, width);
    print!("{summary}");
    Ok(if done.stopped {
        ExitCode::from(INTERRUPTED)
    } else if bad > 0 {
        println!("{bad} of {measured} runs did not go as expected");
        ExitCode::FAILURE
    } else if baseline_failed {
        ExitCode::from(BASELINE_CHANGED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs a scenario's VMs at once and reports every run and the host-level record.
fn run_fleet(args: &RunArgs, chosen: Chosen, opts: &RunOptions, color: bool) -> Result<ExitCode> {
    let scenario = chosen.scenario;
    let mut host = scenario.host.clone().unwrap_or_default();
    host.scheduler = args.scheduler.unwrap_or(host.scheduler);
    host.cpus = args.cpus.unwrap_or(host.cpus);
    host.duration_s = args.duration.or(host.duration_s);
    host.runs = scenario.repeats.max(1);
    host.ksm |= args.ksm;
    host.memory_budget_mib = args.memory_budget_mib.or(host.memory_budget_mib);
    if host.ksm {
        // A first Ctrl-C must not end the process while KSM is on: the run ends by its
        // own limits, and KSM's settings are put back (a second Ctrl-C ends it at once).
        if let Err(e) = interrupt::install() {
            tracing::warn!("Ctrl-C will end the run at once, KSM left on (no handler: {e})");
        }
    }
    let Some(out) = prepare_output(args, &scenario.name)? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if let Some(h) = &chosen.heading {
        let mut text = String::new();
        reports::table::write_wrapped(&mut text, h, reports::table::WIDTH);
        println!("{text}");
    }
    let vms = scenario::plan::vms(&scenario);
    let window = host
        .duration_s
        .map_or(String::new(), |d| format!(" for {d} s"));
    println!(
        "running {} VMs at once on {} host CPUs under the {} scheduler{window}…",
        vms.len(),
        host.cpus,
        host.scheduler
    );
    let done = std::thread::scope(|s| {
        s.spawn(|| {
            if let Err(e) = interrupt::block_in_this_thread() {
                tracing::warn!("cannot keep Ctrl-C away from the guests: {e}");
            }
            virtlab::fleet::run_fleet(&host, &vms, opts)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let finished = Finished {
        records: done.records,
        failures: done.failures,
        started: 0,
        stopped: false,
    };
    print_tables(&finished, &scenario, args, color);
    print!("{}", reports::table::render_host(&done.host));
    if let Some(m) = &done.host.memory {
        print!("{}", virtlab::fleet_memory::summary(m, &finished.records));
    }
    let bad = finished
        .records
        .iter()
        .filter(|r| reports::verdict::Verdict::of(r).is_failure())
        .count()
        + finished.failures.len();
    let runs = finished.records.len() + finished.failures.len();
    let mut report = reports::Report::new(finished.records, finished.failures);
    report.host = Some(done.host);
    write(&report, out)?;
    let mut summary = String::new();
    let line =
        reports::table::summary_line(&scenario.name, &report.records, &report.failures, color);
    reports::table::write_wrapped(&mut summary, &line, line_width(args.wide));
    print!("{summary}");
    Ok(if bad > 0 {
        println!("{bad} of {runs} runs did not go as expected");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The baseline `--baseline` names, by its name; a bad `--save-baseline` name, or a
/// baseline that cannot be read, is bad input.
fn baseline(args: &RunArgs) -> Result<Option<(String, reports::Report)>> {
    if let Some(name) = &args.save_baseline {
        if !virtlab::baseline::valid_name(name) {
            return Err(usage(virtlab::baseline::BaselineError::BadName(
                name.clone(),
            )));
        }
    }
    match &args.baseline {
        Some(name) => Ok(Some((
            name.clone(),
            virtlab::baseline::load(name).map_err(usage)?,
        ))),
        None => Ok(None),
    }
}

/// Every mode asked for has an engine in this build.
fn check_modes(modes: &[Mode]) -> Result<()> {
    let available = engines::modes();
    match modes.iter().find(|m| !available.contains(m)) {
        None => Ok(()),
        Some(mode) => {
            let names: Vec<&str> = available.iter().map(|m| m.name()).collect();
            Err(usage(format!(
                "mode `{mode}` is not available in this build (available: {})",
                names.join(", ")
            )))
        }
    }
}

/// The scenario to run, and the heading to print above its results (a scenario's name
/// and description; none for one made of flags).
#[derive(Debug)]
struct Chosen {
    scenario: Scenario,
    heading: Option<String>,
}

/// The scenario `args` ask for: the one their `--workload` or `--guest-bin` flags make,
/// the file they name, or the built-in default; with the flags that override a file's
/// settings applied, and the runs within [`MAX_RUNS`].
fn choose(args: &RunArgs) -> Result<Chosen> {
    let adhoc = args.bin.guest_bin.is_some() || !args.workloads.is_empty();
    if args.scenario.is_some() && adhoc {
        return Err(usage(
            "give a scenario file, or --workload/--guest-bin, not both",
        ));
    }
    if args.bin.guest_bin.is_some() && !args.workloads.is_empty() {
        return Err(usage("use either --workload or --guest-bin, not both"));
    }
    if adhoc {
        let flags = AdHoc {
            workloads: args.workloads.clone(),
            binary: args.bin.image().map_err(usage)?,
            modes: args.modes.clone(),
            n: args.n,
            b: args.b,
            delay_us: args.delay_us,
            s: args.s,
            q: args.q,
            k: args.k,
            repeats: args.repeats,
            warmup: args.warmup,
            timeout_s: args.timeout,
            vms: args.vms,
        };
        return Ok(Chosen {
            scenario: flags.scenario().map_err(usage)?,
            heading: None,
        });
    }
    let mut scenario = match &args.scenario {
        Some(path) => Scenario::load(path).map_err(usage)?,
        None => Scenario::parse(scenario::CLASSROOM, "classroom.toml (built in)")
            .map_err(|e| anyhow::anyhow!("the built-in scenario is invalid: {e}"))?,
    };
    if !args.modes.is_empty() {
        scenario.modes = Some(scenario::report_order(&args.modes));
    }
    if let Some(r) = args.repeats {
        scenario.repeats = r.max(1);
    }
    if let Some(w) = args.warmup {
        scenario.warmup = w;
    }
    scenario.timeout_s = args.timeout.or(scenario.timeout_s);
    let runs = scenario.run_count();
    if runs > MAX_RUNS {
        return Err(usage(format!(
            "scenario {}: {runs} runs is over the limit of {MAX_RUNS} runs an invocation \
             makes",
            scenario.name
        )));
    }
    let heading = format!(
        "scenario {}: {}",
        scenario.name,
        scenario.description.trim()
    );
    Ok(Chosen {
        scenario,
        heading: Some(heading),
    })
}

/// The options of every run: the scenario's timeout (or the default), and the limits and
/// switches of the flags.
fn run_options(args: &RunArgs, timeout_s: Option<f64>) -> Result<RunOptions> {
    let mut opts = harness::options_with_timeout(timeout_s.unwrap_or(DEFAULT_TIMEOUT_S));
    opts.limits.max_exits = args.max_exits;
    opts.cpuid_faulting = !args.no_cpuid_faulting;
    opts.umip = args.umip;
    opts.shadow_cache = args.shadow_cache;
    opts.show_regs = args.show_regs;
    if args.peek.len() > contract::state::MAX_PEEKS {
        return Err(usage(format!(
            "at most {} --peek ranges, not {}",
            contract::state::MAX_PEEKS,
            args.peek.len()
        )));
    }
    opts.peeks = args.peek.clone();
    if args.disk.is_some() || args.backend.is_some() || args.no_ioeventfd {
        opts.disk = Some(contract::DiskOptions {
            path: args.disk.clone(),
            backend: args.backend.unwrap_or_default(),
            no_ioeventfd: args.no_ioeventfd,
        });
    }
    Ok(opts)
}

/// The output directory, locked and checked for writing (waiting, with a message, for
/// another run writing into it); `None` when Ctrl-C came while waiting.
fn prepare_output(args: &RunArgs, name: &str) -> Result<Option<Output>> {
    let target = match &args.out {
        Some(dir) => Target::Dir(dir.clone()),
        None => Target::RunDir {
            base: output::DEFAULT_BASE.into(),
            name: name.to_string(),
        },
    };
    let waiting = |dir: &std::path::Path| {
        eprintln!(
            "another virtlab run is writing into {}; waiting for it to finish",
            dir.display()
        );
    };
    match Output::prepare(target, waiting, interrupt::requested) {
        Ok(o) => Ok(Some(o)),
        Err(e @ output::OutputError::Interrupted(_)) => {
            eprintln!("{e}; nothing ran");
            Ok(None)
        }
        Err(e @ output::OutputError::Io { .. }) => match &args.out {
            Some(dir) => Err(usage(format!("--out {}: {e}", dir.display()))),
            None => Err(usage(e)),
        },
        Err(e) => Err(usage(e)),
    }
}

/// Runs the plan's jobs with a progress bar, until they are done or Ctrl-C stops them.
fn execute(plan: Plan, opts: &RunOptions) -> Finished {
    let Plan { jobs, mut images } = plan;
    let mut progress = Progress::new(jobs.len());
    // The guests run on a thread that blocks SIGINT, so Ctrl-C reaches the handler on
    // this thread and never interrupts a KVM_RUN.
    let done = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            if let Err(e) = interrupt::block_in_this_thread() {
                tracing::warn!("cannot keep Ctrl-C away from the guests: {e}");
            }
            harness::run_jobs_with(&jobs, &mut images, opts, interrupt::requested, |job, r| {
                progress.step(job, r)
            })
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    progress.finish();
    done
}

/// How wide the lines under the tables are: 80 columns, or as wide as they need with
/// `--wide`.
fn line_width(wide: bool) -> usize {
    if wide {
        usize::MAX
    } else {
        reports::table::WIDTH
    }
}

/// The results as tables (verdicts, counts, costs; the guests' final state), then the
/// scenario's notes and missing workloads.
fn print_tables(done: &Finished, scenario: &Scenario, args: &RunArgs, color: bool) {
    let table = reports::table::Options {
        wide: args.wide,
        color,
        ..Default::default()
    };
    print!(
        "{}",
        reports::table::render_with(&done.records, &done.failures, &table)
    );
    print!("{}", reports::table::render_state(&done.records));
    print!("{}", notes(scenario, line_width(args.wide)));
}

/// Prints how `report` compares with the baseline `base` (`threshold` in percent);
/// whether a count changed or a cost regressed.
fn check_baseline(
    name: &str,
    base: &reports::Report,
    report: &reports::Report,
    threshold: f64,
    width: usize,
) -> bool {
    let check = reports::compare::check(base, report, threshold / 100.0);
    let mut text = String::new();
    for line in check.render(name).lines() {
        reports::table::write_wrapped(&mut text, line, width);
    }
    print!("{text}");
    check.failed()
}

/// The scenario's notes and the workloads it lists as planned, as lines of `width`.
fn notes(scenario: &Scenario, width: usize) -> String {
    let mut lines = String::new();
    for (workload, note) in &scenario.notes() {
        reports::table::write_wrapped(&mut lines, &format!("note: {workload}: {note}"), width);
    }
    for w in scenario.planned() {
        let missing = format!(
            "{}: not in the catalog yet{}",
            w.name,
            w.note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        reports::table::write_wrapped(&mut lines, &format!("missing: {missing}"), width);
    }
    for w in scenario.workloads.iter().filter(|w| !w.planned) {
        for mode in scenario.modes() {
            if let Some(why) = guests::unsupported(&w.name, mode) {
                let missing = format!("missing: {} in {mode}: {why}", w.name);
                reports::table::write_wrapped(&mut lines, &missing, width);
            }
        }
    }
    lines
}

/// Writes the results (CSV, JSON, HTML) into `out`, puts the set in place and says where.
fn write(report: &reports::Report, out: Output) -> Result<()> {
    let mut files = report.write_to(out.staging())?;
    files.push(report.write_html(out.staging())?);
    let placed = out.commit()?;
    for f in &files {
        if let Some(leaf) = f.file_name() {
            println!("wrote {}", placed.dir.join(leaf).display());
        }
    }
    if let Some(latest) = &placed.latest {
        println!(
            "{} now points at {}",
            latest.display(),
            placed.dir.display()
        );
    }
    Ok(())
}
