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
