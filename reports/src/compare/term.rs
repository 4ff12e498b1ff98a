//! A comparison in the terminal, in 80 columns: the inputs, one summary line per input
//! against the first, a table of counts and cost ratios, the counts that differ, and the
//! pooled table across hosts.

use std::fmt::Write;

use super::{Comparison, HostKey, Row, COSTS};
use crate::format::{clip, fmt_ns, fmt_short, group_digits, utc_date};
use crate::stats::{Ratio, Spread};
use crate::table::style::{self, Cell, Paint, Tone};
use crate::table::{write_wrapped, WIDTH};

/// The whole comparison as text.
pub fn render(c: &Comparison, color: bool) -> String {
    let paint = Paint { color };
    let mut out = String::new();
    let _ = writeln!(out, "{}", paint.paint("compared", Tone::Bold));
    for i in &c.inputs {
        let hosts: Vec<String> = i.hosts.iter().map(HostKey::label).collect();
        write_wrapped(
            &mut out,
            &format!(
                "  {} = {} ({} runs, {}, {})",
                i.letter,
                i.name,
                i.runs,
                utc_date(i.created_unix),
                if hosts.is_empty() {
                    "no host".to_string()
                } else {
                    hosts.join("; ")
                }
            ),
            WIDTH,
        );
    }
    out.push('\n');
    for b in 1..c.inputs.len() {
        pair(&mut out, c, 0, b, &paint);
    }
    if c.cross_host() {
        cross_host(&mut out, c, &paint);
    }
    out
}

/// `×3.10 ±8%`, `×1.02`, or `·`.
fn ratio_cell(r: Option<Ratio>, threshold: f64) -> Cell {
    match r {
        None => Cell::toned("·", Tone::Dim),
        Some(r) => {
            let text = match r.uncertainty {
                Some(u) => format!("×{} ±{:.0}%", trim_ratio(r.ratio), u * 100.0),
                None => format!("×{}", trim_ratio(r.ratio)),
            };
            let tone = if !r.exceeds(threshold) {
                Tone::Plain
            } else if r.ratio > 1.0 {
                Tone::Host
            } else {
                Tone::Ok
            };
            Cell::toned(text, tone)
        }
    }
}

fn trim_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// Ratios beyond this (and beyond their noise) are coloured in the tables.
const SHOWN_THRESHOLD: f64 = 0.1;

fn pair(out: &mut String, c: &Comparison, a: usize, b: usize, paint: &Paint) {
    let (la, lb) = (&c.inputs[a].letter, &c.inputs[b].letter);
    write_wrapped(
        out,
        &format!("{lb} against {la}: {}", c.summary(a, b)),
        WIDTH,
    );
    let mut rows = vec![vec![
        Cell::toned("workload", Tone::Bold),
        Cell::toned("mode", Tone::Bold),
        Cell::toned("counts", Tone::Bold),
        Cell::toned(format!("wall {lb}/{la}"), Tone::Bold),
        Cell::toned(format!("per op {lb}/{la}"), Tone::Bold),
        Cell::toned(format!("exit {lb}/{la}"), Tone::Bold),
    ]];
    let mut diffs = Vec::new();
    for r in &c.rows {
        let counts = match r.count_diffs(a, b) {
            None => Cell::toned(missing(r, a, b, la, lb), Tone::Dim),
            Some(d) if d.is_empty() => Cell::toned("equal", Tone::Ok),
            Some(d) => {
                diffs.push((r, d));
                Cell::toned("✗ DIFFER", Tone::Fail)
            }
        };
        rows.push(vec![
            Cell::plain(clip(&r.label(), 18)),
            Cell::plain(r.mode.name()),
            counts,
            ratio_cell(r.ratio(0, a, b), SHOWN_THRESHOLD),
            ratio_cell(r.ratio(1, a, b), SHOWN_THRESHOLD),
            ratio_cell(r.ratio(2, a, b), SHOWN_THRESHOLD),
        ]);
    }
    style::columns(out, &rows, 2, paint);
    let _ = writeln!(
        out,
        "{}",
        paint.paint(
            &format!(
                "  ratios of medians, {lb} over {la} (×2 = twice as long in {lb}), ± the \
                 spread of both"
            ),
            Tone::Dim
        )
    );
    for (r, d) in diffs {
        for (key, x, y) in d {
            let line = format!(
                "✗ {} in {}: {key} = {} in {la}, {} in {lb}",
                r.label(),
                r.mode,
                group_digits(x),
                group_digits(y)
            );
            let _ = writeln!(out, "{}", paint.paint(&clip(&line, WIDTH), Tone::Fail));
        }
    }
    out.push('\n');
}

fn missing(r: &Row, a: usize, b: usize, la: &str, lb: &str) -> String {
    match (r.counts[a].is_some(), r.counts[b].is_some()) {
        (false, false) => "unfinished".into(),
        (false, _) => format!("{la} lacks"),
        _ => format!("{lb} lacks"),
    }
}

/// One table across hosts: per workload × mode, whether the counts agree on every host,
/// and the time per operation on each (medians, pooled over the inputs from that host).
fn cross_host(out: &mut String, c: &Comparison, paint: &Paint) {
    let hosts = c.hosts();
    let _ = writeln!(out, "{}", paint.paint("across hosts", Tone::Bold));
    for (i, h) in hosts.iter().enumerate() {
        write_wrapped(out, &format!("  H{} = {}", i + 1, h.label()), WIDTH);
    }
    let mut head = vec![
        Cell::toned("workload", Tone::Bold),
        Cell::toned("mode", Tone::Bold),
        Cell::toned("counts", Tone::Bold),
    ];
    head.extend((0..hosts.len()).map(|i| Cell::toned(format!("H{} /op", i + 1), Tone::Bold)));
    head.push(Cell::toned("max/min", Tone::Bold));
    let mut rows = vec![head];
    let (mut agree, mut differ) = (0, 0);
    for r in &c.rows {
        let per_host: Vec<Option<Spread>> = hosts.iter().map(|h| r.host_cost(h)).collect();
        let counts: Vec<_> = r.counts.iter().flatten().collect();
        let same = counts.windows(2).all(|w| w[0] == w[1]);
        let counted_on: usize = hosts
            .iter()
            .filter(|h| {
                r.hosts
                    .iter()
                    .zip(&r.counts)
                    .any(|(hs, c)| c.is_some() && hs.contains(h))
            })
            .count();
        let cell = if counted_on < 2 {
            Cell::toned("one host", Tone::Dim)
        } else if same {
            agree += 1;
            Cell::toned("agree", Tone::Ok)
        } else {
            differ += 1;
            Cell::toned("✗ DIFFER", Tone::Fail)
        };
        let mut row = vec![
            Cell::plain(clip(&r.label(), 16)),
            Cell::plain(r.mode.name()),
            cell,
        ];
        row.extend(per_host.iter().map(|s| match s {
            Some(s) => Cell::plain(op_cost(r, s.median)),
            None => Cell::toned("·", Tone::Dim),
        }));
        let medians: Vec<f64> = per_host.iter().flatten().map(|s| s.median).collect();
        let lo = medians.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = medians.iter().copied().fold(0.0, f64::max);
        row.push(if medians.len() >= 2 && lo > 0.0 {
            let ratio = hi / lo;
            Cell::toned(
                format!("×{}", trim_ratio(ratio)),
                if ratio > 1.0 + SHOWN_THRESHOLD * 2.0 {
                    Tone::Host
                } else {
                    Tone::Plain
                },
            )
        } else {
            Cell::toned("·", Tone::Dim)
        });
        rows.push(row);
    }
    style::columns(out, &rows, 2, paint);
    write_wrapped(
        out,
        &format!(
            "  counts agree on every host in {agree} workload × mode pair(s) and differ in \
             {differ}; /op is the guest's time per operation (median over the runs on that \
             host); max/min is the widest gap between hosts"
        ),
        WIDTH,
    );
    out.push('\n');
}

fn op_cost(_r: &Row, ns: f64) -> String {
    if ns >= 1000.0 {
        fmt_ns(ns).replace(' ', "")
    } else {
        format!("{}ns", fmt_short(ns))
    }
}

/// The cost names and what they mean, for legends.
pub fn cost_legend() -> String {
    COSTS
        .iter()
        .map(|(n, m)| format!("{n}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}
