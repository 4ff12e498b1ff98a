//! The expected-counts oracle: for every workload and mode, the exact counts a run must
//! produce, as a function of the parameters. One file per mode, so each engine's oracle
//! reads as one table.

mod binary_translation;
pub mod binary_translation_kernel;
mod blk;
mod hw_assisted;
mod paravirt;
pub mod paravirt_kernel;
mod trap_emulate;
pub mod trap_emulate_kernel;

use contract::{Mode, Oracle, OracleVariant};

use crate::workloads::Params;

/// The oracle of `workload` in `mode`, if that mode has one.
pub fn oracle(mode: Mode, workload: &str, p: &Params) -> Option<Oracle> {
    if crate::blk::needs_disk(workload) {
        return blk::oracle(mode, workload, p);
    }
    match mode {
        Mode::HwAssisted => hw_assisted::oracle(workload, p),
        Mode::TrapEmulate => trap_emulate::oracle(workload, p),
        Mode::Paravirt => paravirt::oracle(workload, p),
        Mode::BinaryTranslation => binary_translation::oracle(workload, p),
    }
}

/// The oracles that replace a mode's oracle under a condition of the run (a capability the
/// host lacks, or an option switched off), for every mode.
pub fn variants(workload: &str, p: &Params) -> Vec<OracleVariant> {
    let mut v = trap_emulate::variants(workload, p);
    v.extend(binary_translation_kernel::variants(workload, p));
    v
}

/// The balloon workload's port writes, which reach the machine directly in every mode
/// that runs the guest's `out`: B into the balloon and B out of it, each an `IoOut` exit
/// (a mode's own exit-port write adds to the count where it is one too).
fn balloon_ports(o: Oracle, b: u64) -> Oracle {
    use contract::overcommit::port;
    use contract::{CountKey, ExitKind};
    o.expect(CountKey::Exits(ExitKind::IoOut), 2 * b)
        .expect(CountKey::PortWrites(port::INFLATE), b)
        .expect(CountKey::PortWrites(port::DEFLATE), b)
}
