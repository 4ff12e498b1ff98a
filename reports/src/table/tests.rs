use super::*;
use crate::testdata::{b_sweep, n_sweep, rec, three_modes};
use contract::{CountKey, ExitKind};

/// The text with every run of white space as one space, so wrapped sentences match.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn widest(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn the_compact_layout_fits_in_80_columns_and_opens_with_the_verdicts() {
    let mut records = three_modes();
    records.extend(b_sweep());
    records.extend(n_sweep());
    records[1]
        .mismatches
        .insert(CountKey::Exits(ExitKind::Trap), (100, 99));
    let text = render(&records);
    assert!(widest(&text) <= WIDTH, "{text}");
    assert!(text.starts_with("verdicts (workload × mode)\n"), "{text}");
    assert!(text.contains("✗ COUNTS DIFFER"), "{text}");
    assert!(
        flat(&text).contains(
            "✗ pio in trap-emulate (n=100): COUNTS DIFFER: exits:Trap = 99, expected 100"
        ),
        "{text}"
    );
    assert!(!text.contains("Completed {"), "{text}");
}

#[test]
fn a_b_sweep_is_one_table_with_what_batching_did() {
    let text = render(&b_sweep());
    assert!(text.contains("pio (n=64): B from 1 to 8"), "{text}");
    assert!(
        flat(&text).contains(
            "paravirt: hypercalls 64 → 8 (8.00× fewer) from B=1 to B=8; guest cycles/op 900 → 200"
        ),
        "{text}"
    );
    assert!(
        text.contains("\n              B=1     B=2     B=4     B=8\n"),
        "{text}"
    );
}

#[test]
fn scaling_prints_the_intercept_as_computed_and_flags_a_poor_fit() {
    let mut records = n_sweep();
    for r in &mut records {
        r.wall_ns = 2_000_000 - r.wall_ns; // falls with N: a negative slope, big intercept
    }
    let text = render(&records);
    assert!(
        text.contains("scaling (median wall time against N, least squares):"),
        "{text}"
    );
    assert!(text.contains("intercept 1.98 ms"), "{text}");
    let mut noisy = n_sweep();
    for (i, r) in noisy.iter_mut().enumerate() {
        r.wall_ns = if i % 2 == 0 { 1_000_000 } else { 100_000 };
    }
    let text = render(&noisy);
    assert!(flat(&text).contains("a poor fit (R² = "), "{text}");
    let text = render(&n_sweep());
    assert!(
        text.contains("  pio in hw-assisted: 1.5 µs per iteration, intercept 20.0 µs, R² = 1.0000"),
        "{text}"
    );
}

#[test]
fn colour_marks_failures_and_goes_away_when_off() {
    let mut records = three_modes();
    records[0]
        .mismatches
        .insert(CountKey::Exits(ExitKind::IoOut), (100, 99));
    let opts = Options {
        color: true,
        ..Options::default()
    };
    let coloured = render_with(&records, &[], &opts);
    assert!(coloured.contains("\x1b[1;31m"), "{coloured}");
    assert!(!render(&records).contains('\x1b'));
}

#[test]
fn a_long_console_is_clipped_with_a_marker() {
    let mut r = rec(Mode::HwAssisted, "hello.bin", 1, 1, ExitKind::IoOut);
    r.console_ok = None;
    r.expected.clear();
    r.console = (0..100).map(|i| format!("line {i}\n")).collect();
    let text = render(&[r]);
    assert!(text.contains("  | line 19\n"), "{text}");
    assert!(!text.contains("line 20\n"), "{text}");
    assert!(
        text.contains("… 80 more lines (640 B) in results.json"),
        "{text}"
    );
}

#[test]
fn failures_and_divergences_are_told_apart() {
    let mut records = three_modes();
    records[2].outcome = Outcome::Diverged {
        expected: "300".into(),
        got: "100".into(),
        why: "the x86 hole".into(),
        declared: true,
        host_caused: false,
        result: Some(100),
    };
    records[4].outcome = Outcome::TimedOut {
        limit: contract::Limit::WallClock,
        rip: None,
    };
    let failures = vec![RunFailure {
        workload: "cpuid".into(),
        mode: Mode::Paravirt,
        repeat: 0,
        error: "KVM_CREATE_VM: Cannot allocate memory".into(),
    }];
    let text = render_with(&records, &failures, &Options::default());
    assert!(text.contains("◆ expected div."), "{text}");
    assert!(text.contains("✗ TIMED OUT"), "{text}");
    assert!(text.contains("✗ VMM ERROR"), "{text}");
    assert!(
        flat(&text).contains("stopped at its wall-clock limit (--timeout)"),
        "{text}"
    );
    let failing = text.find("✗ cpuid in trap-emulate").unwrap();
    let expected = text.find("◆ pio in paravirt").unwrap();
    assert!(failing < expected, "failures come first: {text}");
    let line = summary_line("s", &records, &failures, false);
    assert_eq!(
        line,
        "s: 7 runs: 4 ok, 1 diverged (expected), 1 TIMED OUT, 1 VMM ERROR; 2 failed"
    );
}

#[test]
fn the_host_line_names_the_guest_mmu_when_the_record_has_it() {
    let mut records = three_modes();
    assert!(!render(&records).contains("guest MMU"));
    for r in &mut records {
        r.host.guest_mmu = Some("shadow paging (kvm_pvm has neither EPT nor NPT)".into());
    }
    let text = render(&records);
    assert!(
        flat(&text).contains("| guest MMU shadow paging (kvm_pvm has neither EPT nor NPT)"),
        "{text}"
    );
}

#[test]
fn the_paper_block_puts_each_ordering_beside_the_run() {
    let text = render(&crate::testdata::nanobench());
    assert!(widest(&text) <= WIDTH, "{text}");
    let flat = flat(&text);
    assert!(
        flat.contains("Adams & Agesen (ASPLOS 2006) beside this run: 1 of 3 orderings agree"),
        "{text}"
    );
    for row in [
        "in (pio) paper software VMM ≈74.0× faster run hardware VMM 5.00× faster \
         (hw-assisted against paravirt): disagrees order hw-assisted 36.0k < paravirt 180k",
        "pgfault (pgfault) paper software VMM 2.86× faster run software VMM 3.00× faster \
         (hw-assisted against binary-translation): agrees order binary-translation 3.00k < \
         hw-assisted 9.00k < paravirt 60.0k",
        "divzero (divzero) paper hardware VMM 3.18× faster run software VMM 4.00× faster \
         (hw-assisted against binary-translation): disagrees",
        "not measured in two modes: syscall, cr8wr, call/ret, ptemod, context switch, fork/wait",
    ] {
        assert!(flat.contains(row), "{row}\n{text}");
    }
    assert!(!render(&b_sweep()).contains("Adams & Agesen"));
}
