//! The scenario parser's checks, each error located.

use super::*;

const GOOD: &str = r#"
name = "t"
description = "test"
repeats = 2
warmup = 1
modes = ["hw-assisted"]

[[workload]]
name = "pio"
n = [10, 20]
b = [1, 4]

[[workload]]
name = "syscall"
planned = true
"#;

#[test]
fn parses_sweeps_repeats_and_warmups() {
    let s = Scenario::parse(GOOD, "t.toml").unwrap();
    let jobs = s.jobs();
    // (1 warm-up + 2 repeats) × 2 N × 2 B × 1 mode
    assert_eq!(jobs.len(), 12);
    assert_eq!(jobs.iter().filter(|j| j.warmup).count(), 4);
    assert_eq!(
        jobs.iter().filter(|j| !j.warmup && j.repeat == 1).count(),
        4
    );
    assert_eq!(s.planned().len(), 1);
    assert_eq!(s.planned()[0].name, "syscall");
}

#[test]
fn modes_are_typed_in_report_order_each_once() {
    let text =
        "name=\"t\"\ndescription=\"d\"\nmodes=[\"paravirt\", \"hw-assisted\", \"paravirt\"]\n\
                [[workload]]\nname=\"pio\"\n";
    let s = Scenario::parse(text, "m.toml").unwrap();
    assert_eq!(s.modes, Some(vec![Mode::HwAssisted, Mode::Paravirt]));
    assert_eq!(s.modes(), [Mode::HwAssisted, Mode::Paravirt]);
    let all = Scenario::parse(
        "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\n",
        "a.toml",
    )
    .unwrap();
    assert_eq!((all.modes.clone(), all.modes()), (None, engines::modes()));
}

#[test]
fn a_typo_in_a_key_names_file_line_and_column() {
    let text = "name = \"t\"\ndescription = \"d\"\n[[workload]]\nname = \"pio\"\nnn = 5\n";
    let e = Scenario::parse(text, "bad.toml").unwrap_err();
    match &e {
        ScenarioError::Parse {
            file,
            line,
            column,
            message,
        } => {
            assert_eq!(file, "bad.toml");
            assert_eq!((*line, *column), (5, 1));
            assert!(message.contains("unknown field `nn`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with("bad.toml:5:1: "), "{e}");
}

#[test]
fn a_string_where_a_number_belongs_is_located() {
    let text = "name = \"t\"\ndescription = \"d\"\n[[workload]]\nname = \"pio\"\nn = \"many\"\n";
    let e = Scenario::parse(text, "bad.toml").unwrap_err();
    let ScenarioError::Parse {
        line,
        column,
        message,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column), (5, 5));
    assert!(
        message.contains("a non-negative integer or a list of them"),
        "{message}"
    );
}

#[test]
fn unknown_workloads_and_modes_list_the_known_ones() {
    let e = Scenario::parse(
        "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"warp\"\n",
        "x.toml",
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("unknown workload `warp`") && msg.contains("pio") && msg.contains("call-ret"),
        "{msg}"
    );
    let e = Scenario::parse(
        "name=\"t\"\ndescription=\"d\"\nmodes=[\"fast\"]\n[[workload]]\nname=\"pio\"\n",
        "x.toml",
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("unknown mode `fast`") && msg.contains("trap-emulate"),
        "{msg}"
    );
}

#[test]
fn bad_values_are_refused() {
    for (text, what) in [
        (
            "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nb=0\n",
            "b must be at least 1",
        ),
        (
            "name=\"t\"\ndescription=\"d\"\nrepeats=0\n[[workload]]\nname=\"pio\"\n",
            "repeats",
        ),
        (
            "name=\"t\"\ndescription=\"d\"\nworkload=[]\n",
            "no [[workload]]",
        ),
        (
            "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nn=-3\n",
            "non-negative",
        ),
        (
            "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nn=[]\n",
            "list",
        ),
        (
            "name=\"t\"\ndescription=\"d\"\n[[workload]]\nname=\"pio\"\nb=[4, 4096]\n",
            "4096",
        ),
    ] {
        let e = Scenario::parse(text, "x.toml").unwrap_err().to_string();
        assert!(e.contains(what), "{text}: {e}");
    }
}

#[test]
fn every_content_error_names_line_and_column() {
    let head = "name = \"t\"\ndescription = \"d\"\n";
    let pio = "[[workload]]\nname = \"pio\"\n";
    for (body, (line, column), what) in [
        (
            format!("modes = [\"hw-assisted\", \"fast\"]\n{pio}"),
            (3, 25),
            "unknown mode `fast`",
        ),
        ("workload = []\n".into(), (3, 12), "no [[workload]] tables"),
        (
            format!("repeats = 0\n{pio}"),
            (3, 11),
            "repeats must be between 1 and 1000",
        ),
        (
            format!("warmup = 1001\n{pio}"),
            (3, 10),
            "warmup must be at most 1000",
        ),
        (
            format!("timeout_s = -1.0\n{pio}"),
            (3, 13),
            "timeout_s must be more than 0",
        ),
        (
            format!("{pio}[[workload]]\nname = \"warp\"\n"),
            (6, 8),
            "unknown workload `warp`",
        ),
        (format!("{pio}b = [4, 0]\n"), (5, 9), "b must be at least 1"),
        (
            format!("{pio}b = [4, 4096]\n"),
            (5, 9),
            "b = 4096 is over the limit of 512",
        ),
        (
            format!("{pio}n = 1099511627776\n"),
            (5, 5),
            "n = 1099511627776 is over the limit of 65536",
        ),
        (
            format!("repeats = 1000\nwarmup = 1000\n{pio}n = [1, 2]\n"),
            (6, 8),
            "more than 10000 runs",
        ),
    ] {
        let text = format!("{head}{body}");
        let e = Scenario::parse(&text, "s.toml").unwrap_err();
        let ScenarioError::Invalid {
            line: l,
            column: c,
            message,
            ..
        } = &e
        else {
            panic!("{text}: {e:?}")
        };
        assert_eq!((*l, *c), (line, column), "{text}: {e}");
        assert!(message.contains(what), "{text}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("s.toml:{line}:{column}: ")),
            "{e}"
        );
    }
}

#[test]
fn run_count_matches_the_jobs() {
    let s = Scenario::parse(GOOD, "t.toml").unwrap();
    assert_eq!(s.run_count(), s.jobs().len());
}

#[test]
fn line_and_column_count_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
}

#[test]
fn backends_sweep_the_disk_workloads_and_bad_names_are_located() {
    let text = "name = \"t\"\ndescription = \"d\"\nmodes = [\"paravirt\"]\n\
                [[workload]]\nname = \"blk-virtio\"\nn = 4\ns = [512, 4096]\n\
                backends = [\"inline\", \"kernel-notify\", \"driver-domain\"]\n";
    let s = Scenario::parse(text, "b.toml").unwrap();
    assert_eq!(
        s.workloads[0].backends,
        Some(contract::BlockBackend::ALL.to_vec())
    );
    // 2 sizes × 3 backends × 1 mode.
    assert_eq!(s.run_count(), 6);
    let jobs = s.jobs();
    assert_eq!(jobs.len(), 6);
    for b in contract::BlockBackend::ALL {
        assert_eq!(jobs.iter().filter(|j| j.backend == Some(b)).count(), 2);
    }
    // Without the key, the run options' backend (no backend on the job).
    let plain = Scenario::parse(&text.replace("backends", "#"), "p.toml").unwrap();
    assert!(plain.jobs().iter().all(|j| j.backend.is_none()));
    for (bad, want, line) in [
        ("\"vhost\"", "unknown block backend `vhost`", 8),
        ("\"inline\", \"inline\"", "backend `inline` listed twice", 8),
        ("", "name at least one", 8),
    ] {
        let t = text.replace("\"inline\", \"kernel-notify\", \"driver-domain\"", bad);
        let e = Scenario::parse(&t, "b.toml").unwrap_err();
        let ScenarioError::Invalid {
            line: l, message, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert!(message.contains(want), "{message}");
        assert_eq!(*l, line, "{e}");
    }
    let no_disk = "name = \"t\"\ndescription = \"d\"\n[[workload]]\nname = \"pio\"\n\
                   backends = [\"inline\"]\n";
    let e = Scenario::parse(no_disk, "n.toml").unwrap_err().to_string();
    assert!(
        e.contains("n.toml:5:") && e.contains("workload `pio` has no disk"),
        "{e}"
    );
}

#[test]
fn the_host_table_says_whether_the_credit_scheduler_is_work_conserving() {
    let text = |host: &str| {
        format!(
            "name = \"h\"\ndescription = \"d\"\n[host]\nscheduler = \"credit\"\n{host}\n\
             [[vm]]\nworkload = \"compute\"\nmode = \"trap-emulate\"\n"
        )
    };
    let host = |t: &str| Scenario::parse(&text(t), "h").unwrap().host.unwrap();
    assert!(host("").work_conserving, "Xen's default");
    assert!(!host("work_conserving = false").work_conserving);
    assert!(host("work_conserving = true").work_conserving);
    let e = Scenario::parse(&text("work_conserving = 1"), "h").unwrap_err();
    assert_eq!(
        e.to_string(),
        "h:5:19: invalid type: integer `1`, expected a boolean"
    );
    // The shipped consolidation scenario is not work-conserving.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let s = Scenario::load(&dir.join("consolidation.toml")).unwrap();
    assert!(!s.host.unwrap().work_conserving);
}
