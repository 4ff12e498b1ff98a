//! The fuzz property — random hypercall sequences keep Xen's invariant — and the check
//! that its generator reaches the states the invariant is about.

use machine::testing::fuzz_cases;
use proptest::prelude::*;

use super::invariants::check;
use super::memory::{setup, snapshot};
use super::op;
use super::steps::{step, Reached};

proptest! {
    #![proptest_config(ProptestConfig {
        cases: fuzz_cases(256),
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    /// Random hypercall sequences keep Xen's invariant and never make the VMM write a page
    /// table for the guest.
    #[test]
    fn fuzz_hypercalls_keep_xens_invariant(ops in prop::collection::vec(op(), 1..24)) {
        let (mut hv, mem) = setup();
        let (before, pinned) = (snapshot(&hv, &mem), hv.types.pinned.clone());
        check(&mut hv, &mem, &before, &pinned)?;
        for op in &ops {
            if !step(&mut hv, &mem, op, &mut Reached::default())? {
                break;
            }
        }
    }
}

/// The generator reaches the states the invariant is about: guest roots get pinned, a
/// frame with a writable alias is refused as a root, a pinned frame is refused as a
/// writable mapping, a multicall pins the page of its own list, PTE writes go through.
#[test]
fn the_fuzzed_sequences_reach_pins_aliases_and_self_pinning_multicalls() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let ops = prop::collection::vec(op(), 1..24);
    let mut reached = Reached::default();
    for _ in 0..150 {
        let case = ops.new_tree(&mut runner).expect("a case").current();
        let (mut hv, mem) = setup();
        for op in &case {
            if !step(&mut hv, &mem, op, &mut reached).expect("the properties hold") {
                break;
            }
        }
    }
    assert!(reached.pins >= 20, "{reached:?}");
    assert!(reached.alias_pin_refused >= 1, "{reached:?}");
    assert!(reached.pinned_rw_refused >= 3, "{reached:?}");
    assert!(reached.self_pinning_multicalls >= 5, "{reached:?}");
    assert!(reached.pte_writes >= 30, "{reached:?}");
    assert!(reached.accepted >= 150, "{reached:?}");
    assert!(reached.refused >= 150, "{reached:?}");
    eprintln!("{reached:?}");
}
