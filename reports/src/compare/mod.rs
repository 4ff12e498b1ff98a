//! Comparing results: two or more `results.json` side by side — counts compared exactly,
//! costs as ratios of medians with their spread — a pooled table when they come from
//! different hosts, and the check of a run against a saved baseline.
//!
//! ```
//! use reports::compare::{Comparison, Input};
//! use reports::Report;
//!
//! let a = Report::new(Vec::new(), Vec::new());
//! let b = a.clone();
//! let c = Comparison::new(&[Input::new("a.json", &a), Input::new("b.json", &b)]);
//! assert!(c.rows.is_empty());
//! ```

mod baseline;
pub mod term;

pub use baseline::{check, BaselineCheck, Change};

use std::collections::{BTreeMap, BTreeSet};

use contract::{CountKey, HostInfo, Mode, RunRecord};

use crate::digest::{self, Costs, Params};
use crate::format::{fmt_percent, fmt_ratio};
use crate::stats::{geometric_mean, Ratio, Spread};
use crate::verdict::{Tally, Verdict};
use crate::Report;

/// One results file to compare.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Where it came from (a path, or `baseline NAME`).
    pub name: &'a str,
    /// Its contents.
    pub report: &'a Report,
}

impl<'a> Input<'a> {
    /// An input named `name`.
    pub fn new(name: &'a str, report: &'a Report) -> Self {
        Input { name, report }
    }
}

/// A host as the comparisons tell hosts apart: backend and CPU model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostKey {
    /// `kvm_intel`, `kvm_amd`, `kvm_pvm`.
    pub backend: String,
    /// The CPU model string.
    pub cpu_model: String,
}

impl HostKey {
    /// The key of a host.
    pub fn of(h: &HostInfo) -> Self {
        HostKey {
            backend: h.backend.name().to_string(),
            cpu_model: h.cpu_model.clone(),
        }
    }

    /// `kvm_pvm · AMD EPYC`.
    pub fn label(&self) -> String {
        format!("{} · {}", self.backend, self.cpu_model)
    }
}

/// What the comparisons know of one input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    /// `A`, `B`, `C`, …
    pub letter: String,
    /// Its name (path).
    pub name: String,
    /// The hosts its runs were made on.
    pub hosts: Vec<HostKey>,
    /// When it was made (Unix seconds).
    pub created_unix: u64,
    /// How many runs it holds.
    pub runs: usize,
    /// Its git revision.
    pub git_revision: Option<String>,
}

/// The cost figures compared, each as a ratio of medians.
pub const COSTS: [(&str, &str); 3] = [
    ("wall", "wall time of a run"),
    ("per op", "the guest's time per operation"),
    ("exit p50", "median round trip of the main exit kind"),
];

/// What makes a row: workload, parameters, mode and disk backend.
type RowKey = (String, Params, Mode, Option<contract::BlockBackend>);

/// One workload with one parameter set in one mode (and disk backend), across the inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Workload.
    pub workload: String,
    /// Parameters.
    pub params: Params,
    /// Mode.
    pub mode: Mode,
    /// Where the disk's device model ran (runs with a disk).
    pub backend: Option<contract::BlockBackend>,
    /// Per input: the counters of its first finished run, if it has one.
    pub counts: Vec<Option<BTreeMap<CountKey, u64>>>,
    /// Per input: the costs over its repeats.
    pub costs: Vec<Option<Costs>>,
    /// Per input: its verdicts.
    pub verdicts: Vec<Tally>,
    /// Per input: its hosts.
    pub hosts: Vec<BTreeSet<HostKey>>,
}

impl Row {
    /// The time per operation of this row on one host, pooled over every input from that
    /// host.
    pub fn host_cost(&self, h: &HostKey) -> Option<Spread> {
        let values: Vec<f64> = self
            .hosts
            .iter()
            .zip(&self.costs)
            .filter(|(hs, _)| hs.contains(h))
            .filter_map(|(_, c)| c.as_ref()?.ns_per_op.map(|s| s.median))
            .collect();
        Spread::of(&values)
    }
}

impl Row {
    /// `pio (b=16, n=200)`; a disk backend other than inline is named, as in
    /// [`crate::digest::Group::label`].
    pub fn label(&self) -> String {
        let label = crate::format::workload_label(&self.workload, &self.params);
        match self.backend {
            Some(b) if b != contract::BlockBackend::Inline => format!("{label} on {b}"),
            _ => label,
        }
    }

    /// The counters whose values differ between input `a` and input `b` (a counter one
    /// of them lacks counts as 0): key → (value in a, value in b). `None` when either has
    /// no finished run.
    pub fn count_diffs(&self, a: usize, b: usize) -> Option<Vec<(CountKey, u64, u64)>> {
        let (ca, cb) = (self.counts[a].as_ref()?, self.counts[b].as_ref()?);
        let keys: BTreeSet<&CountKey> = ca.keys().chain(cb.keys()).collect();
        Some(
            keys.into_iter()
                .filter_map(|k| {
                    let (x, y) = (
                        ca.get(k).copied().unwrap_or(0),
                        cb.get(k).copied().unwrap_or(0),
                    );
                    (x != y).then(|| (k.clone(), x, y))
                })
                .collect(),
        )
    }

    /// The ratio `b / a` of one cost (an index into [`COSTS`]).
    pub fn ratio(&self, cost: usize, a: usize, b: usize) -> Option<Ratio> {
        let pick = |c: &Costs| -> Option<Spread> {
            match cost {
                0 => c.wall_ns,
                1 => c.ns_per_op.or(c.cycles_per_op),
                _ => c.exit_p50.map(|(_, s)| s),
            }
        };
        let (x, y) = (
            pick(self.costs[a].as_ref()?)?,
            pick(self.costs[b].as_ref()?)?,
        );
        if cost == 2 {
            // The same exit kind on both sides, or the ratio means nothing.
            let kind = |i: usize| self.costs[i].as_ref().and_then(|c| c.exit_p50.map(|e| e.0));
            if kind(a) != kind(b) {
                return None;
            }
        }
        Ratio::of(&x, &y)
    }
}

/// Two or more inputs compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The inputs, in order; the first is the reference.
    pub inputs: Vec<InputInfo>,
    /// Every workload × parameters × mode any input ran, in order of first appearance.
    pub rows: Vec<Row>,
}

/// `A`, `B`, … `Z`, `AA`, …
fn letter(i: usize) -> String {
    let mut s = String::new();
    let mut n = i + 1;
    while n > 0 {
        n -= 1;
        s.insert(0, char::from(b'A' + (n % 26) as u8));
        n /= 26;
    }
    s
}

fn hosts_of<'a>(records: impl IntoIterator<Item = &'a RunRecord>) -> Vec<HostKey> {
    let mut out: Vec<HostKey> = Vec::new();
    for r in records {
        let k = HostKey::of(&r.host);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

impl Comparison {
    /// Compares `inputs`; the first is the reference the others are measured against.
    pub fn new(inputs: &[Input]) -> Self {
        let infos = inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| InputInfo {
                letter: letter(i),
                name: inp.name.to_string(),
                hosts: hosts_of(&inp.report.records),
                created_unix: inp.report.created_unix,
                runs: inp.report.records.len(),
                git_revision: inp.report.git_revision.clone(),
            })
            .collect();
        let mut keys: Vec<RowKey> = Vec::new();
        for inp in inputs {
            for r in &inp.report.records {
                let k = (
                    r.workload.clone(),
                    r.params.clone(),
                    r.mode,
                    r.block_backend,
                );
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        let rows = keys
            .into_iter()
            .map(|(workload, params, mode, backend)| {
                let mut row = Row {
                    workload,
                    params,
                    mode,
                    backend,
                    counts: Vec::new(),
                    costs: Vec::new(),
                    verdicts: Vec::new(),
                    hosts: Vec::new(),
                };
                for inp in inputs {
                    let runs: Vec<&RunRecord> = inp
                        .report
                        .records
                        .iter()
                        .filter(|r| {
                            r.workload == row.workload
                                && r.params == row.params
                                && r.mode == mode
                                && r.block_backend == backend
                        })
                        .collect();
                    let mut tally = Tally::default();
                    for r in &runs {
                        tally.add(Verdict::of(r));
                    }
                    let finished: Vec<&RunRecord> = runs
                        .iter()
                        .copied()
                        .filter(|r| digest::finished(r))
                        .collect();
                    row.counts
                        .push(finished.first().map(|r| digest::counters(r)));
                    row.costs
                        .push((!finished.is_empty()).then(|| digest::costs(&finished)));
                    row.verdicts.push(tally);
                    row.hosts
                        .push(runs.iter().map(|r| HostKey::of(&r.host)).collect());
                }
                row
            })
            .collect();
        Comparison {
            inputs: infos,
            rows,
        }
    }

    /// Whether the inputs come from more than one host.
    pub fn cross_host(&self) -> bool {
        self.hosts().len() > 1
    }

    /// Every host, in order of appearance.
    pub fn hosts(&self) -> Vec<HostKey> {
        let mut out: Vec<HostKey> = Vec::new();
        for i in &self.inputs {
            for h in &i.hosts {
                if !out.contains(h) {
                    out.push(h.clone());
                }
            }
        }
        out
    }

    /// The rows both inputs ran to the end.
    pub fn common(&self, a: usize, b: usize) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.counts[a].is_some() && r.counts[b].is_some())
            .collect()
    }

    /// What input `b` is against input `a`, in one line as hyperfine states it:
    /// `B is 3.10× slower than A (±8.0 %) in wall time` for one common row, or the
    /// geometric mean over many with their range.
    pub fn summary(&self, a: usize, b: usize) -> String {
        let common = self.common(a, b);
        let (la, lb) = (&self.inputs[a].letter, &self.inputs[b].letter);
        if common.is_empty() {
            return format!("{lb} and {la} have no workload × mode run in common");
        }
        let equal = common
            .iter()
            .filter(|r| r.count_diffs(a, b).is_some_and(|d| d.is_empty()))
            .count();
        let counts = if equal == common.len() {
            format!(
                "counts equal exactly in all {} workload × mode pair{}",
                common.len(),
                if common.len() == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "counts DIFFER in {} of {} workload × mode pairs",
                common.len() - equal,
                common.len()
            )
        };
        let ratios: Vec<Ratio> = common.iter().filter_map(|r| r.ratio(0, a, b)).collect();
        let cost = match ratios.as_slice() {
            [] => "no wall time to compare".to_string(),
            [one] => format!(
                "{} in wall time",
                speed_words(lb, la, one.ratio, one.uncertainty)
            ),
            many => {
                let values: Vec<f64> = many.iter().map(|r| r.ratio).collect();
                let g = geometric_mean(&values).unwrap_or(1.0);
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(0.0, f64::max);
                format!(
                    "{} in wall time (geometric mean of {} pairs, each {}–{})",
                    speed_words(lb, la, g, None),
                    many.len(),
                    fmt_ratio(lo),
                    fmt_ratio(hi)
                )
            }
        };
        format!("{cost}; {counts}")
    }
}

/// `B is 3.10× slower than A (±8.0 %)`, `B is 1.50× faster than A`, or `B is as fast as
/// A (1.01×, ±8.0 %)` within its noise.
pub fn speed_words(b: &str, a: &str, ratio: f64, uncertainty: Option<f64>) -> String {
    let pm = uncertainty.map_or(String::new(), |u| format!(" (±{})", fmt_percent(u)));
    let noise = uncertainty.unwrap_or(0.0).max(0.02);
    if (ratio - 1.0).abs() <= noise {
        let pm = uncertainty.map_or(String::new(), |u| format!(", ±{}", fmt_percent(u)));
        format!("{b} is as fast as {a} ({}{pm})", fmt_ratio(ratio))
    } else if ratio > 1.0 {
        format!("{b} is {} slower than {a}{pm}", fmt_ratio(ratio))
    } else {
        format!("{b} is {} faster than {a}{pm}", fmt_ratio(1.0 / ratio))
    }
}

#[cfg(test)]
mod tests;
