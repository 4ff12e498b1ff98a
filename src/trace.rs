//! `virtlab trace`: a run shown one exit, trap or hypercall at a time.

use std::fmt::Write;

use contract::{ExitKind, GuestImage, RunRecord, TraceEvent};
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

/// Most events a trace keeps (`virtlab trace --limit`). The run itself goes on to its end;
/// only the first events are recorded, each a line of output.
pub const MAX_EVENTS: usize = 10_000;

/// Parses `--limit`: a number of events in 1..=[`MAX_EVENTS`].
pub fn parse_limit(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a number of events: {e}"))?;
    if (1..=MAX_EVENTS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "the limit must be between 1 and {MAX_EVENTS} events (a trace keeps at most \
             {MAX_EVENTS})"
        ))
    }
}

/// If the trace stopped before the run did, a sentence saying so.
pub fn stopped_note(record: &RunRecord) -> Option<String> {
    let kept = record.trace.len() as u64;
    let total = record.total_exits();
    (total > kept).then(|| {
        let more = if kept >= MAX_EVENTS as u64 {
            format!("a trace keeps at most {MAX_EVENTS} events")
        } else {
            format!("--limit shows more (at most {MAX_EVENTS})")
        };
        format!("the trace stopped after {kept} of the run's {total} exits; {more}")
    })
}

/// The instruction of `image` that ends exactly at `rip` (after an `out`, `in` or `hlt`
/// the vCPU's RIP is the next instruction), found by decoding the image from its start:
/// its address and its text.
pub fn instruction_ending_at(image: &GuestImage, rip: u64) -> Option<(u64, String)> {
    let mut decoder = Decoder::with_ip(64, &image.bytes, image.load_addr, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.next_ip() == rip {
            let mut text = String::new();
            IntelFormatter::new().format(&insn, &mut text);
            return Some((insn.ip(), text));
        }
        if insn.next_ip() > rip {
            return None;
        }
    }
    None
}

/// The instruction of `image` that starts at `rip` (an MMIO access exits before it
/// completes, so the vCPU's RIP is still on it).
pub fn instruction_at(image: &GuestImage, rip: u64) -> Option<(u64, String)> {
    let off = usize::try_from(rip.checked_sub(image.load_addr)?).ok()?;
    let bytes = image.bytes.get(off..)?;
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return None;
    }
    let mut text = String::new();
    IntelFormatter::new().format(&insn, &mut text);
    Some((rip, text))
}

/// The instruction that caused an exit of `kind` seen at `exit_rip`.
fn culprit(image: &GuestImage, kind: ExitKind, exit_rip: u64) -> Option<(u64, String)> {
    match kind {
        ExitKind::MmioRead | ExitKind::MmioWrite => instruction_at(image, exit_rip),
        _ => instruction_ending_at(image, exit_rip),
    }
}

/// One line per event, then the run's outcome.
pub fn render(record: &RunRecord, image: &GuestImage) -> String {
    let mut out = String::new();
    let params: Vec<String> = record
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let params = if params.is_empty() {
        String::new()
    } else {
        format!(" ({})", params.join(", "))
    };
    let noun = if record.trace.len() == 1 {
        "exit"
    } else {
        "exits"
    };
    let _ = writeln!(
        out,
        "{} in {}{params}, first {} {noun}:",
        record.workload,
        record.mode,
        record.trace.len()
    );
    // Binary translation enters the VMM through the monitor's stub: its RIP at the exit
    // is the stub's, not the guest's, so only the engine's note can say where the guest was.
    let translated = record.mode == contract::Mode::BinaryTranslation;
    let rows: Vec<[String; 7]> = record
        .trace
        .iter()
        .map(|e| row(e, image, translated))
        .collect();
    let header = [
        "#",
        "kind",
        "guest rip",
        "instruction",
        "event",
        "what the VMM did",
        "latency",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            l.push_str(c);
            l.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
        }
        l.trim_end().to_string()
    };
    let head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    let _ = writeln!(out, "{}", line(&head));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    if let Some(note) = stopped_note(record) {
        let _ = writeln!(out, "{note}");
    }
    if !record.traps.is_empty() {
        let _ = writeln!(
            out,
            "{} by name: {}",
            if record.mode == contract::Mode::BinaryTranslation {
                "VMM entries (callouts and translator entries)"
            } else {
                "traps"
            },
            record
                .traps
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !record.translation.is_empty() {
        let _ = writeln!(
            out,
            "translation: {}",
            record
                .translation
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !record.shadow.is_empty() {
        let _ = writeln!(
            out,
            "shadow: {}",
            record
                .shadow
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(out, "outcome: {:?}", record.outcome);
    let total = record.total_exits();
    let _ = writeln!(
        out,
        "{total} exit{} in all ({})",
        if total == 1 { "" } else { "s" },
        record
            .exits
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

fn row(e: &TraceEvent, image: &GuestImage, translated: bool) -> [String; 7] {
    let note = e.note.clone().unwrap_or_default();
    let (rip, instruction) = match (note.rip, note.instruction.clone()) {
        (Some(rip), Some(text)) => (Some(rip), text),
        (rip, text) if translated => (rip, text.unwrap_or_else(|| "?".into())),
        (rip, text) => match e.exit_rip.and_then(|r| culprit(image, e.kind, r)) {
            Some((at, found)) => (rip.or(Some(at)), text.unwrap_or(found)),
            None => (rip.or(e.exit_rip), text.unwrap_or_else(|| "?".into())),
        },
    };
    [
        e.seq.to_string(),
        e.kind.name().to_string(),
        rip.map_or("?".into(), |r| format!("{r:#x}")),
        instruction,
        if note.event.is_empty() {
            "-".into()
        } else {
            note.event
        },
        if note.action.is_empty() {
            "-".into()
        } else {
            note.action
        },
        reports::table::fmt_ns(e.round_trip_ns as f64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_instruction_before_rip() {
        // mov al,'h' ; out 0xe9,al ; hlt
        let img = GuestImage::flat(
            "t",
            vec![0xB0, b'h', 0xE6, 0xE9, 0xF4],
            0x10_0000,
            0x10_0000,
        );
        assert_eq!(
            instruction_ending_at(&img, 0x10_0004),
            Some((0x10_0002, "out 0E9h,al".into()))
        );
        assert_eq!(
            instruction_ending_at(&img, 0x10_0005),
            Some((0x10_0004, "hlt".into()))
        );
        assert_eq!(instruction_ending_at(&img, 0x10_0003), None);
        assert_eq!(instruction_ending_at(&img, 0x20_0000), None);
        assert_eq!(
            instruction_at(&img, 0x10_0002),
            Some((0x10_0002, "out 0E9h,al".into()))
        );
        assert_eq!(instruction_at(&img, 0x0F_0000), None);
    }

    #[test]
    fn the_limit_is_bounded() {
        assert_eq!(parse_limit("40"), Ok(40));
        assert_eq!(parse_limit("10000"), Ok(MAX_EVENTS));
        for bad in ["0", "10001", "100000000", "-1", "x"] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
        assert!(parse_limit("100000000").unwrap_err().contains("10000"));
    }
}
