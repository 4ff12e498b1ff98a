//! Scenario files: TOML descriptions of what to run (workloads with N and B, single values
//! or lists to sweep, modes, repeats, warm-up runs), turned into harness jobs.

use std::fmt;
use std::path::Path;

use guests::Params;
use modes::Mode;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::engines;
use crate::harness::{Guest, Job, DEFAULT_B};

/// The default scenario `virtlab run` uses, embedded in the binary.
pub const CLASSROOM: &str = include_str!("../scenarios/classroom.toml");

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Modes to run (default: every mode this build has).
    #[serde(default)]
    pub modes: Option<Vec<String>>,
    /// Measured repeats of every run.
    #[serde(default = "one")]
    pub repeats: u32,
    /// Warm-up runs before the measured ones, discarded.
    #[serde(default)]
    pub warmup: u32,
    /// Wall-clock limit per run, in seconds.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// The workloads.
    #[serde(rename = "workload")]
    pub workloads: Vec<WorkloadEntry>,
}

fn one() -> u32 {
    1
}

/// One `[[workload]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntry {
    /// Workload name from the catalog.
    pub name: String,
    /// Iterations: a number or a list to sweep (default: the workload's own).
    #[serde(default)]
    pub n: Option<Values>,
    /// Batch sizes: a number or a list to sweep.
    #[serde(default)]
    pub b: Option<Values>,
    /// Timer delay in µs (hlt-timer).
    #[serde(default)]
    pub delay_us: Option<u32>,
    /// Listed for completeness but not in the catalog yet: reported as missing, not run.
    #[serde(default)]
    pub planned: bool,
    /// A remark shown with the results (for example what this workload stands for).
    #[serde(default)]
    pub note: Option<String>,
}

impl WorkloadEntry {
    /// Every (N, B) combination of this entry, with the workload's defaults where unset.
    pub fn combinations(&self, workload: &guests::Workload) -> Vec<Params> {
        let ns = self
            .n
            .as_ref()
            .map_or(vec![workload.default_n], |v| v.0.clone());
        let bs = self.b.as_ref().map_or(vec![DEFAULT_B], |v| v.0.clone());
        let delay_us = self.delay_us.unwrap_or(0);
        ns.iter()
            .flat_map(|&n| bs.iter().map(move |&b| Params { n, b, delay_us }))
            .collect()
    }
}

/// One number or a list of numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values(pub Vec<u64>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or a list of them")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Values, E> {
                u64::try_from(v)
                    .map(|v| Values(vec![v]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Values, E> {
                Ok(Values(vec![v]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<u64>()? {
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(Values(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// File.
        file: String,
        /// Error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or does not fit the schema.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// File.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was expected.
        message: String,
    },
    /// The content is well-formed but wrong (unknown workload or mode, bad value).
    #[error("{file}: {message}")]
    Invalid {
        /// File.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, column)
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and checks scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |sp| line_col(text, sp.start));
            ScenarioError::Parse {
                file: file.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        s.check(file)?;
        Ok(s)
    }

    fn check(&self, file: &str) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            file: file.to_string(),
            message,
        };
        for m in self.modes.iter().flatten() {
            m.parse::<Mode>().map_err(|e| invalid(e.to_string()))?;
        }
        if self.workloads.is_empty() {
            return Err(invalid("no [[workload]] tables".into()));
        }
        if self.repeats == 0 || self.repeats > 1000 {
            return Err(invalid("repeats must be between 1 and 1000".into()));
        }
        if self.warmup > 1000 {
            return Err(invalid("warmup must be at most 1000".into()));
        }
        for w in &self.workloads {
            if w.planned {
                continue;
            }
            guests::find(&w.name).map_err(|e| {
                invalid(format!(
                    "{e} (mark a workload that does not exist yet with `planned = true`)"
                ))
            })?;
            if w.b.as_ref().is_some_and(|b| b.0.contains(&0)) {
                return Err(invalid(format!(
                    "workload `{}`: b must be at least 1",
                    w.name
                )));
            }
            if w.n
                .as_ref()
                .is_some_and(|n| n.0.iter().any(|n| *n > guests::MAX_N))
            {
                return Err(invalid(format!(
                    "workload `{}`: n is larger than {}",
                    w.name,
                    guests::MAX_N
                )));
            }
            // Every flavour must accept every combination (the paravirtual one bounds B).
            let wl = guests::find(&w.name).map_err(|e| invalid(e.to_string()))?;
            for params in w.combinations(wl) {
                for flavour in [modes::Flavour::Native, modes::Flavour::Paravirt] {
                    wl.image(flavour, params)
                        .map_err(|e| invalid(e.to_string()))?;
                }
            }
        }
        if self.timeout_s.is_some_and(|t| !(t > 0.0 && t < 86_400.0)) {
            return Err(invalid(
                "timeout_s must be between 0 and 86400 seconds".into(),
            ));
        }
        Ok(())
    }

    /// The modes to run: the listed ones (in report order) or every mode of this build.
    pub fn modes(&self) -> Vec<Mode> {
        match &self.modes {
            None => engines::modes(),
            Some(list) => {
                let mut m: Vec<Mode> = list.iter().filter_map(|s| s.parse().ok()).collect();
                m.sort();
                m.dedup();
                m
            }
        }
    }

    /// Workloads listed as planned, which this scenario cannot run yet.
    pub fn planned(&self) -> Vec<&WorkloadEntry> {
        self.workloads.iter().filter(|w| w.planned).collect()
    }

    /// Every job: the warm-up rounds (flagged, to be discarded), then the measured repeats,
    /// each round covering workloads × N × B × modes.
    pub fn jobs(&self) -> Vec<Job> {
        let mut per_round = Vec::new();
        for w in self.workloads.iter().filter(|w| !w.planned) {
            let Ok(wl) = guests::find(&w.name) else {
                continue;
            };
            for params in w.combinations(wl) {
                for mode in self.modes() {
                    per_round.push((Guest::Workload(wl, params), mode));
                }
            }
        }
        let mut jobs = Vec::new();
        for round in 0..self.warmup + self.repeats {
            let warmup = round < self.warmup;
            let repeat = if warmup { round } else { round - self.warmup };
            jobs.extend(per_round.iter().map(|(g, m)| Job {
                guest: g.clone(),
                mode: *m,
                repeat,
                warmup,
            }));
        }
        jobs
    }

    /// The notes of the workload entries, by workload name.
    pub fn notes(&self) -> Vec<(String, String)> {
        self.workloads
            .iter()
            .filter_map(|w| w.note.clone().map(|n| (w.name.clone(), n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
description = "test"
repeats = 2
warmup = 1
modes = ["hw-assisted"]

[[workload]]
name = "pio"
n = [10, 20]
b = [1, 4]

[[workload]]
name = "syscall"
planned = true
"#;

    #[test]
    fn parses_sweeps_repeats_and_warmups() {
        let s = Scenario::parse(GOOD, "t.toml").unwrap();
        let jobs = s.jobs();
        // (1 warm-up + 2 repeats) × 2 N × 2 B × 1 mode
        assert_eq!(jobs.len(), 12);
        assert_eq!(jobs.iter().filter(|j| j.warmup).count(), 4);
        assert_eq!(
            jobs.iter().filter(|j| !j.warmup && j.repeat == 1).count(),
            4
        );
        assert_eq!(s.planned().len(), 1);
        assert_eq!(s.planned()[0].name, "syscall");
    }

    #[test]
    fn a_typo_in_a_key_names_file_line_and_column() {
        let text = "name = \"t\"\ndescription = \"d\"\n[[workload]]\nname = \"pio\"\nnn = 5\n";
        let e = Scenario::parse(text, "bad.toml").unwrap_err();
        match &e {
            ScenarioError::Parse {
                file,
                line,
                column,
                message,
            } => {
                assert_eq!(file, "bad.toml");
                assert_eq!((*line, *column), (5, 1));
                assert!(message.contains("unknown field `nn`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("bad.toml:5:1: "), "{e}");
    }

    #[test]
    fn a_string_where_a_number_belongs_is_located() {
        let text =
            "name = \"t\"\ndescription = \"d\"\n[[workload]]\nname = \"pio\"\nn = \"many\"\n";
        let e = Scenario::parse(text, "bad.toml").unwrap_err();
        let ScenarioError::Parse {
            line,
            column,
            message,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!((*line, *column), (5, 5));
        assert!(
            message.contains("a non-negative integer or a list of them"),
            "{message}"
        );
    }

    #[test]
    fn unknown_workloads_and_modes_list_the_known_ones() {
        let e = Scenario::parse(
            "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"warp\"\n",
            "x.toml",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("unknown workload `warp`")
                && msg.contains("pio")
                && msg.contains("call-ret"),
            "{msg}"
        );
        let e = Scenario::parse(
            "name=\"t\"\ndescription=\"d\"\nmodes=[\"fast\"]\n[[workload]]\nname=\"pio\"\n",
            "x.toml",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("unknown mode `fast`") && msg.contains("trap-emulate"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, what) in [
            (
                "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nb=0\n",
                "b must be at least 1",
            ),
            (
                "name=\"t\"\ndescription=\"d\"\nrepeats=0\n[[workload]]\nname=\"pio\"\n",
                "repeats",
            ),
            (
                "name=\"t\"\ndescription=\"d\"\nworkload=[]\n",
                "no [[workload]]",
            ),
            (
                "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nn=-3\n",
                "non-negative",
            ),
            (
                "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nn=[]\n",
                "list",
            ),
            (
                "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nb=[4, 4096]\n",
                "4096",
            ),
        ] {
            let e = Scenario::parse(text, "x.toml").unwrap_err().to_string();
            assert!(e.contains(what), "{text}: {e}");
        }
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
