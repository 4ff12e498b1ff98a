//! One module per subcommand, named after it, and what they share: how bad input is
//! refused, and how results files are read.

use std::path::{Path, PathBuf};

pub mod compare;
pub mod doctor;
pub mod explain;
pub mod list;
pub mod report;
pub mod run;
pub mod trace;

/// Status for bad command-line input.
pub const USAGE_ERROR: u8 = 2;

/// Bad command-line input (an unknown name, a value out of range, a file that cannot be
/// used): reported as `error: …` with status [`USAGE_ERROR`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// `e` as bad command-line input.
pub fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    Usage(e.to_string()).into()
}

/// Reads a results.json for `report` and `compare`; a results.csv, a page or a file
/// that does not parse is the user's input error.
pub fn load_results(path: &Path) -> anyhow::Result<reports::Report> {
    let bytes =
        virtlab::input::read_bounded(path, virtlab::input::MAX_RESULTS_BYTES, "a results.json")
            .map_err(usage)?;
    reports::Report::parse(path, &bytes).map_err(usage)
}

/// Every results.json of `paths`, in order; the first that cannot be read is the error.
pub fn load_all_results(paths: &[PathBuf]) -> anyhow::Result<Vec<reports::Report>> {
    paths.iter().map(|p| load_results(p)).collect()
}

/// The comparison of results files, each named by its path.
pub fn comparison(paths: &[PathBuf], loaded: &[reports::Report]) -> reports::compare::Comparison {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let inputs: Vec<reports::compare::Input> = names
        .iter()
        .zip(loaded)
        .map(|(n, r)| reports::compare::Input::new(n, r))
        .collect();
    reports::compare::Comparison::new(&inputs)
}
