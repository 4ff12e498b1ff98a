//! Whether KVM's own accesses to guest memory fault through `userfaultfd` on this host:
//! a tiny guest writes three pages of a machine whose RAM is under host swapping, and the
//! handler must have seen each write as a first touch.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

use contract::abi::{layout, port};
use contract::overcommit::MemoryOptions;
use contract::record::Outcome;
use contract::{GuestImage, Limits, RunOptions};

use crate::exit_loop::{Action, ExitHandler, Handled};
use crate::setup::GuestPrivilege;
use crate::vcpu::Vcpu;
use crate::{Machine, MachineConfig};

/// The probe guest (CPL 0): `mov edi, 0x400000; mov dword [rdi], 1;
/// mov dword [rdi+0x1000], 1; mov dword [rdi+0x2000], 1; out 0xf4, eax`.
const GUEST: [u8; 33] = [
    0xBF,
    0x00,
    0x00,
    0x40,
    0x00, // mov edi, 0x400000
    0xC7,
    0x07,
    0x01,
    0x00,
    0x00,
    0x00, // mov dword [rdi], 1
    0xC7,
    0x87,
    0x00,
    0x10,
    0x00,
    0x00,
    0x01,
    0x00,
    0x00,
    0x00, // [rdi+0x1000]
    0xC7,
    0x87,
    0x00,
    0x20,
    0x00,
    0x00,
    0x01,
    0x00,
    0x00,
    0x00, // [rdi+0x2000]
    0xE7,
    port::EXIT as u8, // out 0xf4, eax
];

/// First touches the probe must see: the image's page (written by the VMM when it loads
/// the image) and the three pages the guest writes.
pub const EXPECTED_FIRST_TOUCHES: u64 = 4;

struct UntilExit;

impl ExitHandler for UntilExit {
    fn io_out(&mut self, _: &mut Vcpu<'_>, p: u16, _: &[u8]) -> Handled {
        Action::Stop(Outcome::Completed {
            exit_code: u32::from(p),
            result: 0,
            ending: contract::record::Ending::ExitPort,
        })
        .into()
    }
    fn io_in(&mut self, _: u16, _: &mut [u8]) -> Handled {
        Action::Fail("the probe guest reads no port".into()).into()
    }
    fn mmio_read(&mut self, _: u64, _: &mut [u8]) -> Handled {
        Action::Fail("the probe guest touches no device".into()).into()
    }
    fn mmio_write(&mut self, _: &mut Vcpu<'_>, _: u64, _: &[u8]) -> Handled {
        Action::Fail("the probe guest touches no device".into()).into()
    }
    fn halt(&mut self, _: &mut Vcpu<'_>) -> Handled {
        Action::Fail("the probe guest does not halt".into()).into()
    }
}

thread_local! {
    /// Set while this thread runs the probe guest: its machine does not probe again.
    static IN_PROBE: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`IN_PROBE`] when the probe's run ends, however it ends.
struct InProbe;

impl InProbe {
    fn enter() -> Self {
        IN_PROBE.with(|p| p.set(true));
        InProbe
    }
}

impl Drop for InProbe {
    fn drop(&mut self) {
        IN_PROBE.with(|p| p.set(false));
    }
}

/// [`kvm_faults_through_userfaultfd`] for a machine being built, `Ok` for the probe's own
/// machine (which is what measures it).
pub(crate) fn kvm_faults_through_userfaultfd_outside_probe() -> Result<(), String> {
    if IN_PROBE.with(Cell::get) {
        return Ok(());
    }
    kvm_faults_through_userfaultfd()
}

/// How many first touches the probe guest's run made (`Err` if it could not run, or
/// userfaultfd is unavailable).
pub fn first_touches() -> Result<u64, String> {
    let _probe = InProbe::enter();
    let image = GuestImage::flat(
        "uffd-probe",
        GUEST.to_vec(),
        layout::DEFAULT_LOAD,
        layout::DEFAULT_LOAD,
    );
    let opts = RunOptions {
        memory: MemoryOptions {
            mergeable: false,
            swap_budget_pages: Some(1024),
        },
        ..RunOptions::default()
    };
    let cfg = MachineConfig::for_image(&image, &opts, GuestPrivilege::Kernel);
    let mut m = Machine::new(&cfg).map_err(|e| e.to_string())?;
    m.load(&image).map_err(|e| e.to_string())?;
    let limits = Limits {
        wall: Duration::from_secs(5),
        max_exits: 16,
        ..Limits::default()
    };
    let summary = m.run(&mut UntilExit, &limits).map_err(|e| e.to_string())?;
    if !matches!(summary.outcome, Outcome::Completed { exit_code, .. } if exit_code == u32::from(port::EXIT))
    {
        return Err(format!("the probe guest ended {:?}", summary.outcome));
    }
    let record = m.memory.record();
    match record.swap {
        Some(s) => Ok(s.zero_fills),
        None => Err(record.unavailable.join("; ")),
    }
}

/// Whether KVM's accesses fault through userfaultfd here (done once): every write of the
/// probe guest must have reached the handler.
pub fn kvm_faults_through_userfaultfd() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| match first_touches()? {
            n if n >= EXPECTED_FIRST_TOUCHES => Ok(()),
            n => Err(format!(
                "KVM's writes to guest memory bypass userfaultfd here ({n} first touches seen, \
                 {EXPECTED_FIRST_TOUCHES} made)"
            )),
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_writes_fault_through_userfaultfd_exactly() {
        if !crate::testing::kvm_or_skip("kvm_writes_fault_through_userfaultfd_exactly") {
            return;
        }
        if super::super::swap::probe().is_err() {
            assert!(
                first_touches().is_err(),
                "no userfaultfd: the probe says so"
            );
            return;
        }
        // Where KVM's accesses fault through it, at least the image's page and the
        // guest's three (exactly those on our kvm_pvm hosts; another backend may touch
        // more pages itself).
        match kvm_faults_through_userfaultfd() {
            Ok(()) => {
                let n = first_touches().unwrap();
                assert!(n >= EXPECTED_FIRST_TOUCHES, "{n} first touches");
            }
            Err(e) => assert!(e.contains("bypass"), "{e}"),
        }
    }
}
