//! What the guests left behind (`--show-regs`, `--peek`), printed after the table.

use std::fmt::Write;

use contract::RunRecord;

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
                contract::state::RegsView::Real => "the vCPU's registers",
                contract::state::RegsView::Virtual => {
                    "as the guest sees them: RIP/RSP/RFLAGS from its last trap, IF and CR0/CR3/CR4 \
                     from the virtual CPU"
                }
                contract::state::RegsView::Paravirtual => {
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
