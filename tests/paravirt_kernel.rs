//! The guest kernel's paravirtual flavour on the paravirtual engine.

mod common;

use contract::{Flavour, RunOptions};
use guests::Params;
use paravirt::Paravirt;

#[test]
fn explore() {
    if !common::kvm_or_skip("explore") {
        return;
    }
    for (w, n) in [("ctxswitch", 10u64), ("forkwait", 3), ("tlb-walk", 100)] {
        let image = guests::build(
            w,
            Flavour::Paravirt,
            Params {
                n,
                k: 4,
                ..Params::default()
            },
        )
        .unwrap();
        let r = common::run(&Paravirt, &image, &RunOptions::default());
        eprintln!(
            "{w}: {:?}\n{:?}\nexits {:?}\n",
            r.outcome, r.hypercalls, r.exits
        );
    }
}
