//! The terminal table: one block per workload, modes side by side as columns.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use modes::{Mode, Outcome, RunRecord};

/// Renders every record as side-by-side blocks, followed by the notes.
pub fn render(records: &[RunRecord]) -> String {
    let mut groups: Vec<(String, Vec<&RunRecord>)> = Vec::new();
    for r in records {
        let key = group_key(r);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let mut out = String::new();
    let mut notes = BTreeSet::new();
    // The same note for several workloads of a mode is printed once.
    let mut mode_notes: BTreeMap<(Mode, String), BTreeSet<String>> = BTreeMap::new();
    for (title, recs) in &groups {
        let mut modes: Vec<Mode> = recs.iter().map(|r| r.mode).collect();
        modes.sort();
        modes.dedup();
        let by_mode: BTreeMap<Mode, Vec<&RunRecord>> = modes
            .iter()
            .map(|m| (*m, recs.iter().copied().filter(|r| r.mode == *m).collect()))
            .collect();
        let rows = block_rows(&modes, &by_mode);
        write_block(&mut out, title, &modes, &rows);
        for r in recs {
            // User binaries declare no console; show what they printed.
            if r.console_ok != Some(true) && !r.console.is_empty() {
                let _ = writeln!(out, "console of {} in {}:", r.workload, r.mode);
                for line in r.console.lines().take(20) {
                    let _ = writeln!(out, "  | {line}");
                }
                let _ = writeln!(out);
            }
        }
        for r in recs {
            if let Outcome::Diverged { why, .. } = &r.outcome {
                notes.insert(format!("{} in {}: diverged: {why}", r.workload, r.mode));
            }
            if let Outcome::GuestFault { kind, rip, detail } = &r.outcome {
                let at = rip.map(|r| format!(" at {r:#x}")).unwrap_or_default();
                notes.insert(format!(
                    "{} in {}: guest fault ({kind:?}){at}: {detail}",
                    r.workload, r.mode
                ));
            }
            for (k, (want, got)) in &r.mismatches {
                notes.insert(format!(
                    "{} in {}: {k} = {got}, expected {want}",
                    r.workload, r.mode
                ));
            }
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
    }
    for ((mode, note), workloads) in mode_notes {
        let who = workloads.into_iter().collect::<Vec<_>>().join(", ");
        notes.insert(format!("{mode} ({who}): {note}"));
    }
    out.push_str(&render_scaling(records));
    if let Some(r) = records.first() {
        let _ = writeln!(
            out,
            "host: {} | backend {} | kernel {} | TSC {}",
            r.host.cpu_model,
            r.host.backend,
            r.host.kernel,
            r.host.tsc_khz.map_or("unknown".into(), |k| format!(
                "{:.3} GHz",
                f64::from(k) / 1e6
            ))
        );
    }
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn group_key(r: &RunRecord) -> String {
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if params.is_empty() {
        r.workload.clone()
    } else {
        format!("{} ({})", r.workload, params.join(", "))
    }
}

/// Median of a set of values (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// `median` for one value, `median (min–max)` for several.
fn spread(v: Vec<f64>, fmt: &dyn Fn(f64) -> String) -> String {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    match (v.len(), median(v)) {
        (_, None) => "-".into(),
        (1, Some(m)) => fmt(m),
        (_, Some(m)) => format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi)),
    }
}

/// For every workload and mode run at several N (with everything else equal), the slope
/// of wall time against N: the cost of one iteration, and how linear it is.
/// What the guests left behind, for the runs that captured it: the final register file
/// (`--show-regs`) and guest memory (`--peek`), one block per run.
pub fn render_state(records: &[RunRecord]) -> String {
    let mut out = String::new();
    for r in records {
        if r.final_regs.is_none() && r.peeks.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "state of {} in {} (repeat {}):",
            r.workload, r.mode, r.repeat
        );
        if let Some(f) = &r.final_regs {
            let view = match f.view {
                modes::state::RegsView::Real => "the vCPU's registers",
                modes::state::RegsView::Virtual => {
                    "as the guest sees them: RIP/RSP/RFLAGS from its last trap, IF and CR0/CR3/CR4 \
                     from the virtual CPU"
                }
                modes::state::RegsView::Paravirtual => {
                    "the vCPU's registers at CPL 3, IF from the event mask; CR0/CR3/CR4 are the \
                     VMM's (a paravirtual guest has none of its own)"
                }
            };
            let _ = writeln!(out, "  registers ({view}):");
            for row in f.named().chunks(4) {
                let cells: Vec<String> = row
                    .iter()
                    .map(|(n, v)| format!("{n:>6} {v:#018x}"))
                    .collect();
                let _ = writeln!(out, "  {}", cells.join("  "));
            }
        }
        for p in &r.peeks {
            if let Some(e) = &p.error {
                let _ = writeln!(out, "  memory {:#x}+{}: {e}", p.addr, p.len);
                continue;
            }
            let _ = writeln!(out, "  memory {:#x}+{}:", p.addr, p.len);
            for (i, chunk) in p.bytes().chunks(16).enumerate() {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let text: String = chunk
                    .iter()
                    .map(|&b| {
                        if (0x20..0x7f).contains(&b) {
                            b as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "    {:#010x}  {:<47}  |{text}|",
                    p.addr + i as u64 * 16,
                    hex.join(" ")
                );
            }
            if let Ok(b) = <[u8; 8]>::try_from(p.bytes().as_slice()) {
                let _ = writeln!(out, "    as a u64: {}", u64::from_le_bytes(b));
            }
        }
    }
    out
}

pub fn render_scaling(records: &[RunRecord]) -> String {
    let mut series: BTreeMap<(String, Mode, String), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in records {
        let Some(n) = r.params.get("n") else { continue };
        let others: Vec<String> = r
            .params
            .iter()
            .filter(|(k, _)| *k != "n")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        series
            .entry((r.workload.clone(), r.mode, others.join(", ")))
            .or_default()
            .entry(*n)
            .or_default()
            .push(r.wall_ns as f64);
    }
    let mut out = String::new();
    for ((workload, mode, others), by_n) in series {
        if by_n.len() < 3 {
            continue;
        }
        let points: Vec<(f64, f64)> = by_n
            .into_iter()
            .filter_map(|(n, v)| median(v).map(|m| (n as f64, m)))
            .collect();
        if let Some(crate::html::Fit {
            slope,
            intercept,
            r2,
        }) = crate::html::least_squares(&points)
        {
            if out.is_empty() {
                let _ = writeln!(out, "scaling (median wall time against N, least squares):");
            }
            let extra = if others.is_empty() {
                String::new()
            } else {
                format!(" ({others})")
            };
            let _ = writeln!(
                out,
                "  {workload}{extra} in {mode}: {} per iteration + {} fixed, R² = {r2:.4}",
                fmt_ns(slope),
                fmt_ns(intercept.max(0.0))
            );
        }
    }
    out
}

/// Human units for nanoseconds.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn verdict(r: &RunRecord) -> String {
    match &r.outcome {
        Outcome::Completed { .. } if r.verdict_ok() => "ok".into(),
        Outcome::Completed { .. } if !r.mismatches.is_empty() => "COUNTS DIFFER".into(),
        Outcome::Completed { .. } => "CONSOLE DIFFERS".into(),
        Outcome::Diverged {
            host_caused: true, ..
        } => "diverged: host (see note)".into(),
        Outcome::Diverged { .. } => "diverged (see note)".into(),
        Outcome::GuestFault { kind, .. } => format!("fault: {kind:?}"),
        Outcome::TimedOut { limit, .. } => format!("timed out: {limit:?}"),
    }
}

fn result(r: &RunRecord) -> String {
    match &r.outcome {
        Outcome::Completed {
            exit_code: 0,
            result,
            ..
        } => result.to_string(),
        Outcome::Completed {
            exit_code, result, ..
        } => format!("{result} (exit code {exit_code})"),
        // A divergence in behaviour, not in the result (an oracle variant): the result.
        Outcome::Diverged {
            result: Some(res),
            got,
            ..
        } if *got != res.to_string() => res.to_string(),
        Outcome::Diverged { expected, got, .. } => format!("{got} (expected {expected})"),
        _ => "-".into(),
    }
}

fn block_rows(
    modes: &[Mode],
    by_mode: &BTreeMap<Mode, Vec<&RunRecord>>,
) -> Vec<(String, Vec<String>)> {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let cell = |m: &Mode, f: &dyn Fn(&RunRecord) -> String| {
        by_mode[m].first().map_or("-".into(), |r| f(r))
    };
    // Repeats that disagree are shown as such (`ok 2/3, counts differ 1/3`).
    let verdicts = |m: &Mode| {
        let all: Vec<String> = by_mode[m].iter().map(|r| verdict(r)).collect();
        let mut distinct: Vec<&String> = all.iter().collect();
        distinct.sort();
        distinct.dedup();
        match distinct.as_slice() {
            [] => "-".to_string(),
            [one] => (*one).clone(),
            many => many
                .iter()
                .map(|v| {
                    format!(
                        "{v} {}/{}",
                        all.iter().filter(|a| a == v).count(),
                        all.len()
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    };
    rows.push(("verdict".into(), modes.iter().map(verdicts).collect()));
    rows.push((
        "result (RBX)".into(),
        modes.iter().map(|m| cell(m, &result)).collect(),
    ));
    // Every counter any mode measured or expected.
    let mut keys = BTreeSet::new();
    for rs in by_mode.values() {
        for r in rs {
            keys.extend(r.exits.keys().map(|k| format!("exits:{}", k.name())));
            keys.extend(r.traps.keys().map(|k| format!("traps:{k}")));
            keys.extend(r.hypercalls.keys().map(|k| format!("hypercalls:{k}")));
            keys.extend(r.expected.keys().cloned());
        }
    }
    for key in keys {
        let cells = modes
            .iter()
            .map(|m| {
                cell(m, &|r| {
                    let got = measured(r, &key);
                    match r.expected.get(&key) {
                        Some(want) if *want == got => format!("{got} ✓"),
                        Some(want) => format!("{got} ✗ (expected {want})"),
                        None => got.to_string(),
                    }
                })
            })
            .collect();
        rows.push((key.replace(':', " "), cells));
    }
    rows.push((
        "guest cycles/op".into(),
        modes
            .iter()
            .map(|m| {
                median(
                    by_mode[m]
                        .iter()
                        .filter_map(|r| r.guest.map(|g| g.cycles_per_op))
                        .collect(),
                )
                .map_or("-".into(), |c| format!("{c:.1}"))
            })
            .collect(),
    ));
    rows.push((
        "KVM_RUN round trip p50 / p99".into(),
        modes
            .iter()
            .map(|m| {
                cell(m, &|r| {
                    r.round_trip_ns
                        .iter()
                        .filter(|(_, l)| l.count >= 2)
                        .max_by_key(|(_, l)| l.count)
                        .map_or("-".into(), |(k, l)| {
                            format!("{} {} / {}", k, fmt_ns(l.p50 as f64), fmt_ns(l.p99 as f64))
                        })
                })
            })
            .collect(),
    ));
    rows.push((
        "wall".into(),
        modes
            .iter()
            .map(|m| {
                spread(
                    by_mode[m].iter().map(|r| r.wall_ns as f64).collect(),
                    &fmt_ns,
                )
            })
            .collect(),
    ));
    rows
}

/// The measured value of a table key (`exits:IoOut`, `traps:cli`, `port_writes:0xe9`…).
pub(crate) fn measured(r: &RunRecord, key: &str) -> u64 {
    let (kind, name) = key.split_once(':').unwrap_or((key, ""));
    let port = || u16::from_str_radix(name.trim_start_matches("0x"), 16).ok();
    match kind {
        "exits" => r
            .exits
            .iter()
            .find(|(k, _)| k.name() == name)
            .map_or(0, |(_, v)| *v),
        "traps" => r.traps.get(name).copied().unwrap_or(0),
        "hypercalls" => r.hypercalls.get(name).copied().unwrap_or(0),
        "port_writes" => port()
            .and_then(|p| r.io_ports.get(&p))
            .map_or(0, |c| c.writes),
        "port_reads" => port()
            .and_then(|p| r.io_ports.get(&p))
            .map_or(0, |c| c.reads),
        "injections" => r.injections,
        _ => 0,
    }
}

fn write_block(out: &mut String, title: &str, modes: &[Mode], rows: &[(String, Vec<String>)]) {
    let label_w = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(title.chars().count());
    let col_w: Vec<usize> = (0..modes.len())
        .map(|i| {
            rows.iter()
                .map(|(_, c)| c[i].chars().count())
                .chain([modes[i].name().len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut line = pad(title, label_w);
    for (m, w) in modes.iter().zip(&col_w) {
        line.push_str(" │ ");
        line.push_str(&pad(m.name(), *w));
    }
    let _ = writeln!(out, "{}", line.trim_end());
    let total: usize = label_w + col_w.iter().map(|w| w + 3).sum::<usize>();
    let _ = writeln!(out, "{}", "─".repeat(total));
    for (label, cells) in rows {
        let mut line = pad(label, label_w);
        for (c, w) in cells.iter().zip(&col_w) {
            line.push_str(" │ ");
            line.push_str(&pad(c, *w));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(spread(vec![2.0, 1.0, 9.0], &|v| format!("{v}")), "2 (1–9)");
        assert_eq!(spread(vec![5.0], &|v| format!("{v}")), "5");
    }

    #[test]
    fn nanoseconds_in_human_units() {
        assert_eq!(fmt_ns(950.0), "950 ns");
        assert_eq!(fmt_ns(12_345.0), "12.3 µs");
        assert_eq!(fmt_ns(2_500_000.0), "2.50 ms");
        assert_eq!(fmt_ns(3e9), "3.00 s");
    }
}
