//! `virtlab list`: the workloads of the catalog and the modes this host can run.

use std::process::ExitCode;

use anyhow::Result;
use contract::Mode;
use virtlab::engines;

/// Prints the workloads (with their default and largest N) and each mode's status here.
pub fn list() -> Result<ExitCode> {
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
    // Every engine runs on the same KVM machine: the host decides for all of them.
    let host = machine::host::probe();
    for mode in Mode::ALL {
        let status = match (engines::for_mode(mode), &host) {
            (None, _) => "not in this build".to_string(),
            (Some(_), Ok(h)) => format!("runs here (backend {})", h.backend),
            (Some(_), Err(err)) => format!("cannot run here: {err}"),
        };
        println!("  {:12}  {status}", mode.name());
    }
    Ok(ExitCode::SUCCESS)
}
