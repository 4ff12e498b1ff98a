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

#[test]
fn explain_shows_each_block_beside_its_translation() {
    let o = virtlab(&[
        "explain",
        "--workload",
        "popf",
        "--mode",
        "binary-translation",
    ]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    for fragment in [
        "popf: 11 blocks from the entry point 0x100000, as binary translation rewrites them",
        "block 1 — guest 0x100000..0x100026 (11 instructions)",
        "  100000    mov r15,rdi ",
        " copied\n",
        "  100026    cli ",
        "mov qword ptr [40016000h],0 ",
        " rewritten inline\n",
        "callout: the VMM emulates `out`",
        "chaining stub → 0x100068, 0x100026",
        "ud2; nop; nop; nop",
        "stub: patched into `jmp` to the translation of 0x100068 on first use",
        "instructions: copied 48, rewritten inline 16, callout 3, chaining stub 9",
    ] {
        assert!(s.contains(fragment), "{fragment:?} in\n{s}");
    }
    // POPF is rewritten, never called out: the only callouts are the exit's out and hlt.
    let popfs: Vec<&str> = s.lines().filter(|l| l.contains("  popfq  ")).collect();
    assert!(!popfs.is_empty(), "{s}");
    assert!(
        popfs.iter().all(|l| l.ends_with("rewritten inline")),
        "{popfs:?}"
    );
    // call-ret: the return goes through the lookup routine.
    let o = virtlab(&["explain", "-w", "call-ret", "-m", "binary-translation"]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}");
    assert!(
        s.lines().any(|l| l.contains(" ret ")
            && l.ends_with("lookup: the target's translation from the table")),
        "{s}"
    );
    let o = virtlab(&[
        "explain",
        "-w",
        "irq-toggle",
        "-m",
        "binary-translation",
        "--json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["counts"]["inline"], 2, "{v}");
    assert_eq!(v["blocks"][0]["guest"], 0x10_0000);
    // The modes that do not rewrite or trap the guest's own code have nothing to explain.
    let o = virtlab(&["explain", "-w", "popf", "-m", "hw-assisted"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("trace -m hw-assisted"));
}

#[test]
fn trace_in_binary_translation_counts_callouts_and_translator_entries() {
    if !machine::testing::kvm_or_skip(
        "trace_in_binary_translation_counts_callouts_and_translator_entries",
    ) {
        return;
    }
    let o = virtlab(&[
        "trace",
        "-w",
        "irq-toggle",
        "-m",
        "binary-translation",
        "--limit",
        "3",
    ]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    // CLI and STI are rewritten inline: no entry for them; the loop's edges are chained
    // once each, and the only callout is the exit's out.
    for fragment in [
        "irq-toggle in binary-translation (n=10), first 3 exits:",
        "the trace stopped after 3 of the run's 4 exits",
        "VMM entries (callouts and translator entries) by name: out 1, translate 3\n",
        "translation: blocks 3, branches 2, callout sites 2, chains 3, copied 22, cr3 \
         invalidations 0, cr3 switches 0, flushes 0, inline 2, invalidations 0, lookup misses \
         0, lookup repairs 0, lookups 0\n",
        "4 exits in all (Trap 4)",
    ] {
        assert!(s.contains(fragment), "{fragment:?} in\n{s}");
    }
    assert!(!s.contains(" cli "), "{s}");
    // The exit RIP of an entry is the monitor stub's: never shown as a guest RIP.
    assert!(!s.contains("0x4000"), "{s}");
}
