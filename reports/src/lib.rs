//! virtlab's outputs from a set of [`RunRecord`]s: a side-by-side terminal table, tidy
//! CSV (one observation per row), JSON of the full records and a self-contained HTML
//! report with charts.
//!
//! ```
//! use reports::{Report, CSV_HEADER};
//!
//! let report = Report::new(Vec::new(), Vec::new());
//! let mut csv = Vec::new();
//! reports::csv::write(&report.records, &mut csv)?;
//! assert_eq!(String::from_utf8(csv).unwrap().trim_end(), CSV_HEADER);
//! # Ok::<(), reports::Error>(())
//! ```

pub mod compare;
pub mod csv;
pub mod digest;
pub mod format;
pub mod html;
pub mod paper;
pub mod sentences;
pub mod stats;
pub mod table;
#[cfg(test)]
mod testdata;
pub mod verdict;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use contract::RunRecord;
use serde::{Deserialize, Serialize};

pub use crate::csv::CSV_HEADER;
// Failures are the harness's, in the contract; they stay reachable where reports read them.
pub use contract::RunFailure;

/// Something went wrong writing or reading a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system error, with the path.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said (part of the message, so not a `source` printed again).
        error: io::Error,
    },
    /// CSV encoding failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] ::csv::Error),
    /// JSON encoding or decoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A file that is not a `results.json` (a `results.csv`, a report page, …).
    #[error("{}: {why}; give the results.json that `virtlab run` wrote beside it", path.display())]
    NotResults {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        why: &'static str,
    },
    /// A `results.json` that does not parse.
    #[error("{}: not a results.json that virtlab can read ({error})", path.display())]
    BadResults {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        error: serde_json::Error,
    },
}

/// Result of report operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything one invocation produced, as written to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `virtlab`.
    pub tool: String,
    /// Tool version.
    pub version: String,
    /// Git revision the tool was built from, if known.
    pub git_revision: Option<String>,
    /// Seconds since the Unix epoch when the report was made.
    pub created_unix: u64,
    /// The invocation was stopped (Ctrl-C) before every planned run was made: the
    /// records are the runs that finished.
    #[serde(default)]
    pub interrupted: bool,
    /// Every completed run, in order.
    pub records: Vec<RunRecord>,
    /// Runs the VMM could not carry out.
    pub failures: Vec<RunFailure>,
    /// The host-level record, when several VMs ran at once (absent otherwise, so a
    /// single-VM run's results are as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<contract::HostRecord>,
}

impl Report {
    /// A report of these records and failures, stamped now.
    pub fn new(records: Vec<RunRecord>, failures: Vec<RunFailure>) -> Self {
        let git_revision = records.first().and_then(|r| r.host.git_revision.clone());
        Report {
            tool: "virtlab".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_revision,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            interrupted: false,
            records,
            failures,
            host: None,
        }
    }

    /// Reads a `results.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|error| Error::Io {
            path: path.into(),
            error,
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses the contents of a `results.json` read from `path`; a `results.csv` or an
    /// HTML page given instead is named as such.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]);
        let head = head.trim_start();
        let why = if head.starts_with(CSV_HEADER) || head.starts_with("workload,mode,") {
            Some("this is a results.csv (one observation per row)")
        } else if head.starts_with('<') {
            Some("this is an HTML page, not results")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::NotResults {
                path: path.into(),
                why,
            });
        }
        serde_json::from_slice(bytes).map_err(|error| Error::BadResults {
            path: path.into(),
            error,
        })
    }

    /// Writes `results.csv` and `results.json` into `dir` (created if needed) and returns
    /// their paths. Each file is written under a temporary name and renamed into place, so
    /// a reader never sees half of one.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(dir).map_err(|error| Error::Io {
            path: dir.into(),
            error,
        })?;
        let csv_path = dir.join("results.csv");
        let mut csv = Vec::new();
        csv::write(&self.records, &mut csv)?;
        if let Some(host) = &self.host {
            csv::write_host(host, &mut csv)?;
        }
        write_atomically(&csv_path, &csv)?;
        let json_path = dir.join("results.json");
        write_atomically(&json_path, serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(vec![csv_path, json_path])
    }

    /// Writes the HTML report to `dir/report.html` and each chart as `dir/chart-….svg`
    /// (the directory is created if needed) and returns the page's path.
    pub fn write_html(&self, dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dir).map_err(|error| Error::Io {
            path: dir.into(),
            error,
        })?;
        let path = dir.join("report.html");
        self.write_html_file(&path)?;
        Ok(path)
    }

    /// Writes the HTML report to exactly `path` (for `virtlab report … -o FILE.html`) and
    /// its charts as SVG files beside it, each under a temporary name first and renamed
    /// into place. Returns the chart files.
    pub fn write_html_file(&self, path: &Path) -> Result<Vec<PathBuf>> {
        write_page(path, &html::page(self))
    }
}

/// Writes a page to `path` and its charts as `ID.svg` beside it; returns the chart files.
pub fn write_page(path: &Path, page: &html::Page) -> Result<Vec<PathBuf>> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut files = Vec::new();
    for c in &page.charts {
        let file = dir.map_or_else(
            || PathBuf::from(format!("{}.svg", c.id)),
            |d| d.join(format!("{}.svg", c.id)),
        );
        write_atomically(&file, c.svg.as_bytes())?;
        files.push(file);
    }
    write_atomically(path, page.html.as_bytes())?;
    Ok(files)
}

/// Writes the comparison of `c` as a page to `path`, with its charts beside it.
pub fn write_compare_html(path: &Path, c: &compare::Comparison) -> Result<Vec<PathBuf>> {
    write_page(path, &html::compare::page(c))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it to `path`: the file
/// at `path` is the old one or the new one, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let io_err = |p: &Path| {
        let path = p.to_path_buf();
        move |error| Error::Io { path, error }
    };
    fs::write(&tmp, bytes).map_err(io_err(path))?;
    fs::rename(&tmp, path).map_err(|error| {
        let _ = fs::remove_file(&tmp);
        Error::Io {
            path: path.into(),
            error,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{CountKey, ExitKind, Mode};

    const FIXTURE: &str = include_str!("../tests/data/hw-assisted-kvm-pvm.json");

    #[test]
    fn a_results_json_loads_with_typed_keys() {
        let report = Report::parse(Path::new("r.json"), FIXTURE.as_bytes()).unwrap();
        let pio = &report.records[1];
        assert_eq!(
            pio.expected.keys().cloned().collect::<Vec<_>>(),
            [
                CountKey::Exits(ExitKind::IoOut),
                CountKey::PortWrites(0xe9),
                CountKey::PortWrites(0xf4)
            ]
        );
    }

    #[test]
    fn a_results_json_with_an_unknown_counter_or_mode_is_refused_with_its_name() {
        for (from, to, said) in [
            (
                "\"exits:IoOut\":201",
                "\"exits:IoOutt\":201",
                "unknown counter `exits:IoOutt`: no such exit kind",
            ),
            (
                "\"port_writes:0xe9\":200",
                "\"port_writes:e9\":200",
                "unknown counter `port_writes:e9`: a port is written 0x",
            ),
            (
                "\"failures\":[]",
                "\"failures\":[{\"workload\":\"pio\",\"mode\":\"xen\",\"repeat\":0,\"error\":\"e\"}]",
                "unknown variant `xen`",
            ),
        ] {
            let json = FIXTURE.replacen(from, to, 1);
            assert_ne!(json, FIXTURE, "{from}");
            let err = Report::parse(Path::new("r.json"), json.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::BadResults { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.starts_with("r.json: not a results.json that virtlab can read (")
                    && msg.contains(said),
                "{msg}"
            );
        }
        let json = FIXTURE.replacen(
            "\"failures\":[]",
            "\"failures\":[{\"workload\":\"pio\",\"mode\":\"paravirt\",\"repeat\":0,\"error\":\"e\"}]",
            1,
        );
        let report = Report::parse(Path::new("r.json"), json.as_bytes()).unwrap();
        assert_eq!(report.failures[0].mode, Mode::Paravirt);
    }
}
