//! Memory isolation in the two modes where the guest kernel's page tables run on shadow
//! tables (trap-emulate, and binary translation with the user processes untranslated):
//! each attacking user process of the guest kernel ends killed by the fault its kernel's
//! own tables give (error code and address exact, as under hw-assisted), since the user's
//! shadow maps nothing the guest does not map for user mode.

mod common;

use binary_translation::BinaryTranslation;
use contract::{Engine, Outcome, RunOptions};
use guests::kernel::exit;
use guests::kernel::workloads::{attack_image, Attack};
use trap_emulate::TrapEmulate;

/// The exit code the guest reported, whatever the judgement.
fn exit_code_of(r: &contract::RunRecord) -> Option<u32> {
    match &r.outcome {
        Outcome::Completed { exit_code, .. } => Some(*exit_code),
        Outcome::Diverged { got, .. } => got.strip_prefix("exit code ")?.parse().ok(),
        _ => None,
    }
}

#[test]
fn a_user_process_reaches_nothing_but_its_own_pages_on_shadow_tables() {
    if !common::kvm_or_skip("a_user_process_reaches_nothing_but_its_own_pages_on_shadow_tables") {
        return;
    }
    let engines: [&dyn Engine; 2] = [&TrapEmulate, &BinaryTranslation];
    for (engine, attack) in engines
        .into_iter()
        .flat_map(|e| Attack::ALL.map(|a| (e, a)))
    {
        let image = attack_image(attack).unwrap();
        let r = common::run(engine, &image, &RunOptions::default());
        let attack = (engine.mode(), attack);
        let result = match r.outcome {
            Outcome::Completed { result, .. }
            | Outcome::Diverged {
                result: Some(result),
                ..
            } => result,
            ref other => panic!("{attack:?}: {other:?}"),
        };
        assert_eq!(
            exit_code_of(&r),
            Some(exit::KILLED | attack.1.error_code()),
            "{attack:?}: {:?}",
            r.outcome
        );
        assert_eq!(result, attack.1.address(), "{attack:?}");
        // The attack was the guest's own fault, reflected to its kernel.
        assert!(r.shadow["true_faults"] >= 1, "{attack:?}: {:?}", r.shadow);
        assert_eq!(
            r.traps.get("#pf"),
            Some(&r.shadow["true_faults"]),
            "{attack:?}"
        );
    }
}
