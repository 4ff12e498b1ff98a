//! Helpers for the KVM integration tests of every crate.

/// Whether `/dev/kvm` can be used; when it cannot, a test returns early and says so.
///
/// Under CI (`CI=true` in the environment) a missing or unusable `/dev/kvm` is a failure,
/// not a skip: CI runs on hosts that have KVM, and a silent skip would pass every test.
pub fn kvm_or_skip(test: &str) -> bool {
    match crate::open_kvm() {
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

/// How many cases a property-based fuzz test runs: `default` (a few seconds' worth, for
/// `cargo test`), or `PROPTEST_CASES` from the environment for a campaign.
///
/// proptest reads `PROPTEST_CASES` only into its default configuration, which a test that
/// sets its own number of cases overrides; the fuzz suites ask here instead.
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
