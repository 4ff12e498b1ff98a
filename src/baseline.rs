//! Baselines: a run's results saved under a name (`run --save-baseline NAME`) and later
//! runs checked against them (`run --baseline NAME`), as criterion keeps its baselines.
//!
//! A baseline is the `results.json` of the run that saved it, stored as
//! `virtlab-out/baselines/NAME.json` under the current directory. `--baseline` also takes
//! the path of any `results.json` (a name with a `/` or ending in `.json`).

use std::path::{Path, PathBuf};

use crate::input;
use crate::output::DEFAULT_BASE;

/// The directory baselines are kept in, under the current directory.
pub fn dir() -> PathBuf {
    Path::new(DEFAULT_BASE).join("baselines")
}

/// Why a baseline cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The name cannot be a file name.
    #[error(
        "`{0}` is not a baseline name: use letters, digits, `.`, `_` and `-` (not starting \
         with `.`), at most 64 of them"
    )]
    BadName(String),
    /// No baseline by that name.
    #[error("no baseline `{name}` ({} does not exist); save one with `virtlab run --save-baseline {name}`", path.display())]
    Missing {
        /// The name asked for.
        name: String,
        /// Where it would be.
        path: PathBuf,
    },
    /// It could not be read.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// It is not results virtlab can read.
    #[error(transparent)]
    Report(#[from] reports::Error),
}

/// Whether `name` may name a baseline file.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Where the baseline `name` is stored; a path (with a `/`, or ending in `.json`) is
/// itself.
pub fn path_of(name: &str) -> Result<PathBuf, BaselineError> {
    if name.contains('/') || name.ends_with(".json") {
        return Ok(PathBuf::from(name));
    }
    if !valid_name(name) {
        return Err(BaselineError::BadName(name.to_string()));
    }
    Ok(dir().join(format!("{name}.json")))
}

/// Reads the baseline `name`.
pub fn load(name: &str) -> Result<reports::Report, BaselineError> {
    let path = path_of(name)?;
    if !path.exists() {
        return Err(BaselineError::Missing {
            name: name.to_string(),
            path,
        });
    }
    let bytes = input::read_bounded(&path, input::MAX_RESULTS_BYTES, "a results.json")?;
    Ok(reports::Report::parse(&path, &bytes)?)
}

/// Saves `report` as the baseline `name` (replacing one of that name whole) and returns
/// where.
pub fn save(name: &str, report: &reports::Report) -> Result<PathBuf, BaselineError> {
    if !valid_name(name) {
        return Err(BaselineError::BadName(name.to_string()));
    }
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|error| reports::Error::Io {
        path: dir.clone(),
        error,
    })?;
    let path = dir.join(format!("{name}.json"));
    let json = serde_json::to_vec_pretty(report).map_err(reports::Error::from)?;
    reports::write_atomically(&path, &json)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(valid_name("main"));
        assert!(valid_name("v1.2_intel-x"));
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(
            path_of("main").unwrap(),
            Path::new("virtlab-out/baselines/main.json")
        );
        assert_eq!(
            path_of("/tmp/r/results.json").unwrap(),
            Path::new("/tmp/r/results.json")
        );
        assert!(matches!(path_of("a b"), Err(BaselineError::BadName(_))));
    }
}
