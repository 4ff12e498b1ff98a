//! What an engine asks of the machine, as data: the configuration the machine applies
//! before the first entry, and what the engine's handler is built from once it stands.

use contract::abi;
use contract::host::HostInfo;
use contract::image::{Flavour, GuestImage};
use contract::RunOptions;
use vm_memory::GuestMemoryMmap;

use crate::setup::{self, GuestPrivilege};
#[cfg(doc)]
use crate::Vcpu;

/// How to build the machine: everything an engine sets up, as data the machine applies
/// before the first entry. Engines never reach into the vCPU between the machine's steps.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Guest RAM size (a multiple of 2 MiB, at most [`contract::abi::layout::MAX_RAM_SIZE`]).
    pub ram_size: u64,
    /// CPL the guest starts at.
    pub privilege: GuestPrivilege,
    /// Set CR4.UMIP.
    pub umip: bool,
    /// Ports CPL 3 code may use directly (opened in the TSS I/O bitmap).
    pub open_ports: Vec<u16>,
    /// Values for the boot-info page.
    pub boot_info: setup::BootInfo,
    /// The guest's RFLAGS at entry.
    pub rflags: u64,
    /// MSRs to set before the first entry; KVM must accept every one.
    pub msrs: Vec<Msr>,
    /// Code and data for the monitor's region (`(address, bytes)`): the monitor's CPL 0
    /// routines. Each must lie inside the monitor's private pages.
    pub monitor_code: Vec<(u64, Vec<u8>)>,
    /// Memory to write before the image is loaded (`(address, bytes)`), such as a
    /// shared page's initial contents.
    pub memory: Vec<(u64, Vec<u8>)>,
    /// 4 KiB pages to remap with other flags (`(page, flags)`, see
    /// [`setup::set_page_flags`]): a page table the guest may read but not write, say.
    pub page_flags: Vec<(u64, u64)>,
    /// Have KVM copy the registers into `kvm_run` at every exit
    /// ([`Vcpu::synced_regs`]), sparing a `KVM_GET_REGS` per exit.
    pub sync_regs: bool,
    /// Page sharing and host swapping for guest RAM ([`crate::overcommit`]).
    pub overcommit: contract::overcommit::MemoryOptions,
    /// Guest RAM in a memfd, mapped shared, so another process can map it too (a driver
    /// domain); otherwise private anonymous memory (the default).
    pub shared_ram: bool,
    /// Create KVM's in-kernel interrupt controller (PIC, IOAPIC and a local APIC per
    /// vCPU) before the vCPU, so an irqfd can raise an interrupt without the VMM
    /// ([`crate::irqfd`]). With it `hlt` waits in the kernel and the VMM cannot inject
    /// interrupts itself (no `KVM_INTERRUPT`): only runs whose completion is an irqfd ask.
    pub irqchip: bool,
}

/// An MSR an engine sets before the first entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msr {
    /// Its index.
    pub index: u32,
    /// Its value.
    pub value: u64,
    /// What it does, for the error when KVM refuses it.
    pub what: &'static str,
}

impl MachineConfig {
    /// The configuration for running `image` with `opts` at `privilege`.
    pub fn for_image(image: &GuestImage, opts: &RunOptions, privilege: GuestPrivilege) -> Self {
        MachineConfig {
            ram_size: opts.ram_size,
            privilege,
            umip: opts.umip,
            open_ports: Vec::new(),
            boot_info: setup::BootInfo {
                ram_size: opts.ram_size,
                flavour: match image.flavour {
                    Flavour::Native => abi::flavour::NATIVE,
                    Flavour::Paravirt => abi::flavour::PARAVIRT,
                },
                ..Default::default()
            },
            rflags: contract::x86::rflags::FIXED,
            msrs: Vec::new(),
            monitor_code: Vec::new(),
            memory: Vec::new(),
            page_flags: Vec::new(),
            sync_regs: false,
            overcommit: opts.memory,
            shared_ram: opts
                .disk
                .as_ref()
                .is_some_and(|d| d.backend == contract::BlockBackend::DriverDomain),
            irqchip: false,
        }
    }
}

/// What a handler is built from, once the machine stands and the image is loaded.
#[derive(Debug)]
pub struct Boot<'a> {
    /// Guest memory (RAM and the monitor's region).
    pub mem: &'a GuestMemoryMmap,
    /// Guest RAM size.
    pub ram_size: u64,
    /// The vCPU's CPUID table (what KVM was given for it).
    pub cpuid: contract::cpuid::CpuidTable,
    /// The vCPU's special registers at entry.
    pub sregs: kvm_bindings::kvm_sregs,
    /// The host.
    pub host: &'a HostInfo,
}
