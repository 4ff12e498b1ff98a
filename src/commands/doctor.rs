//! `virtlab doctor`: the host checked (/dev/kvm, permissions, API version, backend,
//! every capability measured with a tiny guest), with what each finding means.

use std::process::ExitCode;

use anyhow::Result;
use virtlab::engines;

use crate::cli::DoctorArgs;

/// Prints every check (as JSON with `--json`); fails only when nothing can run here.
pub fn doctor(args: &DoctorArgs) -> Result<ExitCode> {
    let checks = machine::host::doctor();
    // Every engine runs on the same KVM machine: the host decides for all of them.
    let host = machine::host::probe()
        .map(|_| ())
        .map_err(|e| e.to_string());
    let engines_ok: Vec<_> = engines::modes()
        .into_iter()
        .map(|mode| (mode, host.clone()))
        .collect();
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
    Ok(if blocked {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
