//! The engines this build knows, picked at run time by mode name.

use contract::{Engine, Mode};

/// Every engine of this build, in report order.
pub fn all() -> Vec<&'static (dyn Engine + Sync)> {
    vec![
        &hw_assisted::HwAssisted,
        &trap_emulate::TrapEmulate,
        &binary_translation::BinaryTranslation,
        &paravirt::Paravirt,
    ]
}

/// The engine for `mode`, if this build has it.
pub fn for_mode(mode: Mode) -> Option<&'static (dyn Engine + Sync)> {
    all().into_iter().find(|e| e.mode() == mode)
}

/// The modes this build has an engine for.
pub fn modes() -> Vec<Mode> {
    all().iter().map(|e| e.mode()).collect()
}
