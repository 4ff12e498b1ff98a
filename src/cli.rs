//! The command line: every subcommand and its flags, as clap reads them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use contract::abi::layout;
use contract::{GuestImage, Mode};
use virtlab::harness;
use virtlab::input;

/// Trap-and-emulate, paravirtualization and hardware-assisted virtualization, side by
/// side on real KVM.
#[derive(Debug, Parser)]
#[command(name = "virtlab", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour the terminal output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour stdout.
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Auto => reports::table::style::color_for_stdout(),
            ColorChoice::Always => true,
            ColorChoice::Never => false,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// unprivileged (the x86 hole), innocuous; with `--mode binary-translation`, each
    /// guest block beside its translation.
    Explain(ExplainArgs),
}

/// The flags of `virtlab doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON, for tools.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `virtlab explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Workload to explain.
    #[arg(short, long)]
    pub workload: Option<String>,
    #[command(flatten)]
    pub bin: GuestBinArgs,
    /// Iterations (they do not change the code, only its immediates).
    #[arg(short, default_value_t = 10)]
    pub n: u64,
    /// trap-emulate (the default): the instructions sorted by what traps;
    /// binary-translation: each guest basic block beside its translated block.
    #[arg(short, long, value_parser = clap::value_parser!(Mode))]
    pub mode: Option<Mode>,
    /// As if CPUID faulting were off (CPUID then does not trap).
    #[arg(long)]
    pub no_cpuid_faulting: bool,
    /// As if CR4.UMIP were set (SGDT/SIDT/SLDT/SMSW/STR then trap).
    #[arg(long)]
    pub umip: bool,
    /// Print JSON, for tools.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `virtlab report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results.json written by `virtlab run`; with several, a page comparing them (the
    /// first is the reference).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// The HTML file to write (its charts are written beside it as SVG files).
    #[arg(short, long, default_value = "report.html")]
    pub output: PathBuf,
}

/// The flags of `virtlab compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Two or more results.json; the first is the reference the others are measured
    /// against.
    #[arg(required = true, num_args = 2..)]
    pub results: Vec<PathBuf>,
    /// Also write the comparison as an HTML page (its charts beside it as SVG files).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// The flags of `virtlab trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Workload to trace (or --guest-bin).
    #[arg(short, long)]
    pub workload: Option<String>,
    #[command(flatten)]
    pub bin: GuestBinArgs,
    /// Mode to trace it in.
    #[arg(short, long, value_parser = clap::value_parser!(Mode))]
    pub mode: Mode,
    /// Iterations (default: 10, enough to see the pattern).
    #[arg(short, default_value_t = 10)]
    pub n: u64,
    /// Batch size (paravirtual flavour).
    #[arg(short, default_value_t = harness::DEFAULT_B)]
    pub b: u64,
    /// Most events to record and show (at most 10000; the run goes on after them).
    #[arg(long, default_value_t = 40, value_parser = virtlab::trace::parse_limit)]
    pub limit: usize,
    /// Print the events as JSON, for tools.
    #[arg(long)]
    pub json: bool,
    /// Trap-and-emulate: let CPUID run natively.
    #[arg(long)]
    pub no_cpuid_faulting: bool,
    /// Trap-and-emulate: set CR4.UMIP.
    #[arg(long)]
    pub umip: bool,
    /// Trap-and-emulate: keep each guest root's shadow page tables across CR3 loads
    /// (`off`: every CR3 load rebuilds the shadow).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub shadow_cache: bool,
}

/// A block backend's name.
fn parse_backend(s: &str) -> Result<contract::BlockBackend, String> {
    s.parse()
        .map_err(|e: contract::disk::UnknownBackend| e.to_string())
}

/// A scheduler's name.
fn parse_scheduler(s: &str) -> Result<contract::SchedulerKind, String> {
    s.parse()
}

/// The flags of `virtlab run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A scenario file (scenarios/*.toml). Without it and without --workload or
    /// --guest-bin, the built-in default scenario (classroom) runs.
    pub scenario: Option<PathBuf>,
    /// Workload to run (repeatable; default: all). `virtlab list` shows them.
    #[arg(short, long = "workload")]
    pub workloads: Vec<String>,
    /// Mode to run in (repeatable; default: every mode this build has).
    #[arg(short, long = "mode", value_parser = clap::value_parser!(Mode))]
    pub modes: Vec<Mode>,
    /// Iterations of the measured loop (default: each workload's own; with --workload).
    #[arg(short, requires = "workloads")]
    pub n: Option<u64>,
    /// Batch size for batched operations in the paravirtual flavour (default 16; with
    /// --workload).
    #[arg(short, requires = "workloads")]
    pub b: Option<u64>,
    /// Timer delay in microseconds (hlt-timer; with --workload).
    #[arg(long, requires = "workloads")]
    pub delay_us: Option<u32>,
    /// Request size in bytes of the disk workloads: a multiple of 512 up to 65536
    /// (default 4096; with --workload).
    #[arg(short, requires = "workloads")]
    pub s: Option<u64>,
    /// Queue depth of blk-virtio: requests per doorbell, 1 to 64 (default 8; with
    /// --workload).
    #[arg(short, requires = "workloads")]
    pub q: Option<u64>,
    /// Where the disk's device model runs: inline (in the vCPU thread), kernel-notify
    /// (the doorbell is a KVM ioeventfd, a backend thread serves the queue; under
    /// hw-assisted its completion is a KVM irqfd interrupt where the host supports it) or
    /// driver-domain (a separate process on memfd-shared guest RAM).
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    pub backend: Option<contract::BlockBackend>,
    /// Leave KVM's ioeventfd unused, as on a host without it: runs with the
    /// kernel-notify or driver-domain backend end declared unavailable, not run.
    #[arg(long)]
    pub no_ioeventfd: bool,
    /// The disk image of the disk workloads (created with the size a run needs if it does
    /// not exist, kept afterwards; default: a temporary image per run, removed after the
    /// host has checked it).
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
    /// Pages of each address space forkwait builds (default 16; with --workload).
    #[arg(short, requires = "workloads")]
    pub k: Option<u64>,
    #[command(flatten)]
    pub bin: GuestBinArgs,
    /// Directory for results.csv, results.json and report.html, replaced as a whole
    /// (default: a new directory virtlab-out/<UTC time>-<name>/ for every run, with
    /// virtlab-out/latest pointing at the newest).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Wall-clock limit per run, in seconds (default 20, or the scenario's).
    #[arg(long, value_parser = harness::parse_timeout)]
    pub timeout: Option<f64>,
    /// Most exits per run.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_exits: u64,
    /// Repeats of every run (a scenario sets its own).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeats: Option<u32>,
    /// Warm-up runs before the measured ones, discarded (a scenario sets its own).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub warmup: Option<u32>,
    /// Trap-and-emulate: let CPUID run natively (host values leak into the guest).
    #[arg(long)]
    pub no_cpuid_faulting: bool,
    /// Trap-and-emulate: set CR4.UMIP so SGDT/SIDT/SLDT/SMSW/STR trap.
    #[arg(long)]
    pub umip: bool,
    /// Trap-and-emulate: keep each guest root's shadow page tables across CR3 loads
    /// (`off`: every CR3 load rebuilds the shadow, as a VMM without a shadow cache does).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub shadow_cache: bool,
    /// After each run, print the guest's final registers (RAX…R15, RIP, RFLAGS,
    /// CR0/CR3/CR4 as the guest sees them) and store them in results.json.
    #[arg(long)]
    pub show_regs: bool,
    /// After each run, print LEN bytes of guest memory at ADDR (e.g. 0x400:8; repeatable,
    /// at most 16, each at most 4096 bytes) and store them in results.json.
    #[arg(long, value_name = "ADDR:LEN")]
    pub peek: Vec<contract::state::PeekRequest>,
    /// Print every counter of every run side by side, as wide as it needs (the default
    /// fits in 80 columns).
    #[arg(long)]
    pub wide: bool,
    /// Who schedules the VMs of a scenario with [[vm]] tables: linux, round-robin or
    /// credit (instead of its [host] table's).
    #[arg(long, value_name = "NAME", value_parser = parse_scheduler)]
    pub scheduler: Option<contract::SchedulerKind>,
    /// Host CPUs the VMs of a scenario with [[vm]] tables share (instead of its [host]
    /// table's).
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cpus: Option<u32>,
    /// The measured window of a scenario with [[vm]] tables, in seconds (instead of its
    /// [host] table's).
    #[arg(long, value_name = "SECONDS", value_parser = harness::parse_timeout)]
    pub duration: Option<f64>,
    /// Run K copies of every --workload job at once, as VMs sharing the host (with
    /// --scheduler, --cpus, --duration).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub vms: Option<u32>,
    /// Switch Linux KSM on while VMs run at once, and mark their RAM mergeable.
    #[arg(long)]
    pub ksm: bool,
    /// A budget for all VMs' RAM, in MiB, split evenly: each VM's host swapping keeps at
    /// most its part resident.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1048576))]
    pub memory_budget_mib: Option<u64>,
    /// Save this run's results as the baseline NAME (virtlab-out/baselines/NAME.json).
    #[arg(long, value_name = "NAME")]
    pub save_baseline: Option<String>,
    /// Compare this run with the baseline NAME (or a results.json path) and exit with
    /// status 3 when a count changed or a cost regressed beyond --threshold.
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
    /// With --baseline: the percentage a cost (median wall time, time per operation) may
    /// grow before it is a regression (it must also grow beyond its own noise).
    #[arg(long, value_name = "PCT", default_value_t = 20.0, value_parser = parse_threshold)]
    pub threshold: f64,
}

/// A percentage in [0, 1000], with or without `%`.
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
pub struct GuestBinArgs {
    /// A flat binary to use instead of a workload.
    #[arg(long, value_name = "FILE")]
    pub guest_bin: Option<PathBuf>,
    /// Load address of --guest-bin.
    #[arg(long, value_parser = parse_addr, default_value = "0x100000", requires = "guest_bin")]
    pub load: u64,
    /// Entry point of --guest-bin (default: the load address).
    #[arg(long, value_parser = parse_addr, requires = "guest_bin")]
    pub entry: Option<u64>,
    /// Initial stack pointer of --guest-bin.
    #[arg(long, value_parser = parse_addr, default_value = "0x100000", requires = "guest_bin")]
    pub stack: u64,
}

impl GuestBinArgs {
    /// The image of --guest-bin, if one was given; an unreadable file (or one that is not
    /// a regular file, or larger than guest RAM) or an image that breaks the guest ABI is
    /// the user's input error, as a message.
    pub fn image(&self) -> std::result::Result<Option<GuestImage>, String> {
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

/// An address, decimal or 0x-hex, `_` allowed between digits.
fn parse_addr(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.replace('_', "").parse(),
    };
    r.map_err(|e| format!("`{s}` is not an address (decimal or 0x-hex): {e}"))
}

/// `on` or `off`, as a switch.
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{s}`: expected `on` or `off`")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn modes_are_typed_on_the_command_line() {
        let cli = Cli::try_parse_from([
            "virtlab",
            "run",
            "-w",
            "pio",
            "-m",
            "paravirt",
            "--mode",
            "hw-assisted",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(args.modes, [Mode::Paravirt, Mode::HwAssisted]);
        let cli =
            Cli::try_parse_from(["virtlab", "trace", "-w", "pio", "-m", "trap-emulate"]).unwrap();
        let Command::Trace(args) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(args.mode, Mode::TrapEmulate);
    }

    #[test]
    fn an_unknown_mode_is_refused_naming_the_known_ones() {
        for args in [
            &["virtlab", "run", "-m", "warp"][..],
            &["virtlab", "trace", "-w", "pio", "-m", "warp"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(
                msg.contains(
                    "unknown mode `warp` (known modes: hw-assisted, trap-emulate, binary-translation, paravirt)"
                ),
                "{msg}"
            );
        }
    }
}
