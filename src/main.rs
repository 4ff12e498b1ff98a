//! The `virtlab` command: the flags are in [`cli`], each subcommand in
//! [`commands`] under its own name.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;

use cli::{Cli, Command};
use commands::{Usage, USAGE_ERROR};

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
        Command::Run(args) => commands::run::run(*args, cli.color.enabled()),
        Command::List => commands::list::list(),
        Command::Doctor(args) => commands::doctor::doctor(&args),
        Command::Trace(args) => commands::trace::trace(args),
        Command::Report(args) => commands::report::report(args),
        Command::Compare(args) => commands::compare::compare(args, cli.color.enabled()),
        Command::Explain(args) => commands::explain::explain(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if e.is::<Usage>() => {
            eprintln!("error: {e}");
            ExitCode::from(USAGE_ERROR)
        }
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

/// Logs to stderr at the level `-v` asks for; RUST_LOG overrides.
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
