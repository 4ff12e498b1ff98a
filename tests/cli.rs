//! The `virtlab` command end to end: default scenario, outputs, bad input, a user's C
//! program.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn virtlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(args)
        .output()
        .expect("virtlab starts")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("virtlab-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn default_run_prints_the_table_and_writes_csv_and_json() {
    if !machine::testing::kvm_or_skip("default_run_prints_the_table_and_writes_csv_and_json") {
        return;
    }
    let out = temp_dir("default");
    let o = virtlab(&["run", "--out", out.to_str().unwrap()]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", text(&o.stderr));
    for w in guests::WORKLOADS {
        assert!(stdout.contains(w.name), "table lacks {}", w.name);
    }
    assert!(stdout.contains("hw-assisted"));
    assert!(stdout.contains("backend"));
    assert!(stdout.contains(&format!("wrote {}", out.join("results.csv").display())));
    assert!(stdout.contains(&format!("wrote {}", out.join("report.html").display())));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("virtlab report"));
    let again = out.join("again.html");
    let o = virtlab(&[
        "report",
        out.join("results.json").to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&again)
            .unwrap()
            .matches("<svg")
            .count(),
        html.matches("<svg").count()
    );
    let o = virtlab(&["report", "/nonexistent/results.json"]);
    assert_eq!(o.status.code(), Some(2));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().next(),
        Some("workload,mode,backend,param_n,param_b,repeat,metric,kind,value,unit")
    );
    assert!(
        csv.lines().any(
            |l| l.starts_with("pio,hw-assisted,") && l.ends_with(",exits,IoOut:0xe9,200,count")
        ),
        "{csv}"
    );
    let report = reports::Report::load(&out.join("results.json")).unwrap();
    let modes = virtlab::engines::modes().len();
    assert_eq!(report.records.len(), guests::WORKLOADS.len() * modes);
    assert!(report.failures.is_empty());
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn one_workload_in_one_mode_with_parameters() {
    if !machine::testing::kvm_or_skip("one_workload_in_one_mode_with_parameters") {
        return;
    }
    let out = temp_dir("one");
    let o = virtlab(&[
        "run",
        "--workload",
        "pio",
        "--mode",
        "hw-assisted",
        "-n",
        "1000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let report = reports::Report::load(&out.join("results.json")).unwrap();
    assert_eq!(report.records.len(), 1);
    let r = &report.records[0];
    assert_eq!(r.port_writes(0xE9), 1000);
    assert_eq!(r.params["n"], 1000);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.contains("pio,hw-assisted,"));
    assert!(
        csv.contains(",1000,16,0,exits,IoOut:0xe9,1000,count"),
        "{csv}"
    );
    assert!(csv.contains(",expected,port_writes:0xe9,1000,count"));
    assert!(csv.contains(",result_ok,result,1,bool"));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn unknown_workload_or_mode_exits_2_and_lists_the_known_ones() {
    let o = virtlab(&["run", "--workload", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("unknown workload `nosuch`"), "{err}");
    for w in guests::WORKLOADS {
        assert!(err.contains(w.name), "{err}");
    }
    let o = virtlab(&["run", "--mode", "warp-drive"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains("unknown mode `warp-drive`")
            && err.contains("hw-assisted")
            && err.contains("trap-emulate")
            && err.contains("paravirt"),
        "{err}"
    );
    let o = virtlab(&["run", "--guest-bin", "/nonexistent", "--load", "0x1000"]);
    assert_ne!(o.status.code(), Some(0));
    let o = virtlab(&["run", "--load", "banana", "--guest-bin", "x"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn list_and_doctor_describe_the_host() {
    if !machine::testing::kvm_or_skip("list_and_doctor_describe_the_host") {
        return;
    }
    let o = virtlab(&["list"]);
    assert!(o.status.success());
    let s = text(&o.stdout);
    for w in guests::WORKLOADS {
        assert!(s.contains(w.name) && s.contains(w.summary));
    }
    assert!(s.contains("hw-assisted") && s.contains("runs here"), "{s}");
    let o = virtlab(&["doctor"]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}");
    assert!(
        s.contains("KVM API version is 12") && s.contains("KVM backend"),
        "{s}"
    );
}

#[test]
fn a_malformed_scenario_exits_2_with_line_and_column() {
    let dir = temp_dir("badscen");
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        "name = \"t\"\ndescription = \"d\"\n\n[[workload]]\nname = \"pio\"\nrepeatz = 3\n",
    )
    .unwrap();
    let o = virtlab(&["run", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{}:6:1:", typo.display()))
            && err.contains("unknown field `repeatz`"),
        "{err}"
    );
    let wrong_type = dir.join("type.toml");
    std::fs::write(
        &wrong_type,
        "name = \"t\"\ndescription = \"d\"\nrepeats = \"three\"\n[[workload]]\nname = \"pio\"\n",
    )
    .unwrap();
    let o = virtlab(&["run", wrong_type.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains(":3:11:") && err.contains("expected"), "{err}");
    let unknown = dir.join("unknown.toml");
    std::fs::write(
        &unknown,
        "name = \"t\"\ndescription = \"d\"\n[[workload]]\nname = \"pi0\"\n",
    )
    .unwrap();
    let o = virtlab(&["run", unknown.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("unknown workload `pi0` (known workloads: compute, pio"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_scenario_with_repeats_warmups_and_planned_workloads() {
    if !machine::testing::kvm_or_skip("a_scenario_with_repeats_warmups_and_planned_workloads") {
        return;
    }
    let dir = temp_dir("scen");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.toml");
    std::fs::write(
        &file,
        "name = \"s\"\ndescription = \"d\"\nrepeats = 3\nwarmup = 1\nmodes = [\"hw-assisted\"]\n\
         [[workload]]\nname = \"pio\"\nn = [10, 30, 50]\n\
         [[workload]]\nname = \"syscall\"\nplanned = true\nnote = \"later\"\n",
    )
    .unwrap();
    let out = dir.join("out");
    let o = virtlab(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", text(&o.stderr));
    assert!(
        stdout.contains("missing: syscall: not in the catalog yet (later)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("scaling (median wall time against N"),
        "{stdout}"
    );
    let report = reports::Report::load(&out.join("results.json")).unwrap();
    // 3 N values × 3 measured repeats; the warm-up round is discarded.
    assert_eq!(report.records.len(), 9);
    let mut repeats: Vec<u32> = report.records.iter().map(|r| r.repeat).collect();
    repeats.sort();
    assert_eq!(repeats, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let s = virtlab::scenario::Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.jobs().is_empty(), "{}", path.display());
        names.push(s.name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "classroom",
            "io-batching",
            "nanobench",
            "scaling",
            "sensitive-instructions"
        ]
    );
    // The built-in default is the shipped classroom file.
    assert_eq!(
        virtlab::scenario::CLASSROOM,
        std::fs::read_to_string(dir.join("classroom.toml")).unwrap()
    );
}

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
fn bad_numbers_and_stray_options_exit_2() {
    for args in [
        &["run", "--timeout=-1"][..],
        &["run", "-w", "pio", "--timeout=nan"],
        &["run", "-w", "pio", "--timeout=1e19"],
        &["run", "-n", "3"],
        &["run", "-b", "4"],
        &["run", "--load", "0x200000"],
        &["run", "-w", "pio", "--warmup", "4294967295"],
        &["run", "-w", "pio", "--repeats", "0"],
        &["run", "-w", "pio", "-b", "100000"],
    ] {
        let o = virtlab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
    }
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

/// Runs virtlab and waits at most `limit` for it: a hang fails the test instead of
/// stalling the suite.
fn virtlab_within(args: &[&str], limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("virtlab starts");
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "virtlab {args:?} did not end within {limit:?}\n{}{}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Generous: these commands must end at once, the bound only catches a hang.
const PROMPTLY: std::time::Duration = std::time::Duration::from_secs(60);

#[test]
fn n_and_b_over_their_limits_exit_2_naming_the_limit_before_anything_runs() {
    let huge = "1099511627776";
    for (args, limit) in [
        (
            &["run", "-w", "compute", "-n", huge, "-m", "hw-assisted"][..],
            "over the limit of 10000000",
        ),
        (
            &["run", "-w", "pio", "-n", "1000000000", "-m", "hw-assisted"],
            "over the limit of 65536",
        ),
        (
            &["trace", "-w", "compute", "-n", huge, "-m", "hw-assisted"],
            "over the limit of 10000000",
        ),
        (
            &["explain", "-w", "compute", "-n", huge],
            "over the limit of 10000000",
        ),
        (
            &["run", "-w", "pio", "-b", "513", "-m", "hw-assisted"],
            "b = 513 is over the limit of 512",
        ),
        (
            &["trace", "-w", "pio", "-b", "513", "-m", "hw-assisted"],
            "b = 513 is over the limit of 512",
        ),
        (
            &[
                "trace",
                "-w",
                "pio",
                "-m",
                "hw-assisted",
                "--limit",
                "100000000",
            ],
            "between 1 and 10000",
        ),
        (
            &[
                "run",
                "-w",
                "pio",
                "--repeats",
                "1000",
                "--warmup",
                "1000",
                "-w",
                "cpuid",
                "-w",
                "mmio",
            ],
            "over the limit of 10000 runs",
        ),
    ] {
        let o = virtlab_within(args, PROMPTLY);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(limit), "{args:?}: {err}");
        assert!(
            o.stdout.is_empty(),
            "{args:?} ran something: {}",
            text(&o.stdout)
        );
    }
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
fn devices_fifos_directories_and_huge_files_are_refused_without_reading_them() {
    let dir = temp_dir("inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    // 2 GiB that takes no disk space: refused by its size, not read first.
    let sparse = dir.join("sparse.bin");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let (fifo_s, sparse_s, dir_s) = (
        fifo.to_str().unwrap(),
        sparse.to_str().unwrap(),
        dir.to_str().unwrap(),
    );
    for (args, why) in [
        (
            &["run", "--guest-bin", "/dev/zero"][..],
            "/dev/zero: is a character device, not a regular file",
        ),
        (
            &["run", "--guest-bin", "/dev/urandom", "-m", "hw-assisted"],
            "is a character device",
        ),
        (
            &["trace", "--guest-bin", "/dev/zero", "-m", "hw-assisted"],
            "is a character device",
        ),
        (
            &["explain", "--guest-bin", "/dev/zero"],
            "is a character device",
        ),
        (
            &["run", "--guest-bin", fifo_s],
            "is a FIFO, not a regular file",
        ),
        (&["explain", "--guest-bin", fifo_s], "is a FIFO"),
        (&["run", fifo_s], "is a FIFO"),
        (&["run", "/dev/zero"], "is a character device"),
        (&["run", dir_s], "is a directory"),
        (&["report", fifo_s], "is a FIFO"),
        (
            &["run", "--guest-bin", sparse_s],
            "2147483648 bytes is over the limit of 16777216 bytes for a guest binary",
        ),
        (
            &["run", sparse_s],
            "2147483648 bytes is over the limit of 4194304 bytes for a scenario file",
        ),
    ] {
        let o = virtlab_within(args, PROMPTLY);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scenario_content_errors_name_file_line_and_column() {
    let dir = temp_dir("scenpos");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.toml");
    for (body, at, what) in [
        (
            "[[workload]]\nname = \"pio\"\n\n[[workload]]\nname = \"pi0\"\n",
            "7:8",
            "unknown workload `pi0`",
        ),
        (
            "[[workload]]\nname = \"pio\"\nb = [16, 100000]\n",
            "5:10",
            "b = 100000 is over the limit of 512",
        ),
        (
            "[[workload]]\nname = \"compute\"\nn = [10, 1099511627776]\n",
            "5:10",
            "n = 1099511627776 is over the limit of 10000000",
        ),
        (
            "modes = [\"hw-assisted\", \"warp\"]\n[[workload]]\nname = \"pio\"\n",
            "3:25",
            "unknown mode `warp`",
        ),
    ] {
        std::fs::write(&file, format!("name = \"s\"\ndescription = \"d\"\n{body}")).unwrap();
        let o = virtlab(&["run", file.to_str().unwrap()]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{}:{at}: ", file.display())) && err.contains(what),
            "{body}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unwritable_out_fails_before_any_guest_runs() {
    let o = virtlab_within(
        &[
            "run",
            "-w",
            "pio",
            "-n",
            "10",
            "-m",
            "hw-assisted",
            "--out",
            "/proc/x",
        ],
        PROMPTLY,
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(o.stdout.is_empty(), "a run happened: {}", text(&o.stdout));
    assert!(!err.contains("[1/1]"), "a run happened: {err}");
    assert!(
        err.contains("--out /proc/x: cannot write into /proc: "),
        "{err}"
    );
    // The OS error is said once.
    assert_eq!(err.matches("(os error").count(), 1, "{err}");
}

#[test]
fn an_out_directory_with_other_files_is_refused_and_left_alone() {
    let dir = temp_dir("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("thesis.tex"), "mine").unwrap();
    let o = virtlab(&[
        "run",
        "-w",
        "pio",
        "-n",
        "10",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("`thesis.tex`"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.join("thesis.tex")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The workloads a set's three files speak of: (results.json, results.csv, report.html).
fn workloads_of_set(out: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let report = reports::Report::load(&out.join("results.json")).unwrap();
    let mut json: Vec<String> = report.records.iter().map(|r| r.workload.clone()).collect();
    json.dedup();
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut from_csv: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    from_csv.dedup();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let in_html: Vec<String> = ["pio", "cpuid"]
        .iter()
        .filter(|w| html.contains(&format!(">{w}<")))
        .map(|w| w.to_string())
        .collect();
    (json, from_csv, in_html)
}

#[test]
fn two_runs_into_one_out_leave_one_whole_set() {
    if !machine::testing::kvm_or_skip("two_runs_into_one_out_leave_one_whole_set") {
        return;
    }
    let dir = temp_dir("concurrent");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let spawn = |workload: &str| {
        Command::new(env!("CARGO_BIN_EXE_virtlab"))
            .args(["run", "-w", workload, "-n", "10", "-m", "hw-assisted"])
            .args(["--repeats", "20", "--out", out_s])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("pio"), spawn("cpuid"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let (json, csv, html) = workloads_of_set(&out);
    assert_eq!(json.len(), 1, "{json:?}");
    assert_eq!(json, csv);
    assert_eq!(json, html);
    let report = reports::Report::load(&out.join("results.json")).unwrap();
    assert_eq!(report.records.len(), 20);
    // Nothing half-written is left beside it: the set and the lock file only.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".out.lock", "out"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Lines of a child's stderr as they come.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns the lines seen.
fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(PROMPTLY) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!("no line with `{needle}` ({e}): {seen:?}"),
        }
    }
}

#[test]
fn a_second_run_into_a_locked_out_says_so_and_waits() {
    if !machine::testing::kvm_or_skip("a_second_run_into_a_locked_out_says_so_and_waits") {
        return;
    }
    use std::os::fd::AsRawFd;
    let dir = temp_dir("locked");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let lock = std::fs::File::create(dir.join(".out.lock")).unwrap();
    // SAFETY: flock acts on the descriptor `lock` keeps open.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(["run", "-w", "pio", "-n", "10", "-m", "hw-assisted", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut child);
    let seen = wait_for_line(&rx, "waiting for it to finish");
    assert!(!seen.iter().any(|l| l.contains("[1/1]")), "{seen:?}");
    assert!(!out.exists());
    drop(lock);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(text(&o.stdout).contains(&format!("wrote {}", out.join("results.json").display())));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ctrl_c_stops_after_the_current_run_and_keeps_what_finished() {
    if !machine::testing::kvm_or_skip("ctrl_c_stops_after_the_current_run_and_keeps_what_finished")
    {
        return;
    }
    let dir = temp_dir("sigint");
    let out = dir.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(["run", "-w", "pio", "-n", "10", "-m", "hw-assisted"])
        .args(["--repeats", "1000", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut child);
    wait_for_line(&rx, "[3/1000]");
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < PROMPTLY, "still running after SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("interrupted: "), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["interrupted"], serde_json::Value::Bool(true));
    let runs = json["records"].as_array().unwrap().len();
    assert!((3..1000).contains(&runs), "{runs} runs");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"interrupted\""));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn without_out_every_run_gets_its_own_directory_and_latest_follows() {
    if !machine::testing::kvm_or_skip(
        "without_out_every_run_gets_its_own_directory_and_latest_follows",
    ) {
        return;
    }
    let dir = temp_dir("rundirs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut wrote = Vec::new();
    for workload in ["pio", "cpuid"] {
        let o = Command::new(env!("CARGO_BIN_EXE_virtlab"))
            .args(["run", "-w", workload, "-n", "10", "-m", "hw-assisted"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stdout = text(&o.stdout);
        assert!(o.status.success(), "{stdout}{}", text(&o.stderr));
        let json = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("wrote ")
                    .filter(|p| p.ends_with("results.json"))
            })
            .unwrap_or_else(|| panic!("{stdout}"))
            .to_string();
        assert!(json.starts_with("virtlab-out/"), "{json}");
        assert!(
            json.ends_with(&format!("-{workload}/results.json")),
            "{json}"
        );
        assert!(
            stdout.contains("virtlab-out/latest now points at"),
            "{stdout}"
        );
        wrote.push(dir.join(json));
    }
    assert_ne!(wrote[0], wrote[1]);
    for (path, workload) in wrote.iter().zip(["pio", "cpuid"]) {
        let r = reports::Report::load(path).unwrap();
        assert_eq!(r.records[0].workload, workload);
    }
    let latest = reports::Report::load(&dir.join("virtlab-out/latest/results.json")).unwrap();
    assert_eq!(latest.records[0].workload, "cpuid");
    std::fs::remove_dir_all(dir).unwrap();
}
