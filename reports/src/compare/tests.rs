use super::*;
use crate::testdata::{report, three_modes};
use contract::{Backend, ExitKind};

fn slower(records: &mut [RunRecord], factor: f64) {
    for r in records {
        r.wall_ns = (r.wall_ns as f64 * factor) as u64;
    }
}

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Three repeats per run, wall 0.9, 1.0 and 1.1 ms (times `factor`).
fn repeated(factor: f64) -> Report {
    let mut records = Vec::new();
    for (i, w) in [0.9, 1.0, 1.1].into_iter().enumerate() {
        for mut r in three_modes() {
            r.repeat = i as u32;
            r.wall_ns = (w * factor * 1e6) as u64;
            records.push(r);
        }
    }
    report(records)
}

#[test]
fn equal_counts_and_a_ratio_of_medians_with_its_spread() {
    let (a, b) = (repeated(1.0), repeated(3.0));
    let c = Comparison::new(&[Input::new("a.json", &a), Input::new("b.json", &b)]);
    assert_eq!(c.rows.len(), 6);
    let r = c.rows[0].ratio(0, 0, 1).unwrap();
    assert!((r.ratio - 3.0).abs() < 1e-9);
    // MAD of 0.9, 1.0, 1.1 is 0.1: 1.4826 × 0.1 on each side, propagated.
    let u = (2.0f64).sqrt() * 0.14826;
    assert!((r.uncertainty.unwrap() - u).abs() < 1e-9, "{r:?}");
    let s = c.summary(0, 1);
    assert_eq!(
        s,
        "B is 3.00× slower than A in wall time (geometric mean of 6 pairs, each \
         3.00×–3.00×); counts equal exactly in all 6 workload × mode pairs"
    );
    let text = term::render(&c, false);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.contains("×3.00 ±21%"), "{text}");
    assert!(!text.contains("across hosts"), "{text}");
}

#[test]
fn one_pair_is_said_the_way_hyperfine_says_it() {
    let one = |f: f64| {
        let mut r = repeated(f);
        r.records
            .retain(|r| r.workload == "pio" && r.mode == Mode::HwAssisted);
        r
    };
    let (a, b) = (one(1.0), one(0.5));
    let c = Comparison::new(&[Input::new("a", &a), Input::new("b", &b)]);
    assert!(
        c.summary(0, 1)
            .starts_with("B is 2.00× faster than A (±21 %) in wall time"),
        "{}",
        c.summary(0, 1)
    );
    assert_eq!(
        speed_words("B", "A", 1.01, Some(0.08)),
        "B is as fast as A (1.01×, ±8.0 %)"
    );
}

#[test]
fn counts_that_differ_are_named_exactly() {
    let a = report(three_modes());
    let mut records = three_modes();
    records[0].exits.insert(ExitKind::IoOut, 101);
    slower(&mut records, 1.0);
    let b = report(records);
    let c = Comparison::new(&[Input::new("a", &a), Input::new("b", &b)]);
    let text = term::render(&c, false);
    assert!(text.contains("✗ DIFFER"), "{text}");
    assert!(
        text.contains("✗ pio (n=100) in hw-assisted: exits:IoOut = 100 in A, 101 in B"),
        "{text}"
    );
    assert!(flat(&text).contains("counts DIFFER in 1 of 6"), "{text}");
}

#[test]
fn inputs_from_two_hosts_get_the_pooled_table() {
    let a = report(three_modes());
    let mut records = three_modes();
    for r in &mut records {
        r.host.backend = Backend::KvmAmd;
        r.host.cpu_model = "Other CPU".into();
        r.guest.as_mut().unwrap().ns_per_op = Some(666.0);
    }
    let b = report(records);
    let c = Comparison::new(&[Input::new("intel.json", &a), Input::new("amd.json", &b)]);
    assert!(c.cross_host());
    let text = term::render(&c, false);
    assert!(text.contains("across hosts"), "{text}");
    assert!(
        text.contains("H1 = kvm_intel · Test CPU @ 3.0GHz"),
        "{text}"
    );
    assert!(text.contains("H2 = kvm_amd · Other CPU"), "{text}");
    let pio = text
        .lines()
        .filter(|l| l.starts_with("pio (n=100)") && l.contains("agree"))
        .count();
    assert_eq!(pio, 3, "{text}");
    assert!(
        text.contains("333ns") && text.contains("666ns") && text.contains("×2.00"),
        "{text}"
    );
    assert!(
        flat(&text)
            .contains("counts agree on every host in 6 workload × mode pair(s) and differ in 0"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
}

#[test]
fn a_baseline_fails_on_a_count_change_or_a_regression_only() {
    let base = repeated(1.0);
    let same = check(&base, &repeated(1.05), 0.2);
    assert!(!same.failed(), "{same:?}");
    assert_eq!(same.compared, 6);
    let slow = check(&base, &repeated(2.0), 0.2);
    assert!(slow.failed());
    assert!(slow
        .render("main")
        .contains("✗ pio (n=100) in hw-assisted: wall 2.00× slower (2.00× ±21 %)"));
    let fast = check(&base, &repeated(0.4), 0.2);
    assert!(!fast.failed(), "{:?}", fast.changes);
    assert!(fast.render("main").contains("wall 2.50× faster"));
    let mut changed = repeated(1.0);
    changed.records[1].traps.insert("cli".into(), 1);
    let counts = check(&base, &changed, 0.2);
    assert!(counts.failed());
    assert!(counts
        .render("main")
        .contains("✗ pio (n=100) in trap-emulate: traps:cli = 1, was 0"));
    // Another N is another experiment: the check cannot vouch for it.
    let mut other = repeated(1.0);
    for r in &mut other.records {
        r.params.insert("n".into(), 7);
    }
    let unmatched = check(&base, &other, 0.2);
    assert!(unmatched.failed());
    assert_eq!(unmatched.compared, 0);
}
