//! Scenario files: the TOML a scenario is written in, read with limits and checked, every
//! error located at `file:line:column` of the value it is about.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use contract::Mode;
use guests::Params;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{report_order, Scenario, Values, WorkloadEntry};
use crate::engines;
use crate::harness::MAX_RUNS;
use crate::input::{self, InputError};

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
        let modes = raw.modes(&at)?;
        raw.check(&at)?;
        Ok(raw.into_scenario(modes))
    }
}

impl RawScenario {
    /// The listed modes, typed; an unknown one is located by `at`.
    fn modes(
        &self,
        at: &impl Fn(Range<usize>, String) -> ScenarioError,
    ) -> Result<Option<Vec<Mode>>, ScenarioError> {
        let Some(list) = &self.modes else {
            return Ok(None);
        };
        let modes = list
            .iter()
            .map(|m| {
                m.get_ref()
                    .parse::<Mode>()
                    .map_err(|e| at(m.span(), e.to_string()))
            })
            .collect::<Result<Vec<Mode>, ScenarioError>>()?;
        Ok(Some(modes))
    }

    /// Every check of the content but the modes', each error located by `at` at the value
    /// it is about.
    fn check(
        &self,
        at: &impl Fn(Range<usize>, String) -> ScenarioError,
    ) -> Result<(), ScenarioError> {
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

    /// The scenario, its `modes` (parsed by [`RawScenario::modes`]) in report order.
    fn into_scenario(self, modes: Option<Vec<Mode>>) -> Scenario {
        Scenario {
            name: self.name,
            description: self.description,
            modes: modes.map(|m| report_order(&m)),
            repeats: self.repeats.map_or(1, Spanned::into_inner),
            warmup: self.warmup.map_or(0, Spanned::into_inner),
            timeout_s: self.timeout_s.map(Spanned::into_inner),
            binary: None,
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

#[cfg(test)]
mod tests;
