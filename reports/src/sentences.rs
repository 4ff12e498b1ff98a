//! Sentences about the data that the terminal and the HTML report both say, written once
//! so they say the same thing: what a batching sweep did, what a fit means, what a
//! latency distribution holds.

use contract::{ExitKind, Mode};

use crate::digest::{self, KindLatency, ScalingFit, Sweep};
use crate::format::{fit_caveat, fit_line, fmt_ns, fmt_num, fmt_ratio, group_digits};
use crate::stats::median;

/// What a batching sweep did to one mode's monitor events and cycles per operation,
/// from the smallest B to the largest: `paravirt: hypercalls 1,025 → 5 (205× fewer) from
/// B=1 to B=256; guest cycles/op 8,194 → 1,201`.
pub fn batching(s: &Sweep, mode: Mode) -> Option<String> {
    let hc = s.uses_hypercalls(mode);
    let events = s.points(mode, |r| Some(digest::monitor_events(r, hc)));
    let (first, last) = (events.first()?, events.last()?);
    if events.len() < 2 {
        return None;
    }
    let what = if hc { "hypercalls" } else { "exits" };
    let (a, z) = (first.1.median, last.1.median);
    let change = if a == z {
        format!("stay at {} (B changes nothing here)", fmt_num(a))
    } else if a > 0.0 && z > 0.0 {
        format!(
            "{} → {} ({} {})",
            fmt_num(a),
            fmt_num(z),
            fmt_ratio((a / z).max(z / a)),
            if z < a { "fewer" } else { "more" }
        )
    } else {
        format!("{} → {}", fmt_num(a), fmt_num(z))
    };
    let mut text = format!(
        "{mode}: {what} {change} from {k}={} to {k}={}",
        first.0,
        last.0,
        k = s.key.to_uppercase()
    );
    let cycles = s.points(mode, |r| r.guest.map(|g| g.cycles_per_op));
    if let (Some(c0), Some(c1)) = (cycles.first(), cycles.last()) {
        if cycles.len() >= 2 {
            text.push_str(&format!(
                "; guest cycles/op {} → {}",
                fmt_num(c0.1.median),
                fmt_num(c1.1.median)
            ));
        }
    }
    Some(text)
}

/// One mode's scaling fit in a sentence, the same wherever it is printed: the slope, the
/// intercept as computed and R², with a caveat when the fit is poor.
pub fn scaling(f: &ScalingFit) -> String {
    let mut text = format!("{}: {}", f.mode, fit_line(&f.wall));
    if let Some(e) = &f.exits {
        text.push_str(&format!(
            "; exits grow by {} per iteration",
            fmt_num(e.slope)
        ));
    }
    if let Some(c) = fit_caveat(&f.wall) {
        text.push_str(&format!(" — {c}"));
    }
    text
}

/// What one mode's pooled latency of one exit kind says: where its median and 99th
/// percentile fall, over how many exits and runs, and the lone final exits kept apart.
pub fn latency(mode: Mode, kind: ExitKind, l: &KindLatency) -> Option<String> {
    let mut text = String::new();
    if let (Some(p50), Some(p99)) = (
        l.pooled.quantile_bucket(0.5),
        l.pooled.quantile_bucket(0.99),
    ) {
        text = format!(
            "{mode}: of {} {kind} exits pooled from {} run(s), the median took {}–{} and 99 % \
             took at most {}.",
            group_digits(l.pooled.total()),
            l.runs,
            fmt_ns(p50.0),
            fmt_ns(p50.1),
            fmt_ns(p99.1)
        );
    }
    if !l.lone.is_empty() {
        let m = median(&l.lone).unwrap_or(0.0);
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!(
            "{mode}: left out, {} run(s) whose only {kind} exit was its last, which spans \
             the guest's work since its previous exit (median {}).",
            l.lone.len(),
            fmt_ns(m)
        ));
    }
    (!text.is_empty()).then_some(text)
}
