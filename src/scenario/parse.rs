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

use super::{report_order, Scenario, Values, VmEntry, WorkloadEntry};
use crate::engines;
use crate::fleet::HostSpec;
use crate::harness::DEFAULT_B;
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
    #[serde(default, rename = "workload")]
    workloads: Option<Spanned<Vec<RawWorkload>>>,
    #[serde(default)]
    host: Option<RawHost>,
    #[serde(default, rename = "vm")]
    vms: Vec<RawVm>,
}

/// The `[host]` table as written: the host CPUs several VMs share and who schedules them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    #[serde(default)]
    cpus: Option<Spanned<u32>>,
    #[serde(default)]
    scheduler: Option<Spanned<String>>,
    #[serde(default)]
    slice_ms: Option<Spanned<u32>>,
    #[serde(default)]
    duration_s: Option<Spanned<f64>>,
    #[serde(default)]
    tolerance: Option<Spanned<f64>>,
    #[serde(default)]
    work_conserving: Option<bool>,
    #[serde(default)]
    ksm: Option<bool>,
    #[serde(default)]
    memory_budget_mib: Option<Spanned<u64>>,
}

/// One `[[vm]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    #[serde(default)]
    name: Option<String>,
    workload: Spanned<String>,
    mode: Spanned<String>,
    #[serde(default)]
    n: Option<Spanned<u64>>,
    #[serde(default)]
    b: Option<Spanned<u64>>,
    #[serde(default)]
    delay_us: Option<u32>,
    #[serde(default)]
    weight: Option<Spanned<u32>>,
    #[serde(default)]
    cap: Option<Spanned<u32>>,
    #[serde(default)]
    copies: Option<Spanned<u32>>,
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
    s: Option<Spanned<RawValues>>,
    #[serde(default)]
    q: Option<Spanned<RawValues>>,
    #[serde(default)]
    backends: Option<Spanned<Vec<Spanned<String>>>>,
    k: Option<u64>,
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
        let (host, vms) = raw.fleet(&at)?;
        raw.check(&at)?;
        let mut scenario = raw.into_scenario(modes);
        scenario.host = host;
        scenario.vms = vms;
        Ok(scenario)
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
        let no_workloads = Vec::new();
        let workloads = self
            .workloads
            .as_ref()
            .map_or(&no_workloads, |w| w.get_ref());
        if workloads.is_empty() && self.vms.is_empty() {
            let span = self.workloads.as_ref().map_or(0..0, Spanned::span);
            return Err(at(
                span,
                "no [[workload]] tables (nor [[vm]] tables)".into(),
            ));
        }
        if let (Some(w), false) = (&self.workloads, self.vms.is_empty()) {
            return Err(at(
                w.span(),
                "a scenario has [[workload]] tables (run one after another) or [[vm]] \
                 tables (run at once), not both"
                    .into(),
            ));
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
        for w in workloads {
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
                    ..Params::default()
                };
                wl.check(&params)
                    .map_err(|e| at(span.clone(), e.to_string()))?;
            }
            for (n, span) in ns.iter().flatten() {
                let params = Params {
                    n: *n,
                    b: 1,
                    ..Params::default()
                };
                wl.check(&params)
                    .map_err(|e| at(span.clone(), e.to_string()))?;
            }
            // Request sizes and queue depths (the disk workloads), each checked alone.
            let ss = w.s.as_ref().map(items);
            let qs = w.q.as_ref().map(items);
            for (s, span) in ss.iter().flatten() {
                let params = Params {
                    s: *s,
                    q: 1,
                    ..Params::default()
                };
                wl.check(&params)
                    .map_err(|e| at(span.clone(), e.to_string()))?;
            }
            for (q, span) in qs.iter().flatten() {
                let params = Params {
                    s: contract::abi::blk::SECTOR_SIZE,
                    q: *q,
                    ..Params::default()
                };
                wl.check(&params)
                    .map_err(|e| at(span.clone(), e.to_string()))?;
            }
            // Backends (the disk workloads): known names, each once.
            if let Some(list) = &w.backends {
                if !guests::blk::needs_disk(name) {
                    return Err(at(
                        list.span(),
                        format!(
                            "workload `{name}` has no disk: `backends` is for the disk workloads"
                        ),
                    ));
                }
                if list.get_ref().is_empty() {
                    return Err(at(list.span(), "backends: name at least one".into()));
                }
                let mut seen = Vec::new();
                for b in list.get_ref() {
                    let backend = b
                        .get_ref()
                        .parse::<contract::BlockBackend>()
                        .map_err(|e| at(b.span(), e.to_string()))?;
                    if seen.contains(&backend) {
                        return Err(at(b.span(), format!("backend `{backend}` listed twice")));
                    }
                    seen.push(backend);
                }
            }
            let per_round = ns.as_ref().map_or(1, Vec::len)
                * bs.as_ref().map_or(1, Vec::len)
                * ss.as_ref().map_or(1, Vec::len)
                * qs.as_ref().map_or(1, Vec::len)
                * w.backends.as_ref().map_or(1, |l| l.get_ref().len());
            runs = runs.saturating_add(per_round.saturating_mul(modes).saturating_mul(rounds));
            if runs > MAX_RUNS {
                return Err(at(
                    w.name.span(),
                    format!(
                        "with workload `{name}` the scenario makes more than {MAX_RUNS} runs \
                         (the limit; runs are N values × B values (× S, Q and backends \
                         for the disk) × modes × (warm-up + repeats), summed over the \
                         workloads)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The `[host]` table and the `[[vm]]` tables, checked; each error located by `at`.
    fn fleet(
        &self,
        at: &impl Fn(Range<usize>, String) -> ScenarioError,
    ) -> Result<(Option<HostSpec>, Vec<VmEntry>), ScenarioError> {
        if self.vms.is_empty() {
            return Ok((None, Vec::new()));
        }
        let mut host = HostSpec::default();
        if let Some(h) = &self.host {
            if let Some(c) = &h.cpus {
                if !(1..=1024).contains(c.get_ref()) {
                    return Err(at(c.span(), "cpus must be between 1 and 1024".into()));
                }
                host.cpus = *c.get_ref();
            }
            if let Some(k) = &h.scheduler {
                host.scheduler = k.get_ref().parse().map_err(|e| at(k.span(), e))?;
            }
            if let Some(sl) = &h.slice_ms {
                if !(1..=10_000).contains(sl.get_ref()) {
                    return Err(at(sl.span(), "slice_ms must be between 1 and 10000".into()));
                }
                host.slice_ms = *sl.get_ref();
            }
            if let Some(d) = &h.duration_s {
                let d_s = *d.get_ref();
                if !(d_s > 0.0 && d_s <= crate::harness::MAX_TIMEOUT_S) {
                    return Err(at(
                        d.span(),
                        format!(
                            "duration_s must be more than 0 and at most {} seconds",
                            crate::harness::MAX_TIMEOUT_S
                        ),
                    ));
                }
                host.duration_s = Some(d_s);
            }
            if let Some(t) = &h.tolerance {
                if !(0.0..=1.0).contains(t.get_ref()) {
                    return Err(at(t.span(), "tolerance must be between 0 and 1".into()));
                }
                host.tolerance = *t.get_ref();
            }
            host.work_conserving = h.work_conserving.unwrap_or(true);
            host.ksm = h.ksm.unwrap_or(false);
            if let Some(m) = &h.memory_budget_mib {
                if !(1..=1 << 20).contains(m.get_ref()) {
                    return Err(at(
                        m.span(),
                        "memory_budget_mib must be between 1 and 1048576".into(),
                    ));
                }
                host.memory_budget_mib = Some(*m.get_ref());
            }
        }
        let mut vms = Vec::new();
        for v in &self.vms {
            let wl = guests::find(v.workload.get_ref())
                .map_err(|e| at(v.workload.span(), e.to_string()))?;
            let mode = v
                .mode
                .get_ref()
                .parse::<Mode>()
                .map_err(|e| at(v.mode.span(), e.to_string()))?;
            if !engines::modes().contains(&mode) {
                return Err(at(
                    v.mode.span(),
                    format!("mode `{mode}` is not available in this build"),
                ));
            }
            let params = Params {
                n: v.n.as_ref().map_or(wl.default_n, |n| *n.get_ref()),
                b: v.b.as_ref().map_or(DEFAULT_B, |b| *b.get_ref()),
                delay_us: v.delay_us.unwrap_or(0),
                ..Params::default()
            };
            let blame =
                v.n.as_ref()
                    .or(v.b.as_ref())
                    .map_or(v.workload.span(), Spanned::span);
            if params.b == 0 {
                return Err(at(blame, "b must be at least 1".into()));
            }
            wl.check(&params).map_err(|e| at(blame, e.to_string()))?;
            let weight = v.weight.as_ref().map_or(1, |w| *w.get_ref());
            if let Some(w) = v
                .weight
                .as_ref()
                .filter(|w| !(1..=65_535).contains(w.get_ref()))
            {
                return Err(at(w.span(), "weight must be between 1 and 65535".into()));
            }
            let cap = v.cap.as_ref().map_or(0, |c| *c.get_ref());
            if let Some(c) = v.cap.as_ref().filter(|c| *c.get_ref() > 100) {
                return Err(at(
                    c.span(),
                    "cap is a percentage of one host CPU: at most 100 (0: none)".into(),
                ));
            }
            let copies = v.copies.as_ref().map_or(1, |c| *c.get_ref());
            if let Some(c) = v
                .copies
                .as_ref()
                .filter(|c| !(1..=64).contains(c.get_ref()))
            {
                return Err(at(c.span(), "copies must be between 1 and 64".into()));
            }
            for _ in 0..copies {
                let name = match (&v.name, copies) {
                    (Some(n), 1) => n.clone(),
                    (Some(n), _) => format!("{n}.{}", vms.len()),
                    (None, _) => format!("vm{}", vms.len()),
                };
                vms.push(VmEntry {
                    name,
                    workload: wl,
                    params,
                    mode,
                    weight,
                    cap,
                });
            }
        }
        if vms.len() > 256 {
            return Err(at(self.vms[0].workload.span(), "at most 256 VMs".into()));
        }
        Ok((Some(host), vms))
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
            host: None,
            vms: Vec::new(),
            workloads: self
                .workloads
                .map(Spanned::into_inner)
                .unwrap_or_default()
                .into_iter()
                .map(|w| WorkloadEntry {
                    n: w.n.as_ref().map(values),
                    b: w.b.as_ref().map(values),
                    name: w.name.into_inner(),
                    delay_us: w.delay_us,
                    s: w.s.as_ref().map(values),
                    q: w.q.as_ref().map(values),
                    // Checked in `RawScenario::check`: every name parses.
                    backends: w.backends.as_ref().map(|l| {
                        l.get_ref()
                            .iter()
                            .filter_map(|b| b.get_ref().parse().ok())
                            .collect()
                    }),
                    k: w.k,
                    planned: w.planned,
                    note: w.note,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
