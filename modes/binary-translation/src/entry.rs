//! The VMM side: every entry of translated code into the VMM arrives as a fault on the
//! monitor's stub (a `ud2` site's #UD, or a real fault of translated guest code), and is
//! one of
//!
//! * a **callout**: the emulator emulates the guest instruction at the site's guest RIP
//!   exactly as trap-and-emulate would, and the guest resumes after the `ud2` (same
//!   block) or at the translation of wherever the emulation sent it;
//! * a **chaining stub**: the successor is translated (if it is not yet) and the stub is
//!   patched into a direct jump to it — the guest never comes back here for that edge;
//! * a **lookup miss**: the indirect target is translated and entered in the table;
//! * a **write to translated guest code** (a `#PF` on a page the VMM write-protected
//!   because it holds translated code): every translation of that page is thrown away,
//!   the page is made writable again, and the store runs again — it succeeds now; the
//!   page is protected again when code is next translated from it;
//! * a **fault of translated guest code** (`#DE`, `#PF`…): mapped back to the guest
//!   instruction it translates, and handled by the emulator (reflected, or the
//!   page-table store emulated).
//!
//! Write protection is by [`Unit`]: the entry of the VMM's identity map that maps the
//! code, a 4 KiB page in the first 2 MiB of guest RAM and a 2 MiB page above. Its RW bit
//! is cleared and set by the monitor's CPL 0 routine inside the guest (a PTE store and an
//! `invlpg`, or a CR3 reload for a 2 MiB page), so that KVM's shadow MMU sees the change.

use std::collections::BTreeSet;

use contract::abi::port;
use contract::x86::pte;
use contract::x86::vector::{GP, PF, UD};
use contract::{FaultKind, Outcome};
use emulator::live::{regs_at_trap, write_back, KvmPlatform};
use emulator::paging::{check, translate as walk};
use emulator::platform::{MemError, Platform, PortResult, Wake};
use emulator::vcpu::GuestRegs;
use emulator::{Emulator, TrapInfo};
use machine::{no_such_port, Action, Devices, ExitHandler, FaultFrame, Handled, Vcpu};
use monitor::routine::Request;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::cache::{Cache, Entry};
use crate::layout::{self, Unit};
use crate::translate::{Site, TranslateError};

/// The binary-translation exit policy.
#[derive(Debug)]
pub(crate) struct Handler {
    pub devices: Devices,
    pub emu: Emulator,
    pub cpuid: contract::cpuid::CpuidTable,
    /// The real CR3 (page walks of guest code use it).
    pub cr3: u64,
    pub ram: u64,
    pub cache: Cache,
    /// Whether the first block has been entered.
    pub started: bool,
    /// The guest's registers after the last VMM entry (what it sees at the end).
    pub last_regs: Option<GuestRegs>,
    /// Whether the backend emulates the monitor's CPL 0 code.
    pub emulates_kernel_code: bool,
    /// The units of guest RAM write-protected because they hold translated code (by
    /// base address).
    pub protected: BTreeSet<u64>,
    /// The translated pages' frames, checked again at each switch of guest root.
    pub coherence: crate::coherence::Coherence,
    /// Whether the shadow MMU keeps shadows per guest root (`RunOptions::shadow_cache`).
    pub shadow_cache: bool,
}

/// The trap name of a write to write-protected guest code.
pub(crate) const CODE_WRITE: &str = "code write";

/// Page-fault error code: the page was present, the access a write.
const PF_PRESENT_WRITE: u64 = 0b11;

fn stop(kind: FaultKind, rip: Option<u64>, detail: String) -> Action {
    Action::Stop(Outcome::GuestFault { kind, rip, detail })
}

/// Reads guest code at `gva` through the tables at `cr3` — as CPL 3 code would fetch it
/// (user pages), or with the guest kernel's rights when `supervisor` — from guest RAM, up
/// to the end of `buf` or of what is readable.
pub(crate) fn read_code(
    mem: &GuestMemoryMmap,
    (cr3, supervisor): (u64, bool),
    ram: u64,
    gva: u64,
    buf: &mut [u8],
) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let va = gva.wrapping_add(done as u64);
        let Ok(t) = walk(cr3, va, |gpa| mem.read_obj::<u64>(GuestAddress(gpa)).ok()) else {
            break;
        };
        let gpa = if supervisor {
            t.gpa
        } else {
            let Ok(gpa) = check(&t, va, false) else {
                break;
            };
            gpa
        };
        let n = ((0x1000 - (va & 0xFFF)) as usize).min(buf.len() - done);
        if gpa + n as u64 > ram
            || mem
                .read_slice(&mut buf[done..done + n], GuestAddress(gpa))
                .is_err()
        {
            break;
        }
        done += n;
    }
    done
}

fn untranslatable(e: TranslateError, guest: u64) -> Action {
    match e {
        TranslateError::Unreadable(a) => stop(
            FaultKind::BadMemoryAccess,
            Some(guest),
            format!("the guest jumped to {a:#x}, which is not guest code it may execute"),
        ),
        TranslateError::Encode(e) => stop(
            FaultKind::Exception,
            Some(guest),
            format!("the block at {guest:#x} cannot be translated: {e}"),
        ),
    }
}

impl Handler {
    /// Where the walks start now: the guest's own root (with its kernel's rights) while a
    /// shadow is active, else the boot tables.
    fn walk(&self) -> (u64, bool) {
        emulator::live::walk_root(&self.emu, self.cr3)
    }

    /// Whether the guest runs in user mode on its user shadow: its code then runs
    /// untranslated, natively, where the real CPU finds it.
    fn user_native(&self) -> bool {
        self.emu
            .shadow
            .as_ref()
            .and_then(|m| m.active())
            .is_some_and(|(_, prv)| prv == emulator::shadow::Privilege::User)
    }

    /// Where the guest resumes at guest `rip` after the VMM: natively in guest user mode,
    /// else at the translation of `rip`. A switch of guest root is checked against the
    /// translated pages first.
    fn resume_at(&mut self, mem: &GuestMemoryMmap, rip: u64) -> Result<u64, Action> {
        self.check_root(mem)?;
        if self.user_native() {
            return Ok(rip);
        }
        self.dispatch(mem, rip)
    }

    /// Drops the translations a switch of guest root made stale.
    fn check_root(&mut self, mem: &GuestMemoryMmap) -> Result<(), Action> {
        let (root, _) = self.walk();
        self.coherence
            .switched(mem, &mut self.cache, root)
            .map_err(Action::Fail)
    }

    fn vif(mem: &GuestMemoryMmap) -> bool {
        mem.read_obj::<u64>(GuestAddress(layout::VIF)).unwrap_or(0) & 0x200 != 0
    }

    /// The value of `unit`'s page-table entry with its RW bit set or cleared.
    fn unit_entry(mem: &GuestMemoryMmap, unit: Unit, writable: bool) -> Result<u64, String> {
        let v = mem
            .read_obj::<u64>(GuestAddress(unit.entry))
            .map_err(|e| format!("reading the entry of {:#x}: {e}", unit.base))?;
        Ok(if writable { v | pte::RW } else { v & !pte::RW })
    }

    /// Write-protects the units of the pages translated since the last call that are
    /// not protected yet: the stores go into `routine` (or, before the guest has ever
    /// run, straight into memory: no TLB and no shadow page table hold them yet).
    fn protect_fresh(
        &mut self,
        mem: &GuestMemoryMmap,
        routine: Option<&mut Request>,
    ) -> Result<(), String> {
        let mut routine = routine;
        let pages = self.cache.take_fresh_pages();
        let (root, _) = self.walk();
        self.coherence.translated(mem, root, &pages);
        if self.emu.shadow.as_ref().and_then(|m| m.active()).is_some() {
            // On the guest's own tables the identity map's entries map nothing the CPU
            // uses: code is not write-protected there (see the crate's docs).
            return Ok(());
        }
        for page in pages {
            let Some(unit) = Unit::of(page, self.ram) else {
                continue;
            };
            if !self.protected.insert(unit.base) {
                continue;
            }
            let value = Self::unit_entry(mem, unit, false)?;
            match routine.as_deref_mut() {
                Some(r) => {
                    r.stores.push((unit.entry, value));
                    if unit.size == contract::abi::PAGE_SIZE {
                        r.invlpg.push(unit.base);
                    } else {
                        r.reload_cr3 = true;
                    }
                }
                None => mem
                    .write_obj(value, GuestAddress(unit.entry))
                    .map_err(|e| format!("protecting {:#x}: {e}", unit.base))?,
            }
        }
        Ok(())
    }

    /// A write of translated code at TC address `rip` to `unit`, which holds translated
    /// code: its translations go, it becomes writable, and the store runs again.
    fn code_write(
        &mut self,
        mem: &GuestMemoryMmap,
        rip: u64,
        unit: Unit,
        routine: &mut Request,
    ) -> Result<u64, String> {
        self.cache
            .invalidate_unit(mem, unit.base, unit.size, Some(rip))?;
        self.protected.remove(&unit.base);
        routine
            .stores
            .push((unit.entry, Self::unit_entry(mem, unit, true)?));
        if unit.size == contract::abi::PAGE_SIZE {
            routine.invlpg.push(unit.base);
        } else {
            routine.reload_cr3 = true;
        }
        Ok(rip)
    }

    /// Throws away the translations of the protected units the emulator wrote (they stay
    /// protected: the emulator's stores do not fault).
    fn invalidate_written(
        &mut self,
        mem: &GuestMemoryMmap,
        written: &[Unit],
    ) -> Result<(), String> {
        for unit in written {
            self.cache
                .invalidate_unit(mem, unit.base, unit.size, None)?;
        }
        Ok(())
    }

    /// The unit the faulting store of `frame` wrote, if it is a write to protected code.
    fn code_write_unit(&self, vcpu: &Vcpu<'_>, frame: &FaultFrame) -> Option<Unit> {
        if self.emu.shadow.as_ref().and_then(|m| m.active()).is_some()
            || frame.vector != PF
            || frame.error_code & PF_PRESENT_WRITE != PF_PRESENT_WRITE
            || !self.cache.contains(frame.rip)
        {
            return None;
        }
        let cr2 = vcpu.sregs().ok()?.cr2;
        Unit::of(cr2, self.ram).filter(|u| self.protected.contains(&u.base))
    }

    /// The translation of guest `rip`.
    fn dispatch(&mut self, mem: &GuestMemoryMmap, rip: u64) -> Result<u64, Action> {
        let (walk, ram) = (self.walk(), self.ram);
        self.cache
            .get(mem, rip, &mut |a, b| read_code(mem, walk, ram, a, b))
            .map_err(|e| untranslatable(e, rip))
    }

    fn enter(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        let kregs = match vcpu.regs() {
            Ok(r) => r,
            Err(e) => {
                return Handled::unnamed_trap(Action::Fail(format!("reading registers: {e}")))
            }
        };
        let mem = vcpu.mem;
        let Some(frame) = FaultFrame::read(mem, kregs.rsp) else {
            return Handled::unnamed_trap(stop(
                FaultKind::Exception,
                None,
                "the monitor's fault frame is outside guest RAM".into(),
            ));
        };
        if frame.cs & 3 != 3 {
            return Handled::unnamed_trap(stop(
                FaultKind::Exception,
                Some(frame.rip),
                format!("fault inside the monitor: {}", frame.describe()),
            ));
        }
        let mut regs = regs_at_trap(&kregs, &frame);
        let before = regs;
        let tc_rip = frame.rip;
        if !self.cache.in_dying(tc_rip) {
            if let Err(e) = self.cache.finish_dying(mem) {
                return Handled::unnamed_trap(Action::Fail(e));
            }
        }
        let mut routine = Request::default();
        let mut failed = None;
        self.emu.cpu.vif = Self::vif(mem);
        let entry = if frame.vector == UD {
            self.cache.entry(tc_rip)
        } else {
            None
        };
        // (name, where to resume in the TC, or what ends the run)
        let (name, resume): (String, Result<u64, Action>) = match entry {
            Some(Entry::LookupMiss) => {
                self.cache.counters.lookup_misses += 1;
                let target = mem
                    .read_obj::<u64>(GuestAddress(layout::TARGET))
                    .unwrap_or(0);
                ("translate".into(), self.dispatch(mem, target))
            }
            Some(Entry::Site(Site::Branch { target })) => {
                let r = self.dispatch(mem, target).and_then(|to| {
                    self.cache
                        .chain(mem, tc_rip, to)
                        .map(|()| to)
                        .map_err(Action::Fail)
                });
                ("translate".into(), r)
            }
            Some(Entry::Site(Site::Callout {
                guest,
                next,
                resume,
                after_sti,
            })) => {
                regs.rip = guest;
                if after_sti {
                    self.emu.cpu.sti_shadow = Some(guest);
                }
                let mut written = Vec::new();
                let (cr3, supervisor) = self.walk();
                let handled = {
                    let mut p = Guarded {
                        inner: KvmPlatform {
                            vcpu,
                            devices: &mut self.devices,
                            cpuid: &self.cpuid,
                            cr3,
                            supervisor,
                            ram: self.ram,
                            routine: &mut routine,
                            failed: &mut failed,
                        },
                        protected: &self.protected,
                        written: &mut written,
                    };
                    let t = TrapInfo {
                        vector: GP,
                        error_code: 0,
                        cr2: 0,
                    };
                    self.emu.handle(&t, &mut regs, &mut p)
                };
                let r = match (handled.stop, self.invalidate_written(mem, &written)) {
                    (_, Err(e)) => Err(Action::Fail(e)),
                    (Some(o), _) => Err(Action::Stop(o)),
                    (None, _) => match self.check_root(mem) {
                        Err(a) => Err(a),
                        Ok(()) => match resume {
                            Some(tc)
                                if regs.rip == next
                                    && !self.user_native()
                                    && self.cache.is_live(tc) =>
                            {
                                Ok(tc)
                            }
                            _ => self.resume_at(mem, regs.rip),
                        },
                    },
                };
                (handled.name, r)
            }
            None => match self.code_write_unit(vcpu, &frame) {
                Some(unit) => (
                    CODE_WRITE.into(),
                    self.code_write(mem, tc_rip, unit, &mut routine)
                        .map_err(Action::Fail),
                ),
                None => self.guest_fault(vcpu, &frame, &mut regs, &mut routine, &mut failed),
            },
        };
        // Leaving the dying block: it goes; entering new translations: their pages are
        // protected.
        let resume = resume.and_then(|tc| {
            if !self.cache.in_dying(tc) {
                self.cache.finish_dying(mem).map_err(Action::Fail)?;
            }
            self.protect_fresh(mem, Some(&mut routine))
                .map_err(Action::Fail)?;
            Ok(tc)
        });
        // What this entry did, in words, for the trace (built only when the run is traced).
        let note = vcpu.tracing().then(|| {
            let (walk, ram) = (self.walk(), self.ram);
            crate::translate::explain::note(
                &self.cache,
                mem,
                &mut |a, b| read_code(mem, walk, ram, a, b),
                tc_rip,
                entry,
                &name,
                self.emu.cpu.vif,
                resume.as_ref().ok().copied(),
            )
        });
        let _ = mem.write_obj::<u64>(
            if self.emu.cpu.vif { 0x200 } else { 0 },
            GuestAddress(layout::VIF),
        );
        if regs.rip != tc_rip {
            self.last_regs = Some(regs);
        }
        let action = match (failed, resume) {
            (Some(e), _) => Action::Fail(e),
            (None, Err(a)) => a,
            (None, Ok(tc)) => {
                match write_back(vcpu, &frame, &kregs, &before, &regs, tc, &routine) {
                    Ok(()) => Action::Continue,
                    Err(e) => Action::Fail(e),
                }
            }
        };
        Handled::trap(name, action).noted(note)
    }

    /// A real fault of translated code: handled as the guest instruction it translates.
    fn guest_fault(
        &mut self,
        vcpu: &mut Vcpu<'_>,
        frame: &FaultFrame,
        regs: &mut GuestRegs,
        routine: &mut Request,
        failed: &mut Option<String>,
    ) -> (String, Result<u64, Action>) {
        let name = contract::abi::vector_name(frame.vector).to_lowercase();
        let mem = vcpu.mem;
        if !self.cache.contains(frame.rip) && self.user_native() {
            return self.user_trap(vcpu, frame, regs, routine, failed);
        }
        if !self.cache.contains(frame.rip) {
            return (
                name,
                Err(stop(
                    FaultKind::MonitorViolation,
                    Some(frame.rip),
                    format!(
                        "{} at {:#x}: guest code ran outside its translation",
                        contract::abi::vector_name(frame.vector),
                        frame.rip
                    ),
                )),
            );
        }
        let Some((guest, block_tc)) = self.cache.guest_of(frame.rip).map(|(g, b)| (g, b.tc)) else {
            if let Some(filled) = self.fill_within(vcpu, frame, routine, failed) {
                return filled;
            }
            return (
                name,
                Err(stop(
                    FaultKind::Exception,
                    None,
                    format!(
                        "{} inside translated code at {:#x}, not at the start of a guest \
                         instruction's translation",
                        contract::abi::vector_name(frame.vector),
                        frame.rip
                    ),
                )),
            );
        };
        regs.rip = guest;
        let cr2 = if frame.vector == PF {
            match vcpu.sregs() {
                Ok(s) => s.cr2,
                Err(e) => return (name, Err(Action::Fail(format!("reading CR2: {e}")))),
            }
        } else {
            0
        };
        let mut written = Vec::new();
        let (cr3, supervisor) = self.walk();
        let handled = {
            let mut p = Guarded {
                inner: KvmPlatform {
                    vcpu,
                    devices: &mut self.devices,
                    cpuid: &self.cpuid,
                    cr3,
                    supervisor,
                    ram: self.ram,
                    routine,
                    failed,
                },
                protected: &self.protected,
                written: &mut written,
            };
            let t = TrapInfo {
                vector: frame.vector,
                error_code: frame.error_code,
                cr2,
            };
            self.emu.handle(&t, regs, &mut p)
        };
        let r = match (handled.stop, self.invalidate_written(mem, &written)) {
            (_, Err(e)) => Err(Action::Fail(e)),
            (Some(o), _) => Err(Action::Stop(o)),
            (None, _) => match self.check_root(mem) {
                Err(a) => Err(a),
                Ok(()) => match self.cache.within(block_tc, regs.rip) {
                    Some(tc) if !self.user_native() && self.cache.is_live(tc) => Ok(tc),
                    _ => self.resume_at(mem, regs.rip),
                },
            },
        };
        (handled.name, r)
    }

    /// A #PF in the middle of a guest instruction's translation (the stack access of a
    /// translated CALL or RET, say) while a shadow is active: if the shadow MMU fills it
    /// (a hidden fault), the faulting instruction of the translation runs again, nothing
    /// of it having happened. Any other resolution is left to the caller (`None`).
    fn fill_within(
        &mut self,
        vcpu: &mut Vcpu<'_>,
        frame: &FaultFrame,
        routine: &mut Request,
        failed: &mut Option<String>,
    ) -> Option<(String, Result<u64, Action>)> {
        if frame.vector != PF {
            return None;
        }
        let cr2 = vcpu.sregs().ok()?.cr2;
        let mmu = self.emu.shadow.as_mut()?;
        mmu.active()?;
        let mut fx = emulator::shadow::Effects::default();
        let mem = vcpu.mem;
        let mut read = |gpa: u64| mem.read_obj::<u64>(GuestAddress(gpa)).ok();
        // Anything but a fill ends the run (the caller classifies it): counting it here
        // changes no count that is reported as measured.
        match mmu.page_fault(cr2, frame.error_code, &mut read, &mut fx) {
            Ok(emulator::shadow::Resolution::Hidden) => {}
            _ => return None,
        }
        let mut p = KvmPlatform {
            vcpu,
            devices: &mut self.devices,
            cpuid: &self.cpuid,
            cr3: self.cr3,
            supervisor: false,
            ram: self.ram,
            routine,
            failed,
        };
        Some((
            "#pf hidden".into(),
            p.apply_shadow(fx).map(|()| frame.rip).map_err(Action::Fail),
        ))
    }

    /// A trap of guest user code, which runs untranslated on its user shadow: handled by
    /// the emulator exactly as trap-and-emulate handles it (a system call, a hidden or
    /// true page fault, an exception for the guest kernel), and resumed natively in user
    /// mode or at the translation of the kernel code it entered.
    fn user_trap(
        &mut self,
        vcpu: &mut Vcpu<'_>,
        frame: &FaultFrame,
        regs: &mut GuestRegs,
        routine: &mut Request,
        failed: &mut Option<String>,
    ) -> (String, Result<u64, Action>) {
        let mem = vcpu.mem;
        let cr2 = if frame.vector == PF {
            match vcpu.sregs() {
                Ok(s) => s.cr2,
                Err(e) => {
                    let name = contract::abi::vector_name(frame.vector).to_lowercase();
                    return (name, Err(Action::Fail(format!("reading CR2: {e}"))));
                }
            }
        } else {
            0
        };
        let (cr3, supervisor) = self.walk();
        let handled = {
            let mut p = KvmPlatform {
                vcpu,
                devices: &mut self.devices,
                cpuid: &self.cpuid,
                cr3,
                supervisor,
                ram: self.ram,
                routine,
                failed,
            };
            let t = TrapInfo {
                vector: frame.vector,
                error_code: frame.error_code,
                cr2,
            };
            self.emu.handle(&t, regs, &mut p)
        };
        let r = match handled.stop {
            Some(o) => Err(Action::Stop(o)),
            None => self.resume_at(mem, regs.rip).and_then(|to| {
                // Into the guest kernel: what user mode wrote into the lookup table goes.
                if !self.user_native() {
                    self.cache.repair_table(mem).map_err(Action::Fail)?;
                }
                Ok(to)
            }),
        };
        (handled.name, r)
    }
}

/// The live platform, with the emulator's stores to write-protected code let through:
/// the VMM writes guest memory with the guest's rights, and the guest may write its code
/// (the page is read-only only so that the VMM hears of it). The units written are
/// noted, and their translations thrown away after the emulation.
struct Guarded<'a, 'b, 'c> {
    inner: KvmPlatform<'a, 'b>,
    protected: &'c BTreeSet<u64>,
    written: &'c mut Vec<Unit>,
}

impl Platform for Guarded<'_, '_, '_> {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(gva, buf)
    }

    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemError> {
        if self.inner.cr3 & pte::FRAME != contract::abi::layout::PML4 {
            // On the guest's own tables nothing is write-protected for translated code.
            return self.inner.write(gva, data);
        }
        let ram = self.inner.ram;
        let mut done = 0;
        while done < data.len() {
            let va = gva.wrapping_add(done as u64);
            let n = ((0x1000 - (va & 0xFFF)) as usize).min(data.len() - done);
            let chunk = &data[done..done + n];
            match Unit::of(va, ram).filter(|u| self.protected.contains(&u.base)) {
                None => self.inner.write(va, chunk)?,
                Some(unit) => {
                    // Identity-mapped guest RAM, user and writable but for the protection.
                    let mem = self.inner.vcpu.mem;
                    let t = walk(self.inner.cr3, va, |gpa| {
                        mem.read_obj::<u64>(GuestAddress(gpa)).ok()
                    })?;
                    let gpa = check(&t, va, false)?;
                    if gpa != va || gpa.saturating_add(n as u64) > ram {
                        return Err(MemError::NotRam { addr: va });
                    }
                    mem.write_slice(chunk, GuestAddress(gpa))
                        .map_err(|_| MemError::NotRam { addr: va })?;
                    if !self.written.contains(&unit) {
                        self.written.push(unit);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read_phys(gpa, buf)
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.inner.write_phys(gpa, data)
    }

    fn ram_size(&self) -> u64 {
        self.inner.ram_size()
    }

    fn port_out(&mut self, port: u16, data: &[u8]) -> PortResult {
        self.inner.port_out(port, data)
    }

    fn port_in(&mut self, port: u16, data: &mut [u8]) -> PortResult {
        self.inner.port_in(port, data)
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.inner.cpuid(leaf, subleaf)
    }

    fn invlpg(&mut self, gva: u64) -> Result<(), String> {
        self.inner.invlpg(gva)
    }

    fn flush_tlb(&mut self) -> Result<(), String> {
        self.inner.flush_tlb()
    }

    fn write_pte(&mut self, gpa: u64, value: u64) -> Result<(), String> {
        self.inner.write_pte(gpa, value)
    }

    fn apply_shadow(&mut self, fx: emulator::shadow::Effects) -> Result<(), String> {
        self.inner.apply_shadow(fx)
    }

    fn set_walk(&mut self, root: Option<u64>, supervisor: bool) {
        self.inner.set_walk(root, supervisor)
    }

    fn timer_due(&self) -> bool {
        self.inner.timer_due()
    }

    fn ack_timer(&mut self) {
        self.inner.ack_timer()
    }

    fn wait_for_timer(&mut self) -> Wake {
        self.inner.wait_for_timer()
    }

    fn halted(&mut self, rbx: u64) -> contract::Outcome {
        self.inner.halted(rbx)
    }
}

impl ExitHandler for Handler {
    fn before_entry(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        if self.started {
            return Action::Continue;
        }
        self.started = true;
        // The first entry: the guest's entry point, translated.
        let mut k = match vcpu.regs() {
            Ok(r) => r,
            Err(e) => return Action::Fail(format!("reading registers: {e}")),
        };
        match self.dispatch(vcpu.mem, k.rip) {
            Ok(tc) => {
                if let Err(e) = self.protect_fresh(vcpu.mem, None) {
                    return Action::Fail(e);
                }
                k.rip = tc;
                match vcpu.set_regs(&k) {
                    Ok(()) => Action::Continue,
                    Err(e) => Action::Fail(format!("entering the translation: {e}")),
                }
            }
            Err(a) => a,
        }
    }

    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, p: u16, _data: &[u8]) -> Handled {
        if p == port::FAULT {
            self.enter(vcpu)
        } else {
            // The I/O bitmap denies every port to CPL 3, so only the monitor does I/O.
            no_such_port(p, true).into()
        }
    }

    fn io_in(&mut self, p: u16, _data: &mut [u8]) -> Handled {
        no_such_port(p, false).into()
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Handled {
        self.devices.mmio_read(addr, data).into()
    }

    fn mmio_write(&mut self, _vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Handled {
        self.devices.mmio_write(addr, data).into()
    }

    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        self.devices.halt(vcpu).into()
    }
}
