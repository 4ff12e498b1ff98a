//! The binary-translation engine: full virtualization the way VMware did it before VT-x.
//!
//! The guest is the same native image the other full-virtualization engines run, and it
//! runs at CPL 3 — but its code is never executed from its own pages. The VMM decodes it
//! in basic blocks with iced-x86 and re-encodes each into a translation cache in the
//! monitor's region ([`translate`], [`cache`]): innocuous instructions are copied,
//! CLI/STI/PUSHF/POPF are rewritten inline to act on the virtual IF in a data page (no
//! exit), privileged instructions become callouts that the VMM emulates with the same
//! emulator as trap-and-emulate ([`emulator`]), and blocks end in chaining stubs that are
//! patched into direct jumps once their successor is translated; returns and indirect
//! branches go through a lookup table. `popf` is therefore correct here, and `irq-toggle`
//! runs without a single exit per CLI/STI. Every page the VMM translates from is
//! write-protected, so a guest that rewrites its code faults, and the translations of that
//! page are thrown away before the store completes: self-modifying code runs its new
//! bytes.
//!
//! ```
//! use binary_translation::BinaryTranslation;
//! use contract::{Engine, GuestImage, RunOptions};
//! # if machine::open_kvm().is_err() { return Ok(()); } // no /dev/kvm: nothing to show
//!
//! // cli; mov al,'A'; out 0xe9,al; sti; xor eax,eax; out 0xf4,eax
//! let code = vec![0xFA, 0xB0, b'A', 0xE6, 0xE9, 0xFB, 0x31, 0xC0, 0xE7, 0xF4];
//! let image = GuestImage::flat("hello", code, 0x10_0000, 0x10_0000);
//! let record = BinaryTranslation.run(&image, &RunOptions::default())?;
//! assert_eq!(record.console, "A");
//! // CLI and STI were rewritten inline: no trap; each OUT was a callout.
//! assert!(!record.traps.contains_key("cli"));
//! assert_eq!(record.traps["out"], 2);
//! assert_eq!(record.translation["blocks"], 1);
//! # Ok::<(), contract::Error>(())
//! ```

pub mod cache;
mod coherence;
mod entry;
pub mod layout;
pub mod translate;

use contract::abi::{layout as abi_layout, PAGE_SIZE};
use contract::x86::rflags::{FIXED as RFLAGS_FIXED, IF as RFLAGS_IF};
use contract::{Engine, GuestImage, Mode, RunOptions, RunRecord, Setting};
use emulator::shadow::{Config as ShadowConfig, ShadowMmu};
use emulator::vcpu::VirtualCpu;
use emulator::Emulator;
use machine::setup::pte;
use machine::{Devices, GuestMemory, GuestPrivilege, MachineConfig, Msr, Policy};

/// The binary-translation engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct BinaryTranslation;

impl Engine for BinaryTranslation {
    fn mode(&self) -> Mode {
        Mode::BinaryTranslation
    }

    fn run(&self, image: &GuestImage, opts: &RunOptions) -> contract::Result<RunRecord> {
        run_with_cache(image, opts, layout::TC_END)
    }
}

/// Runs `image` with a translation cache that ends at `tc_end` (a small cache shows
/// what happens when it fills up).
pub fn run_with_cache(
    image: &GuestImage,
    opts: &RunOptions,
    tc_end: u64,
) -> contract::Result<RunRecord> {
    let mut cfg = MachineConfig::for_image(image, opts, GuestPrivilege::User);
    // The real IF is 1 while the guest runs; the guest's IF is virtual (and starts 0).
    cfg.rflags = RFLAGS_FIXED | RFLAGS_IF;
    cfg.monitor_code
        .extend(monitor::routine::code().map_err(|e| {
            contract::Error::InvalidOption(format!("assembling the monitor routine: {e}"))
        })?);
    // As in trap-and-emulate: the guest's page table is write-protected, so its PTE
    // stores fault and are validated.
    cfg.page_flags
        .push((abi_layout::SCRATCH_PT, pte::P | pte::RW));
    // SYSCALL from guest user mode (which runs untranslated) must reach the VMM: where it
    // does not raise #UD it jumps to this LSTAR, a supervisor page of the monitor.
    cfg.msrs.push(Msr {
        index: emulator::vcpu::msr::LSTAR,
        value: monitor::routine::SYSCALL_LANDING,
        what: "IA32_LSTAR (where SYSCALL lands, to trap)",
    });
    // The data page and the lookup table: the guest's own virtual state, user-writable.
    let mut page = layout::DATA;
    while page < layout::TC {
        cfg.page_flags.push((page, pte::P | pte::RW | pte::US));
        page += PAGE_SIZE;
    }
    // The translation cache: user, read and execute, never writable by the guest.
    while page < layout::TC_END {
        cfg.page_flags.push((page, pte::P | pte::US));
        page += PAGE_SIZE;
    }
    machine::launch(Mode::BinaryTranslation, image, opts, &cfg, |boot| {
        let s = &boot.sregs;
        let cpu = VirtualCpu::at_boot(boot);
        let cache = cache::Cache::new(boot.mem, tc_end.clamp(layout::TC + 0x1000, layout::TC_END))
            .map_err(contract::Error::InvalidOption)?;
        Ok(entry::Handler {
            devices: Devices::new(&opts.limits),
            emu: Emulator::new(cpu).with_shadow(ShadowMmu::new(ShadowConfig::new(
                boot.ram_size,
                opts.shadow_cache,
            ))),
            cpuid: boot.cpuid.clone(),
            cr3: s.cr3,
            ram: boot.ram_size,
            cache,
            started: false,
            last_regs: None,
            emulates_kernel_code: boot.host.backend.emulates_kernel_code(),
            protected: Default::default(),
            coherence: Default::default(),
            shadow_cache: opts.shadow_cache,
        })
    })
}

impl Policy for entry::Handler {
    fn devices(&mut self) -> Option<&mut machine::Devices> {
        Some(&mut self.devices)
    }

    fn finish(self, r: &mut RunRecord, mem: &GuestMemory) {
        use vm_memory::{Bytes, GuestAddress};
        r.console = self.devices.console.text();
        r.injections = self.emu.injections;
        let c = self.cache.counters;
        let lookups = mem
            .read_obj::<u64>(GuestAddress(layout::LOOKUPS))
            .unwrap_or(0);
        r.translation = [
            ("blocks", c.blocks),
            ("copied", c.stats.copied),
            ("inline", c.stats.inline),
            ("callout sites", c.stats.callouts),
            ("branches", c.stats.branches),
            ("chains", c.chains),
            ("lookups", lookups),
            ("lookup misses", c.lookup_misses),
            ("invalidations", c.invalidations),
            ("flushes", c.flushes),
            ("cr3 switches", self.coherence.switches),
            ("cr3 invalidations", self.coherence.invalidations),
            ("lookup repairs", c.repairs),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        r.options.shadow_cache = Some(Setting::resolve(self.shadow_cache, true));
        emulator::live::record_shadow(&self.emu, r);
        if let (Some(f), Some(g)) = (r.final_regs.as_mut(), self.last_regs) {
            let cpu = &self.emu.cpu;
            f.gpr = g.gpr;
            f.rip = g.rip;
            f.rflags = cpu.guest_rflags(g.rflags) & !contract::x86::rflags::RF;
            (f.cr0, f.cr3, f.cr4) = (cpu.cr0, cpu.cr3, cpu.cr4);
            f.view = contract::state::RegsView::Virtual;
        }
        if self.emulates_kernel_code && !r.traps.is_empty() {
            r.notes.push(format!(
                "each callout and each translator entry runs the monitor's CPL 0 stub, which \
                 {} emulates instruction by instruction",
                r.host.backend
            ));
        }
    }
}
