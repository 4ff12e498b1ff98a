//! Every command of every lab sheet runs as written, so the labs cannot rot: each fenced
//! `sh` block of `docs/labs/**/*.md` runs as one `bash -euo pipefail` script from the
//! repository root with `virtlab` on PATH, and must succeed within five minutes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a lab's block may take.
const LIMIT: Duration = Duration::from_secs(300);

/// The fenced blocks tagged exactly `sh` in a Markdown text, with their first line.
fn sh_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```") => {
                if trimmed.trim_start_matches('`').trim() == "sh" {
                    current = Some((i + 2, String::new()));
                } else {
                    // Another kind of block: skip to its end.
                    current = Some((0, String::new()));
                }
            }
            Some(_) if trimmed.starts_with("```") => {
                let (start, body) = current.take().unwrap();
                if start > 0 {
                    blocks.push((start, body));
                }
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

#[test]
fn block_extraction() {
    let md = "text\n```sh\necho one\necho two\n```\n```text\nnot run\n```\n```sh\ntrue\n```\n";
    let b = sh_blocks(md);
    assert_eq!(
        b,
        vec![
            (3, "echo one\necho two\n".to_string()),
            (10, "true\n".to_string())
        ]
    );
}

#[test]
fn every_lab_command_runs_as_written() {
    if !machine::testing::kvm_or_skip("every_lab_command_runs_as_written") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    markdown_files(&root.join("docs/labs"), &mut files);
    files.sort();
    // The labs and the bring-your-own-guest walkthrough, in English and Korean.
    for name in [
        "01-traps",
        "02-x86-hole",
        "03-hypercalls-batching",
        "04-hw-exits",
        "05-interrupts-idle",
        "06-reproduce-a-paper",
        "07-memory",
        "09-binary-translation",
        "byo-guest",
    ] {
        for dir in ["docs/labs", "docs/labs/ko"] {
            let sheet = root.join(dir).join(format!("{name}.md"));
            assert!(
                files.contains(&sheet),
                "missing lab sheet {}",
                sheet.display()
            );
        }
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_virtlab"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, block) in sh_blocks(&text) {
            let where_ = format!("{}:{line}", file.strip_prefix(root).unwrap().display());
            let start = Instant::now();
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &block])
                .current_dir(root)
                .env("PATH", &path)
                .stdin(Stdio::null())
                .output()
                .expect("bash runs");
            let took = start.elapsed();
            ran += 1;
            eprintln!(
                "{where_}: {:?} in {:.1} s",
                out.status.code(),
                took.as_secs_f64()
            );
            if !out.status.success() {
                failures.push(format!(
                    "{where_}: exit {:?}\n--- block\n{block}--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
                    out.status.code(),
                    tail(&out.stdout),
                    tail(&out.stderr)
                ));
            } else if took > LIMIT {
                failures.push(format!("{where_}: took {took:?}, more than {LIMIT:?}"));
            }
        }
    }
    assert!(ran > 0, "the lab sheets have no sh blocks");
    assert!(
        failures.is_empty(),
        "{} of {ran} lab blocks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
