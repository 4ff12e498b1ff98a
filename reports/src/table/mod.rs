//! The terminal output of a run: a verdict grid first, then what went wrong, then one
//! compact block per workload (or one table per sweep), the scaling fits, the host, the
//! notes and a closing summary line.
//!
//! By default every line fits in 80 columns; [`Options::wide`] shows every counter of
//! every run side by side instead, as wide as it needs.
//!
//! ```
//! use reports::table::{render_with, Options};
//!
//! let text = render_with(&[], &[], &Options::default());
//! assert!(text.contains("no run"));
//! ```

mod blocks;
mod host;
mod state;
pub mod style;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use contract::{Mode, Outcome, RunRecord};

pub use crate::format::fmt_ns;
pub use host::render_host;
pub use state::render_state;
use style::{Cell, Paint, Tone};

use crate::digest;
use crate::format::{clip, fmt_bytes, group_digits, params_label, wrap};
use crate::verdict::{Class, Tally, Verdict};
use crate::RunFailure;

/// Columns the compact layout fits in.
pub const WIDTH: usize = 80;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Every counter of every run, side by side, as wide as it needs.
    pub wide: bool,
    /// ANSI colour.
    pub color: bool,
    /// Console lines shown of a guest whose console is printed.
    pub console_lines: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wide: false,
            color: false,
            console_lines: 20,
        }
    }
}

/// The compact table of `records`, without colour.
pub fn render(records: &[RunRecord]) -> String {
    render_with(records, &[], &Options::default())
}

/// Everything the terminal shows of a run, before the closing summary line.
pub fn render_with(records: &[RunRecord], failures: &[RunFailure], opts: &Options) -> String {
    let paint = Paint { color: opts.color };
    let mut out = String::new();
    if records.is_empty() && failures.is_empty() {
        out.push_str("no run finished, so there is nothing to show\n");
        return out;
    }
    verdict_grid(&mut out, records, failures, &paint);
    problems(&mut out, records, failures, &paint);
    if opts.wide {
        blocks::wide(&mut out, records, &paint);
    } else {
        blocks::compact(&mut out, records, &paint);
    }
    consoles(&mut out, records, opts, &paint);
    blocks::scaling(
        &mut out,
        records,
        if opts.wide { usize::MAX } else { WIDTH },
    );
    paper_block(
        &mut out,
        records,
        if opts.wide { usize::MAX } else { WIDTH },
        &paint,
    );
    hosts_and_notes(&mut out, records, opts.wide);
    out
}

/// The paper's orderings beside this run's, when the run measured one of its operations
/// in two modes or more.
fn paper_block(out: &mut String, records: &[RunRecord], width: usize, paint: &Paint) {
    let rows = crate::paper::rows(records);
    if rows.is_empty() {
        return;
    }
    heading(
        out,
        &format!(
            "Adams & Agesen (ASPLOS 2006) beside this run: {}",
            crate::paper::tally_words(&rows)
        ),
        paint,
    );
    write_wrapped(
        out,
        "  guest cycles per operation, median over repeats; the paper's software VMM is \
         binary-translation here, its hardware VMM hw-assisted (the HTML report quotes the \
         paper's figures and words)",
        width,
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "  {}",
            paint.paint(
                &format!("{} ({})", r.finding.name, r.finding.workload),
                Tone::Bold
            )
        );
        let tone = match r.verdict {
            crate::paper::Verdict::Compared { agrees: true, .. } => Tone::Ok,
            crate::paper::Verdict::Compared { agrees: false, .. } => Tone::Host,
            crate::paper::Verdict::Missing(_) => Tone::Dim,
        };
        for (label, text, tone) in [
            ("paper", crate::paper::paper_words(r.finding), Tone::Plain),
            (
                "run",
                format!("{}: {}", r.measured_words(), r.agreement()),
                tone,
            ),
            ("order", r.ordering(), Tone::Plain),
        ] {
            for (i, line) in wrap(&text, width.saturating_sub(11))
                .into_iter()
                .enumerate()
            {
                let label = if i == 0 { label } else { "" };
                let _ = writeln!(out, "    {label:<6} {}", paint.paint(&line, tone));
            }
        }
    }
    let absent = crate::paper::absent(&rows);
    if !absent.is_empty() {
        write_wrapped(
            out,
            &format!("  not measured in two modes: {}", absent.join(", ")),
            width,
        );
    }
    out.push('\n');
}

fn heading(out: &mut String, text: &str, paint: &Paint) {
    let _ = writeln!(out, "{}", paint.paint(text, Tone::Bold));
}

/// The workloads as rows, the modes as columns, every cell the verdicts of its runs.
fn verdict_grid(out: &mut String, records: &[RunRecord], failures: &[RunFailure], paint: &Paint) {
    let mut workloads = digest::workloads(records);
    let mut modes: BTreeSet<Mode> = records.iter().map(|r| r.mode).collect();
    for f in failures {
        if !workloads.contains(&f.workload) {
            workloads.push(f.workload.clone());
        }
        modes.insert(f.mode);
    }
    let mut tallies: BTreeMap<(&str, Mode), Tally> = BTreeMap::new();
    for r in records {
        tallies
            .entry((&r.workload, r.mode))
            .or_default()
            .add(Verdict::of(r));
    }
    for f in failures {
        tallies
            .entry((&f.workload, f.mode))
            .or_default()
            .add(Verdict::of_failure(f));
    }
    heading(out, "verdicts (workload × mode)", paint);
    let mut rows = vec![std::iter::once(Cell::plain(""))
        .chain(modes.iter().map(|m| Cell::toned(m.name(), Tone::Bold)))
        .collect::<Vec<_>>()];
    for w in &workloads {
        let mut row = vec![Cell::plain(format!("  {}", clip(w, 10)))];
        for m in &modes {
            row.push(match tallies.get(&(w.as_str(), *m)) {
                Some(t) => grid_cell(t),
                None => Cell::toned("·", Tone::Dim),
            });
        }
        rows.push(row);
    }
    style::columns(out, &rows, 2, paint);
    let legend: Vec<&str> = [
        (Class::Expected, "◆ expected div.: declared by the workload"),
        (Class::Host, "▲ host div.: caused by this host"),
        (Class::Failure, "✗ failure"),
    ]
    .iter()
    .filter(|(c, _)| {
        tallies
            .values()
            .any(|t| t.0.keys().any(|v| v.class() == *c))
    })
    .map(|(_, s)| *s)
    .collect();
    if !legend.is_empty() {
        for line in wrap(&legend.join("; "), WIDTH - 4) {
            let _ = writeln!(out, "{}", paint.paint(&format!("  {line}"), Tone::Dim));
        }
    }
    out.push('\n');
}

/// Widest cell of the verdict grid: 3 modes and a 12-column label fit in 80 columns.
const GRID_CELL: usize = 20;

/// `✓ ok ×3`, `✗ COUNTS DIFFER 1/3`: the worst verdict, and how many runs had it.
pub(crate) fn grid_cell(t: &Tally) -> Cell {
    let Some(worst) = t.worst() else {
        return Cell::plain("");
    };
    Cell::toned(
        worst.cell(t.0[&worst], t.total(), GRID_CELL),
        worst.class().into(),
    )
}

/// One line (or a few, wrapped) per run that was not ok: failures first, then the
/// host-caused and the declared divergences. Repeats with the same story are one line.
fn problems(out: &mut String, records: &[RunRecord], failures: &[RunFailure], paint: &Paint) {
    let mut items: Vec<(Verdict, String, String, usize)> = Vec::new();
    let mut push = |v: Verdict, who: String, what: String| match items
        .iter_mut()
        .find(|(iv, iw, it, _)| *iv == v && *iw == who && *it == what)
    {
        Some(item) => item.3 += 1,
        None => items.push((v, who, what, 1)),
    };
    for r in records {
        let v = Verdict::of(r);
        if v == Verdict::Ok {
            continue;
        }
        let who = format!("{} in {} ({})", r.workload, r.mode, params_label(&r.params));
        push(v, who, what_differed(r, v));
    }
    for f in failures {
        push(
            Verdict::VmmError,
            format!("{} in {}", f.workload, f.mode),
            format!("could not be run: {}", f.error),
        );
    }
    if items.is_empty() {
        return;
    }
    items.sort_by_key(|(v, ..)| std::cmp::Reverse(v.class()));
    let failed = items.iter().filter(|i| i.0.is_failure()).count();
    heading(
        out,
        &if failed > 0 {
            format!("problems ({failed} failing, then the divergences)")
        } else {
            "divergences (none is a failure)".to_string()
        },
        paint,
    );
    for (v, who, what, n) in items {
        let times = if n > 1 {
            format!(" ×{n}")
        } else {
            String::new()
        };
        let text = format!("{} {who}{times}: {}: {what}", v.symbol(), v.words());
        for (i, line) in wrap(&text, WIDTH - 6).into_iter().enumerate() {
            let indent = if i == 0 { "  " } else { "      " };
            let _ = writeln!(out, "{indent}{}", paint.paint(&line, v.class().into()));
        }
    }
    out.push('\n');
}

/// What differed in a run that was not ok, in words.
pub fn what_differed(r: &RunRecord, v: Verdict) -> String {
    match v {
        Verdict::CountsDiffer => r
            .mismatches
            .iter()
            .map(|(k, (want, got))| {
                format!(
                    "{k} = {}, expected {}",
                    group_digits(*got),
                    group_digits(*want)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Verdict::ConsoleDiffers => "the console output was not the expected one".into(),
        _ => match &r.outcome {
            Outcome::Diverged {
                expected,
                got,
                why,
                result,
                ..
            } => {
                let what = match result {
                    Some(res) if *got != res.to_string() => format!("{got} (expected {expected})"),
                    _ => format!("result {got}, expected {expected}"),
                };
                format!("{what}. Why: {why}")
            }
            o => crate::format::outcome_words(o),
        },
    }
}

/// The console of guests whose output is not checked (a user's binary) or did not
/// match, clipped to a few lines with a marker saying how much more there is.
fn consoles(out: &mut String, records: &[RunRecord], opts: &Options, paint: &Paint) {
    for r in records {
        if r.console_ok == Some(true) || r.console.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "{}",
            paint.paint(
                &format!("console of {} in {}:", r.workload, r.mode),
                Tone::Bold
            )
        );
        let lines: Vec<&str> = r.console.lines().collect();
        let shown = opts.console_lines.min(lines.len());
        let mut cut_wide = false;
        for line in &lines[..shown] {
            let max = if opts.wide { usize::MAX } else { WIDTH - 4 };
            cut_wide |= line.chars().count() > max;
            let _ = writeln!(out, "  | {}", clip(line, max));
        }
        let rest_bytes: usize = lines[shown..].iter().map(|l| l.len() + 1).sum();
        if shown < lines.len() {
            let _ = writeln!(
                out,
                "{}",
                paint.paint(
                    &format!(
                        "  … {} more lines ({}) in results.json",
                        group_digits((lines.len() - shown) as u64),
                        fmt_bytes(rest_bytes)
                    ),
                    Tone::Dim
                )
            );
        } else if cut_wide {
            let _ = writeln!(
                out,
                "{}",
                paint.paint(
                    "  … long lines cut; the whole console is in results.json",
                    Tone::Dim
                )
            );
        }
        out.push('\n');
    }
}

/// The hosts the runs were made on, and the records' notes, each once.
fn hosts_and_notes(out: &mut String, records: &[RunRecord], wide: bool) {
    let width = if wide { usize::MAX } else { WIDTH };
    let mut seen = BTreeSet::new();
    for r in records {
        let h = &r.host;
        let mut line = format!(
            "host: {} | backend {} | kernel {} | TSC {}",
            h.cpu_model,
            h.backend,
            h.kernel,
            h.tsc_khz.map_or("unknown".into(), |k| format!(
                "{:.3} GHz",
                f64::from(k) / 1e6
            ))
        );
        if let Some(mmu) = &h.guest_mmu {
            line.push_str(&format!(" | guest MMU {mmu}"));
        }
        if seen.insert(line.clone()) {
            write_wrapped(out, &line, width);
        }
    }
    let mut notes = BTreeSet::new();
    let mut mode_notes: BTreeMap<(Mode, String), BTreeSet<String>> = BTreeMap::new();
    for r in records {
        if r.kernel_code_emulated {
            notes.insert(format!(
                "{}: guest kernel code (CPL 0) is emulated instruction by instruction on \
                 this backend; see kvm_stat insn_emulation in the CSV",
                r.host.backend
            ));
        }
        for n in &r.notes {
            mode_notes
                .entry((r.mode, n.clone()))
                .or_default()
                .insert(r.workload.clone());
        }
    }
    for ((mode, note), workloads) in mode_notes {
        let who = workloads.into_iter().collect::<Vec<_>>().join(", ");
        notes.insert(format!("{mode} ({who}): {note}"));
    }
    for n in notes {
        write_wrapped(out, &format!("note: {n}"), width);
    }
}

/// Writes `text` wrapped to `width` with a two-space hanging indent.
pub fn write_wrapped(out: &mut String, text: &str, width: usize) {
    if width == usize::MAX {
        let _ = writeln!(out, "{text}");
        return;
    }
    let lead = &text[..text.len() - text.trim_start().len()];
    let width = width.saturating_sub(lead.len() + 2).max(20);
    for (i, line) in wrap(text, width).into_iter().enumerate() {
        let indent = if i == 0 { "" } else { "  " };
        let _ = writeln!(out, "{lead}{indent}{line}");
    }
}

/// The closing line of a run: how many runs, how many of each class, and whether any
/// failed (the exit status is non-zero exactly then).
pub fn summary_line(
    name: &str,
    records: &[RunRecord],
    failures: &[RunFailure],
    paint_color: bool,
) -> String {
    let paint = Paint { color: paint_color };
    let mut t = Tally::default();
    for r in records {
        t.add(Verdict::of(r));
    }
    for f in failures {
        t.add(Verdict::of_failure(f));
    }
    let mut parts: Vec<(Verdict, usize)> = t.0.iter().map(|(v, n)| (*v, *n)).collect();
    parts.sort();
    let list: Vec<String> = parts
        .iter()
        .map(|(v, n)| format!("{n} {}", v.words()))
        .collect();
    let failed: usize = parts
        .iter()
        .filter(|(v, _)| v.is_failure())
        .map(|(_, n)| n)
        .sum();
    let verdict = if failed > 0 {
        paint.paint(&format!("{failed} failed"), Tone::Fail)
    } else {
        paint.paint("no failures", Tone::Ok)
    };
    let total = t.total();
    format!(
        "{name}: {total} run{}: {}; {verdict}",
        if total == 1 { "" } else { "s" },
        list.join(", ")
    )
}

#[cfg(test)]
mod tests;
