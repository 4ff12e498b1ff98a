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

pub mod explain;
mod trap_entry;

/// The emulator core, shared with the binary-translation engine (crate `emulator`).
pub use ::emulator::{classify, instructions, interrupts, paging, platform, vcpu};

use contract::abi::layout;
use contract::x86::rflags::{FIXED as RFLAGS_FIXED, IF as RFLAGS_IF};
use contract::{Engine, GuestImage, Mode, RunOptions, RunRecord, RunSettings, Setting};
use machine::setup::pte;
use machine::{Devices, GuestMemory, GuestPrivilege, MachineConfig, Msr, Policy};

use ::emulator::shadow::{Config as ShadowConfig, ShadowMmu};
use ::emulator::vcpu::VirtualCpu;
use ::emulator::Emulator;

pub use explain::{explain, Explanation};

/// MSR_MISC_FEATURES_ENABLES; bit 0 turns on CPUID faulting.
pub const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;

/// The trap-and-emulate engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrapEmulate;

impl Engine for TrapEmulate {
    fn mode(&self) -> Mode {
        Mode::TrapEmulate
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
            shadow_cache: Some(Setting::resolve(opts.shadow_cache, true)),
        };
        let mut cfg = MachineConfig::for_image(image, opts, GuestPrivilege::User);
        cfg.umip = settings.umip.is_some_and(|s| s.effective);
        // The real IF is 1 while the guest runs; the guest's IF is virtual (and starts 0).
        cfg.rflags = RFLAGS_FIXED | RFLAGS_IF;
        // The monitor's routine, and the page table the guest may edit write-protected, so
        // its PTE stores trap and are validated (it could otherwise map the monitor's frames).
        cfg.monitor_code
            .extend(monitor::routine::code().map_err(|e| {
                contract::Error::InvalidOption(format!("assembling the monitor routine: {e}"))
            })?);
        cfg.page_flags.push((layout::SCRATCH_PT, pte::P | pte::RW));
        // SYSCALL from the guest must reach the VMM: where it does not raise #UD (EFER.SCE
        // is 0) it jumps to this LSTAR, a supervisor page of the monitor.
        cfg.msrs.push(Msr {
            index: emulator::vcpu::msr::LSTAR,
            value: monitor::routine::SYSCALL_LANDING,
            what: "IA32_LSTAR (where SYSCALL lands, to trap)",
        });
        if settings.cpuid_faulting.is_some_and(|s| s.effective) {
            cfg.msrs.push(Msr {
                index: MSR_MISC_FEATURES_ENABLES,
                value: 1,
                what: "CPUID faulting; run with CPUID faulting off",
            });
        }
        let uses_cpuid = contains_cpuid(image);
        let shadow_cache = opts.shadow_cache;
        machine::launch(Mode::TrapEmulate, image, opts, &cfg, |boot| {
            let s = &boot.sregs;
            let cpu = VirtualCpu::at_boot(boot);
            Ok(trap_entry::Handler {
                devices: Devices::new(&opts.limits),
                emu: Emulator::new(cpu).with_shadow(ShadowMmu::new(ShadowConfig::new(
                    boot.ram_size,
                    shadow_cache,
                ))),
                cpuid: boot.cpuid.clone(),
                cr3: s.cr3,
                ram: boot.ram_size,
                tracing: opts.limits.trace_events > 0,
                last: None,
                last_regs: None,
                settings,
                caps,
                uses_cpuid,
                emulates_kernel_code: boot.host.backend.emulates_kernel_code(),
            })
        })
    }
}

impl Policy for trap_entry::Handler {
    fn devices(&mut self) -> Option<&mut machine::Devices> {
        Some(&mut self.devices)
    }

    fn finish(self, r: &mut RunRecord, _mem: &GuestMemory) {
        let handler = self;
        let (settings, caps, uses_cpuid) = (handler.settings, handler.caps, handler.uses_cpuid);
        r.console = handler.devices.console.text();
        r.injections = handler.emu.injections;
        r.options = settings;
        emulator::live::record_shadow(&handler.emu, r);
        // The guest's view: its registers at its last trap, and the virtual CPU's IF
        // and control registers (the real ones are the monitor's).
        if let (Some(f), Some(g)) = (r.final_regs.as_mut(), handler.last_regs) {
            let cpu = &handler.emu.cpu;
            f.gpr = g.gpr;
            f.rip = g.rip;
            // RF is set in fault frames, never seen by the guest.
            f.rflags = cpu.guest_rflags(g.rflags) & !contract::x86::rflags::RF;
            (f.cr0, f.cr3, f.cr4) = (cpu.cr0, cpu.cr3, cpu.cr4);
            f.view = contract::state::RegsView::Virtual;
        }
        let cpuid = settings.cpuid_faulting.unwrap_or_default();
        // Say what CPUID showed only where the guest executes it.
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
        if handler.emulates_kernel_code && !r.traps.is_empty() {
            r.notes.push(format!(
                "each trap runs the monitor's CPL 0 stub, which {} emulates \
                 instruction by instruction: traps cost more here than on VT-x/SVM",
                r.host.backend
            ));
        }
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
