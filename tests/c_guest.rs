//! The freestanding C example, built from one source in both flavours with
//! `examples/c/virtlab.h`: the native build runs unchanged in hw-assisted, trap-emulate
//! and binary-translation, the paravirtual build in paravirt, and each says what happens when it meets the wrong
//! mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use contract::{Ending, FaultKind, Mode, Outcome, RunRecord};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds `examples/c/hello.c` into a flat binary with `defines`; `None` (and a loud
/// skip) without gcc and objcopy, which `.ci/run` installs.
fn build(dir: &Path, name: &str, defines: &[&str]) -> Option<PathBuf> {
    if !have("gcc") || !have("objcopy") {
        eprintln!("SKIPPED: gcc or objcopy is not installed; cannot build the C guest");
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c");
    std::fs::create_dir_all(dir).unwrap();
    let (elf, bin) = (
        dir.join(format!("{name}.elf")),
        dir.join(format!("{name}.bin")),
    );
    let st = Command::new("gcc")
        .args(defines)
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

/// Runs `bin` in every mode; the records by mode.
fn run_everywhere(bin: &Path, out: &Path) -> Vec<RunRecord> {
    let o = Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .args(["run", "--guest-bin"])
        .arg(bin)
        .args(["--load", "0x100000", "--out"])
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    // A user binary without expectations goes as expected whatever classified end it
    // reaches: the status is 0.
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    reports::Report::load(&out.join("results.json"))
        .unwrap()
        .records
}

fn in_mode(records: &[RunRecord], mode: Mode) -> &RunRecord {
    records.iter().find(|r| r.mode == mode).unwrap()
}

fn halted(r: &RunRecord) -> bool {
    matches!(
        r.outcome,
        Outcome::Completed {
            ending: Ending::Halted,
            ..
        }
    )
}

#[test]
fn one_source_two_flavours() {
    if !machine::testing::kvm_or_skip("one_source_two_flavours") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("virtlab-c-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let Some(native) = build(&dir, "hello", &[]) else {
        return;
    };
    let Some(pv) = build(&dir, "hello-pv", &["-DVIRTLAB_PARAVIRT"]) else {
        return;
    };

    // Native: one exit (hw-assisted) or one trap (trap-emulate) per character.
    let recs = run_everywhere(&native, &dir.join("native"));
    let hw = in_mode(&recs, Mode::HwAssisted);
    assert!(halted(hw), "{:?}", hw.outcome);
    assert_eq!(hw.console, "Hello\n");
    assert_eq!(hw.port_writes(0xE9), 6);
    let te = in_mode(&recs, Mode::TrapEmulate);
    assert!(halted(te), "{:?}", te.outcome);
    assert_eq!(te.console, "Hello\n");
    assert_eq!((te.traps["out"], te.traps["hlt"]), (6, 1));
    // Binary translation: the same traps, as callouts of the translated code.
    let bt = in_mode(&recs, Mode::BinaryTranslation);
    assert!(halted(bt), "{:?}", bt.outcome);
    assert_eq!(bt.console, "Hello\n");
    assert_eq!((bt.traps["out"], bt.traps["hlt"]), (6, 1));
    assert!(bt.translation["blocks"] >= 1, "{:?}", bt.translation);
    let pv_native = in_mode(&recs, Mode::Paravirt);
    assert!(matches!(
        pv_native.outcome,
        Outcome::GuestFault {
            kind: FaultKind::UnportedPrivilegedInstruction,
            ..
        }
    ));
    assert!(pv_native
        .notes
        .iter()
        .any(|n| n.contains("-DVIRTLAB_PARAVIRT")));

    // Paravirtual: the whole line in one hypercall, then `block` ends the run halted.
    let recs = run_everywhere(&pv, &dir.join("pv"));
    let p = in_mode(&recs, Mode::Paravirt);
    assert!(halted(p), "{:?}", p.outcome);
    assert_eq!(p.console, "Hello\n");
    assert_eq!(p.hypercalls["console_write"], 1);
    assert_eq!(p.hypercalls["block"], 1);
    for mode in [Mode::HwAssisted, Mode::TrapEmulate, Mode::BinaryTranslation] {
        let r = in_mode(&recs, mode);
        match &r.outcome {
            Outcome::GuestFault {
                kind: FaultKind::BadDeviceAccess,
                detail,
                ..
            } => assert!(detail.contains("this is a paravirtual build"), "{detail}"),
            o => panic!("{mode}: {o:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
