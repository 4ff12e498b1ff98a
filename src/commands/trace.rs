//! `virtlab trace`: one run stepped through an exit, trap or hypercall at a time.

use std::process::ExitCode;

use anyhow::Result;
use contract::{Engine, GuestImage};
use virtlab::engines;

use super::usage;
use crate::cli::TraceArgs;

/// Runs the guest once with tracing on and prints the events (as JSON with `--json`).
pub fn trace(args: TraceArgs) -> Result<ExitCode> {
    let mode = args.mode;
    let engine = engines::for_mode(mode)
        .ok_or_else(|| usage(format!("mode `{mode}` is not available in this build")))?;
    if args.b == 0 {
        return Err(usage("-b must be at least 1"));
    }
    let image = image(&args, engine)?;
    let mut opts = contract::RunOptions::default();
    opts.limits.trace_events = args.limit;
    opts.cpuid_faulting = !args.no_cpuid_faulting;
    opts.umip = args.umip;
    opts.shadow_cache = args.shadow_cache;
    let mut record = engine.run(&image, &opts)?;
    image.judge(&mut record);
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

/// The guest to trace: the workload in the engine's flavour, or the user's binary.
fn image(args: &TraceArgs, engine: &dyn Engine) -> Result<GuestImage> {
    let bin = args.bin.image().map_err(usage)?;
    match (&args.workload, bin) {
        (Some(name), None) => {
            let w = guests::find(name).map_err(usage)?;
            let params = guests::Params {
                n: args.n,
                b: args.b,
                ..guests::Params::default()
            };
            w.image(engine.flavour(), params).map_err(usage)
        }
        (None, Some(img)) => Ok(img),
        _ => Err(usage("give exactly one of --workload or --guest-bin")),
    }
}
