//! Running the `virtlab` binary from the tests: with a bound on how long it may take,
//! reading its output and the files it writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn virtlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(args)
        .output()
        .expect("virtlab starts")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("virtlab-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Runs virtlab and waits at most `limit` for it: a hang fails the test instead of
/// stalling the suite.
pub fn virtlab_within(args: &[&str], limit: std::time::Duration) -> Output {
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
pub const PROMPTLY: std::time::Duration = std::time::Duration::from_secs(60);

/// The workloads a set's three files speak of: (results.json, results.csv, report.html).
pub fn workloads_of_set(out: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
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

/// Lines of a child's stderr as they come.
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
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
pub fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
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
