//! `virtlab compare`, `report` with several inputs and `run --baseline`, end to end on
//! real runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn virtlab_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("virtlab starts")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("virtlab-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Runs pio and cpuid in hw-assisted and paravirt, twice each, into `dir/out`.
fn small_run(dir: &Path, out: &str) -> PathBuf {
    let o = virtlab_in(
        dir,
        &[
            "run",
            "-w",
            "pio",
            "-w",
            "cpuid",
            "-n",
            "50",
            "-m",
            "hw-assisted",
            "-m",
            "paravirt",
            "--repeats",
            "2",
            "--out",
            out,
        ],
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    dir.join(out).join("results.json")
}

#[test]
fn two_runs_compare_counts_exactly_and_costs_as_ratios_and_two_hosts_pool() {
    if !machine::testing::kvm_or_skip(
        "two_runs_compare_counts_exactly_and_costs_as_ratios_and_two_hosts_pool",
    ) {
        return;
    }
    let dir = temp_dir("compare");
    let a = small_run(&dir, "a");
    let b = small_run(&dir, "b");
    let o = virtlab_in(&dir, &["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    assert!(s.lines().all(|l| l.chars().count() <= 80), "{s}");
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("counts equal exactly in all 4 workload × mode pairs"),
        "{s}"
    );
    assert!(
        flat.contains("in wall time (geometric mean of 4 pairs"),
        "{s}"
    );
    assert_eq!(
        s.lines()
            .filter(|l| !l.starts_with(" ") && l.contains(" equal "))
            .count(),
        4,
        "{s}"
    );
    assert!(!s.contains("across hosts"), "{s}");

    // The same results as if from another host: the pooled table appears.
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b).unwrap()).unwrap();
    for r in other["records"].as_array_mut().unwrap() {
        r["host"]["backend"] = "kvm-amd".into();
        r["host"]["cpu_model"] = "AMD Test Processor".into();
    }
    let c = dir.join("amd.json");
    std::fs::write(&c, other.to_string()).unwrap();
    let html = dir.join("cmp.html");
    let o = virtlab_in(
        &dir,
        &[
            "compare",
            a.to_str().unwrap(),
            c.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    );
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    assert!(s.contains("across hosts"), "{s}");
    assert!(s.contains("H2 = kvm_amd · AMD Test Processor"), "{s}");
    assert_eq!(
        s.lines().filter(|l| l.contains("  agree  ")).count(),
        4,
        "{s}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Across hosts") && page.contains("AMD Test Processor"));
    assert!(dir.join("chart-hosts-paravirt.svg").exists());

    // `report` with several inputs writes the comparison page; given a CSV it says what
    // to give it instead.
    let out = dir.join("both.html");
    let o = virtlab_in(
        &dir,
        &[
            "report",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("virtlab comparison"));
    let csv = dir.join("a/results.csv");
    let o = virtlab_in(&dir, &["report", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("this is a results.csv")
            && text(&o.stderr).contains("results.json"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_baseline_is_saved_and_a_count_change_fails_the_check() {
    if !machine::testing::kvm_or_skip("a_baseline_is_saved_and_a_count_change_fails_the_check") {
        return;
    }
    let dir = temp_dir("baseline");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "-w",
            "pio",
            "-n",
            "40",
            "-m",
            "hw-assisted",
            "--out",
            "out",
        ];
        args.extend_from_slice(extra);
        virtlab_in(&dir, &args)
    };
    let o = run(&["--save-baseline", "main"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let saved = dir.join("virtlab-out/baselines/main.json");
    assert!(text(&o.stdout).contains("saved baseline main as virtlab-out/baselines/main.json"));
    // The same run against it: no count changed (costs may move on a busy host, so the
    // threshold is wide).
    let o = run(&["--baseline", "main", "--threshold", "1000"]);
    let s = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{s}");
    assert!(
        s.contains("baseline main: no count changed, no cost regressed"),
        "{s}"
    );
    // A baseline whose count differs: exit status 3 and the counter named.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    doc["records"][0]["exits"]["IoOut"] = 40.into();
    std::fs::write(&saved, doc.to_string()).unwrap();
    let o = run(&["--baseline", "main", "--threshold", "1000"]);
    let s = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{s}");
    assert!(
        s.contains("✗ pio (b=16, n=40) in hw-assisted: exits:IoOut = 41, was 40"),
        "{s}"
    );
    // A name that is not one, or none saved: usage errors before anything runs.
    let o = run(&["--baseline", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("no baseline `nosuch`"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["--save-baseline", "../x"]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}
