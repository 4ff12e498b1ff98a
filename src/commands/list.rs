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
    Ok(ExitCode::SUCCESS)
}
