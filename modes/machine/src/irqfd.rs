//! Completion interrupts through KVM's in-kernel interrupt controller: a GSI routed to an
//! MSI for the guest's local APIC, and an eventfd registered as that GSI's irqfd. A write
//! to the eventfd from any thread raises the MSI inside KVM; the vCPU's user-space loop
//! never sees it (vhost's completion path).
//!
//! The irqchip must exist before the vCPU is created ([`crate::MachineConfig::irqchip`]),
//! and with it the local APIC lives in the kernel: `hlt` waits there for an interrupt and
//! the VMM can no longer inject one with `KVM_INTERRUPT`. Only the runs that need it get one.

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

/// The GSI the completion interrupt is routed through (the first past the IOAPIC's 24
/// pins, so it is an MSI's alone).
pub const COMPLETION_GSI: u32 = 24;

/// The MSI address of a fixed, physical-destination interrupt to APIC ID 0.
const MSI_ADDRESS_APIC0: u32 = 0xFEE0_0000;

/// Routes [`COMPLETION_GSI`] to an MSI carrying `vector` for the boot vCPU's local APIC
/// (edge-triggered, fixed delivery) and registers `efd` as its irqfd.
pub fn route(vm: &VmFd, efd: &EventFd, vector: u8) -> Result<(), String> {
    let mut routing = KvmIrqRouting::new(1).map_err(|e| format!("routing table: {e:?}"))?;
    let mut entry = kvm_irq_routing_entry {
        gsi: COMPLETION_GSI,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    entry.u.msi = kvm_irq_routing_msi {
        address_lo: MSI_ADDRESS_APIC0,
        address_hi: 0,
        data: u32::from(vector),
        ..Default::default()
    };
    routing.as_mut_slice()[0] = entry;
    vm.set_gsi_routing(&routing)
        .map_err(|e| format!("KVM_SET_GSI_ROUTING: {e}"))?;
    vm.register_irqfd(efd, COMPLETION_GSI)
        .map_err(|e| format!("KVM_IRQFD: {e}"))
}
