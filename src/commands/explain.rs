//! `virtlab explain`: a guest decoded and its instructions sorted as trap-and-emulate sees
//! them: privileged (they trap), sensitive but unprivileged (the x86 hole), innocuous; or,
//! with `--mode binary-translation`, each guest basic block beside its translation.

use std::process::ExitCode;

use anyhow::Result;
use binary_translation::translate::explain as bt;
use contract::{GuestImage, Mode};

use super::usage;
use crate::cli::ExplainArgs;

/// Prints the classification (as JSON with `--json`), with a note for every option this
/// host cannot honour.
pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let image = image(&args)?;
    match args.mode.unwrap_or(Mode::TrapEmulate) {
        Mode::TrapEmulate => {}
        Mode::BinaryTranslation => return translation(&image, args.json),
        m => {
            return Err(usage(format!(
                "explain shows what trap-emulate or binary-translation does with a guest's \
                 code; {m} runs it {}",
                if m == Mode::HwAssisted {
                    "unchanged at CPL 0 (`virtlab trace -m hw-assisted` shows its exits)"
                } else {
                    "as a paravirtual build that asks by hypercall (`virtlab trace -m \
                     paravirt` shows them)"
                }
            )))
        }
    }
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

/// Each guest block beside its translation (as JSON with `--json`).
fn translation(image: &GuestImage, json: bool) -> Result<ExitCode> {
    let e = bt::explain(image)
        .map_err(|e| usage(format!("{}: cannot be translated: {e}", image.name)))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&e))?);
    } else {
        print!("{e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The explanation as JSON, addresses as numbers.
fn to_json(e: &bt::Explanation) -> serde_json::Value {
    use serde_json::json;
    let s = e.stats();
    json!({
        "image": e.image,
        "entry": e.entry,
        "lookup_routine": { "at": e.lookup.0, "bytes": e.lookup.1 },
        "blocks": e.blocks.iter().map(|b| json!({
            "guest": b.guest,
            "guest_end": b.guest_end,
            "tc": b.tc,
            "tc_bytes": b.tc_len,
            "instructions": b.lines.iter().map(|l| json!({
                "guest": l.guest,
                "instruction": l.text,
                "kind": l.kind.name(),
                "callout": l.callout,
                "targets": l.targets,
                "tc": l.tc,
                "translation": l.translation,
            })).collect::<Vec<_>>(),
            "fall_through": b.fall_through,
            "stubs": b.stubs.iter().map(|st| json!({ "tc": st.tc, "target": st.target }))
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "counts": {
            "copied": s.copied,
            "inline": s.inline,
            "callout sites": s.callouts,
            "branches": s.branches,
        },
        "outside_the_image": e.outside,
        "cut": e.cut,
    })
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
