//! A guest image and what it is expected to do: the expected-counts oracle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::abi::layout;
use crate::count_key::CountKey;
use crate::error::{Error, Result};
use crate::record::{ExitKind, Mode, Outcome, RunRecord};

/// Whether the guest executes sensitive instructions itself or calls the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavour {
    /// Unmodified: executes the real instructions.
    Native,
    /// Modified: calls hypercalls and uses the shared-info page.
    Paravirt,
}

/// The counts a workload must produce in one mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Oracle {
    /// Exact expected value of each counter.
    pub counts: BTreeMap<CountKey, u64>,
}

impl Oracle {
    /// Adds one expected count.
    pub fn expect(mut self, key: CountKey, value: u64) -> Self {
        self.counts.insert(key, value);
        self
    }

    /// Every counter the oracle constrains, with its expected value — including the
    /// exit kinds it does not list, which must be zero.
    pub fn all_expected(&self) -> BTreeMap<CountKey, u64> {
        let mut all: BTreeMap<CountKey, u64> = ExitKind::ALL
            .into_iter()
            .filter(|k| *k != ExitKind::Interrupted)
            .map(|k| (CountKey::Exits(k), 0))
            .collect();
        all.extend(self.counts.iter().map(|(k, v)| (k.clone(), *v)));
        all
    }
}

/// A divergence a mode is known to show, with the reason the report gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDivergence {
    /// The result this mode produces instead.
    pub result: u64,
    /// Why (which instruction, and why it misbehaves in this mode).
    pub why: String,
}

/// A run condition under which a mode's oracle changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// CPUID faulting is not in effect (switched off, or not effective on this host):
    /// CPUID at CPL 3 runs without trapping.
    CpuidFaultingOff,
    /// The shadow cache was switched off: every guest CR3 load rebuilds a shadow.
    ShadowCacheOff,
}

impl Condition {
    /// Whether the condition holds for a run with these settings, and if so why: the
    /// sentence names the host when the host is the cause. The second value is `true`
    /// when the host, not the user's options, caused it.
    pub fn holds(self, r: &RunRecord) -> Option<(String, bool)> {
        match self {
            Condition::CpuidFaultingOff => {
                let s = r.options.cpuid_faulting?;
                if s.effective {
                    return None;
                }
                Some(if s.requested {
                    let detail = r.host.capabilities.as_ref().map_or_else(
                        || "the host's probe found it without effect".to_string(),
                        |c| c.cpuid_faulting.detail.clone(),
                    );
                    (
                        format!(
                            "CPUID faulting was requested but is not effective on this host ({detail})"
                        ),
                        true,
                    )
                } else {
                    (
                        "CPUID faulting was switched off for this run".to_string(),
                        false,
                    )
                })
            }
            Condition::ShadowCacheOff => {
                let s = r.options.shadow_cache?;
                (!s.effective).then(|| {
                    (
                        "the shadow cache was switched off for this run".to_string(),
                        false,
                    )
                })
            }
        }
    }
}

/// The oracle of a mode under a [`Condition`], and the divergence the condition causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleVariant {
    /// The mode.
    pub mode: Mode,
    /// When it applies.
    pub when: Condition,
    /// The counts the run must produce then.
    pub oracle: Oracle,
    /// What a correct virtualization would do (the `expected` of the divergence).
    pub expected: String,
    /// What happens instead (the `got`).
    pub got: String,
    /// Why, in the terms of the lesson.
    pub why: String,
}

/// What a workload must do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Exit code written to the exit port.
    pub exit_code: Option<u32>,
    /// Result in RBX at exit.
    pub result: Option<u64>,
    /// Exact console output.
    pub console: Option<String>,
    /// The oracle, per mode (a mode without an entry has none yet).
    pub oracles: BTreeMap<Mode, Oracle>,
    /// Modes known to diverge, and why.
    pub divergences: BTreeMap<Mode, KnownDivergence>,
    /// Oracles that replace a mode's oracle under a condition of the run (host or
    /// options); a run under one is a declared divergence.
    pub variants: Vec<OracleVariant>,
}

/// A guest ready to load: bytes, where they go, and what they should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// Workload name (or the file name of a user binary).
    pub name: String,
    /// The flat binary.
    pub bytes: Vec<u8>,
    /// Guest-physical (= virtual) address of the first byte.
    pub load_addr: u64,
    /// Entry point.
    pub entry: u64,
    /// Initial RSP.
    pub stack_top: u64,
    /// Native or paravirtual.
    pub flavour: Flavour,
    /// Parameters (`n`, `b`, …).
    pub params: BTreeMap<String, u64>,
    /// What it must do.
    pub expected: Expectations,
}

impl GuestImage {
    /// An image of a user's flat binary with no expectations.
    pub fn flat(name: impl Into<String>, bytes: Vec<u8>, load_addr: u64, entry: u64) -> Self {
        GuestImage {
            name: name.into(),
            bytes,
            load_addr,
            entry,
            stack_top: layout::DEFAULT_STACK_TOP,
            flavour: Flavour::Native,
            params: BTreeMap::new(),
            expected: Expectations::default(),
        }
    }

    /// Checks that the image fits the ABI in `ram_size` bytes of guest RAM.
    pub fn validate(&self, ram_size: u64) -> Result<()> {
        let end = self
            .load_addr
            .checked_add(self.bytes.len() as u64)
            .ok_or_else(|| Error::InvalidImage("load address + size overflows".into()))?;
        if self.bytes.is_empty() {
            return Err(Error::InvalidImage("the image is empty".into()));
        }
        if end > ram_size {
            return Err(Error::InvalidImage(format!(
                "image {:#x}..{end:#x} does not fit in {} MiB of guest RAM",
                self.load_addr,
                ram_size >> 20
            )));
        }
        if !(self.load_addr..end).contains(&self.entry) {
            return Err(Error::InvalidImage(format!(
                "entry {:#x} is outside the image {:#x}..{end:#x}",
                self.entry, self.load_addr
            )));
        }
        if self.stack_top < 16 || self.stack_top > ram_size {
            return Err(Error::InvalidImage(format!(
                "stack top {:#x} must be in 0x10..={ram_size:#x} (guest RAM)",
                self.stack_top
            )));
        }
        Ok(())
    }

    /// Compares a finished record with the expectations for its mode: fills `expected`
    /// and `mismatches`, checks the console, and turns a wrong result into `Diverged`.
    pub fn judge(&self, record: &mut RunRecord) {
        let exp = &self.expected;
        let variant = exp
            .variants
            .iter()
            .filter(|v| v.mode == record.mode)
            .find_map(|v| v.when.holds(record).map(|cause| (v, cause)));
        let oracle = match &variant {
            Some((v, _)) => Some(&v.oracle),
            None => exp.oracles.get(&record.mode),
        };
        if let Some(oracle) = oracle {
            for (key, want) in oracle.all_expected() {
                let got = key.measure(record);
                if got != want {
                    record.mismatches.insert(key.clone(), (want, got));
                }
                // Only listed keys and nonzero surprises are worth a row.
                if oracle.counts.contains_key(&key) || got != 0 {
                    record.expected.insert(key, want);
                }
            }
        } else if !exp.oracles.is_empty() {
            record
                .notes
                .push(format!("no counts oracle for {} yet", record.mode));
        }
        if let Some(console) = &exp.console {
            record.console_ok = Some(&record.console == console);
        }
        let Outcome::Completed {
            exit_code, result, ..
        } = record.outcome.clone()
        else {
            return;
        };
        if let Some(want) = exp.exit_code {
            if exit_code != want {
                record.outcome = Outcome::Diverged {
                    expected: format!("exit code {want}"),
                    got: format!("exit code {exit_code}"),
                    why: "the guest reported a failure".into(),
                    declared: false,
                    host_caused: false,
                    result: Some(result),
                };
                return;
            }
        }
        if let Some(want) = exp.result {
            if result != want {
                let (why, declared) = match exp.divergences.get(&record.mode) {
                    Some(d) if d.result == result => (d.why.clone(), true),
                    _ => (
                        "unexplained: this mode should produce the same result".into(),
                        false,
                    ),
                };
                record.outcome = Outcome::Diverged {
                    expected: want.to_string(),
                    got: result.to_string(),
                    why,
                    declared,
                    host_caused: false,
                    result: Some(result),
                };
                return;
            }
        }
        if let Some((v, (cause, host_caused))) = variant {
            record.outcome = Outcome::Diverged {
                expected: v.expected.clone(),
                got: v.got.clone(),
                why: format!("{} — {cause}", v.why),
                declared: true,
                host_caused,
                result: Some(result),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Backend, HostInfo};
    use crate::record::Ending;

    fn record(mode: Mode, outcome: Outcome) -> RunRecord {
        RunRecord {
            mode,
            workload: "w".into(),
            params: Default::default(),
            repeat: 0,
            host: HostInfo {
                backend: Backend::Unknown,
                cpu_model: String::new(),
                kernel: String::new(),
                kvm_api_version: 12,
                tsc_khz: None,
                umip: false,
                tool_version: String::new(),
                git_revision: None,
                capabilities: None,
                guest_mmu: None,
            },
            options: Default::default(),
            outcome,
            exits: [(ExitKind::IoOut, 1)].into_iter().collect(),
            io_ports: Default::default(),
            traps: Default::default(),
            hypercalls: Default::default(),
            injections: 0,
            event_ns: Default::default(),
            expected: Default::default(),
            mismatches: Default::default(),
            round_trip_ns: Default::default(),
            handler_ns: Default::default(),
            guest: None,
            kvm_stats: Default::default(),
            wall_ns: 0,
            console: String::new(),
            console_ok: None,
            notes: Vec::new(),
            trace: Vec::new(),
            translation: BTreeMap::new(),
            device: BTreeMap::new(),
            memory: None,
            shadow: BTreeMap::new(),
            block_backend: None,
            kernel_code_emulated: false,
            final_regs: None,
            peeks: Vec::new(),
        }
    }

    fn image() -> GuestImage {
        let mut img = GuestImage::flat("w", vec![0xF4], layout::DEFAULT_LOAD, layout::DEFAULT_LOAD);
        img.expected = Expectations {
            exit_code: Some(0),
            result: Some(30),
            console: Some(String::new()),
            oracles: [(
                Mode::HwAssisted,
                Oracle::default().expect(CountKey::Exits(ExitKind::IoOut), 1),
            )]
            .into_iter()
            .collect(),
            divergences: [(
                Mode::TrapEmulate,
                KnownDivergence {
                    result: 10,
                    why: "the hole".into(),
                },
            )]
            .into_iter()
            .collect(),
            variants: vec![OracleVariant {
                mode: Mode::TrapEmulate,
                when: Condition::CpuidFaultingOff,
                oracle: Oracle::default().expect(CountKey::Exits(ExitKind::IoOut), 1),
                expected: "CPUID trapped".into(),
                got: "CPUID ran natively".into(),
                why: "not privileged".into(),
            }],
        };
        img
    }

    fn done(exit_code: u32, result: u64) -> Outcome {
        Outcome::Completed {
            exit_code,
            result,
            ending: Ending::ExitPort,
        }
    }

    #[test]
    fn the_right_result_and_counts_went_as_expected() {
        let mut r = record(Mode::HwAssisted, done(0, 30));
        image().judge(&mut r);
        assert_eq!(r.verdict(), "ok");
        assert!(r.went_as_expected(false));
        assert_eq!(r.expected[&CountKey::Exits(ExitKind::IoOut)], 1);
    }

    #[test]
    fn a_declared_divergence_is_expected_an_unexplained_one_is_not() {
        let mut r = record(Mode::TrapEmulate, done(0, 10));
        image().judge(&mut r);
        assert!(
            matches!(&r.outcome, Outcome::Diverged { declared: true, why, .. } if why == "the hole")
        );
        assert!(r.went_as_expected(false));
        assert_undeclared_divergence(Mode::TrapEmulate, done(0, 11));
    }

    #[test]
    fn a_failing_exit_code_is_not_expected() {
        assert_undeclared_divergence(Mode::HwAssisted, done(3, 30));
    }

    fn assert_undeclared_divergence(mode: Mode, outcome: Outcome) {
        let mut r = record(mode, outcome);
        image().judge(&mut r);
        assert!(
            matches!(
                r.outcome,
                Outcome::Diverged {
                    declared: false,
                    ..
                }
            ),
            "{:?}",
            r.outcome
        );
        assert!(!r.went_as_expected(false));
    }

    #[test]
    fn count_mismatches_fail_unless_the_options_changed() {
        let mut r = record(Mode::HwAssisted, done(0, 30));
        r.exits.insert(ExitKind::Halt, 2);
        image().judge(&mut r);
        assert_eq!(r.mismatches[&CountKey::Exits(ExitKind::Halt)], (0, 2));
        assert_eq!(r.verdict(), "counts differ");
        assert!(!r.went_as_expected(false));
        assert!(r.went_as_expected(true));
    }

    #[test]
    fn a_users_binary_went_as_expected_unless_it_timed_out() {
        let fault = Outcome::GuestFault {
            kind: crate::FaultKind::Exception,
            rip: None,
            detail: String::new(),
        };
        assert!(record(Mode::Paravirt, fault).went_as_expected(false));
        let timeout = Outcome::TimedOut {
            limit: crate::Limit::WallClock,
            rip: None,
        };
        assert!(!record(Mode::Paravirt, timeout).went_as_expected(false));
    }

    #[test]
    fn an_oracle_variant_follows_the_effective_option_and_names_its_cause() {
        use crate::engine::{RunSettings, Setting};
        let img = image();
        let done = Outcome::Completed {
            exit_code: 0,
            result: 30,
            ending: Ending::ExitPort,
        };
        // Faulting in effect: the mode's own oracle (none for trap-emulate here), no divergence.
        let mut r = record(Mode::TrapEmulate, done.clone());
        r.options = RunSettings {
            cpuid_faulting: Some(Setting::resolve(true, true)),
            umip: None,
            shadow_cache: None,
        };
        img.judge(&mut r);
        assert_eq!(r.outcome, done);
        // Requested, but the host lacks it: the variant's counts, a host-caused divergence.
        for (requested, host_caused) in [(true, true), (false, false)] {
            let mut r = record(Mode::TrapEmulate, done.clone());
            r.options.cpuid_faulting = Some(Setting::resolve(requested, false));
            img.judge(&mut r);
            assert_eq!(r.expected[&CountKey::Exits(ExitKind::IoOut)], 1);
            assert!(r.mismatches.is_empty(), "{:?}", r.mismatches);
            match &r.outcome {
                Outcome::Diverged {
                    declared: true,
                    host_caused: h,
                    why,
                    ..
                } => {
                    assert_eq!(*h, host_caused);
                    assert!(
                        why.starts_with("not privileged — CPUID faulting was"),
                        "{why}"
                    );
                }
                other => panic!("{other:?}"),
            }
            assert!(r.went_as_expected(false));
        }
    }
}
