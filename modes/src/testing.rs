//! Helpers for the KVM integration tests of every crate.

/// Whether `/dev/kvm` can be used; when it cannot, a test returns early and says so.
///
/// Under CI (`CI=true` in the environment) a missing or unusable `/dev/kvm` is a failure,
/// not a skip: CI runs on hosts that have KVM, and a silent skip would pass every test.
pub fn kvm_or_skip(test: &str) -> bool {
    match crate::machine::open_kvm() {
        Ok(_) => true,
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{test}: /dev/kvm is not usable here ({e}), and CI=true requires it"
            );
            eprintln!("SKIPPED {test}: /dev/kvm is not usable here ({e})");
            false
        }
    }
}
