//! The fuzz properties: random and structured guests, and guests storing into their page
//! table, through the emulator.

use machine::testing::fuzz_cases;
use proptest::prelude::*;

use super::invariants::run;
use super::{guest, pte_guest};

proptest! {
    #![proptest_config(ProptestConfig {
        cases: fuzz_cases(256),
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    /// Random and structured instruction bytes, registers, memory and trap vectors: the
    /// emulator never panics, classifies every trap and never writes the monitor.
    #[test]
    fn fuzz_traps_never_escape_the_emulator(g in guest()) {
        run(&g, &mut Vec::new())?;
    }

    /// A guest storing random values into its page table (the #PF on the write-protected
    /// scratch table, with every MOV form): only frames of RAM or the scratch frames are
    /// ever mapped, and nothing else of the monitor changes.
    #[test]
    fn fuzz_pte_stores_map_only_guest_frames(g in pte_guest()) {
        run(&g, &mut Vec::new())?;
    }
}
