//! A run checked against a saved baseline, as criterion checks a benchmark: every count
//! must be the same, and no cost may grow beyond a threshold (and beyond its noise).

use contract::CountKey;

use super::{Comparison, Input, COSTS};
use crate::format::{fmt_percent, fmt_ratio, group_digits};
use crate::Report;

/// One change from the baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A count is not what it was: always a failure, counts are exact.
    Count {
        /// `pio (n=200) in hw-assisted`.
        what: String,
        /// The counter.
        key: CountKey,
        /// In the baseline.
        was: u64,
        /// Now.
        now: u64,
    },
    /// A cost grew beyond the threshold.
    Regression {
        /// `pio (n=200) in hw-assisted`.
        what: String,
        /// Which cost (a name from [`COSTS`]).
        cost: &'static str,
        /// now / baseline.
        ratio: f64,
        /// Its relative uncertainty.
        uncertainty: Option<f64>,
    },
    /// A cost fell beyond the threshold (reported, never a failure).
    Improvement {
        /// `pio (n=200) in hw-assisted`.
        what: String,
        /// Which cost.
        cost: &'static str,
        /// now / baseline.
        ratio: f64,
        /// Its relative uncertainty.
        uncertainty: Option<f64>,
    },
    /// The baseline ran it and this run did not, or the other way round: the run does
    /// not repeat the baseline's experiment, so the check cannot vouch for it (a failure;
    /// save the baseline again after changing what runs).
    Missing {
        /// `pio (n=200) in hw-assisted`.
        what: String,
        /// Whether it is the baseline that lacks it.
        in_baseline: bool,
    },
}

impl Change {
    /// Whether the change makes the check fail.
    pub fn fails(&self) -> bool {
        matches!(
            self,
            Change::Count { .. } | Change::Regression { .. } | Change::Missing { .. }
        )
    }

    /// In one line.
    pub fn describe(&self) -> String {
        let pm = |u: &Option<f64>| u.map_or(String::new(), |u| format!(" ±{}", fmt_percent(u)));
        match self {
            Change::Count {
                what,
                key,
                was,
                now,
            } => format!(
                "✗ {what}: {key} = {}, was {}",
                group_digits(*now),
                group_digits(*was)
            ),
            Change::Regression {
                what,
                cost,
                ratio,
                uncertainty,
            } => format!(
                "✗ {what}: {cost} {} slower ({}{})",
                fmt_ratio(*ratio),
                fmt_ratio(*ratio),
                pm(uncertainty)
            ),
            Change::Improvement {
                what,
                cost,
                ratio,
                uncertainty,
            } => format!(
                "  {what}: {cost} {} faster ({}{})",
                fmt_ratio(1.0 / ratio),
                fmt_ratio(*ratio),
                pm(uncertainty)
            ),
            Change::Missing { what, in_baseline } => {
                if *in_baseline {
                    format!("✗ {what}: new, not in the baseline")
                } else {
                    format!("✗ {what}: in the baseline, not run now")
                }
            }
        }
    }
}

/// The result of checking a run against a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineCheck {
    /// Every change.
    pub changes: Vec<Change>,
    /// The threshold used (0.2 = 20 %).
    pub threshold: f64,
    /// Workload × mode pairs compared.
    pub compared: usize,
    /// The baseline came from another host: costs compared across hosts.
    pub other_host: bool,
}

impl BaselineCheck {
    /// Whether a count changed, a cost regressed, or the run and the baseline did not
    /// run the same things.
    pub fn failed(&self) -> bool {
        self.compared == 0 || self.changes.iter().any(Change::fails)
    }

    /// The report, one line per change, then a verdict line.
    pub fn render(&self, name: &str) -> String {
        let mut out = format!(
            "against baseline {name} ({} workload × mode pairs, costs beyond ±{}):\n",
            self.compared,
            fmt_percent(self.threshold)
        );
        if self.other_host {
            out.push_str(
                "  note: the baseline was made on another host; its costs are not this \
                 host's\n",
            );
        }
        for c in &self.changes {
            out.push_str(&c.describe());
            out.push('\n');
        }
        let counts = self
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Count { .. }))
            .count();
        let slower = self
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Regression { .. }))
            .count();
        let unmatched = self
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Missing { .. }))
            .count();
        out.push_str(&if self.failed() {
            format!(
                "baseline {name}: {counts} count(s) changed, {slower} cost(s) regressed, \
                 {unmatched} run(s) not in both: FAILED\n"
            )
        } else {
            format!("baseline {name}: no count changed, no cost regressed\n")
        });
        out
    }
}

/// Checks `now` against `baseline`: counts exactly, wall time and time per operation as
/// ratios of medians against `threshold` (0.2 = a regression is more than 20 % slower, and
/// slower than its own noise).
pub fn check(baseline: &Report, now: &Report, threshold: f64) -> BaselineCheck {
    let c = Comparison::new(&[Input::new("baseline", baseline), Input::new("now", now)]);
    let mut changes = Vec::new();
    let mut compared = 0;
    for row in &c.rows {
        let what = format!("{} in {}", row.label(), row.mode);
        match (&row.counts[0], &row.counts[1]) {
            (Some(_), Some(_)) => {}
            (None, Some(_)) => {
                changes.push(Change::Missing {
                    what,
                    in_baseline: true,
                });
                continue;
            }
            (Some(_), None) => {
                changes.push(Change::Missing {
                    what,
                    in_baseline: false,
                });
                continue;
            }
            (None, None) => continue,
        }
        compared += 1;
        for (key, was, now) in row.count_diffs(0, 1).unwrap_or_default() {
            changes.push(Change::Count {
                what: what.clone(),
                key,
                was,
                now,
            });
        }
        for (i, (cost, _)) in COSTS.iter().enumerate().take(2) {
            let Some(r) = row.ratio(i, 0, 1) else {
                continue;
            };
            if !r.exceeds(threshold) {
                continue;
            }
            changes.push(if r.ratio > 1.0 {
                Change::Regression {
                    what: what.clone(),
                    cost,
                    ratio: r.ratio,
                    uncertainty: r.uncertainty,
                }
            } else {
                Change::Improvement {
                    what: what.clone(),
                    cost,
                    ratio: r.ratio,
                    uncertainty: r.uncertainty,
                }
            });
        }
    }
    changes.sort_by_key(|c| !c.fails());
    BaselineCheck {
        changes,
        threshold,
        compared,
        other_host: c.inputs[0].hosts != c.inputs[1].hosts,
    }
}
