//! `--show-regs` and `--peek`: what a guest left behind, printed after the table and kept
//! in results.json; bad requests are usage errors.

use std::process::Command;

fn virtlab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(args)
        .output()
        .expect("virtlab starts")
}

/// The teaching example's guest, linked at 0: prints, stores 42 at 0x400, halts, RAX = 42.
fn guest_at_0(dir: &std::path::Path) -> std::path::PathBuf {
    let mut code = vec![0x48, 0x8D, 0x35, 0x1A, 0, 0, 0]; // lea rsi, [rip + msg]
    code.extend([0xAC, 0x84, 0xC0, 0x74, 0x04, 0xE6, 0xE9, 0xEB, 0xF7]); // print loop
    code.extend([0xC7, 0x04, 0x25, 0x00, 0x04, 0, 0, 42, 0, 0, 0]); // mov dword [0x400], 42
    code.extend([0xB8, 42, 0, 0, 0, 0xF4]); // mov eax, 42; hlt
    code.extend(b"Hello from address 0\n\0");
    let path = dir.join("at0.bin");
    std::fs::write(&path, code).unwrap();
    path
}

#[test]
fn show_regs_and_peek_show_what_the_guest_left() {
    if !machine::testing::kvm_or_skip("show_regs_and_peek_show_what_the_guest_left") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("virtlab-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = guest_at_0(&dir);
    let out = dir.join("out");
    let o = virtlab(&[
        "run",
        "--guest-bin",
        bin.to_str().unwrap(),
        "--load",
        "0",
        "--entry",
        "0",
        "--stack",
        "0x200000",
        "-m",
        "hw-assisted",
        "-m",
        "trap-emulate",
        "--show-regs",
        "--peek",
        "0x400:8",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for mode in ["hw-assisted", "trap-emulate"] {
        assert!(
            stdout.contains(&format!("state of at0.bin in {mode}")),
            "{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("rax 0x000000000000002a").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("0x00000400  2a 00 00 00 00 00 00 00")
            .count(),
        2
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let records = json["records"].as_array().expect("records");
    assert_eq!(records.len(), 2);
    for r in records {
        assert_eq!(r["final_regs"]["gpr"][0], 42, "{r}");
        assert_eq!(r["peeks"][0]["hex"], "2a00000000000000");
        assert_eq!(r["outcome"]["status"], "completed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_peeks_are_usage_errors() {
    for bad in ["0x400", "0x400:0", "0x400:5000", "zz:8"] {
        let o = virtlab(&["run", "-w", "compute", "--peek", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--peek"),
            "{bad}"
        );
    }
}
