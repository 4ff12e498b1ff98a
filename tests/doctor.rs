//! `virtlab doctor`: every capability measured, with a level and what it means; JSON for
//! tools that agrees with the probe the runs use.

use std::process::Command;

fn doctor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtlab"))
        .arg("doctor")
        .args(args)
        .output()
        .expect("virtlab starts")
}

#[test]
fn doctor_prints_every_capability_with_its_level() {
    if !machine::testing::kvm_or_skip("doctor_prints_every_capability_with_its_level") {
        return;
    }
    let o = doctor(&[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let caps = machine::caps::probe().unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("] CPUID faulting:"))
        .unwrap_or_else(|| panic!("no CPUID faulting line in\n{out}"));
    if caps.cpuid_faulting.is_present() {
        assert!(line.starts_with("[  ok   ]"), "{line}");
    } else {
        assert!(line.starts_with("[warning]"), "{line}");
        assert!(out.contains("lab 2 step 3 shows the host variant"), "{out}");
    }
    for label in [
        "UMIP",
        "TSS I/O bitmap",
        "KVM_CAP_SYNC_REGS",
        "immediate exit",
        "KVM statistics",
        "guest CPL 0 code",
    ] {
        assert!(
            out.contains(&format!("] {label}: ")),
            "{label} missing in\n{out}"
        );
    }
    assert!(out.contains("engine trap-emulate: can run"), "{out}");
}

#[test]
fn doctor_json_matches_the_probe() {
    if !machine::testing::kvm_or_skip("doctor_json_matches_the_probe") {
        return;
    }
    let o = doctor(&["--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let caps = machine::caps::probe().unwrap();
    assert_eq!(
        v["capabilities"]["cpuid_faulting"]["present"],
        serde_json::json!(caps.cpuid_faulting.present)
    );
    assert_eq!(
        v["capabilities"]["umip"]["present"],
        serde_json::json!(caps.umip.present)
    );
    assert_eq!(v["can_run"], true);
    assert_eq!(v["engines"]["paravirt"]["can_run"], true);
    let levels: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["level"].as_str().unwrap())
        .collect();
    assert!(levels
        .iter()
        .all(|l| ["ok", "warning", "missing"].contains(l)));
    assert!(!levels.contains(&"missing"), "{levels:?}");
}

#[test]
fn doctor_says_whether_host_swapping_works_and_why() {
    if !machine::testing::kvm_or_skip("doctor_says_whether_host_swapping_works_and_why") {
        return;
    }
    let o = doctor(&[]);
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("] host swapping (userfaultfd): "))
        .unwrap_or_else(|| panic!("no host swapping line in\n{out}"));
    // The same probes a run under a memory budget makes.
    let works = machine::overcommit::swap::probe()
        .and_then(|()| machine::overcommit::probe::kvm_faults_through_userfaultfd())
        .is_ok();
    if works {
        assert!(
            line.starts_with("[  ok   ]") && line.contains(": works ("),
            "{line}"
        );
    } else {
        assert!(
            line.starts_with("[warning]") && line.contains(": unavailable: "),
            "{line}"
        );
        assert!(out.contains("vm.unprivileged_userfaultfd=1"), "{out}");
    }
    // The ways to a userfaultfd, as this host has them.
    let access = machine::overcommit::swap::UffdAccess::find();
    assert!(
        line.ends_with(&format!("({})", access.describe())),
        "{line}"
    );
    match std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd") {
        Ok(v) => assert!(
            line.contains(&format!("vm.unprivileged_userfaultfd = {}", v.trim())),
            "{line}"
        ),
        Err(_) => assert!(
            line.contains("vm.unprivileged_userfaultfd unreadable"),
            "{line}"
        ),
    }
    let json = doctor(&["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "host swapping (userfaultfd)")
        .expect("the check in JSON");
    assert_eq!(check["level"], if works { "ok" } else { "warning" });
}
