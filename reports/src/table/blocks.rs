//! The per-workload part of the terminal output: compact blocks and sweep tables that fit
//! in 80 columns, or the wide table of every counter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use contract::{CountKey, Mode, Outcome, RunRecord};

use super::style::{self, Cell, Paint, Tone};
use super::{write_wrapped, WIDTH};
use crate::digest::{self, Group, Params};
use crate::format::{fmt_ns, fmt_short, group_digits, workload_label};
use crate::sentences;
use crate::stats::{median, Spread};
use crate::verdict::Verdict;

/// Widest cell of a compact block: an 18-column label and 3 modes fit in 80 columns.
const CELL: usize = 18;

/// The parameter sets of each workload, in order of appearance.
fn by_workload(records: &[RunRecord]) -> Vec<(String, Vec<Params>)> {
    let mut out: Vec<(String, Vec<Params>)> = Vec::new();
    for r in records {
        match out.iter_mut().find(|(w, _)| *w == r.workload) {
            Some((_, ps)) => {
                if !ps.contains(&r.params) {
                    ps.push(r.params.clone());
                }
            }
            None => out.push((r.workload.clone(), vec![r.params.clone()])),
        }
    }
    out
}

/// The one parameter that varies across `sets`, if exactly one does.
fn swept_key(sets: &[Params]) -> Option<String> {
    let keys: BTreeSet<&String> = sets.iter().flat_map(|p| p.keys()).collect();
    let varying: Vec<&&String> = keys
        .iter()
        .filter(|k| {
            sets.iter()
                .map(|p| p.get(**k))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .collect();
    match varying.as_slice() {
        [k] => Some((**k).clone()),
        _ => None,
    }
}

/// Compact blocks: one per workload and parameter set, or one table per sweep.
pub(super) fn compact(out: &mut String, records: &[RunRecord], paint: &Paint) {
    let groups = digest::groups(records);
    for (workload, sets) in by_workload(records) {
        let key = (sets.len() > 1).then(|| swept_key(&sets)).flatten();
        if let Some(key) = key {
            let sweeps = digest::sweeps(records, &key);
            let mine: Vec<_> = sweeps.iter().filter(|s| s.workload == workload).collect();
            if mine.len() == 1 {
                sweep_table(out, &groups, &workload, &key, mine[0], paint);
                continue;
            }
        }
        for p in &sets {
            let here: Vec<&Group> = groups
                .iter()
                .filter(|g| g.workload == workload && g.params == *p)
                .collect();
            block(out, &workload_label(&workload, p), &here, paint);
        }
    }
}

/// The counters a row of a compact block stands for.
type Covers = fn(&CountKey) -> bool;

/// The `exits` row: exits of every kind, and the port accesses among them.
fn exits_and_ports(k: &CountKey) -> bool {
    matches!(
        k,
        CountKey::Exits(_) | CountKey::PortWrites(_) | CountKey::PortReads(_)
    )
}

fn traps(k: &CountKey) -> bool {
    matches!(k, CountKey::Traps(_))
}

fn hypercalls(k: &CountKey) -> bool {
    matches!(k, CountKey::Hypercalls(_))
}

fn injections(k: &CountKey) -> bool {
    matches!(k, CountKey::Injections)
}

fn mark(r: &RunRecord, covers: Covers) -> &'static str {
    let keys: Vec<&CountKey> = r.expected.keys().filter(|k| covers(k)).collect();
    if keys.is_empty() {
        ""
    } else if keys.iter().any(|k| r.mismatches.contains_key(*k)) {
        " ✗"
    } else {
        " ✓"
    }
}

fn count_cell(g: &Group, value: impl Fn(&RunRecord) -> u64, covers: Covers) -> Cell {
    let Some(r) = g.runs.first() else {
        return Cell::plain("");
    };
    let values: BTreeSet<u64> = g.runs.iter().map(|r| value(r)).collect();
    let m = g
        .runs
        .iter()
        .map(|r| mark(r, covers))
        .max_by_key(|m| *m == " ✗")
        .unwrap_or("");
    let text = if values.len() > 1 {
        format!(
            "{}–{}{m}",
            group_digits(values.iter().copied().min().unwrap_or(0)),
            group_digits(values.iter().copied().max().unwrap_or(0))
        )
    } else {
        format!("{}{m}", group_digits(value(r)))
    };
    let tone = match m {
        " ✗" => Tone::Fail,
        _ => Tone::Plain,
    };
    Cell::toned(text, tone)
}

fn spread_cell(s: Option<Spread>, f: fn(f64) -> String) -> Cell {
    match s {
        None => Cell::toned("·", Tone::Dim),
        Some(s) if s.runs > 1 => {
            let text = format!("{} ±{:.0}%", f(s.median), s.rel_spread * 100.0);
            Cell::plain(if text.chars().count() <= CELL {
                text
            } else {
                f(s.median)
            })
        }
        Some(s) => Cell::plain(f(s.median)),
    }
}

/// `18.1µs`: three significant figures, no space, for narrow cells.
fn short_ns(ns: f64) -> String {
    fmt_ns(ns).replace(' ', "")
}

fn result_text(r: &RunRecord) -> String {
    match &r.outcome {
        Outcome::Completed {
            exit_code: 0,
            result,
            ..
        } => result.to_string(),
        Outcome::Completed {
            exit_code, result, ..
        } => format!("{result} (exit {exit_code})"),
        Outcome::Diverged {
            result: Some(res),
            got,
            ..
        } if *got != res.to_string() => res.to_string(),
        Outcome::Diverged { expected, got, .. } => format!("{got} (not {expected})"),
        _ => "-".into(),
    }
}

/// One compact block: a workload with one parameter set, its modes side by side.
fn block(out: &mut String, title: &str, groups: &[&Group], paint: &Paint) {
    let _ = writeln!(out, "{}", paint.paint(title, Tone::Bold));
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    let head = std::iter::once(Cell::plain(""))
        .chain(
            groups
                .iter()
                .map(|g| Cell::toned(g.mode.name(), Tone::Bold)),
        )
        .collect();
    rows.push(head);
    let mut row = |label: &str, f: &dyn Fn(&Group) -> Cell| {
        let mut r = vec![Cell::plain(format!("  {label}"))];
        r.extend(groups.iter().map(|g| f(g)));
        rows.push(r);
    };
    row("verdict", &|g| super::grid_cell(&g.tally()));
    let results: BTreeSet<String> = groups
        .iter()
        .filter_map(|g| g.runs.first().map(|r| result_text(r)))
        .collect();
    let shared = results.len() == 1 && groups.len() > 1;
    row("result", &|g| {
        let text = g.runs.first().map_or("-".into(), |r| result_text(r));
        Cell::plain(if shared {
            text
        } else {
            crate::format::clip(&text, CELL)
        })
    });
    row("exits", &|g| {
        count_cell(g, RunRecord::total_exits, exits_and_ports)
    });
    let any = |f: fn(&RunRecord) -> u64, covers: Covers| {
        groups.iter().any(|g| {
            g.runs
                .iter()
                .any(|r| f(r) > 0 || r.expected.keys().any(covers))
        })
    };
    if any(digest::traps, traps) {
        row("traps", &|g| count_cell(g, digest::traps, traps));
    }
    if any(digest::hypercalls, hypercalls) {
        row("hypercalls", &|g| {
            count_cell(g, digest::hypercalls, hypercalls)
        });
    }
    if any(|r| r.injections, injections) {
        row("injections", &|g| {
            count_cell(g, |r| r.injections, injections)
        });
    }
    let costs: BTreeMap<Mode, digest::Costs> = groups
        .iter()
        .map(|g| (g.mode, digest::costs(&g.runs)))
        .collect();
    row("cycles/op", &|g| {
        spread_cell(costs[&g.mode].cycles_per_op, fmt_short)
    });
    row("main exit", &|g| match &costs[&g.mode].exit_p50 {
        Some((k, _)) => Cell::plain(format!("{k} ×{}", fmt_short(count_of(g, *k)))),
        None => Cell::toned("·", Tone::Dim),
    });
    row(
        "round trip p50/p99",
        &|g| match (&costs[&g.mode].exit_p50, &costs[&g.mode].exit_p99) {
            (Some((_, p50)), Some((_, p99))) => Cell::plain(format!(
                "{} / {}",
                short_ns(p50.median),
                short_ns(p99.median)
            )),
            _ => Cell::toned("·", Tone::Dim),
        },
    );
    row("wall", &|g| spread_cell(costs[&g.mode].wall_ns, fmt_ns));
    if shared {
        // One result for every mode: said once, spanning the columns.
        if let (Some(text), Some(r)) = (results.iter().next(), rows.get_mut(2)) {
            r.truncate(1);
            r.push(Cell::plain(format!("{text} (every mode)")));
        }
    }
    style::columns(out, &rows, 2, paint);
    out.push('\n');
}

fn count_of(g: &Group, k: contract::ExitKind) -> f64 {
    median(
        &g.runs
            .iter()
            .map(|r| r.exit_count(k) as f64)
            .collect::<Vec<_>>(),
    )
    .unwrap_or(0.0)
}

/// One sweep of one parameter as a table: the values across, each mode's counts and
/// costs down, medians over repeats; then what batching or scaling did, in words.
fn sweep_table(
    out: &mut String,
    groups: &[Group],
    workload: &str,
    key: &str,
    s: &digest::Sweep,
    paint: &Paint,
) {
    let values = s.values();
    let k = key.to_uppercase();
    let repeats = groups
        .iter()
        .filter(|g| g.workload == workload)
        .map(|g| g.runs.len())
        .max()
        .unwrap_or(1);
    let _ = writeln!(
        out,
        "{}",
        paint.paint(
            &format!(
                "{}: {k} from {} to {}{}",
                s.label(),
                values.first().copied().unwrap_or(0),
                values.last().copied().unwrap_or(0),
                if repeats > 1 {
                    format!(", medians of {repeats} repeats")
                } else {
                    String::new()
                }
            ),
            Tone::Bold
        )
    );
    // Rows: a mode line with its verdict, then its counts and costs at each value.
    type Metric<'m> = (
        &'m str,
        Box<dyn Fn(&RunRecord) -> Option<f64> + 'm>,
        fn(f64) -> String,
    );
    let mut labels: Vec<Cell> = Vec::new();
    let mut lines: Vec<Vec<Cell>> = Vec::new();
    for mode in s.modes() {
        let mut tally = crate::verdict::Tally::default();
        for g in groups
            .iter()
            .filter(|g| g.workload == workload && g.mode == mode)
        {
            for r in &g.runs {
                tally.add(Verdict::of(r));
            }
        }
        let verdict = super::grid_cell(&tally);
        labels.push(Cell::toned(
            format!("{mode}  {}", verdict.text),
            verdict.tone,
        ));
        lines.push(Vec::new());
        let count = |v: f64| group_digits(v.round() as u64);
        let mut metrics: Vec<Metric> = vec![(
            "exits",
            Box::new(|r: &RunRecord| Some(r.total_exits() as f64)),
            count,
        )];
        if s.runs
            .iter()
            .any(|r| r.mode == mode && digest::traps(r) > 0)
        {
            metrics.push((
                "traps",
                Box::new(|r: &RunRecord| Some(digest::traps(r) as f64)),
                count,
            ));
        }
        if s.uses_hypercalls(mode) {
            metrics.push((
                "hypercalls",
                Box::new(|r: &RunRecord| Some(digest::hypercalls(r) as f64)),
                count,
            ));
        }
        metrics.push((
            "cycles/op",
            Box::new(|r: &RunRecord| r.guest.map(|g| g.cycles_per_op)),
            fmt_short,
        ));
        metrics.push((
            "wall",
            Box::new(|r: &RunRecord| Some(r.wall_ns as f64)),
            short_ns,
        ));
        for (label, y, f) in metrics {
            let pts: BTreeMap<u64, f64> = s
                .points(mode, y)
                .into_iter()
                .map(|(x, p)| (x as u64, p.median))
                .collect();
            labels.push(Cell::plain(format!("  {label}")));
            lines.push(
                values
                    .iter()
                    .map(|v| {
                        pts.get(v)
                            .map_or(Cell::toned("·", Tone::Dim), |m| Cell::plain(f(*m)))
                    })
                    .collect(),
            );
        }
    }
    // As many value columns as fit in 80 columns, then the next ones below.
    let label_w = labels
        .iter()
        .zip(&lines)
        .filter(|(_, l)| !l.is_empty())
        .map(|(c, _)| style::width(&c.text))
        .max()
        .unwrap_or(0);
    let col_w: Vec<usize> = (0..values.len())
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| l.get(i))
                .map(|c| style::width(&c.text))
                .chain([style::width(&format!("{k}={}", values[i]))])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut start = 0;
    while start < values.len() {
        let mut end = start;
        let mut used = label_w;
        while end < values.len() && (end == start || used + 2 + col_w[end] <= WIDTH) {
            used += 2 + col_w[end];
            end += 1;
        }
        let mut rows = vec![std::iter::once(Cell::plain(""))
            .chain(
                values[start..end]
                    .iter()
                    .map(|v| Cell::toned(format!("{k}={v}"), Tone::Bold)),
            )
            .collect::<Vec<_>>()];
        for (label, line) in labels.iter().zip(&lines) {
            // A mode line is its label alone, spanning the value columns.
            let mut row = vec![label.clone()];
            row.extend(line.get(start..end).unwrap_or_default().iter().cloned());
            rows.push(row);
        }
        style::columns(out, &rows, 2, paint);
        start = end;
    }
    if key == "b" {
        for mode in s.modes() {
            if let Some(text) = sentences::batching(s, mode) {
                write_wrapped(out, &format!("  {text}"), WIDTH);
            }
        }
    }
    out.push('\n');
}

/// The wide table: every counter of every run next to its expected value.
pub(super) fn wide(out: &mut String, records: &[RunRecord], paint: &Paint) {
    let groups = digest::groups(records);
    for (workload, sets) in by_workload(records) {
        for p in &sets {
            let here: Vec<&Group> = groups
                .iter()
                .filter(|g| g.workload == workload && g.params == *p)
                .collect();
            wide_block(out, &workload_label(&workload, p), &here, paint);
        }
    }
}

fn wide_block(out: &mut String, title: &str, groups: &[&Group], paint: &Paint) {
    let mut keys = BTreeSet::new();
    for g in groups {
        for r in &g.runs {
            keys.extend(digest::counters(r).into_keys());
        }
    }
    fn first<'r>(g: &Group<'r>) -> Option<&'r RunRecord> {
        g.runs.first().copied()
    }
    let mut rows: Vec<Vec<Cell>> = vec![std::iter::once(Cell::toned(title, Tone::Bold))
        .chain(
            groups
                .iter()
                .map(|g| Cell::toned(g.mode.name(), Tone::Bold)),
        )
        .collect()];
    let mut add = |label: String, cells: Vec<Cell>| {
        let mut r = vec![Cell::plain(label)];
        r.extend(cells);
        rows.push(r);
    };
    add(
        "verdict".into(),
        groups
            .iter()
            .map(|g| {
                let t = g.tally();
                let worst = t.worst().unwrap_or(Verdict::Ok);
                Cell::toned(t.label(), worst.class().into())
            })
            .collect(),
    );
    add(
        "result (RBX)".into(),
        groups
            .iter()
            .map(|g| Cell::plain(first(g).map_or("-".into(), result_text)))
            .collect(),
    );
    for key in keys {
        let cells = groups
            .iter()
            .map(|g| {
                let Some(r) = first(g) else {
                    return Cell::plain("-");
                };
                let got = key.measure(r);
                match r.expected.get(&key) {
                    Some(want) if *want == got && !r.mismatches.contains_key(&key) => {
                        Cell::plain(format!("{got} ✓"))
                    }
                    Some(want) => Cell::toned(format!("{got} ✗ (expected {want})"), Tone::Fail),
                    None => Cell::plain(got.to_string()),
                }
            })
            .collect();
        add(key.to_string().replace(':', " "), cells);
    }
    add(
        "guest cycles/op".into(),
        groups
            .iter()
            .map(|g| {
                let c = digest::costs(&g.runs).cycles_per_op;
                Cell::plain(c.map_or("-".into(), |s| range(&s, |v| format!("{v:.1}"))))
            })
            .collect(),
    );
    add(
        "KVM_RUN round trip p50 / p99".into(),
        groups
            .iter()
            .map(|g| {
                let c = digest::costs(&g.runs);
                Cell::plain(match (c.exit_p50, c.exit_p99) {
                    (Some((k, a)), Some((_, b))) => {
                        format!("{k} {} / {}", fmt_ns(a.median), fmt_ns(b.median))
                    }
                    _ => "-".into(),
                })
            })
            .collect(),
    );
    add(
        "wall".into(),
        groups
            .iter()
            .map(|g| {
                let c = digest::costs(&g.runs);
                Cell::plain(c.wall_ns.map_or("-".into(), |s| range(&s, fmt_ns)))
            })
            .collect(),
    );
    let mut text = String::new();
    style::columns(&mut text, &rows, 3, paint);
    // A rule under the heading, as wide as the table.
    let mut lines = text.lines();
    if let Some(head) = lines.next() {
        let _ = writeln!(out, "{head}");
        let w = text.lines().map(strip_width).max().unwrap_or(0);
        let _ = writeln!(out, "{}", "─".repeat(w));
    }
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    out.push('\n');
}

/// Width of a line without its ANSI codes.
fn strip_width(line: &str) -> usize {
    let mut w = 0;
    let mut in_code = false;
    for c in line.chars() {
        match (in_code, c) {
            (false, '\x1b') => in_code = true,
            (true, 'm') => in_code = false,
            (true, _) => {}
            (false, _) => w += 1,
        }
    }
    w
}

/// `median` for one value, `median (min–max)` for several.
fn range(s: &Spread, f: impl Fn(f64) -> String) -> String {
    if s.runs > 1 {
        format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
    } else {
        f(s.median)
    }
}

/// The least-squares cost per iteration of every N sweep, with the intercept as computed
/// and a caveat where the line fits poorly.
pub(super) fn scaling(out: &mut String, records: &[RunRecord], width: usize) {
    let mut lines = Vec::new();
    for s in digest::sweeps(records, "n") {
        for f in digest::scaling_fits(&s) {
            lines.push(format!("  {} in {}", s.label(), sentences::scaling(&f)));
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "scaling (median wall time against N, least squares):");
    for l in lines {
        write_wrapped(out, &l, width);
    }
    out.push('\n');
}
