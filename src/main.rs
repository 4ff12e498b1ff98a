//! The `virtlab` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use contract::abi::layout;
use contract::{GuestImage, Mode};
use virtlab::engines;
use virtlab::harness::{self, Guest, Job, MAX_RUNS};
use virtlab::input;
use virtlab::interrupt;
use virtlab::output::{self, Output, Target};
use virtlab::scenario::{self, Scenario};

/// Trap-and-emulate, paravirtualization and hardware-assisted virtualization, side by
/// side on real KVM.
#[derive(Debug, Parser)]
#[command(name = "virtlab", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

/// When to colour the terminal output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    fn enabled(self) -> bool {
        match self {
            ColorChoice::Auto => reports::table::style::color_for_stdout(),
            ColorChoice::Always => true,
            ColorChoice::Never => false,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run workloads (with no arguments: the built-in default scenario).
    Run(Box<RunArgs>),
    /// List the workloads and the modes this host can run.
    List,
    /// Check the host: /dev/kvm, permissions, API version, backend, and every capability
    /// measured with a tiny guest, with what each means for the modes and labs.
    Doctor(DoctorArgs),
    /// Step through a run one exit, trap or hypercall at a time.
    Trace(TraceArgs),
    /// Turn a results.json into a self-contained HTML report (several: a comparison).
    Report(ReportArgs),
    /// Compare two or more results.json: counts exactly, costs as ratios of medians, and a
    /// table across hosts when they come from different ones.
    Compare(CompareArgs),
    /// Decode a guest and sort its instructions: privileged (trap), sensitive but
    /// unprivileged (the x86 hole), innocuous.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
struct DoctorArgs {
    /// Print JSON, for tools.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// Workload to explain.
    #[arg(short, long)]
    workload: Option<String>,
    #[command(flatten)]
    bin: GuestBinArgs,
    /// Iterations (they do not change the code, only its immediates).
    #[arg(short, default_value_t = 10)]
    n: u64,
    /// As if CPUID faulting were off (CPUID then does not trap).
    #[arg(long)]
    no_cpuid_faulting: bool,
    /// As if CR4.UMIP were set (SGDT/SIDT/SLDT/SMSW/STR then trap).
    #[arg(long)]
    umip: bool,
    /// Print JSON, for tools.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A results.json written by `virtlab run`; with several, a page comparing them (the
    /// first is the reference).
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// The HTML file to write (its charts are written beside it as SVG files).
    #[arg(short, long, default_value = "report.html")]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Two or more results.json; the first is the reference the others are measured
    /// against.
    #[arg(required = true, num_args = 2..)]
    results: Vec<PathBuf>,
    /// Also write the comparison as an HTML page (its charts beside it as SVG files).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TraceArgs {
    /// Workload to trace (or --guest-bin).
    #[arg(short, long)]
    workload: Option<String>,
    #[command(flatten)]
    bin: GuestBinArgs,
    /// Mode to trace it in.
    #[arg(short, long)]
    mode: String,
    /// Iterations (default: 10, enough to see the pattern).
    #[arg(short, default_value_t = 10)]
    n: u64,
    /// Batch size (paravirtual flavour).
    #[arg(short, default_value_t = harness::DEFAULT_B)]
    b: u64,
    /// Most events to record and show (at most 10000; the run goes on after them).
    #[arg(long, default_value_t = 40, value_parser = virtlab::trace::parse_limit)]
    limit: usize,
    /// Print the events as JSON, for tools.
    #[arg(long)]
    json: bool,
    /// Trap-and-emulate: let CPUID run natively.
    #[arg(long)]
    no_cpuid_faulting: bool,
    /// Trap-and-emulate: set CR4.UMIP.
    #[arg(long)]
    umip: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A scenario file (scenarios/*.toml). Without it and without --workload or
    /// --guest-bin, the built-in default scenario (classroom) runs.
    scenario: Option<PathBuf>,
    /// Workload to run (repeatable; default: all). `virtlab list` shows them.
    #[arg(short, long = "workload")]
    workloads: Vec<String>,
    /// Mode to run in (repeatable; default: every mode this build has).
    #[arg(short, long = "mode")]
    modes: Vec<String>,
    /// Iterations of the measured loop (default: each workload's own; with --workload).
    #[arg(short, requires = "workloads")]
    n: Option<u64>,
    /// Batch size for batched operations in the paravirtual flavour (default 16; with
    /// --workload).
    #[arg(short, requires = "workloads")]
    b: Option<u64>,
    /// Timer delay in microseconds (hlt-timer; with --workload).
    #[arg(long, requires = "workloads")]
    delay_us: Option<u32>,
    #[command(flatten)]
    bin: GuestBinArgs,
    /// Directory for results.csv, results.json and report.html, replaced as a whole
    /// (default: a new directory virtlab-out/<UTC time>-<name>/ for every run, with
    /// virtlab-out/latest pointing at the newest).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Wall-clock limit per run, in seconds (default 20, or the scenario's).
    #[arg(long, value_parser = harness::parse_timeout)]
    timeout: Option<f64>,
    /// Most exits per run.
    #[arg(long, default_value_t = 5_000_000)]
    max_exits: u64,
    /// Repeats of every run (a scenario sets its own).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeats: Option<u32>,
    /// Warm-up runs before the measured ones, discarded (a scenario sets its own).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    warmup: Option<u32>,
    /// Trap-and-emulate: let CPUID run natively (host values leak into the guest).
    #[arg(long)]
    no_cpuid_faulting: bool,
    /// Trap-and-emulate: set CR4.UMIP so SGDT/SIDT/SLDT/SMSW/STR trap.
    #[arg(long)]
    umip: bool,
    /// After each run, print the guest's final registers (RAX…R15, RIP, RFLAGS,
    /// CR0/CR3/CR4 as the guest sees them) and store them in results.json.
    #[arg(long)]
    show_regs: bool,
    /// After each run, print LEN bytes of guest memory at ADDR (e.g. 0x400:8; repeatable,
    /// at most 16, each at most 4096 bytes) and store them in results.json.
    #[arg(long, value_name = "ADDR:LEN")]
    peek: Vec<contract::state::PeekRequest>,
    /// Print every counter of every run side by side, as wide as it needs (the default
    /// fits in 80 columns).
    #[arg(long)]
    wide: bool,
    /// Save this run's results as the baseline NAME (virtlab-out/baselines/NAME.json).
    #[arg(long, value_name = "NAME")]
    save_baseline: Option<String>,
    /// Compare this run with the baseline NAME (or a results.json path) and exit with
    /// status 3 when a count changed or a cost regressed beyond --threshold.
    #[arg(long, value_name = "NAME")]
    baseline: Option<String>,
    /// With --baseline: the percentage a cost (median wall time, time per operation) may
    /// grow before it is a regression (it must also grow beyond its own noise).
    #[arg(long, value_name = "PCT", default_value_t = 20.0, value_parser = parse_threshold)]
    threshold: f64,
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("`{s}` is not a percentage: {e}"))?;
    if (0.0..=1000.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1000 (%)"))
    }
}

/// A user's flat binary and where it goes.
#[derive(Debug, Args)]
struct GuestBinArgs {
    /// A flat binary to use instead of a workload.
    #[arg(long, value_name = "FILE")]
    guest_bin: Option<PathBuf>,
    /// Load address of --guest-bin.
    #[arg(long, value_parser = parse_addr, default_value = "0x100000", requires = "guest_bin")]
    load: u64,
    /// Entry point of --guest-bin (default: the load address).
    #[arg(long, value_parser = parse_addr, requires = "guest_bin")]
    entry: Option<u64>,
    /// Initial stack pointer of --guest-bin.
    #[arg(long, value_parser = parse_addr, default_value = "0x100000", requires = "guest_bin")]
    stack: u64,
}

impl GuestBinArgs {
    /// The image of --guest-bin, if one was given; an unreadable file (or one that is not
    /// a regular file, or larger than guest RAM) or an image that breaks the guest ABI is
    /// the user's input error, as a message.
    fn image(&self) -> std::result::Result<Option<GuestImage>, String> {
        let Some(path) = &self.guest_bin else {
            return Ok(None);
        };
        let bytes = input::read_bounded(
            path,
            layout::DEFAULT_RAM_SIZE,
            "a guest binary (it must fit in guest RAM)",
        )
        .map_err(|e| e.to_string())?;
        let name = path
            .file_name()
            .map_or("guest".into(), |n| n.to_string_lossy().into_owned());
        let mut img = GuestImage::flat(name, bytes, self.load, self.entry.unwrap_or(self.load));
        img.stack_top = self.stack;
        img.validate(layout::DEFAULT_RAM_SIZE)
            .map_err(|e| e.to_string())?;
        Ok(Some(img))
    }
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.replace('_', "").parse(),
    };
    r.map_err(|e| format!("`{s}` is not an address (decimal or 0x-hex): {e}"))
}

/// Status for bad command-line input.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`virtlab doctor --json | head`) instead of panicking on a broken pipe.
    // SAFETY: `signal` with SIG_DFL installs no handler code; it runs before any other
    // thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run(*args, cli.color.enabled()),
        Command::List => list().map(|()| ExitCode::SUCCESS),
        Command::Doctor(args) => Ok(doctor(&args)),
        Command::Trace(args) => trace(args),
        Command::Report(args) => report(args),
        Command::Compare(args) => compare(args, cli.color.enabled()),
        Command::Explain(args) => explain(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once (a message that already quotes its cause,
/// as an OS error with its path does, is not followed by that cause again).
fn describe(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn usage_error(msg: impl std::fmt::Display) -> Result<ExitCode> {
    eprintln!("error: {msg}");
    Ok(ExitCode::from(USAGE_ERROR))
}

/// Status of an invocation stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// Status of a run that went as expected but differs from its baseline: a count changed
/// or a cost regressed beyond the threshold.
const BASELINE_CHANGED: u8 = 3;

fn run(args: RunArgs, color: bool) -> Result<ExitCode> {
    let available = engines::modes();
    let mut modes = Vec::new();
    for m in &args.modes {
        match m.parse::<Mode>() {
            Ok(mode) if available.contains(&mode) => modes.push(mode),
            Ok(mode) => {
                let names: Vec<&str> = available.iter().map(|m| m.name()).collect();
                return usage_error(format!(
                    "mode `{mode}` is not available in this build (available: {})",
                    names.join(", ")
                ));
            }
            Err(e) => return usage_error(e),
        }
    }
    if let Some(name) = &args.save_baseline {
        if !virtlab::baseline::valid_name(name) {
            return usage_error(virtlab::baseline::BaselineError::BadName(name.clone()));
        }
    }
    let baseline = match &args.baseline {
        Some(name) => match virtlab::baseline::load(name) {
            Ok(b) => Some((name.clone(), b)),
            Err(e) => return usage_error(e),
        },
        None => None,
    };
    let adhoc = args.bin.guest_bin.is_some() || !args.workloads.is_empty();
    if args.scenario.is_some() && adhoc {
        return usage_error("give a scenario file, or --workload/--guest-bin, not both");
    }
    if args.bin.guest_bin.is_some() && !args.workloads.is_empty() {
        return usage_error("use either --workload or --guest-bin, not both");
    }
    let mut scenario_notes = Vec::new();
    let mut missing = Vec::new();
    let mut timeout = args.timeout;
    let mut jobs = Vec::new();
    let mut heading = None;
    let name;
    if adhoc {
        if modes.is_empty() {
            modes = available;
        }
        let mut guests_to_run = Vec::new();
        match args.bin.image() {
            Ok(Some(img)) => guests_to_run.push(Guest::Binary(img)),
            Ok(None) => {}
            Err(e) => return usage_error(e),
        }
        for name in &args.workloads {
            let w = match guests::find(name) {
                Ok(w) => w,
                Err(e) => return usage_error(e),
            };
            let params = guests::Params {
                n: args.n.unwrap_or(w.default_n),
                b: args.b.unwrap_or(harness::DEFAULT_B),
                delay_us: args.delay_us.unwrap_or(0),
            };
            // Parameters over a workload's limits are a usage error, before anything runs.
            if let Err(e) = w.check(&params) {
                return usage_error(e);
            }
            guests_to_run.push(Guest::Workload(w, params));
        }
        let (repeats, warmup) = (args.repeats.unwrap_or(1).max(1), args.warmup.unwrap_or(0));
        let runs = guests_to_run
            .len()
            .saturating_mul(modes.len())
            .saturating_mul((warmup + repeats) as usize);
        if runs > MAX_RUNS {
            return usage_error(format!(
                "{runs} runs (guests × modes × (warm-up + repeats)) is over the limit of \
                 {MAX_RUNS} runs an invocation makes"
            ));
        }
        let names: Vec<&str> = guests_to_run.iter().map(Guest::name).collect();
        name = names.join("+");
        for round in 0..warmup + repeats {
            let is_warmup = round < warmup;
            let repeat = if is_warmup { round } else { round - warmup };
            for g in &guests_to_run {
                for mode in &modes {
                    jobs.push(Job {
                        guest: g.clone(),
                        mode: *mode,
                        repeat,
                        warmup: is_warmup,
                    });
                }
            }
        }
    } else {
        let mut scenario = match &args.scenario {
            Some(path) => match Scenario::load(path) {
                Ok(s) => s,
                Err(e) => return usage_error(e),
            },
            None => match Scenario::parse(scenario::CLASSROOM, "classroom.toml (built in)") {
                Ok(s) => s,
                Err(e) => anyhow::bail!("the built-in scenario is invalid: {e}"),
            },
        };
        if !modes.is_empty() {
            scenario.modes = Some(modes.iter().map(|m| m.name().to_string()).collect());
        }
        if let Some(r) = args.repeats {
            scenario.repeats = r.max(1);
        }
        if let Some(w) = args.warmup {
            scenario.warmup = w;
        }
        let runs = scenario.run_count();
        if runs > MAX_RUNS {
            return usage_error(format!(
                "scenario {}: {runs} runs is over the limit of {MAX_RUNS} runs an invocation \
                 makes",
                scenario.name
            ));
        }
        timeout = timeout.or(scenario.timeout_s);
        heading = Some(format!(
            "scenario {}: {}",
            scenario.name,
            scenario.description.trim()
        ));
        for w in scenario.planned() {
            missing.push(format!(
                "{}: not in the catalog yet{}",
                w.name,
                w.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        }
        scenario_notes = scenario.notes();
        jobs = scenario.jobs();
        name = scenario.name.clone();
    }
    let mut opts = harness::options_with_timeout(timeout.unwrap_or(20.0));
    opts.limits.max_exits = args.max_exits;
    opts.cpuid_faulting = !args.no_cpuid_faulting;
    opts.umip = args.umip;
    opts.show_regs = args.show_regs;
    if args.peek.len() > contract::state::MAX_PEEKS {
        return usage_error(format!(
            "at most {} --peek ranges, not {}",
            contract::state::MAX_PEEKS,
            args.peek.len()
        ));
    }
    opts.peeks = args.peek.clone();

    // Where the results go is settled, and checked for writing, before anything runs.
    if let Err(e) = interrupt::install() {
        tracing::warn!("Ctrl-C will end the run at once (no handler: {e})");
    }
    let run_name = name.clone();
    let target = match &args.out {
        Some(dir) => Target::Dir(dir.clone()),
        None => Target::RunDir {
            base: output::DEFAULT_BASE.into(),
            name,
        },
    };
    let out = match Output::prepare(
        target,
        |dir| {
            eprintln!(
                "another virtlab run is writing into {}; waiting for it to finish",
                dir.display()
            );
        },
        interrupt::requested,
    ) {
        Ok(o) => o,
        Err(e @ output::OutputError::Interrupted(_)) => {
            eprintln!("{e}; nothing ran");
            return Ok(ExitCode::from(INTERRUPTED));
        }
        Err(e @ output::OutputError::Io { .. }) => match &args.out {
            Some(dir) => return usage_error(format!("--out {}: {e}", dir.display())),
            None => return usage_error(e),
        },
        Err(e) => return usage_error(e),
    };
    if let Some(h) = heading {
        let mut text = String::new();
        reports::table::write_wrapped(&mut text, &h, reports::table::WIDTH);
        println!("{text}");
    }

    let total = jobs.len();
    let mut progress = Progress::new(total);
    // The guests run on a thread that blocks SIGINT, so Ctrl-C reaches the handler on
    // this thread and never interrupts a KVM_RUN.
    let done = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            if let Err(e) = interrupt::block_in_this_thread() {
                tracing::warn!("cannot keep Ctrl-C away from the guests: {e}");
            }
            harness::run_jobs_until(&jobs, &opts, interrupt::requested, |job, r| {
                progress.step(job, r)
            })
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    progress.finish();
    let (records, failures) = (done.records, done.failures);
    let table = reports::table::Options {
        wide: args.wide,
        color,
        ..Default::default()
    };
    print!(
        "{}",
        reports::table::render_with(&records, &failures, &table)
    );
    print!("{}", reports::table::render_state(&records));
    let mut lines = String::new();
    let width = if args.wide {
        usize::MAX
    } else {
        reports::table::WIDTH
    };
    for (workload, note) in &scenario_notes {
        reports::table::write_wrapped(&mut lines, &format!("note: {workload}: {note}"), width);
    }
    for m in &missing {
        reports::table::write_wrapped(&mut lines, &format!("missing: {m}"), width);
    }
    print!("{lines}");
    let measured = jobs.iter().filter(|j| !j.warmup).count();
    let finished = records.len() + failures.len();
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
    let bad = records
        .iter()
        .filter(|r| reports::verdict::Verdict::of(r).is_failure())
        .count()
        + failures.len();
    let mut report = reports::Report::new(records, failures);
    report.interrupted = done.stopped;
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
    let mut baseline_failed = false;
    if let Some((name, base)) = &baseline {
        let check = reports::compare::check(base, &report, args.threshold / 100.0);
        let mut text = String::new();
        for line in check.render(name).lines() {
            reports::table::write_wrapped(&mut text, line, width);
        }
        print!("{text}");
        baseline_failed = check.failed();
    }
    if let Some(name) = &args.save_baseline {
        if done.stopped {
            println!("interrupted: baseline {name} not saved");
        } else {
            let path = virtlab::baseline::save(name, &report)?;
            println!("saved baseline {name} as {}", path.display());
        }
    }
    let mut summary = String::new();
    reports::table::write_wrapped(
        &mut summary,
        &reports::table::summary_line(&run_name, &report.records, &report.failures, color),
        width,
    );
    print!("{summary}");
    if done.stopped {
        return Ok(ExitCode::from(INTERRUPTED));
    }
    if bad > 0 {
        println!("{bad} of {measured} runs did not go as expected");
        return Ok(ExitCode::FAILURE);
    }
    if baseline_failed {
        return Ok(ExitCode::from(BASELINE_CHANGED));
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: usize,
    total: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} {elapsed_precise} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            done: 0,
            total,
        }
    }

    fn step(&mut self, job: &Job, r: &Result<contract::RunRecord, reports::RunFailure>) {
        self.done += 1;
        let status = match r {
            Ok(rec) => reports::verdict::Verdict::of(rec).words().to_string(),
            Err(f) => format!("error: {}", f.error),
        };
        let what = format!(
            "{} in {}{}: {status}",
            job.guest.name(),
            job.mode,
            if job.warmup { " (warm-up)" } else { "" }
        );
        match &self.bar {
            Some(b) => {
                b.set_message(what);
                b.inc(1);
            }
            None => eprintln!("[{}/{}] {what}", self.done, self.total),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let bin = match args.bin.image() {
        Ok(b) => b,
        Err(e) => return usage_error(e),
    };
    let image = match (&args.workload, bin) {
        (Some(name), None) => {
            let params = guests::Params {
                n: args.n,
                ..Default::default()
            };
            match guests::build(name, contract::Flavour::Native, params) {
                Ok(img) => img,
                Err(e) => return usage_error(e),
            }
        }
        (None, Some(img)) => img,
        _ => return usage_error("give exactly one of --workload or --guest-bin"),
    };
    // Classify as trap-emulate would run it here: an option the host cannot honour is off.
    let caps = machine::caps::probe().ok();
    let mut host_notes = Vec::new();
    let mut effective =
        |requested: bool, cap: Option<&contract::caps::Probed>, name: &str| match cap {
            Some(p) if requested && !p.is_present() => {
                host_notes.push(format!(
                    "{name} is not effective on this host ({}): classified as off",
                    p.detail
                ));
                false
            }
            _ => requested,
        };
    // Only a guest that executes CPUID cares whether CPUID faulting works here.
    let uses_cpuid = trap_emulate::explain::explain_with(&image, true, false)
        .group("cpuid")
        .is_some();
    let cpuid_faulting = effective(
        !args.no_cpuid_faulting,
        caps.filter(|_| uses_cpuid).map(|c| &c.cpuid_faulting),
        "CPUID faulting",
    );
    let umip = effective(args.umip, caps.map(|c| &c.umip), "UMIP");
    let e = trap_emulate::explain::explain_with(&image, cpuid_faulting, umip);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{e}");
        for n in host_notes {
            println!("note: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a results.json for `report` and `compare`; a results.csv, a page or a file
/// that does not parse is the user's input error, as a message.
fn load_results(path: &std::path::Path) -> std::result::Result<reports::Report, String> {
    let bytes = input::read_bounded(path, input::MAX_RESULTS_BYTES, "a results.json")
        .map_err(|e| e.to_string())?;
    reports::Report::parse(path, &bytes).map_err(|e| e.to_string())
}

fn report(args: ReportArgs) -> Result<ExitCode> {
    let mut loaded = Vec::new();
    for path in &args.results {
        match load_results(path) {
            Ok(r) => loaded.push(r),
            Err(e) => return usage_error(e),
        }
    }
    let charts = if let [one] = loaded.as_slice() {
        one.write_html_file(&args.output)?
    } else {
        reports::write_compare_html(&args.output, &comparison(&args.results, &loaded))?
    };
    println!("wrote {}", args.output.display());
    if !charts.is_empty() {
        println!("wrote {} chart(s) beside it as SVG files", charts.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The comparison of results files, each named by its path.
fn comparison(paths: &[PathBuf], loaded: &[reports::Report]) -> reports::compare::Comparison {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let inputs: Vec<reports::compare::Input> = names
        .iter()
        .zip(loaded)
        .map(|(n, r)| reports::compare::Input::new(n, r))
        .collect();
    reports::compare::Comparison::new(&inputs)
}

fn compare(args: CompareArgs, color: bool) -> Result<ExitCode> {
    let mut loaded = Vec::new();
    for path in &args.results {
        match load_results(path) {
            Ok(r) => loaded.push(r),
            Err(e) => return usage_error(e),
        }
    }
    let c = comparison(&args.results, &loaded);
    print!("{}", reports::compare::term::render(&c, color));
    if let Some(path) = &args.html {
        reports::write_compare_html(path, &c)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn trace(args: TraceArgs) -> Result<ExitCode> {
    let mode = match args.mode.parse::<Mode>() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let Some(engine) = engines::for_mode(mode) else {
        return usage_error(format!("mode `{mode}` is not available in this build"));
    };
    if args.b == 0 {
        return usage_error("-b must be at least 1");
    }
    let bin = match args.bin.image() {
        Ok(b) => b,
        Err(e) => return usage_error(e),
    };
    let image = match (&args.workload, bin) {
        (Some(name), None) => {
            let w = match guests::find(name) {
                Ok(w) => w,
                Err(e) => return usage_error(e),
            };
            match w.image(
                engine.flavour(),
                guests::Params {
                    n: args.n,
                    b: args.b,
                    delay_us: 0,
                },
            ) {
                Ok(img) => img,
                Err(e) => return usage_error(e),
            }
        }
        (None, Some(img)) => img,
        _ => return usage_error("give exactly one of --workload or --guest-bin"),
    };
    let mut opts = contract::RunOptions::default();
    opts.limits.trace_events = args.limit;
    opts.cpuid_faulting = !args.no_cpuid_faulting;
    opts.umip = args.umip;
    let record = engine.run(&image, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record.trace)?);
        if let Some(note) = virtlab::trace::stopped_note(&record) {
            eprintln!("{note}");
        }
    } else {
        print!("{}", virtlab::trace::render(&record, &image));
    }
    Ok(ExitCode::SUCCESS)
}

fn list() -> Result<()> {
    println!("workloads:");
    let width = guests::names().iter().map(|n| n.len()).max().unwrap_or(0);
    for w in guests::WORKLOADS {
        let batched = if w.batched { " [takes -b]" } else { "" };
        println!(
            "  {:width$}  {} (default n = {}, at most {}){batched}",
            w.name, w.summary, w.default_n, w.max_n
        );
    }
    println!("modes:");
    for mode in Mode::ALL {
        let status = match engines::for_mode(mode) {
            None => "not in this build".to_string(),
            Some(e) => match e.probe() {
                Ok(h) => format!("runs here (backend {})", h.backend),
                Err(err) => format!("cannot run here: {err}"),
            },
        };
        println!("  {:12}  {status}", mode.name());
    }
    Ok(())
}

fn doctor(args: &DoctorArgs) -> ExitCode {
    let checks = machine::host::doctor();
    let mut engines_ok = Vec::new();
    for mode in Mode::ALL {
        if let Some(e) = engines::for_mode(mode) {
            engines_ok.push((mode, e.probe().map_err(|e| e.to_string())));
        }
    }
    // Non-zero only when nothing can run: a warning changes counts or lessons, not
    // whether the tool works.
    let blocked =
        checks.iter().any(|c| c.blocks_everything()) || engines_ok.iter().all(|(_, r)| r.is_err());
    if args.json {
        let engines: serde_json::Map<String, serde_json::Value> = engines_ok
            .iter()
            .map(|(m, r)| {
                let v = match r {
                    Ok(_) => serde_json::json!({ "can_run": true }),
                    Err(e) => serde_json::json!({ "can_run": false, "why": e }),
                };
                (m.name().to_string(), v)
            })
            .collect();
        let caps = machine::caps::probe().ok();
        let doc = serde_json::json!({
            "checks": checks,
            "capabilities": caps,
            "engines": engines,
            "can_run": !blocked,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        for c in &checks {
            println!("[{}] {}: {}", c.level.tag(), c.what, c.found);
            if let Some(m) = &c.means {
                println!("          means: {m}");
            }
            if let Some(fix) = &c.fix {
                println!("          fix: {fix}");
            }
        }
        for (mode, r) in &engines_ok {
            match r {
                Ok(_) => println!("[  ok   ] engine {mode}: can run"),
                Err(err) => println!("[missing] engine {mode}: {err}"),
            }
        }
        let warnings = checks
            .iter()
            .filter(|c| c.level != machine::host::Level::Ok)
            .count();
        if blocked {
            println!("this host cannot run virtlab");
        } else if warnings > 0 {
            println!(
                "this host can run virtlab; {warnings} warning(s): the runs say where this host's \
                 counts or lessons differ"
            );
        } else {
            println!("this host can run virtlab");
        }
    }
    if blocked {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
