//! Numbers, times, parameters and outcomes in words: written once, shared by the terminal
//! table, the HTML report and the comparisons.

use std::collections::BTreeMap;

use contract::{FaultKind, Limit, Outcome};
use time::OffsetDateTime;

use crate::stats::Fit;

/// Human units for nanoseconds: `950 ns`, `12.3 µs`, `2.50 ms`, `3.00 s`.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 0.0 {
        return format!("−{}", fmt_ns(-ns));
    }
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

/// `1234567` → `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count or a measurement, short: `12`, `1,234`, `3.5`, `0.25`, `−7`.
pub fn fmt_num(v: f64) -> String {
    if v < 0.0 {
        format!("−{}", fmt_num(-v))
    } else if (v.fract() == 0.0 || v >= 100.0) && v < 1e15 {
        group_digits(v.round() as u64)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The SI prefix for `v` (`G`, `M`, `k` or none) and its divisor.
fn si_scale(v: f64) -> (f64, &'static str) {
    if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    }
}

/// Three significant figures with a k/M/G suffix, for narrow columns: `950`, `48.7k`,
/// `263k`, `1.51M`.
pub fn fmt_short(v: f64) -> String {
    if v < 0.0 {
        return format!("−{}", fmt_short(-v));
    }
    let (d, s) = si_scale(v);
    let x = v / d;
    if x >= 100.0 || (s.is_empty() && x.fract() == 0.0) {
        format!("{x:.0}{s}")
    } else if x >= 10.0 {
        format!("{x:.1}{s}")
    } else {
        format!("{x:.2}{s}")
    }
}

/// Axis tick label for a log axis: `1`, `10`, `1k`, `10M`.
pub fn fmt_tick(v: f64) -> String {
    let (d, s) = si_scale(v);
    let x = v / d;
    if (x - x.round()).abs() < 1e-9 {
        format!("{}{s}", x.round())
    } else {
        format!("{x:.1}{s}")
    }
}

/// A share as a whole percentage, or with one decimal under 10 %: `8 %`, `2.5 %`.
pub fn fmt_percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p.abs() < 10.0 {
        format!("{p:.1} %")
    } else {
        format!("{p:.0} %")
    }
}

/// A ratio: `3.1×`, `1.02×`, `250×`.
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "∞×".into()
    } else if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Parameters as `b=16, n=200`, or `no parameters`.
pub fn params_label(p: &BTreeMap<String, u64>) -> String {
    if p.is_empty() {
        return "no parameters".into();
    }
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `workload (b=16, n=200)`, or the workload alone when it has no parameters.
pub fn workload_label(workload: &str, p: &BTreeMap<String, u64>) -> String {
    if p.is_empty() {
        workload.to_string()
    } else {
        format!("{workload} ({})", params_label(p))
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from Unix seconds.
pub fn utc_date(secs: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

/// `YYYYMMDD-HHMMSS` in UTC, for directory names.
pub fn utc_stamp(secs: u64) -> String {
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// A guest fault's class in words.
pub fn fault_words(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Exception => "an exception the guest did not handle",
        FaultKind::Shutdown => "a triple fault (the VM shut down)",
        FaultKind::BadMemoryAccess => "an access to memory that does not exist",
        FaultKind::BadDeviceAccess => "an access to a port or device that does not exist",
        FaultKind::UnhandledInstruction => "an instruction the monitor cannot emulate",
        FaultKind::MonitorViolation => "an attempt to reach the monitor's memory",
        FaultKind::UnportedPrivilegedInstruction => {
            "a privileged instruction a paravirtual guest should have replaced"
        }
        FaultKind::EntryFailure => "KVM refusing to enter the guest",
        FaultKind::KvmInternalError => "a KVM internal error",
    }
}

/// A run limit in words.
pub fn limit_words(limit: Limit) -> &'static str {
    match limit {
        Limit::WallClock => "its wall-clock limit (--timeout)",
        Limit::ExitCount => "its exit limit (--max-exits)",
        Limit::ConsoleBytes => "its console limit (1 MiB)",
    }
}

/// `at 0x1000` or nothing.
fn at(rip: Option<u64>) -> String {
    rip.map(|r| format!(" at {r:#x}")).unwrap_or_default()
}

/// How a run ended, in a sentence fragment: `completed with result 200`,
/// `stopped at its wall-clock limit (--timeout) at 0x100020`, …
pub fn outcome_words(o: &Outcome) -> String {
    match o {
        Outcome::Completed {
            exit_code: 0,
            result,
            ..
        } => format!("completed with result {result}"),
        Outcome::Completed {
            exit_code, result, ..
        } => format!("completed with exit code {exit_code} and result {result}"),
        Outcome::GuestFault { kind, rip, detail } => {
            format!("stopped by {}{}: {detail}", fault_words(*kind), at(*rip))
        }
        Outcome::TimedOut { limit, rip } => {
            format!("stopped at {}{}", limit_words(*limit), at(*rip))
        }
        Outcome::Diverged {
            expected, got, why, ..
        } => format!("diverged: expected {expected}, got {got}. Why: {why}"),
        Outcome::Unavailable { why } => format!("unavailable: {why}"),
    }
}

/// How good a straight-line fit is, in words, when that needs saying: `None` for R² ≥
/// 0.9, otherwise a caveat.
pub fn fit_caveat(f: &Fit) -> Option<String> {
    if f.r2 >= 0.9 {
        None
    } else if f.r2 >= 0.5 {
        Some(format!(
            "a rough fit (R² = {:.2}): read the slope as approximate",
            f.r2
        ))
    } else {
        Some(format!(
            "a poor fit (R² = {:.2}): the points do not lie on a line, so the slope says \
             little; look for noisy repeats or a cost that is not linear in N",
            f.r2
        ))
    }
}

/// A wall-time fit in one line, the same in the terminal and in the HTML report:
/// `1.50 µs per iteration, intercept −55.9 µs, R² = 0.9990`.
pub fn fit_line(f: &Fit) -> String {
    format!(
        "{} per iteration, intercept {}, R² = {:.4}",
        fmt_ns(f.slope),
        fmt_ns(f.intercept),
        f.r2
    )
}

/// Splits `text` into lines of at most `width` characters at spaces (a longer word gets
/// a line of its own).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Cuts `s` to at most `width` characters, ending in `…` when it was cut.
pub fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Bytes in human units: `812 B`, `3.4 KiB`, `1.2 MiB`.
pub fn fmt_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times() {
        assert_eq!(fmt_ns(950.0), "950 ns");
        assert_eq!(fmt_ns(12_345.0), "12.3 µs");
        assert_eq!(fmt_ns(2_500_000.0), "2.50 ms");
        assert_eq!(fmt_ns(3e9), "3.00 s");
        assert_eq!(fmt_ns(-55_900.0), "−55.9 µs");
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(group_digits(12), "12");
        assert_eq!(fmt_num(1234.0), "1,234");
        assert_eq!(fmt_num(3.5), "3.50");
        assert_eq!(fmt_num(-7.0), "−7");
        assert_eq!(fmt_short(48_658.6), "48.7k");
        assert_eq!(fmt_short(262_926.6), "263k");
        assert_eq!(fmt_short(1_505_059.7), "1.51M");
        assert_eq!(fmt_short(3.0), "3");
        assert_eq!(fmt_short(94.4), "94.4");
        assert_eq!(fmt_tick(10_000.0), "10k");
        assert_eq!(fmt_percent(0.08), "8.0 %");
        assert_eq!(fmt_percent(0.25), "25 %");
        assert_eq!(fmt_ratio(3.1), "3.10×");
        assert_eq!(fmt_bytes(3500), "3.4 KiB");
    }

    #[test]
    fn dates_come_from_the_date_library() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_stamp(1_700_000_000), "20231114-221320");
    }

    #[test]
    fn outcomes_in_words_not_debug_text() {
        let t = Outcome::TimedOut {
            limit: Limit::WallClock,
            rip: Some(0x1000),
        };
        assert_eq!(
            outcome_words(&t),
            "stopped at its wall-clock limit (--timeout) at 0x1000"
        );
        let c = Outcome::Completed {
            exit_code: 0,
            result: 7,
            ending: contract::Ending::ExitPort,
        };
        assert_eq!(outcome_words(&c), "completed with result 7");
        for o in [t, c] {
            assert!(!outcome_words(&o).contains('{'));
        }
    }

    #[test]
    fn fits_in_one_line_with_their_caveat() {
        let f = Fit {
            slope: 1500.0,
            intercept: -55_900.0,
            r2: 0.03,
        };
        assert_eq!(
            fit_line(&f),
            "1.5 µs per iteration, intercept −55.9 µs, R² = 0.0300"
        );
        assert!(fit_caveat(&f)
            .unwrap()
            .starts_with("a poor fit (R² = 0.03)"));
        assert_eq!(fit_caveat(&Fit { r2: 0.95, ..f }), None);
    }

    #[test]
    fn wrapping_and_clipping() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("", 5), [""]);
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
