//! The [`Platform`] over the live vCPU (through `machine::Vcpu`, never KVM directly) and guest memory: what the emulator's instruction
//! handlers reach through when the engine runs on KVM. The TLB and page-table effects are
//! gathered into a request for the monitor's CPL 0 routine, which the exit handler runs
//! in place of the stub's tail ([`monitor::routine`]).

use std::time::Instant;

use machine::{Action, Devices, FaultFrame, Vcpu};
use monitor::routine::{Request, Resume};
use vm_memory::{Bytes, GuestAddress};

use crate::paging::{check, translate};
use crate::platform::{MemError, Platform, PortResult, Wake};
use crate::vcpu::GuestRegs;

/// The platform over the live vCPU.
pub struct KvmPlatform<'a, 'b> {
    /// The vCPU (for its guest memory and its run deadline).
    pub vcpu: &'a mut Vcpu<'b>,
    /// The devices every engine shares.
    pub devices: &'a mut Devices,
    /// The virtual CPU's CPUID table.
    pub cpuid: &'a contract::cpuid::CpuidTable,
    /// Where the page walks start: the boot tables, or the guest's own root while a
    /// shadow is active.
    pub cr3: u64,
    /// Whether the walks may reach the guest's supervisor pages (the guest kernel, on its
    /// own tables).
    pub supervisor: bool,
    /// Guest RAM size.
    pub ram: u64,
    /// What the monitor's routine must do inside the guest before it resumes.
    pub routine: &'a mut Request,
    /// Set when the VMM itself failed under the emulator (a device could not read the
    /// vCPU): the trap then ends the run with an `Err`, whatever the emulator made of it.
    pub failed: &'a mut Option<String>,
}

impl std::fmt::Debug for KvmPlatform<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmPlatform")
            .field("cr3", &self.cr3)
            .field("ram", &self.ram)
            .finish_non_exhaustive()
    }
}

impl KvmPlatform<'_, '_> {
    fn port_result(&mut self, r: Option<Action>) -> PortResult {
        match r {
            None => PortResult::NoDevice,
            Some(Action::Continue) => PortResult::Done,
            Some(Action::Stop(o)) => PortResult::Stop(o),
            Some(Action::Fail(e)) => {
                // What the emulator makes of the stop does not matter: `failed` wins.
                *self.failed = Some(e.clone());
                PortResult::Stop(contract::Outcome::GuestFault {
                    kind: contract::FaultKind::EntryFailure,
                    rip: None,
                    detail: e,
                })
            }
        }
    }

    fn walk(&self, gva: u64, write: bool) -> Result<u64, MemError> {
        let mem = self.vcpu.mem;
        let t = translate(self.cr3, gva, |gpa| {
            mem.read_obj::<u64>(GuestAddress(gpa)).ok()
        })?;
        if self.supervisor && (t.writable || !write) {
            return Ok(t.gpa);
        }
        check(&t, gva, write)
    }

    /// Splits an access at page boundaries and runs `f` on each (gpa, offset, len).
    fn each_page(
        &self,
        gva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), MemError>,
    ) -> Result<(), MemError> {
        let mut done = 0;
        while done < len {
            let va = gva.wrapping_add(done as u64);
            let in_page = (0x1000 - (va & 0xFFF)) as usize;
            let n = in_page.min(len - done);
            let gpa = self.walk(va, write)?;
            let shared = contract::abi::layout::is_shared_page(gpa & !0xFFF);
            if gpa.saturating_add(n as u64) > self.ram && !shared {
                return Err(MemError::NotRam { addr: va });
            }
            f(gpa, done, n)?;
            done += n;
        }
        Ok(())
    }
}

impl Platform for KvmPlatform<'_, '_> {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mem = self.vcpu.mem;
        let len = buf.len();
        self.each_page(gva, len, false, |gpa, off, n| {
            mem.read_slice(&mut buf[off..off + n], GuestAddress(gpa))
                .map_err(|_| MemError::NotRam { addr: gva })
        })
    }

    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemError> {
        let mem = self.vcpu.mem;
        self.each_page(gva, data.len(), true, |gpa, off, n| {
            mem.write_slice(&data[off..off + n], GuestAddress(gpa))
                .map_err(|_| MemError::NotRam { addr: gva })
        })
    }

    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.vcpu
            .mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| MemError::NotRam { addr: gpa })
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.vcpu
            .mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| MemError::NotRam { addr: gpa })
    }

    fn ram_size(&self) -> u64 {
        self.ram
    }

    fn port_out(&mut self, p: u16, data: &[u8]) -> PortResult {
        let r = self.devices.io_out(self.vcpu, p, data);
        self.port_result(r)
    }

    fn port_in(&mut self, p: u16, data: &mut [u8]) -> PortResult {
        let r = self.devices.io_in(p, data);
        self.port_result(r)
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid.lookup(leaf, subleaf)
    }

    fn invlpg(&mut self, gva: u64) -> Result<(), String> {
        self.routine.invlpg.push(gva);
        Ok(())
    }

    fn flush_tlb(&mut self) -> Result<(), String> {
        self.routine.reload_cr3 = true;
        Ok(())
    }

    fn write_pte(&mut self, gpa: u64, value: u64) -> Result<(), String> {
        self.routine.stores.push((gpa, value));
        Ok(())
    }

    fn apply_shadow(&mut self, fx: crate::shadow::Effects) -> Result<(), String> {
        let r = &mut *self.routine;
        if r.stores.len() + fx.stores.len() > monitor::routine::MAX_STORES {
            return Err(format!(
                "the shadow MMU asked for {} stores in one trap, more than the monitor's \
                 mailbox holds ({})",
                r.stores.len() + fx.stores.len(),
                monitor::routine::MAX_STORES
            ));
        }
        r.stores.extend(fx.stores);
        if r.invlpg.len() + fx.invlpg.len() > monitor::routine::MAX_INVLPGS {
            r.reload_cr3 = true;
        } else {
            r.invlpg.extend(fx.invlpg);
        }
        r.reload_cr3 |= fx.flush;
        if let Some(cr3) = fx.load_cr3 {
            r.load_cr3 = Some(cr3);
        }
        Ok(())
    }

    fn set_walk(&mut self, root: Option<u64>, supervisor: bool) {
        self.cr3 = root.unwrap_or(contract::abi::layout::PML4) & contract::x86::pte::FRAME;
        self.supervisor = root.is_some() && supervisor;
    }

    fn timer_due(&self) -> bool {
        self.devices.timer.due(Instant::now())
    }

    fn ack_timer(&mut self) {
        self.devices.timer.fire();
    }

    fn wait_for_timer(&mut self) -> Wake {
        let Some(due) = self.devices.timer.deadline() else {
            return Wake::NothingArmed;
        };
        // The machine's wait: bounded by the run's deadline, and a scheduler's gate hears
        // that this vCPU blocks (its host CPU may go to another meanwhile).
        self.vcpu.wait_until(due);
        if Instant::now() >= due {
            Wake::TimerDue
        } else {
            Wake::Deadline
        }
    }
}

/// The guest's registers at a trap: the GPRs the stub left untouched in the vCPU, and RIP,
/// RFLAGS and RSP from the frame the CPU pushed.
pub fn regs_at_trap(k: &kvm_bindings::kvm_regs, frame: &FaultFrame) -> GuestRegs {
    GuestRegs {
        gpr: [
            k.rax, k.rcx, k.rdx, k.rbx, frame.rsp, k.rbp, k.rsi, k.rdi, k.r8, k.r9, k.r10, k.r11,
            k.r12, k.r13, k.r14, k.r15,
        ],
        rip: frame.rip,
        rflags: frame.rflags,
        fs_base: 0,
        gs_base: 0,
    }
}

/// Writes the emulated state back: changed GPRs into the vCPU (whose RIP/RSP/RFLAGS are
/// the stub's, pointed at the monitor's routine when `routine` has work), and `resume`,
/// RFLAGS and RSP into the fault frame the stub's (or the routine's) IRETQ pops.
pub fn write_back(
    vcpu: &mut Vcpu<'_>,
    frame: &FaultFrame,
    kregs: &kvm_bindings::kvm_regs,
    before: &GuestRegs,
    after: &GuestRegs,
    resume: u64,
    routine: &Request,
) -> Result<(), String> {
    let mut gprs_before = before.gpr;
    let mut gprs_after = after.gpr;
    gprs_before[4] = 0;
    gprs_after[4] = 0;
    if gprs_before != gprs_after || !routine.is_empty() {
        let g = &after.gpr;
        let mut k = *kregs;
        if !routine.is_empty() {
            let stub_rsp = frame.stub_rsp;
            k.rip =
                monitor::routine::prepare(vcpu.mem, routine, Resume::StubFrame { stub_rsp })?.rip;
        }
        (k.rax, k.rcx, k.rdx, k.rbx, k.rbp, k.rsi, k.rdi) =
            (g[0], g[1], g[2], g[3], g[5], g[6], g[7]);
        (k.r8, k.r9, k.r10, k.r11, k.r12, k.r13, k.r14, k.r15) =
            (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        vcpu.set_regs(&k).map_err(|e| e.to_string())?;
    }
    frame.set_return(vcpu.mem, resume, after.rflags, after.rsp())
}

/// Where the VMM's walks of guest-virtual addresses start for the next trap: the guest's
/// own root while a shadow is active (with the guest kernel's right to its supervisor
/// pages when it runs), else `boot_cr3` with user rights.
pub fn walk_root(emu: &crate::Emulator, boot_cr3: u64) -> (u64, bool) {
    match emu.shadow.as_ref().and_then(|m| m.active()) {
        Some((root, prv)) => (root, prv == crate::shadow::Privilege::Kernel),
        None => (boot_cr3, false),
    }
}

/// Puts what the shadow MMU did into the record: its counters, and a note that says the
/// guest ran its own page tables on shadows (nothing when the guest never loaded one).
pub fn record_shadow(emu: &crate::Emulator, r: &mut contract::RunRecord) {
    let Some(mmu) = &emu.shadow else {
        return;
    };
    let stats = mmu.stats();
    if *stats == Default::default() {
        return;
    }
    r.shadow = stats
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    r.notes.push(format!(
        "shadow paging: the guest loaded its own page tables; the real CPU ran on shadow \
         tables the VMM built (shadow cache {})",
        if mmu.config().cache { "on" } else { "off" }
    ));
}
