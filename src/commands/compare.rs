//! `virtlab compare`: two or more results.json side by side, against the first.

use std::process::ExitCode;

use anyhow::Result;

use super::{comparison, load_all_results};
use crate::cli::CompareArgs;

/// Prints the comparison (and writes it as a page with `--html`).
pub fn compare(args: CompareArgs, color: bool) -> Result<ExitCode> {
    let loaded = load_all_results(&args.results)?;
    let c = comparison(&args.results, &loaded);
    print!("{}", reports::compare::term::render(&c, color));
    if let Some(path) = &args.html {
        reports::write_compare_html(path, &c)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
