//! Scenario files: TOML descriptions of what to run (workloads with N and B, single values
//! or lists to sweep, modes, repeats, warm-up runs), turned into harness jobs.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use contract::Mode;
use guests::Params;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::engines;
use crate::harness::{Guest, Job, DEFAULT_B, MAX_RUNS};
use crate::input::{self, InputError};

/// The default scenario `virtlab run` uses, embedded in the binary.
pub const CLASSROOM: &str = include_str!("../scenarios/classroom.toml");

/// A scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Modes to run (default: every mode this build has).
    pub modes: Option<Vec<String>>,
    /// Measured repeats of every run.
    pub repeats: u32,
    /// Warm-up runs before the measured ones, discarded.
    pub warmup: u32,
    /// Wall-clock limit per run, in seconds.
    pub timeout_s: Option<f64>,
    /// The workloads.
    pub workloads: Vec<WorkloadEntry>,
}

/// One `[[workload]]` table.
#[derive(Debug, Clone)]
pub struct WorkloadEntry {
    /// Workload name from the catalog.
    pub name: String,
    /// Iterations: a number or a list to sweep (default: the workload's own).
    pub n: Option<Values>,
    /// Batch sizes: a number or a list to sweep.
    pub b: Option<Values>,
    /// Timer delay in µs (hlt-timer).
    pub delay_us: Option<u32>,
    /// Listed for completeness but not in the catalog yet: reported as missing, not run.
    pub planned: bool,
    /// A remark shown with the results (for example what this workload stands for).
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

/// The scenario as written, with the position of every value a check may refuse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    description: String,
    #[serde(default)]
    modes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    repeats: Option<Spanned<u32>>,
    #[serde(default)]
    warmup: Option<Spanned<u32>>,
    #[serde(default)]
    timeout_s: Option<Spanned<f64>>,
    #[serde(rename = "workload")]
    workloads: Spanned<Vec<RawWorkload>>,
}

/// One `[[workload]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Spanned<String>,
    #[serde(default)]
    n: Option<Spanned<RawValues>>,
    #[serde(default)]
    b: Option<Spanned<RawValues>>,
    #[serde(default)]
    delay_us: Option<u32>,
    #[serde(default)]
    planned: bool,
    #[serde(default)]
    note: Option<String>,
}

/// One number, or a list of numbers each with its own position.
#[derive(Debug)]
enum RawValues {
    One(u64),
    Many(Vec<Spanned<Count>>),
}

/// Every value of `v` with the position to blame it on.
fn items(v: &Spanned<RawValues>) -> Vec<(u64, Range<usize>)> {
    match v.get_ref() {
        RawValues::One(one) => vec![(*one, v.span())],
        RawValues::Many(list) => list.iter().map(|x| (x.get_ref().0, x.span())).collect(),
    }
}

fn values(v: &Spanned<RawValues>) -> Values {
    Values(items(v).into_iter().map(|(x, _)| x).collect())
}

const NUMBERS: &str = "a non-negative integer or a list of them";

impl<'de> Deserialize<'de> for RawValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(NUMBERS)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValues, E> {
                u64::try_from(v)
                    .map(RawValues::One)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValues, E> {
                Ok(RawValues::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValues, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Spanned<Count>>()? {
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(RawValues::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One non-negative integer of a list.
#[derive(Debug)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read (missing, not a regular file, too large).
    #[error(transparent)]
    Read(#[from] InputError),
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
    /// The content is well-formed but wrong (unknown workload or mode, a value out of
    /// range), located at the value.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// File.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, column)
}

impl Scenario {
    /// Reads and checks a scenario file (a regular file of at most
    /// [`input::MAX_SCENARIO_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let bytes = input::read_bounded(path, input::MAX_SCENARIO_BYTES, "a scenario file")?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            let (line, column) = line_col(&text, valid);
            ScenarioError::Parse {
                file: file.clone(),
                line,
                column,
                message: "the file is not UTF-8 text".into(),
            }
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and checks scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |sp| line_col(text, sp.start));
            ScenarioError::Parse {
                file: file.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let at = |span: Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            ScenarioError::Invalid {
                file: file.to_string(),
                line,
                column,
                message,
            }
        };
        raw.check(at)?;
        Ok(raw.into_scenario())
    }
}

impl RawScenario {
    /// Every check of the content, each error located by `at` at the value it is about.
    fn check(
        &self,
        at: impl Fn(Range<usize>, String) -> ScenarioError,
    ) -> Result<(), ScenarioError> {
        for m in self.modes.iter().flatten() {
            m.get_ref()
                .parse::<Mode>()
                .map_err(|e| at(m.span(), e.to_string()))?;
        }
        if self.workloads.get_ref().is_empty() {
            return Err(at(self.workloads.span(), "no [[workload]] tables".into()));
        }
        if let Some(r) = &self.repeats {
            if !(1..=1000).contains(r.get_ref()) {
                return Err(at(r.span(), "repeats must be between 1 and 1000".into()));
            }
        }
        if let Some(w) = &self.warmup {
            if *w.get_ref() > 1000 {
                return Err(at(w.span(), "warmup must be at most 1000".into()));
            }
        }
        if let Some(t) = &self.timeout_s {
            let t_s = *t.get_ref();
            if !(t_s > 0.0 && t_s <= crate::harness::MAX_TIMEOUT_S) {
                return Err(at(
                    t.span(),
                    format!(
                        "timeout_s must be more than 0 and at most {} seconds",
                        crate::harness::MAX_TIMEOUT_S
                    ),
                ));
            }
        }
        let modes = match &self.modes {
            Some(list) => list.len().max(1),
            None => engines::modes().len(),
        };
        let rounds = self.warmup.as_ref().map_or(0, |w| *w.get_ref() as usize)
            + self.repeats.as_ref().map_or(1, |r| *r.get_ref() as usize);
        let mut runs = 0usize;
        for w in self.workloads.get_ref() {
            if w.planned {
                continue;
            }
            let name = w.name.get_ref();
            let wl = guests::find(name).map_err(|e| {
                at(
                    w.name.span(),
                    format!("{e} (mark a workload that does not exist yet with `planned = true`)"),
                )
            })?;
            let ns = w.n.as_ref().map(items);
            let bs = w.b.as_ref().map(items);
            for (b, span) in bs.iter().flatten() {
                if *b == 0 {
                    return Err(at(
                        span.clone(),
                        format!("workload `{name}`: b must be at least 1"),
                    ));
                }
                let params = Params {
                    n: 0,
                    b: *b,
                    delay_us: 0,
                };
                wl.check(&params)
                    .map_err(|e| at(span.clone(), e.to_string()))?;
            }
            for (n, span) in ns.iter().flatten() {
                let params = Params {
                    n: *n,
                    b: 1,
                    delay_us: 0,
                };
                wl.check(&params)
                    .map_err(|e| at(span.clone(), e.to_string()))?;
            }
            let per_round = ns.as_ref().map_or(1, Vec::len) * bs.as_ref().map_or(1, Vec::len);
            runs = runs.saturating_add(per_round.saturating_mul(modes).saturating_mul(rounds));
            if runs > MAX_RUNS {
                return Err(at(
                    w.name.span(),
                    format!(
                        "with workload `{name}` the scenario makes more than {MAX_RUNS} runs \
                         (the limit; runs are N values × B values × modes × (warm-up + \
                         repeats), summed over the workloads)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn into_scenario(self) -> Scenario {
        Scenario {
            name: self.name,
            description: self.description,
            modes: self
                .modes
                .map(|list| list.into_iter().map(Spanned::into_inner).collect()),
            repeats: self.repeats.map_or(1, Spanned::into_inner),
            warmup: self.warmup.map_or(0, Spanned::into_inner),
            timeout_s: self.timeout_s.map(Spanned::into_inner),
            workloads: self
                .workloads
                .into_inner()
                .into_iter()
                .map(|w| WorkloadEntry {
                    n: w.n.as_ref().map(values),
                    b: w.b.as_ref().map(values),
                    name: w.name.into_inner(),
                    delay_us: w.delay_us,
                    planned: w.planned,
                    note: w.note,
                })
                .collect(),
        }
    }
}

impl Scenario {
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

    /// How many runs [`Scenario::jobs`] makes (warm-ups included), counted without
    /// making them; saturates instead of overflowing.
    pub fn run_count(&self) -> usize {
        let modes = self.modes().len();
        let rounds = self.warmup as usize + self.repeats as usize;
        self.workloads
            .iter()
            .filter(|w| !w.planned)
            .map(|w| {
                let len = |v: &Option<Values>| v.as_ref().map_or(1, |v| v.0.len());
                len(&w.n)
                    .saturating_mul(len(&w.b))
                    .saturating_mul(modes)
                    .saturating_mul(rounds)
            })
            .fold(0usize, usize::saturating_add)
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
    fn every_content_error_names_line_and_column() {
        let head = "name = \"t\"\ndescription = \"d\"\n";
        let pio = "[[workload]]\nname = \"pio\"\n";
        for (body, (line, column), what) in [
            (
                format!("modes = [\"hw-assisted\", \"fast\"]\n{pio}"),
                (3, 25),
                "unknown mode `fast`",
            ),
            ("workload = []\n".into(), (3, 12), "no [[workload]] tables"),
            (
                format!("repeats = 0\n{pio}"),
                (3, 11),
                "repeats must be between 1 and 1000",
            ),
            (
                format!("warmup = 1001\n{pio}"),
                (3, 10),
                "warmup must be at most 1000",
            ),
            (
                format!("timeout_s = -1.0\n{pio}"),
                (3, 13),
                "timeout_s must be more than 0",
            ),
            (
                format!("{pio}[[workload]]\nname = \"warp\"\n"),
                (6, 8),
                "unknown workload `warp`",
            ),
            (format!("{pio}b = [4, 0]\n"), (5, 9), "b must be at least 1"),
            (
                format!("{pio}b = [4, 4096]\n"),
                (5, 9),
                "b = 4096 is over the limit of 512",
            ),
            (
                format!("{pio}n = 1099511627776\n"),
                (5, 5),
                "n = 1099511627776 is over the limit of 65536",
            ),
            (
                format!("repeats = 1000\nwarmup = 1000\n{pio}n = [1, 2]\n"),
                (6, 8),
                "more than 10000 runs",
            ),
        ] {
            let text = format!("{head}{body}");
            let e = Scenario::parse(&text, "s.toml").unwrap_err();
            let ScenarioError::Invalid {
                line: l,
                column: c,
                message,
                ..
            } = &e
            else {
                panic!("{text}: {e:?}")
            };
            assert_eq!((*l, *c), (line, column), "{text}: {e}");
            assert!(message.contains(what), "{text}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("s.toml:{line}:{column}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn run_count_matches_the_jobs() {
        let s = Scenario::parse(GOOD, "t.toml").unwrap();
        assert_eq!(s.run_count(), s.jobs().len());
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
