//! `virtlab report`: a results.json as a self-contained HTML page; several, as a page
//! comparing them.

use std::process::ExitCode;

use anyhow::Result;

use super::{comparison, load_all_results};
use crate::cli::ReportArgs;

/// Writes the page (and its charts beside it).
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let loaded = load_all_results(&args.results)?;
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
