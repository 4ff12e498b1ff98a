//! The trap-and-emulate engine: full virtualization the classic way.
//!
//! The guest is the same native image the hardware-assisted engine runs, but it runs
//! deprivileged at CPL 3 with IOPL 0. A monitor owned by the VMM — GDT, an IDT whose 256
//! gates lead to tiny CPL 0 stubs, a TSS with RSP0 and a closed I/O bitmap — lives in
//! supervisor-only pages. Every privileged instruction faults into a stub, which reports
//! to the VMM with one port exit; the VMM decodes the instruction with iced-x86, emulates
//! it against a [`vcpu::VirtualCpu`] (virtual IF, control registers, descriptor-table
//! registers, MSRs) and resumes the guest after it. The guest's own exceptions and the
//! timer are reflected through its *virtual* IDT. Sensitive-but-unprivileged instructions
//! (PUSHF/POPF, SGDT…) run natively without trapping — the x86 hole, shown for real.
//!
//! ```
//! use contract::{Engine, GuestImage, RunOptions};
//! use trap_emulate::TrapEmulate;
//! # if machine::open_kvm().is_err() { return Ok(()); } // no /dev/kvm: nothing to show
//!
//! // cli; mov al,'A'; out 0xe9,al; sti; xor eax,eax; out 0xf4,eax
//! let code = vec![0xFA, 0xB0, b'A', 0xE6, 0xE9, 0xFB, 0x31, 0xC0, 0xE7, 0xF4];
//! let image = GuestImage::flat("hello", code, 0x10_0000, 0x10_0000);
//! let record = TrapEmulate.run(&image, &RunOptions::default())?;
//! assert_eq!(record.console, "A");
//! // Every privileged instruction trapped once: cli, out (twice), sti.
//! assert_eq!(record.traps["cli"], 1);
//! assert_eq!(record.traps["out"], 2);
//! assert_eq!(record.traps["sti"], 1);
//! # Ok::<(), contract::Error>(())
//! ```

pub mod classify;
pub mod emulator;
pub mod explain;
#[cfg(test)]
mod fuzz;
pub mod instructions;
pub mod interrupts;
mod kvm;
mod live_platform;
pub mod paging;
pub mod platform;
pub mod vcpu;

use contract::x86::rflags::{FIXED as RFLAGS_FIXED, IF as RFLAGS_IF};
use contract::{
    Engine, Error, GuestImage, HostInfo, Mode, NamedCounters, RunOptions, RunRecord, RunSettings,
    Setting,
};
use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES};
use machine::{Devices, GuestPrivilege, Machine, MachineConfig};

use emulator::Emulator;
use vcpu::{TableReg, VirtualCpu};

pub use explain::{explain, Explanation};

/// MSR_MISC_FEATURES_ENABLES; bit 0 turns on CPUID faulting.
pub const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;

/// The trap-and-emulate engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrapEmulate;

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

impl Engine for TrapEmulate {
    fn mode(&self) -> Mode {
        Mode::TrapEmulate
    }

    fn probe(&self) -> contract::Result<HostInfo> {
        machine::host::probe()
    }

    fn run(&self, image: &GuestImage, opts: &RunOptions) -> contract::Result<RunRecord> {
        // What the host really does decides what is switched on, and the oracle follows.
        let caps = machine::caps::probe()?;
        let settings = RunSettings {
            cpuid_faulting: Some(Setting::resolve(
                opts.cpuid_faulting,
                caps.cpuid_faulting.is_present(),
            )),
            umip: Some(Setting::resolve(opts.umip, caps.umip.is_present())),
        };
        let mut cfg = MachineConfig::for_image(image, opts, GuestPrivilege::User);
        cfg.umip = settings.umip.is_some_and(|s| s.effective);
        let mut machine = Machine::new(&cfg)?;
        machine.load(image)?;
        let ram = machine.mem_size();

        // The monitor's routine, and the page table the guest may edit write-protected, so
        // its PTE stores trap and are validated (it could otherwise map the monitor's frames).
        monitor::install(machine.mem())
            .map_err(|e| Error::InvalidOption(format!("installing the monitor: {e}")))?;

        // The real IF is 1 while the guest runs; the guest's IF is virtual (and starts 0).
        let vcpu = machine.vcpu();
        let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        regs.rflags = RFLAGS_FIXED | RFLAGS_IF;
        vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;

        if settings.cpuid_faulting.is_some_and(|s| s.effective) {
            let msrs = Msrs::from_entries(&[kvm_msr_entry {
                index: MSR_MISC_FEATURES_ENABLES,
                data: 1,
                ..Default::default()
            }])
            .map_err(|e| Error::InvalidOption(format!("MSR list: {e:?}")))?;
            let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
            if set != 1 {
                return Err(Error::Unsupported {
                    mode: Mode::TrapEmulate,
                    why: "KVM refused CPUID faulting (MSR 0x140); run with CPUID faulting off"
                        .into(),
                });
            }
        }
        let cpuid = machine::cpuid_table(
            vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(kvm_err("KVM_GET_CPUID2"))?
                .as_slice(),
        );
        let s = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let cpu = VirtualCpu::boot(
            s.cr0,
            s.cr3,
            s.cr4,
            s.efer,
            TableReg {
                base: s.gdt.base,
                limit: s.gdt.limit,
            },
            TableReg {
                base: s.idt.base,
                limit: s.idt.limit,
            },
        );
        let mut handler = kvm::Handler {
            devices: Devices::new(&opts.limits),
            emu: Emulator::new(cpu),
            traps: NamedCounters::default(),
            cpuid,
            cr3: s.cr3,
            ram,
            tracing: opts.limits.trace_events > 0,
            last: None,
            last_regs: None,
        };
        let summary = machine.run(&mut handler, &opts.limits)?;
        let console = handler.devices.console.text();
        let backend = machine.host().backend;
        let record = machine.record(Mode::TrapEmulate, image, opts, summary, console, |r| {
            r.traps = handler.traps.counts().clone();
            r.event_ns = handler.traps.summaries();
            r.injections = handler.emu.injections;
            r.options = settings;
            // The guest's view: its registers at its last trap, and the virtual CPU's IF
            // and control registers (the real ones are the monitor's).
            if let (Some(f), Some(g)) = (r.final_regs.as_mut(), handler.last_regs) {
                let cpu = &handler.emu.cpu;
                f.gpr = g.gpr;
                f.rip = g.rip;
                const RFLAGS_RF: u64 = 1 << 16; // set in fault frames, never seen by the guest
                f.rflags = cpu.guest_rflags(g.rflags) & !RFLAGS_RF;
                (f.cr0, f.cr3, f.cr4) = (cpu.cr0, cpu.cr3, cpu.cr4);
                f.view = contract::state::RegsView::Virtual;
            }
            let cpuid = settings.cpuid_faulting.unwrap_or_default();
            // Say what CPUID showed only where the guest executes it.
            let uses_cpuid = contains_cpuid(image);
            if uses_cpuid && cpuid.lacking() {
                r.notes.push(format!(
                    "CPUID faulting was requested but is not effective on this host ({}): \
                     CPUID did not trap to this VMM; {}",
                    caps.cpuid_faulting.detail,
                    caps.describe_cpuid_leaks()
                ));
            } else if uses_cpuid && !cpuid.effective {
                r.notes.push(format!(
                    "CPUID faulting was off: CPUID did not trap to this VMM; {}",
                    caps.describe_cpuid_leaks()
                ));
            }
            if settings.umip.is_some_and(|s| s.lacking()) {
                r.notes.push(format!(
                    "CR4.UMIP was requested but is not effective on this host ({}): \
                     SGDT/SIDT/SLDT/SMSW/STR ran natively and showed the monitor's values",
                    caps.umip.detail
                ));
            } else if settings.umip.is_some_and(|s| s.effective) {
                r.notes.push(
                    "CR4.UMIP was set: SGDT/SIDT/SLDT/SMSW/STR trapped and returned the virtual \
                     CPU's values"
                        .into(),
                );
            }
            if backend.emulates_kernel_code() && !r.traps.is_empty() {
                r.notes.push(format!(
                    "each trap runs the monitor's CPL 0 stub, which {backend} emulates \
                     instruction by instruction: traps cost more here than on VT-x/SVM"
                ));
            }
        });
        Ok(record)
    }
}

/// Whether the image's code holds a CPUID instruction (a linear decode, as `explain`
/// reads it).
fn contains_cpuid(image: &GuestImage) -> bool {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    Decoder::with_ip(64, &image.bytes, image.load_addr, DecoderOptions::NONE)
        .into_iter()
        .any(|i| i.mnemonic() == Mnemonic::Cpuid)
}
