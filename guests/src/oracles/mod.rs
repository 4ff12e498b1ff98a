//! The expected-counts oracle: for every workload and mode, the exact counts a run must
//! produce, as a function of the parameters. One file per mode, so each engine's oracle
//! reads as one table.

mod hw_assisted;
mod paravirt;
mod trap_emulate;

use modes::{Mode, Oracle};

use crate::workloads::Params;

/// The oracle of `workload` in `mode`, if that mode has one.
pub fn oracle(mode: Mode, workload: &str, p: &Params) -> Option<Oracle> {
    match mode {
        Mode::HwAssisted => hw_assisted::oracle(workload, p),
        Mode::TrapEmulate => trap_emulate::oracle(workload, p),
        Mode::Paravirt => paravirt::oracle(workload, p),
    }
}
