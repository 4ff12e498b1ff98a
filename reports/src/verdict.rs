//! One verdict per run, used by the terminal table, the HTML report, the CSV and the exit
//! status alike: what happened, and whether it is a failure, an expected divergence, a
//! divergence the host caused, or fine.

use contract::{Outcome, RunRecord};

use crate::RunFailure;

/// What became of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Completed with the expected result, counts and console.
    Ok,
    /// Diverged in a way the workload declares for this mode (a property of the strategy,
    /// such as POPF in trap-and-emulate), with every count as the oracle says.
    Declared,
    /// A declared divergence that the host caused: an option the run asked for is not
    /// effective here (CPUID faulting accepted by KVM without effect).
    HostCaused,
    /// Not run: something the run needs is not on this host, as probed (declared).
    Unavailable,
    /// A guest with nothing declared to check (a user's binary) ended with a fault.
    Unchecked,
    /// A count differs from the oracle.
    CountsDiffer,
    /// The console output was not the expected one.
    ConsoleDiffers,
    /// The result differs and no divergence explains it.
    WrongResult,
    /// The guest faulted.
    GuestFault,
    /// The run hit a limit.
    TimedOut,
    /// The VMM could not carry the run out at all.
    VmmError,
}

/// How a verdict is shown: the four things a reader must tell apart at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Fine.
    Ok,
    /// Expected: a declared divergence, with its reason (or a guest with nothing to check).
    Expected,
    /// Caused by this host, declared.
    Host,
    /// A real failure: the exit status is non-zero.
    Failure,
}

impl Verdict {
    /// Every verdict, in the order reports list them (failures last, worst last).
    pub const ALL: [Verdict; 11] = [
        Verdict::Ok,
        Verdict::Declared,
        Verdict::HostCaused,
        Verdict::Unavailable,
        Verdict::Unchecked,
        Verdict::CountsDiffer,
        Verdict::ConsoleDiffers,
        Verdict::WrongResult,
        Verdict::GuestFault,
        Verdict::TimedOut,
        Verdict::VmmError,
    ];

    /// The verdict of a finished run. A run is a failure exactly when
    /// [`RunRecord::went_as_expected`] (with the options the oracle follows) says it did
    /// not go as expected.
    pub fn of(r: &RunRecord) -> Verdict {
        let no_expectations = r.expected.is_empty() && r.console_ok.is_none();
        match &r.outcome {
            Outcome::Completed { .. } | Outcome::Diverged { declared: true, .. }
                if !r.mismatches.is_empty() =>
            {
                Verdict::CountsDiffer
            }
            Outcome::Completed { .. } if r.console_ok == Some(false) => Verdict::ConsoleDiffers,
            Outcome::Completed { .. } => Verdict::Ok,
            Outcome::Diverged {
                declared: true,
                host_caused: true,
                ..
            } => Verdict::HostCaused,
            Outcome::Diverged { declared: true, .. } => Verdict::Declared,
            Outcome::Diverged { .. } => Verdict::WrongResult,
            Outcome::GuestFault { .. } if no_expectations => Verdict::Unchecked,
            Outcome::GuestFault { .. } => Verdict::GuestFault,
            Outcome::TimedOut { .. } => Verdict::TimedOut,
            Outcome::Unavailable { .. } => Verdict::Unavailable,
        }
    }

    /// The verdict of a run the VMM could not carry out.
    pub fn of_failure(_: &RunFailure) -> Verdict {
        Verdict::VmmError
    }

    /// Its class.
    pub const fn class(self) -> Class {
        match self {
            Verdict::Ok => Class::Ok,
            Verdict::Declared | Verdict::Unchecked => Class::Expected,
            Verdict::HostCaused | Verdict::Unavailable => Class::Host,
            _ => Class::Failure,
        }
    }

    /// Whether it makes the exit status non-zero.
    pub const fn is_failure(self) -> bool {
        matches!(self.class(), Class::Failure)
    }

    /// In words, for tables and pages: failures in capitals so they stand out without
    /// colour.
    pub const fn words(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Declared => "diverged (expected)",
            Verdict::HostCaused => "diverged (host)",
            Verdict::Unavailable => "unavailable (host)",
            Verdict::Unchecked => "ended (unchecked)",
            Verdict::CountsDiffer => "COUNTS DIFFER",
            Verdict::ConsoleDiffers => "CONSOLE DIFFERS",
            Verdict::WrongResult => "WRONG RESULT",
            Verdict::GuestFault => "GUEST FAULT",
            Verdict::TimedOut => "TIMED OUT",
            Verdict::VmmError => "VMM ERROR",
        }
    }

    /// Shorter words for narrow terminal cells (the legend says what they mean).
    pub const fn short(self) -> &'static str {
        match self {
            Verdict::Declared => "expected div.",
            Verdict::HostCaused => "host div.",
            Verdict::Unavailable => "unavailable",
            Verdict::Unchecked => "unchecked",
            v => v.words(),
        }
    }

    /// `symbol short`, and ` ×n` (all `n` runs) or ` k/n` (`k` of `n`) when it fits in
    /// `width` columns.
    pub fn cell(self, k: usize, n: usize, width: usize) -> String {
        let base = format!("{} {}", self.symbol(), self.short());
        let with = if k == n && n > 1 {
            format!("{base} ×{n}")
        } else if k != n {
            format!("{base} {k}/{n}")
        } else {
            base.clone()
        };
        if with.chars().count() <= width {
            with
        } else {
            base
        }
    }

    /// A stable lower-case name for CSV and tools: `ok`, `declared-divergence`, …
    pub const fn slug(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Declared => "declared-divergence",
            Verdict::HostCaused => "host-caused-divergence",
            Verdict::Unavailable => "unavailable",
            Verdict::Unchecked => "unchecked",
            Verdict::CountsDiffer => "counts-differ",
            Verdict::ConsoleDiffers => "console-differs",
            Verdict::WrongResult => "wrong-result",
            Verdict::GuestFault => "guest-fault",
            Verdict::TimedOut => "timed-out",
            Verdict::VmmError => "vmm-error",
        }
    }

    /// What the verdict means, for legends.
    pub const fn meaning(self) -> &'static str {
        match self {
            Verdict::Ok => "completed with the expected result, counts and console",
            Verdict::Declared => {
                "a divergence the workload declares for this mode, with its reason"
            }
            Verdict::HostCaused => {
                "a declared divergence this host caused: an option it cannot honour"
            }
            Verdict::Unavailable => {
                "not run: something it needs is not on this host, as probed (the record says what)"
            }
            Verdict::Unchecked => "a guest that declares nothing to check ended with a fault",
            Verdict::CountsDiffer => "a count differs from the workload's oracle",
            Verdict::ConsoleDiffers => "the console output was not the expected one",
            Verdict::WrongResult => "the result differs and nothing declared explains it",
            Verdict::GuestFault => "the guest faulted",
            Verdict::TimedOut => "the run hit a limit",
            Verdict::VmmError => "the VMM could not carry the run out",
        }
    }

    /// Its symbol: `✓`, `◆` (expected), `▲` (host), `✗` (failure).
    pub const fn symbol(self) -> &'static str {
        match self.class() {
            Class::Ok => "✓",
            Class::Expected => "◆",
            Class::Host => "▲",
            Class::Failure => "✗",
        }
    }
}

impl Class {
    /// A CSS class name and a word for the class.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Expected => "expected",
            Class::Host => "host",
            Class::Failure => "failure",
        }
    }
}

/// How many runs of a group had each verdict, worst last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub std::collections::BTreeMap<Verdict, usize>);

impl Tally {
    /// Counts one verdict.
    pub fn add(&mut self, v: Verdict) {
        *self.0.entry(v).or_default() += 1;
    }

    /// The worst verdict seen (failures before host before expected before ok).
    pub fn worst(&self) -> Option<Verdict> {
        self.0.keys().copied().max_by_key(|v| (v.class(), *v))
    }

    /// Total runs.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// `ok ×3`, `COUNTS DIFFER ×1, ok ×2`: worst first.
    pub fn label(&self) -> String {
        let mut parts: Vec<(Verdict, usize)> = self.0.iter().map(|(v, n)| (*v, *n)).collect();
        parts.sort_by_key(|(v, _)| std::cmp::Reverse((v.class(), *v)));
        parts
            .iter()
            .map(|(v, n)| {
                if *n == 1 {
                    v.words().to_string()
                } else {
                    format!("{} ×{n}", v.words())
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::rec;
    use contract::{CountKey, ExitKind, FaultKind, Limit, Mode};

    fn outcomes() -> Vec<Outcome> {
        let mut v = vec![
            Outcome::Completed {
                exit_code: 0,
                result: 1,
                ending: contract::Ending::ExitPort,
            },
            Outcome::GuestFault {
                kind: FaultKind::Exception,
                rip: None,
                detail: "#GP".into(),
            },
            Outcome::TimedOut {
                limit: Limit::WallClock,
                rip: None,
            },
        ];
        v.push(Outcome::Unavailable {
            why: "no ioeventfd".into(),
        });
        for (declared, host_caused) in [(true, true), (true, false), (false, false)] {
            v.push(Outcome::Diverged {
                expected: "1".into(),
                got: "2".into(),
                why: "w".into(),
                declared,
                host_caused,
                result: Some(2),
            });
        }
        v
    }

    #[test]
    fn a_failure_is_exactly_a_run_that_did_not_go_as_expected() {
        for outcome in outcomes() {
            for mismatch in [false, true] {
                for console_ok in [None, Some(true), Some(false)] {
                    for expectations in [false, true] {
                        let mut r = rec(Mode::TrapEmulate, "w", 10, 10, ExitKind::Trap);
                        r.outcome = outcome.clone();
                        r.console_ok = console_ok;
                        if !expectations {
                            r.expected.clear();
                        }
                        if mismatch {
                            r.mismatches
                                .insert(CountKey::Exits(ExitKind::Trap), (10, 9));
                        }
                        let v = Verdict::of(&r);
                        assert_eq!(
                            v.is_failure(),
                            !r.went_as_expected(false),
                            "{outcome:?} {mismatch} {console_ok:?} {expectations}: {v:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn words_and_tallies() {
        let mut t = Tally::default();
        t.add(Verdict::Ok);
        t.add(Verdict::Ok);
        t.add(Verdict::CountsDiffer);
        assert_eq!(t.label(), "COUNTS DIFFER, ok ×2");
        assert_eq!(t.worst(), Some(Verdict::CountsDiffer));
        assert_eq!(t.total(), 3);
        let mut h = Tally::default();
        h.add(Verdict::Declared);
        h.add(Verdict::HostCaused);
        assert_eq!(h.worst(), Some(Verdict::HostCaused));
        assert_eq!(Verdict::Declared.class(), Class::Expected);
        assert_ne!(Verdict::Declared.symbol(), Verdict::CountsDiffer.symbol());
    }
}
