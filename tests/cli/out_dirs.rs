//! Where results go: output directories, the lock between two runs, Ctrl-C, and `latest`.

use std::process::Command;

use crate::helpers::{
    stderr_lines, temp_dir, text, virtlab, virtlab_within, wait_for_line, workloads_of_set,
    PROMPTLY,
};

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
