//! The capability probe on this host: every probe gives an answer, and the answers agree
//! with each other and with what the machine reports.

use contract::{Backend, HostInfo};
use machine::caps::{self, PROBED_LEAVES};

#[test]
fn every_capability_is_measured_and_consistent() {
    if !machine::testing::kvm_or_skip("every_capability_is_measured_and_consistent") {
        return;
    }
    let c = caps::probe().expect("probe");
    for (name, p) in c.rows() {
        eprintln!("{name}: {:?} — {}", p.present, p.detail);
        assert!(
            p.present.is_some(),
            "{name} could not be probed: {}",
            p.detail
        );
    }
    // Without faulting, CPUID at CPL 3 answered every probed leaf.
    let leaves: Vec<u32> = c.cpuid_at_cpl3.iter().map(|s| s.leaf).collect();
    assert_eq!(leaves, PROBED_LEAVES);
    eprintln!("{}", c.describe_cpuid_leaks());
    // Every engine relies on these on our hosts.
    assert!(c.io_bitmap.is_present());
    assert!(
        c.io_exit_rip_past.is_some(),
        "where RIP is at an I/O exit is known"
    );
    assert!(c.immediate_exit.is_present());
    // The measurement agrees with the backend's module name.
    let kvm = machine::open_kvm().unwrap();
    let backend = HostInfo::gather(kvm.get_api_version()).backend;
    if c.stats_fd.is_present() && backend != Backend::Unknown {
        assert_eq!(
            c.kernel_code_emulated.is_present(),
            backend.emulates_kernel_code(),
            "{backend}: {}",
            c.kernel_code_emulated.detail
        );
    }
    // Cached: the same answer, the same allocation.
    assert!(std::ptr::eq(c, caps::probe().unwrap()));
}
