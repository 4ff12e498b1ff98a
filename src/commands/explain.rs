//! `virtlab explain`: a guest decoded and its instructions sorted as trap-and-emulate sees
//! them: privileged (they trap), sensitive but unprivileged (the x86 hole), innocuous.

use std::process::ExitCode;

use anyhow::Result;
use contract::GuestImage;

use super::usage;
use crate::cli::ExplainArgs;

/// Prints the classification (as JSON with `--json`), with a note for every option this
/// host cannot honour.
pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let image = image(&args)?;
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

/// The guest to explain: the workload (native flavour) or the user's binary.
fn image(args: &ExplainArgs) -> Result<GuestImage> {
    let bin = args.bin.image().map_err(usage)?;
    match (&args.workload, bin) {
        (Some(name), None) => {
            let params = guests::Params {
                n: args.n,
                ..Default::default()
            };
            guests::build(name, contract::Flavour::Native, params).map_err(usage)
        }
        (None, Some(img)) => Ok(img),
        _ => Err(usage("give exactly one of --workload or --guest-bin")),
    }
}
