//! `virtlab trace` and `virtlab explain`: the exits step by step, and the instructions sorted
//! by what the strategy does with them.

use crate::helpers::{temp_dir, text, virtlab};

#[test]
fn trace_steps_through_the_exits() {
    if !machine::testing::kvm_or_skip("trace_steps_through_the_exits") {
        return;
    }
    let o = virtlab(&["trace", "-w", "pio", "-m", "hw-assisted", "-n", "3"]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    let lines: Vec<&str> = s.lines().filter(|l| l.contains("out 0E9h,al")).collect();
    assert_eq!(lines.len(), 3, "{s}");
    for (line, c) in lines.iter().zip(["'a'", "'b'", "'c'"]) {
        assert!(line.contains(&format!("console ← {c}")), "{line}");
    }
    assert!(
        s.contains("out 0F4h,eax") && s.contains("exit code 0"),
        "{s}"
    );
    let o = virtlab(&[
        "trace",
        "-w",
        "pio",
        "-m",
        "hw-assisted",
        "-n",
        "5",
        "--limit",
        "2",
        "--json",
    ]);
    assert!(o.status.success());
    let events: Vec<contract::TraceEvent> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, contract::ExitKind::IoOut);
    assert_eq!(events[1].seq, 1);
    let o = virtlab(&["trace", "-w", "nope", "-m", "hw-assisted"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn trace_shows_cli_and_sti_flipping_the_virtual_if() {
    if !machine::testing::kvm_or_skip("trace_shows_cli_and_sti_flipping_the_virtual_if") {
        return;
    }
    let o = virtlab(&[
        "trace",
        "--workload",
        "irq-toggle",
        "--mode",
        "trap-emulate",
        "--limit",
        "6",
    ]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    let rows: Vec<&str> = s.lines().filter(|l| l.contains(" Trap ")).collect();
    assert_eq!(rows.len(), 6, "{s}");
    for (i, row) in rows.iter().enumerate() {
        let (insn, change) = if i % 2 == 0 {
            ("cli", "vIF 1 → 0")
        } else {
            ("sti", "vIF 0 → 1")
        };
        assert!(row.contains(&format!("  {insn}  ")), "{row}");
        // The first CLI finds the virtual IF already 0 (the guest starts with interrupts off).
        if i > 0 {
            assert!(row.contains(change), "{row}");
        }
    }
}

#[test]
fn trace_names_hypercalls_and_their_results() {
    if !machine::testing::kvm_or_skip("trace_names_hypercalls_and_their_results") {
        return;
    }
    let o = virtlab(&[
        "trace", "-w", "pio", "-m", "paravirt", "-n", "40", "-b", "16",
    ]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}");
    let writes: Vec<&str> = s.lines().filter(|l| l.contains("console_write(")).collect();
    assert_eq!(writes.len(), 3, "{s}");
    assert!(
        writes[0].contains("→ 16") && writes[2].contains("→ 8"),
        "{s}"
    );
}

#[test]
fn explain_sorts_popf_into_the_hole() {
    let o = virtlab(&["explain", "--workload", "popf"]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}");
    let hole = s
        .split("SENSITIVE BUT UNPRIVILEGED")
        .nth(1)
        .expect("a sensitive section");
    let hole = hole.split("INNOCUOUS").next().unwrap();
    assert!(hole.contains("pushfq") && hole.contains("popfq"), "{hole}");
    let privileged = s
        .split("PRIVILEGED: TRAPS")
        .nth(1)
        .unwrap()
        .split("SENSITIVE")
        .next()
        .unwrap();
    assert!(
        privileged.contains("cli") && privileged.contains("sti"),
        "{privileged}"
    );
    assert!(!privileged.contains("pushfq"));
    let o = virtlab(&["explain", "--workload", "popf", "--json"]);
    assert!(o.status.success());
    let _: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = virtlab(&["explain"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn console_bytes_split_across_traps_are_traced_safely() {
    if !machine::testing::kvm_or_skip("console_bytes_split_across_traps_are_traced_safely") {
        return;
    }
    // One `out 0xE9, al` per byte of a 4-byte UTF-8 character, then hlt.
    let dir = temp_dir("utf8");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("utf8.bin");
    let mut code = Vec::new();
    for b in "😀".as_bytes() {
        code.extend_from_slice(&[0xB0, *b, 0xE6, 0xE9]);
    }
    code.push(0xF4);
    std::fs::write(&bin, code).unwrap();
    for mode in ["hw-assisted", "trap-emulate"] {
        let o = virtlab(&["trace", "--guest-bin", bin.to_str().unwrap(), "-m", mode]);
        assert!(o.status.success(), "{mode}: {}", text(&o.stderr));
        assert_eq!(
            text(&o.stdout).matches("out 0E9h,al").count(),
            4,
            "{}",
            text(&o.stdout)
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_trace_says_when_it_stops_before_the_run() {
    if !machine::testing::kvm_or_skip("a_trace_says_when_it_stops_before_the_run") {
        return;
    }
    let o = virtlab(&[
        "trace",
        "-w",
        "pio",
        "-m",
        "hw-assisted",
        "-n",
        "50",
        "--limit",
        "5",
    ]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    assert!(
        s.contains("the trace stopped after 5 of the run's 51 exits"),
        "{s}"
    );
}
