//! `--vms K`: K copies of an ad-hoc job at once, with the host table and the memory
//! summary; `--memory-budget-mib` and the balloon's exact drop.

use crate::helpers::{temp_dir, text, virtlab};

#[test]
fn vms_runs_copies_and_prints_the_host_and_memory() {
    if !machine::testing::kvm_or_skip("vms_runs_copies_and_prints_the_host_and_memory") {
        return;
    }
    let out = temp_dir("vms");
    let o = virtlab(&[
        "run",
        "-w",
        "balloon",
        "-m",
        "trap-emulate",
        "--vms",
        "3",
        "-n",
        "64",
        "-b",
        "8",
        "--memory-budget-mib",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", text(&o.stderr));
    assert!(stdout.contains("host: 3 VMs on 2 host CPUs"), "{stdout}");
    for vm in ["vm0", "vm1", "vm2"] {
        assert!(stdout.contains(vm), "{vm}: {stdout}");
    }
    // Three balloons of 8 pages, all resident when inflated (the last pages written).
    assert!(
        stdout.contains("balloon: 24 pages inflated, resident fell by 24 pages"),
        "{stdout}"
    );
    // 3 MiB for three VMs: 256 pages each.
    assert!(stdout.contains("budget 256 pages per VM"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.contains(",memory,budget_pages_per_vm,256,pages"));
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn vms_refuses_a_guest_binary_and_zero() {
    let o = virtlab(&["run", "--vms", "0", "-w", "compute"]);
    assert!(!o.status.success());
    let bin = temp_dir("vms-bin").join("g.bin");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, [0xF4u8]).unwrap();
    let o = virtlab(&["run", "--vms", "2", "--guest-bin", bin.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--vms"), "{}", text(&o.stderr));
}

#[test]
fn consolidation_prints_what_the_credit_scheduler_granted_against_what_was_used() {
    if !machine::testing::kvm_or_skip(
        "consolidation_prints_what_the_credit_scheduler_granted_against_what_was_used",
    ) {
        return;
    }
    let out = temp_dir("consolidation");
    let o = virtlab(&[
        "run",
        "scenarios/consolidation.toml",
        "--duration",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", text(&o.stderr));
    assert!(
        stdout.contains(
            "host: 4 VMs on 2 host CPUs, scheduler credit, slices of 10 ms, not \
             work-conserving (a vCPU in debt waits)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("granted by the scheduler, used by the VM threads:"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let host = &json["host"];
    assert_eq!(host["work_conserving"], false);
    let vms = host["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 4);
    for v in vms {
        // Every VM was granted a CPU and used some, and every run was judged exact.
        assert!(v["granted_ns"].as_u64().unwrap() > 0, "{v}");
        assert!(v["cpu_ns"].as_u64().unwrap() > 0, "{v}");
        assert!(v["overrun_ns"].is_u64(), "{v}");
    }
    for r in json["records"].as_array().unwrap() {
        assert_eq!(r["mismatches"], serde_json::json!({}), "{r}");
        assert_eq!(r["outcome"]["status"], "completed", "{r}");
    }
    std::fs::remove_dir_all(out).unwrap();
}
