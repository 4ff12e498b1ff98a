//! Adams & Agesen (ASPLOS 2006) beside a run: what the paper found for each of its
//! nanobenchmarks (and for context switches and fork/wait), as constants with their
//! source, next to the ordering the run measured, computed from the run's medians.
//!
//! The paper compared VMware's software VMM (binary translation of the guest kernel) with
//! a VMM built on first-generation VT-x. Its software VMM is `binary-translation` here and
//! its hardware VMM is `hw-assisted`; `trap-emulate` and `paravirt` are shown beside them.
//!
//! ```
//! use reports::paper::{rows, FINDINGS, Vmm};
//!
//! assert_eq!(FINDINGS[0].name, "syscall");
//! assert_eq!(FINDINGS[0].faster, Vmm::Hardware);
//! assert!(rows(&[]).is_empty());
//! ```

use std::collections::BTreeSet;

use contract::{Mode, RunRecord};

use crate::digest::{self, Params};
use crate::format::{fmt_ratio, fmt_short};
use crate::stats::Spread;

/// The paper.
pub const CITATION: &str = "Keith Adams and Ole Agesen, \u{201c}A Comparison of Software and \
    Hardware Techniques for x86 Virtualization\u{201d}, ASPLOS 2006 (VMware)";

/// Where the paper's figures come from.
pub const SOURCE: &str = "The cycle counts are the ones the paper states in its text beside \
    its nanobenchmark figure (CPU cycles on the paper's test machine, for native execution, \
    the software VMM and the hardware VMM). Where the text gives a comparison instead of a \
    count, its words are quoted and no number is made up; a factor marked \u{2248} is \
    derived from the stated figures as shown.";

/// One of the paper's two VMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    /// VMware's binary-translating VMM.
    Software,
    /// The VMM on first-generation VT-x (no nested paging).
    Hardware,
}

impl Vmm {
    /// `software VMM`, `hardware VMM`.
    pub fn words(self) -> &'static str {
        match self {
            Vmm::Software => "software VMM",
            Vmm::Hardware => "hardware VMM",
        }
    }

    /// The kind of VMM a mode is: hw-assisted is the hardware VMM, every other mode a
    /// software one.
    pub fn of(mode: Mode) -> Vmm {
        if mode == Mode::HwAssisted {
            Vmm::Hardware
        } else {
            Vmm::Software
        }
    }
}

/// What the paper found for one operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    /// The paper's name (`in`, `call/ret`, …).
    pub name: &'static str,
    /// One of the paper's seven nanobenchmarks, rather than an observation about a
    /// workload (context switches, fork/wait).
    pub nanobenchmark: bool,
    /// The virtlab workload that measures it.
    pub workload: &'static str,
    /// Native cycles, where the paper states them.
    pub native: Option<u32>,
    /// Software VMM cycles, where stated.
    pub software: Option<u32>,
    /// Hardware VMM cycles, where stated.
    pub hardware: Option<u32>,
    /// Which VMM the paper found faster.
    pub faster: Vmm,
    /// The slower VMM's cost over the faster one's, where it follows from the paper's text
    /// without both counts being stated (see `basis`).
    pub stated_factor: Option<f64>,
    /// How the factor follows from the paper, or why there is none.
    pub basis: &'static str,
    /// The paper's words.
    pub words: &'static str,
}

impl Finding {
    /// The paper's factor, slower over faster: from the two stated counts, else the one
    /// derived from its text.
    pub fn factor(&self) -> Option<f64> {
        match (self.software, self.hardware) {
            (Some(s), Some(h)) if s > 0 && h > 0 => {
                let (s, h) = (f64::from(s), f64::from(h));
                Some(if self.faster == Vmm::Software {
                    h / s
                } else {
                    s / h
                })
            }
            _ => self.stated_factor,
        }
    }
}

/// The paper's findings, in its order: the seven nanobenchmarks, then the context-switch
/// and fork/wait observations.
pub const FINDINGS: [Finding; 9] = [
    Finding {
        name: "syscall",
        nanobenchmark: true,
        workload: "syscall",
        native: None,
        software: None,
        hardware: None,
        faster: Vmm::Hardware,
        stated_factor: None,
        basis: "no count stated for native or either VMM: the software VMM costs \
                \u{201c}approximately 2000 more cycles than a native system call\u{201d}, \
                the hardware VMM runs at native speed",
        words: "The software VMM introduces a layer of code and an extra privilege \
                transition, requiring approximately 2000 more cycles than a native system \
                call. In the hardware VMM, system calls execute without VMM intervention, \
                so as we expect, the hardware VMM executes system calls at native speed.",
    },
    Finding {
        name: "in",
        nanobenchmark: true,
        workload: "pio",
        native: Some(3209),
        software: None,
        hardware: Some(15826),
        faster: Vmm::Software,
        stated_factor: Some(15826.0 / (3209.0 / 15.0)),
        basis: "\u{2248} 15,826 / (3,209 / 15): the software VMM is stated as fifteen times \
                faster than native's 3,209 cycles",
        words: "Native execution accesses an off-CPU register in the chipset, requiring 3209 \
                cycles. The software VMM, on the other hand, translates the in into a short \
                sequence of instructions that interacts with the virtual chipset model. \
                Thus, the software VMM executes this instruction fifteen times faster than \
                native. The hardware VMM must perform a vmm/guest round trip to complete the \
                I/O operation. This transition causes in to consume 15826 cycles in the \
                tested system.",
    },
    Finding {
        name: "cr8wr",
        nanobenchmark: true,
        workload: "cr8wr",
        native: None,
        software: Some(35),
        hardware: None,
        faster: Vmm::Software,
        stated_factor: Some(4.0),
        basis: "\u{2248} 4: the software VMM's 35 cycles are \u{201c}about four times faster \
                than native\u{201d} and the hardware VMM's performance \u{201c}is similar to \
                native\u{201d}",
        words: "Our FrobOS test never takes interrupts so no %cr8 write in the test ever \
                causes an exit. As with syscall, the hardware VMM\u{2019}s performance is \
                similar to native. The software VMM translates %cr8 writes into a short \
                sequence of simple instructions, completing the %cr8 write in 35 cycles, \
                about four times faster than native.",
    },
    Finding {
        name: "call/ret",
        nanobenchmark: true,
        workload: "call-ret",
        native: Some(11),
        software: Some(51),
        hardware: Some(11),
        faster: Vmm::Hardware,
        stated_factor: None,
        basis: "51 / 11",
        words: "Since the hardware VMM executes calls and returns without modification, the \
                hardware VMM and native both execute the call/return pair in 11 cycles. The \
                software VMM introduces an average penalty of 40 cycles, requiring 51 \
                cycles.",
    },
    Finding {
        name: "pgfault",
        nanobenchmark: true,
        workload: "pgfault",
        native: Some(1093),
        software: Some(3927),
        hardware: Some(11242),
        faster: Vmm::Software,
        stated_factor: None,
        basis: "11,242 / 3,927",
        words: "While both VMM paths are logically similar, the software VMM (3927 cycles) \
                performs much better than the hardware VMM (11242 cycles). This is due \
                mostly to the shorter path whereby the software VMM receives control; page \
                faults, while by no means cheap natively (1093 cycles on this hardware), are \
                faster than a vmrun/exit round-trip.",
    },
    Finding {
        name: "divzero",
        nanobenchmark: true,
        workload: "divzero",
        native: Some(889),
        software: Some(3223),
        hardware: Some(1014),
        faster: Vmm::Hardware,
        stated_factor: None,
        basis: "3,223 / 1,014",
        words: "As expected, the hardware VMM (1014 cycles) delivers near native performance \
                (889 cycles), decisively beating the software VMM (3223 cycles).",
    },
    Finding {
        name: "ptemod",
        nanobenchmark: true,
        workload: "ptemod",
        native: None,
        software: Some(391),
        hardware: Some(12733),
        faster: Vmm::Software,
        stated_factor: None,
        basis: "12,733 / 391 (\u{201c}approximately thirty times worse\u{201d})",
        words: "The traces induce significant overheads for PTE writes, causing very high \
                penalties relative to the native single cycle store. The software VMM \
                adaptively discovers the PTE write and translates it into a small program \
                that is cheaper than a trap but still quite costly. This small program \
                consumes 391 cycles on each iteration. The hardware VMM enters and exits \
                guest mode repeatedly, causing it to perform approximately thirty times \
                worse than the software VMM, requiring 12733 cycles.",
    },
    Finding {
        name: "context switch",
        nanobenchmark: false,
        workload: "ctxswitch",
        native: None,
        software: None,
        hardware: None,
        faster: Vmm::Software,
        stated_factor: None,
        basis: "not a nanobenchmark: the ordering is the paper's conclusion about MMU-heavy \
                work; no count is quoted here",
        words: "We study architecture-level events such as page table updates, context \
                switches and I/O, and find their costs vastly different among native, \
                software VMM and hardware VMM execution. We find that the hardware support \
                fails to provide an unambiguous performance advantage for two primary \
                reasons: first, it offers no support for MMU virtualization; second, it \
                fails to co-exist with existing software techniques for MMU virtualization.",
    },
    Finding {
        name: "fork/wait",
        nanobenchmark: false,
        workload: "forkwait",
        native: None,
        software: None,
        hardware: None,
        faster: Vmm::Software,
        stated_factor: None,
        basis: "not a nanobenchmark: the ordering is the paper's conclusion about process \
                creation (page-table updates, context switches); no count is quoted here",
        words: "Surprisingly, the hardware VMM often suffers lower performance than the pure \
                software VMM. To determine why, we study architecture-level events such as \
                page table updates, context switches and I/O.",
    },
];

/// One mode's median guest cycles per operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The mode.
    pub mode: Mode,
    /// Guest TSC cycles per operation over the repeats.
    pub cycles: Spread,
}

/// What the run says against the paper.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The run has both VMMs: which was faster, by how much, and whether the paper agrees.
    Compared {
        /// The faster VMM in this run.
        faster: Vmm,
        /// Slower median over faster median.
        factor: f64,
        /// Whether the paper found the same VMM faster.
        agrees: bool,
    },
    /// The run cannot be compared for this operation, and why.
    Missing(String),
}

/// One finding beside the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What the paper found.
    pub finding: &'static Finding,
    /// The parameters of the runs compared.
    pub params: Params,
    /// Every mode that measured it, fastest first.
    pub measured: Vec<Measured>,
    /// The mode that stands for the paper's software VMM: binary-translation, else the
    /// fastest other software mode present.
    pub software: Option<Mode>,
    /// The comparison.
    pub verdict: Verdict,
}

impl Row {
    /// The median of a mode, if it measured this operation.
    pub fn median(&self, mode: Mode) -> Option<f64> {
        self.measured
            .iter()
            .find(|m| m.mode == mode)
            .map(|m| m.cycles.median)
    }

    /// `hw-assisted 8.16k < binary-translation 40.2k < paravirt 157k`.
    pub fn ordering(&self) -> String {
        self.measured
            .iter()
            .map(|m| format!("{} {}", m.mode, fmt_short(m.cycles.median)))
            .collect::<Vec<_>>()
            .join(" < ")
    }

    /// `hardware VMM 2.31× faster (hw-assisted against binary-translation)`, or why not.
    pub fn measured_words(&self) -> String {
        match &self.verdict {
            Verdict::Compared { faster, factor, .. } => {
                let sw = self.software.map_or("", Mode::name);
                format!(
                    "{} {} faster (hw-assisted against {sw})",
                    faster.words(),
                    fmt_ratio(*factor)
                )
            }
            Verdict::Missing(why) => why.clone(),
        }
    }

    /// `agrees`, `disagrees` or `not compared`.
    pub fn agreement(&self) -> &'static str {
        match self.verdict {
            Verdict::Compared { agrees: true, .. } => "agrees",
            Verdict::Compared { agrees: false, .. } => "disagrees",
            Verdict::Missing(_) => "not compared",
        }
    }
}

/// The paper's ordering in words: `software VMM ≈74× faster`, `hardware VMM faster (no
/// factor stated)`.
pub fn paper_words(f: &Finding) -> String {
    match f.factor() {
        Some(x) if f.stated_factor.is_some() && (f.software.is_none() || f.hardware.is_none()) => {
            format!("{} \u{2248}{} faster", f.faster.words(), fmt_ratio(x))
        }
        Some(x) => format!("{} {} faster", f.faster.words(), fmt_ratio(x)),
        None => format!("{} faster (no factor stated)", f.faster.words()),
    }
}

/// The median cycles per operation of each mode that finished `workload` with `params`.
fn measured(records: &[RunRecord], workload: &str, params: &Params) -> Vec<Measured> {
    let mut out: Vec<Measured> = Mode::ALL
        .iter()
        .filter_map(|m| {
            let v: Vec<f64> = records
                .iter()
                .filter(|r| {
                    r.workload == workload
                        && r.mode == *m
                        && r.params == *params
                        && digest::finished(r)
                })
                .filter_map(|r| r.guest.map(|g| g.cycles_per_op))
                .collect();
            Spread::of(&v).map(|cycles| Measured { mode: *m, cycles })
        })
        .collect();
    out.sort_by(|a, b| a.cycles.median.total_cmp(&b.cycles.median));
    out
}

/// The parameters of `workload` measured by the most modes (the first seen on a tie).
fn chosen_params(records: &[RunRecord], workload: &str) -> Option<Params> {
    let mut candidates: Vec<(Params, BTreeSet<Mode>)> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.workload == workload && digest::finished(r) && r.guest.is_some())
    {
        match candidates.iter_mut().find(|(p, _)| *p == r.params) {
            Some((_, m)) => {
                m.insert(r.mode);
            }
            None => candidates.push((r.params.clone(), BTreeSet::from([r.mode]))),
        }
    }
    let mut best: Option<(Params, usize)> = None;
    for (p, m) in candidates {
        if best.as_ref().is_none_or(|(_, n)| m.len() > *n) {
            best = Some((p, m.len()));
        }
    }
    best.map(|(p, _)| p)
}

/// The findings whose workload the run measured in at least two modes, each beside the
/// run's medians.
pub fn rows(records: &[RunRecord]) -> Vec<Row> {
    FINDINGS
        .iter()
        .filter_map(|f| {
            let params = chosen_params(records, f.workload)?;
            let measured = measured(records, f.workload, &params);
            if measured.len() < 2 {
                return None;
            }
            let software = if measured.iter().any(|m| m.mode == Mode::BinaryTranslation) {
                Some(Mode::BinaryTranslation)
            } else {
                // Fastest first: the first software mode is the fastest one.
                measured
                    .iter()
                    .map(|m| m.mode)
                    .find(|m| Vmm::of(*m) == Vmm::Software)
            };
            let hw = measured.iter().find(|m| m.mode == Mode::HwAssisted);
            let sw = software.and_then(|s| measured.iter().find(|m| m.mode == s));
            let verdict = match (hw, sw) {
                (Some(h), Some(s)) => {
                    let (h, s) = (h.cycles.median, s.cycles.median);
                    if h <= 0.0 || s <= 0.0 || h == s {
                        Verdict::Missing("the two medians are equal or zero".into())
                    } else {
                        let faster = if s < h { Vmm::Software } else { Vmm::Hardware };
                        Verdict::Compared {
                            faster,
                            factor: h.max(s) / h.min(s),
                            agrees: faster == f.faster,
                        }
                    }
                }
                (None, _) => Verdict::Missing("no hw-assisted run (the hardware VMM)".into()),
                (_, None) => Verdict::Missing("no software-VMM run".into()),
            };
            Some(Row {
                finding: f,
                params,
                measured,
                software,
                verdict,
            })
        })
        .collect()
}

/// The findings the run did not measure in two modes, by the paper's name.
pub fn absent(rows: &[Row]) -> Vec<&'static str> {
    FINDINGS
        .iter()
        .filter(|f| !rows.iter().any(|r| r.finding.name == f.name))
        .map(|f| f.name)
        .collect()
}

/// `5 of 7 agree` over the compared rows: (agreeing, compared).
pub fn tally(rows: &[Row]) -> (usize, usize) {
    let compared: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Compared { .. }))
        .collect();
    let agree = compared
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Compared { agrees: true, .. }))
        .count();
    (agree, compared.len())
}

/// `3 of 9 orderings agree`, or why none was compared.
pub fn tally_words(rows: &[Row]) -> String {
    match tally(rows) {
        (_, 0) => "no ordering compared (it needs hw-assisted and a software mode)".into(),
        (agree, compared) => format!("{agree} of {compared} orderings agree"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::rec;
    use contract::ExitKind;

    fn run(mode: Mode, workload: &str, repeat: u32, cycles: f64) -> RunRecord {
        let mut r = rec(mode, workload, 100, 1, ExitKind::IoOut);
        r.repeat = repeat;
        r.guest.as_mut().unwrap().cycles_per_op = cycles;
        r
    }

    #[test]
    fn the_paper_figures_give_its_factors() {
        let f = |n: &str| FINDINGS.iter().find(|f| f.name == n).unwrap();
        assert!((f("pgfault").factor().unwrap() - 11242.0 / 3927.0).abs() < 1e-12);
        assert!((f("divzero").factor().unwrap() - 3223.0 / 1014.0).abs() < 1e-12);
        assert!((f("call/ret").factor().unwrap() - 51.0 / 11.0).abs() < 1e-12);
        assert!((f("ptemod").factor().unwrap() - 12733.0 / 391.0).abs() < 1e-12);
        assert!((f("in").factor().unwrap() - 15826.0 * 15.0 / 3209.0).abs() < 1e-9);
        assert_eq!(f("syscall").factor(), None);
        assert_eq!(FINDINGS.iter().filter(|f| f.nanobenchmark).count(), 7);
        assert_eq!(paper_words(f("pgfault")), "software VMM 2.86× faster");
        assert_eq!(paper_words(f("in")), "software VMM ≈74.0× faster");
        assert_eq!(
            paper_words(f("syscall")),
            "hardware VMM faster (no factor stated)"
        );
    }

    #[test]
    fn each_row_is_the_medians_ordered_and_judged_against_the_paper() {
        let mut records = Vec::new();
        // pgfault: binary translation faster (agrees), medians over three repeats.
        for (i, (hw, bt, te)) in [
            (9000.0, 3000.0, 50_000.0),
            (9100.0, 2900.0, 52_000.0),
            (30_000.0, 3100.0, 51_000.0),
        ]
        .into_iter()
        .enumerate()
        {
            records.push(run(Mode::HwAssisted, "pgfault", i as u32, hw));
            records.push(run(Mode::BinaryTranslation, "pgfault", i as u32, bt));
            records.push(run(Mode::TrapEmulate, "pgfault", i as u32, te));
        }
        // divzero: binary translation faster, the paper found hardware faster.
        records.push(run(Mode::HwAssisted, "divzero", 0, 20_000.0));
        records.push(run(Mode::BinaryTranslation, "divzero", 0, 5_000.0));
        // cr8wr without binary translation: paravirt stands in as the software VMM.
        records.push(run(Mode::HwAssisted, "cr8wr", 0, 8_000.0));
        records.push(run(Mode::TrapEmulate, "cr8wr", 0, 180_000.0));
        records.push(run(Mode::Paravirt, "cr8wr", 0, 150_000.0));
        // ptemod in one mode only: no row.
        records.push(run(Mode::HwAssisted, "ptemod", 0, 10_000.0));
        // syscall without hw-assisted: a row, not compared.
        records.push(run(Mode::BinaryTranslation, "syscall", 0, 40_000.0));
        records.push(run(Mode::TrapEmulate, "syscall", 0, 90_000.0));

        let rows = rows(&records);
        let names: Vec<&str> = rows.iter().map(|r| r.finding.name).collect();
        assert_eq!(names, ["syscall", "cr8wr", "pgfault", "divzero"]);

        let syscall = &rows[0];
        assert_eq!(
            syscall.verdict,
            Verdict::Missing("no hw-assisted run (the hardware VMM)".into())
        );
        assert_eq!(syscall.agreement(), "not compared");

        let cr8 = &rows[1];
        assert_eq!(cr8.software, Some(Mode::Paravirt));
        assert_eq!(
            cr8.verdict,
            Verdict::Compared {
                faster: Vmm::Hardware,
                factor: 150_000.0 / 8_000.0,
                agrees: false
            }
        );
        assert_eq!(
            cr8.ordering(),
            "hw-assisted 8.00k < paravirt 150k < trap-emulate 180k"
        );
        assert_eq!(
            cr8.measured_words(),
            "hardware VMM 18.8× faster (hw-assisted against paravirt)"
        );

        let pg = &rows[2];
        assert_eq!(pg.software, Some(Mode::BinaryTranslation));
        assert_eq!(pg.median(Mode::HwAssisted), Some(9100.0));
        assert_eq!(pg.median(Mode::BinaryTranslation), Some(3000.0));
        assert_eq!(pg.measured[0].cycles.runs, 3);
        assert_eq!(
            pg.verdict,
            Verdict::Compared {
                faster: Vmm::Software,
                factor: 9100.0 / 3000.0,
                agrees: true
            }
        );
        assert_eq!(pg.agreement(), "agrees");

        let dz = &rows[3];
        assert_eq!(dz.agreement(), "disagrees");
        assert_eq!(tally(&rows), (1, 3));
        assert_eq!(tally_words(&rows), "1 of 3 orderings agree");
        assert_eq!(
            tally_words(&rows[..1]),
            "no ordering compared (it needs hw-assisted and a software mode)"
        );
        assert_eq!(
            absent(&rows),
            ["in", "call/ret", "ptemod", "context switch", "fork/wait"]
        );
    }

    #[test]
    fn a_failed_run_is_not_measured() {
        let mut bad = run(Mode::BinaryTranslation, "ptemod", 0, 1.0);
        bad.outcome = contract::Outcome::TimedOut {
            limit: contract::Limit::WallClock,
            rip: None,
        };
        let records = vec![run(Mode::HwAssisted, "ptemod", 0, 10_000.0), bad];
        assert!(rows(&records).is_empty());
    }
}
