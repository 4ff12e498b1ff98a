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

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn build_c(dir: &Path) -> Option<PathBuf> {
    if !have("gcc") || !have("objcopy") {
        eprintln!("SKIPPED: gcc or objcopy is not installed; cannot build the C guest");
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c");
    std::fs::create_dir_all(dir).unwrap();
    let elf = dir.join("hello.elf");
    let bin = dir.join("hello.bin");
    let st = Command::new("gcc")
        .args([
            "-ffreestanding",
            "-fno-pic",
            "-nostdlib",
            "-static",
            "-mno-red-zone",
            "-O2",
            "-Wl,--build-id=none",
            "-T",
        ])
        .arg(src.join("flat.ld"))
        .arg("-o")
        .arg(&elf)
        .arg(src.join("hello.c"))
        .status()
        .unwrap();
    assert!(st.success(), "gcc failed");
    let st = Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&bin)
        .status()
        .unwrap();
    assert!(st.success(), "objcopy failed");
    Some(bin)
}

#[test]
fn a_freestanding_c_program_runs_unchanged() {
    let dir = temp_dir("c");
    let Some(bin) = build_c(&dir) else { return };
    let out = dir.join("out");
    let o = virtlab(&[
        "run",
        "--guest-bin",
        bin.to_str().unwrap(),
        "--load",
        "0x100000",
        "--mode",
        "hw-assisted",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(text(&o.stdout).contains("| Hello"), "{}", text(&o.stdout));
    let report = reports::Report::load(&out.join("results.json")).unwrap();
    let r = &report.records[0];
    assert_eq!(r.console, "Hello\n");
    assert_eq!(r.port_writes(0xE9), 6);
    assert!(matches!(
        r.outcome,
        modes::Outcome::Completed {
            ending: modes::Ending::Halted,
            ..
        }
    ));
    std::fs::remove_dir_all(dir).unwrap();
}
