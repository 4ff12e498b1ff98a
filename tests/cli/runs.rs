//! Runs end to end: the default scenario, one workload in one mode, a scenario file, and
//! what `list` and `doctor` say about the host.

use std::path::Path;

use crate::helpers::{temp_dir, text, virtlab};

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
    let runs: usize = guests::WORKLOADS
        .iter()
        .map(|w| {
            virtlab::engines::modes()
                .iter()
                .filter(|m| guests::unsupported(w.name, **m).is_none())
                .count()
        })
        .sum();
    assert_eq!(report.records.len(), runs);
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
        assert!(
            !s.jobs().is_empty() || !s.vms.is_empty(),
            "{}",
            path.display()
        );
        names.push(s.name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "classroom",
            "consolidation",
            "consolidation-wakeup",
            "io-batching",
            "io-paths",
            "memory",
            "nanobench",
            "overcommit",
            "scaling",
            "sensitive-instructions"
        ]
    );
    // The built-in default is the shipped classroom file.
    assert_eq!(
        virtlab::scenario::CLASSROOM,
        std::fs::read_to_string(dir.join("classroom.toml")).unwrap()
    ); // Both run every engine, binary translation included: the default because it lists
       // no modes, nanobench because it lists all four (the paper's columns and two more).
    let all = contract::Mode::ALL.to_vec();
    let classroom =
        virtlab::scenario::Scenario::parse(virtlab::scenario::CLASSROOM, "classroom").unwrap();
    assert_eq!(classroom.modes(), all);
    let nanobench = virtlab::scenario::Scenario::load(&dir.join("nanobench.toml")).unwrap();
    assert_eq!(nanobench.modes(), all);
    let jobs = nanobench.jobs();
    assert!(jobs
        .iter()
        .any(|j| j.mode == contract::Mode::BinaryTranslation));
}

#[test]
fn a_backend_this_run_cannot_have_is_a_declared_record_not_a_failure() {
    let out = temp_dir("unavail");
    let o = virtlab(&[
        "run",
        "-w",
        "blk-virtio",
        "-m",
        "trap-emulate",
        "-n",
        "3",
        "-s",
        "1024",
        "-q",
        "2",
        "--backend",
        "kernel-notify",
        "--no-ioeventfd",
        "--color",
        "never",
        "--out",
        out.to_str().unwrap(),
    ]);
    let s = text(&o.stdout);
    assert!(o.status.success(), "{s}{}", text(&o.stderr));
    assert!(s.contains("unavailable"), "{s}");
    let report = reports::Report::load(&out.join("results.json")).unwrap();
    assert!(report.failures.is_empty());
    assert_eq!(report.records.len(), 1);
    let r = &report.records[0];
    assert!(
        matches!(&r.outcome, contract::Outcome::Unavailable { why } if why.contains("--no-ioeventfd")),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.block_backend, Some(contract::BlockBackend::KernelNotify));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.ends_with(",block_backend,kernel-notify,1,bool")),
        "{csv}"
    );
    std::fs::remove_dir_all(out).unwrap();
}
