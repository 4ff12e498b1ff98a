//! The engine on real KVM: the exit handler that turns each FAULT-port exit into one
//! emulation step, and the [`Platform`] over the live vCPU and guest memory.

use std::time::Instant;

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use modes::abi::port;
use modes::machine::{Action, Devices, ExitHandler, FaultFrame, Vcpu};
use modes::{ExitKind, FaultKind, NamedCounters, Outcome};
use vm_memory::{Bytes, GuestAddress};

use crate::emulator::{Emulator, TrapInfo, PF};
use crate::paging::{check, translate};
use crate::platform::{MemError, Platform, PortResult, Wake};
use crate::vcpu::GuestRegs;

/// CR3.PCD: toggled to make KVM rebuild its view of the guest's page tables.
const CR3_PCD: u64 = 1 << 4;

/// The trap-and-emulate exit policy.
#[derive(Debug)]
pub(crate) struct Handler {
    pub devices: Devices,
    pub emu: Emulator,
    pub traps: NamedCounters,
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// The real CR3 (the page walks use it; a flush toggles its PCD bit).
    pub cr3: u64,
    pub ram: u64,
    pub flushes: u64,
}

fn stop(kind: FaultKind, rip: Option<u64>, detail: String) -> Action {
    Action::Stop(Outcome::GuestFault { kind, rip, detail })
}

fn no_such_port(p: u16, write: bool) -> Action {
    stop(
        FaultKind::BadDeviceAccess,
        None,
        format!(
            "{} port {p:#x}, where there is no device",
            if write { "out to" } else { "in from" }
        ),
    )
}

impl Handler {
    fn trap(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        let t0 = Instant::now();
        let frame = match vcpu.fault_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                return stop(
                    FaultKind::Exception,
                    None,
                    "the monitor's fault frame is outside guest RAM".into(),
                )
            }
            Err(e) => return stop(FaultKind::EntryFailure, None, format!("reading the fault frame: {e}")),
        };
        if frame.cs & 3 != 3 {
            // Only guest (CPL 3) faults are expected; a fault at CPL 0 is inside the monitor.
            return stop(
                FaultKind::Exception,
                Some(frame.rip),
                format!("fault inside the monitor: {}", frame.describe()),
            );
        }
        let kregs = match vcpu.regs() {
            Ok(r) => r,
            Err(e) => return stop(FaultKind::EntryFailure, None, format!("reading registers: {e}")),
        };
        let cr2 = if frame.vector == PF {
            match vcpu.sregs() {
                Ok(s) => s.cr2,
                Err(e) => return stop(FaultKind::EntryFailure, None, format!("reading CR2: {e}")),
            }
        } else {
            0
        };
        let mut regs = GuestRegs {
            gpr: [
                kregs.rax, kregs.rcx, kregs.rdx, kregs.rbx, frame.rsp, kregs.rbp, kregs.rsi,
                kregs.rdi, kregs.r8, kregs.r9, kregs.r10, kregs.r11, kregs.r12, kregs.r13,
                kregs.r14, kregs.r15,
            ],
            rip: frame.rip,
            rflags: frame.rflags,
            fs_base: 0,
            gs_base: 0,
        };
        let before = regs;
        let info = TrapInfo {
            vector: frame.vector,
            error_code: frame.error_code,
            cr2,
        };
        let handled = {
            let mut p = KvmPlatform {
                vcpu,
                devices: &mut self.devices,
                cpuid: &self.cpuid,
                cr3: &mut self.cr3,
                ram: self.ram,
                flushes: &mut self.flushes,
            };
            self.emu.handle(&info, &mut regs, &mut p)
        };
        let action = match handled.stop {
            Some(o) => Action::Stop(o),
            None => match write_back(vcpu, &frame, &kregs, &before, &regs) {
                Ok(()) => Action::Continue,
                Err(e) => stop(FaultKind::EntryFailure, Some(frame.rip), e),
            },
        };
        self.traps
            .record(&handled.name, t0.elapsed().as_nanos() as u64);
        action
    }
}

/// Writes the emulated state back: changed GPRs into the vCPU (whose RIP/RSP/RFLAGS are
/// the stub's), and RIP, RFLAGS and RSP into the fault frame the stub's IRETQ pops.
fn write_back(
    vcpu: &mut Vcpu<'_>,
    frame: &FaultFrame,
    kregs: &kvm_bindings::kvm_regs,
    before: &GuestRegs,
    after: &GuestRegs,
) -> Result<(), String> {
    let mut gprs_before = before.gpr;
    let mut gprs_after = after.gpr;
    gprs_before[4] = 0;
    gprs_after[4] = 0;
    if gprs_before != gprs_after {
        let g = &after.gpr;
        let mut k = *kregs;
        (k.rax, k.rcx, k.rdx, k.rbx, k.rbp, k.rsi, k.rdi) = (g[0], g[1], g[2], g[3], g[5], g[6], g[7]);
        (k.r8, k.r9, k.r10, k.r11, k.r12, k.r13, k.r14, k.r15) =
            (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        vcpu.set_regs(&k).map_err(|e| e.to_string())?;
    }
    let base = frame.stub_rsp;
    for (off, v) in [(16, after.rip), (32, after.rflags), (40, after.rsp())] {
        vcpu.mem
            .write_obj(v, GuestAddress(base + off))
            .map_err(|e| format!("writing the fault frame: {e}"))?;
    }
    Ok(())
}

impl ExitHandler for Handler {
    fn io_kind(&self, p: u16, write: bool) -> ExitKind {
        match (p, write) {
            (port::FAULT, true) => ExitKind::Trap,
            (_, true) => ExitKind::IoOut,
            (_, false) => ExitKind::IoIn,
        }
    }

    fn before_entry(&mut self, _vcpu: &mut Vcpu<'_>) -> Action {
        // Interrupts are reflected by the VMM when it handles a trap (see the emulator);
        // nothing is injected through KVM.
        Action::Continue
    }

    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, p: u16, _data: &[u8]) -> Action {
        if p == port::FAULT {
            self.trap(vcpu)
        } else {
            // The I/O bitmap denies every port to CPL 3, so only the monitor does I/O.
            no_such_port(p, true)
        }
    }

    fn io_in(&mut self, p: u16, _data: &mut [u8]) -> Action {
        no_such_port(p, false)
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Action {
        self.devices.mmio_read(addr, data)
    }

    fn mmio_write(&mut self, _vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Action {
        self.devices.mmio_write(addr, data)
    }

    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        // HLT at CPL 3 faults; a real halt exit can only come from the monitor.
        self.devices.halt(vcpu)
    }
}

/// The platform over the live vCPU.
struct KvmPlatform<'a, 'b> {
    vcpu: &'a mut Vcpu<'b>,
    devices: &'a mut Devices,
    cpuid: &'a [kvm_cpuid_entry2],
    cr3: &'a mut u64,
    ram: u64,
    flushes: &'a mut u64,
}

impl KvmPlatform<'_, '_> {
    fn walk(&self, gva: u64, write: bool) -> Result<u64, MemError> {
        let mem = self.vcpu.mem;
        let t = translate(*self.cr3, gva, |gpa| mem.read_obj::<u64>(GuestAddress(gpa)).ok())?;
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
            if gpa.saturating_add(n as u64) > self.ram {
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
        match self.devices.io_out(self.vcpu, p, data) {
            None => PortResult::NoDevice,
            Some(Action::Continue) => PortResult::Done,
            Some(Action::Stop(o)) => PortResult::Stop(o),
        }
    }

    fn port_in(&mut self, p: u16, data: &mut [u8]) -> PortResult {
        match self.devices.io_in(p, data) {
            None => PortResult::NoDevice,
            Some(Action::Continue) => PortResult::Done,
            Some(Action::Stop(o)) => PortResult::Stop(o),
        }
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid
            .iter()
            .find(|e| {
                e.function == leaf
                    && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == subleaf)
            })
            .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
    }

    fn flush_tlb(&mut self) -> Result<(), String> {
        // KVM rebuilds its translations when CR3 changes through KVM_SET_SREGS; toggling
        // PCD (a caching hint for the PML4 fetch) changes CR3 without changing the tables.
        let mut s = self.vcpu.sregs().map_err(|e| e.to_string())?;
        s.cr3 ^= CR3_PCD;
        self.vcpu
            .fd
            .set_sregs(&s)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        *self.cr3 = s.cr3;
        *self.flushes += 1;
        Ok(())
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
        let until = due.min(self.vcpu.deadline);
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
        if Instant::now() >= due {
            Wake::TimerDue
        } else {
            Wake::Deadline
        }
    }
}
