//! The vCPU as handlers see it between exits: registers, guest memory, interrupt
//! injection, and the exception frame the monitor's stub leaves on its stack.

use std::time::Instant;

use kvm_bindings::{kvm_interrupt, kvm_regs, kvm_sregs, KVMIO};
use kvm_ioctls::{SyncReg, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use contract::abi;
use contract::Gate;
use contract::{Error, Result};

use crate::kvm;

ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// The vCPU and memory, handed to handlers between exits. Handlers reach the vCPU only
/// through these methods: the machine owns the file descriptor.
#[derive(Debug)]
pub struct Vcpu<'a> {
    fd: &'a mut VcpuFd,
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// When the watchdog will end the run.
    pub deadline: Instant,
    tracing: bool,
    gate: Option<&'a dyn Gate>,
    memory: Option<&'a crate::overcommit::MemoryManager>,
}

impl<'a> Vcpu<'a> {
    pub(crate) fn new(
        fd: &'a mut VcpuFd,
        mem: &'a GuestMemoryMmap,
        deadline: Instant,
        tracing: bool,
        gate: Option<&'a dyn Gate>,
        memory: Option<&'a crate::overcommit::MemoryManager>,
    ) -> Self {
        Vcpu {
            fd,
            mem,
            deadline,
            tracing,
            gate,
            memory,
        }
    }
}

impl Vcpu<'_> {
    /// The machine's memory mechanisms (the balloon device), for a port write an engine
    /// emulates rather than one that exited to the machine.
    pub fn memory(&self) -> Option<&crate::overcommit::MemoryManager> {
        self.memory
    }

    /// Whether the run is traced: handlers describe what they did only then.
    pub fn tracing(&self) -> bool {
        self.tracing
    }

    /// The registers KVM copied into `kvm_run` at this exit (no ioctl). Only valid when
    /// the machine was configured with [`crate::MachineConfig::sync_regs`].
    pub fn synced_regs(&mut self) -> kvm_regs {
        self.fd.sync_regs().regs
    }

    /// Hands `regs` to KVM through `kvm_run`: it loads them at the next entry (no ioctl).
    /// Only valid with [`crate::MachineConfig::sync_regs`].
    pub fn set_synced_regs(&mut self, regs: kvm_regs) {
        self.fd.sync_regs_mut().regs = regs;
        self.fd.set_sync_dirty_reg(SyncReg::Register);
    }

    /// Sets the special registers (a new CR3 makes KVM rebuild its translations).
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd.set_sregs(sregs).map_err(kvm("KVM_SET_SREGS"))
    }

    /// The guest's interrupt flag as KVM reported it at this exit.
    pub fn interrupts_enabled(&mut self) -> bool {
        self.fd.get_kvm_run().if_flag != 0
    }

    /// Sleeps until `until` or until the run's deadline, whichever comes first: the wait
    /// of a halted or blocked guest for its timer. Returns whether `until` was reached.
    /// Under a scheduler ([`contract::RunOptions::gate`]) the vCPU gives up its host CPU
    /// for the wait and asks for it again at the end.
    pub fn wait_until(&self, until: Instant) -> bool {
        let end = until.min(self.deadline);
        if let Some(g) = self.gate {
            g.block();
        }
        let now = Instant::now();
        if end > now {
            std::thread::sleep(end - now);
        }
        if let Some(g) = self.gate {
            g.wake(end);
        }
        until <= self.deadline
    }

    /// General-purpose registers.
    pub fn regs(&self) -> Result<kvm_regs> {
        self.fd.get_regs().map_err(kvm("KVM_GET_REGS"))
    }

    /// Sets general-purpose registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd.set_regs(regs).map_err(kvm("KVM_SET_REGS"))
    }

    /// Special registers.
    pub fn sregs(&self) -> Result<kvm_sregs> {
        self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))
    }

    /// Whether KVM says an interrupt can be injected now.
    pub fn can_inject(&mut self) -> bool {
        let run = self.fd.get_kvm_run();
        run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    /// Asks KVM to exit as soon as the guest can take an interrupt.
    pub fn request_interrupt_window(&mut self, on: bool) {
        self.fd.get_kvm_run().request_interrupt_window = u8::from(on);
    }

    /// Injects an external interrupt (userspace interrupt controller).
    pub fn inject(&self, vector: u8) -> Result<()> {
        let irq = kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads a `kvm_interrupt` from the pointer, which is valid
        // for the call; the fd is an open vCPU.
        let ret = unsafe { ioctl_with_ref(&*self.fd, KVM_INTERRUPT(), &irq) };
        if ret < 0 {
            return Err(Error::Kvm {
                op: "KVM_INTERRUPT",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Reads a u64 of guest memory at a guest-physical address.
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.mem.read_obj(GuestAddress(gpa)).ok()
    }

    /// Reads the exception frame the VMM's fault stub left on the stack.
    pub fn fault_frame(&self) -> Result<Option<FaultFrame>> {
        Ok(FaultFrame::read(self.mem, self.regs()?.rsp))
    }
}

/// An exception frame as the fault stub leaves it: vector, error code, then the CPU's
/// 64-bit interrupt frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultFrame {
    /// RSP inside the stub (address of `vector`).
    pub stub_rsp: u64,
    /// Exception vector.
    pub vector: u8,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// Faulting RIP.
    pub rip: u64,
    /// CS at the fault.
    pub cs: u16,
    /// RFLAGS at the fault.
    pub rflags: u64,
    /// RSP at the fault.
    pub rsp: u64,
    /// SS at the fault.
    pub ss: u16,
}

impl FaultFrame {
    /// Reads the frame at `stub_rsp` (the stub's RSP at its `out`): vector, error code,
    /// then the CPU's frame. `None` if it is not in guest RAM.
    pub fn read(mem: &GuestMemoryMmap, stub_rsp: u64) -> Option<FaultFrame> {
        let mut raw = [0u8; 56];
        mem.read_slice(&mut raw, GuestAddress(stub_rsp)).ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Some(FaultFrame {
            stub_rsp,
            vector: word(0) as u8,
            error_code: word(1),
            rip: word(2),
            cs: word(3) as u16,
            rflags: word(4),
            rsp: word(5),
            ss: word(6) as u16,
        })
    }

    /// Edits the frame the stub's `iretq` pops: the guest resumes at `rip` with `rflags`
    /// and `rsp` (what an emulated instruction or a reflected exception left).
    pub fn set_return(
        &self,
        mem: &GuestMemoryMmap,
        rip: u64,
        rflags: u64,
        rsp: u64,
    ) -> std::result::Result<(), String> {
        // vector, error code, then RIP, CS, RFLAGS, RSP, SS.
        for (word, v) in [(2, rip), (4, rflags), (5, rsp)] {
            let at = self.stub_rsp + word * 8;
            mem.write_obj(v, GuestAddress(at))
                .map_err(|e| format!("editing the fault frame at {at:#x}: {e}"))?;
        }
        Ok(())
    }

    /// One sentence describing the fault.
    pub fn describe(&self) -> String {
        format!(
            "{} at rip {:#x} (error code {:#x}, cs {:#x}, rsp {:#x})",
            abi::vector_name(self.vector),
            self.rip,
            self.error_code,
            self.cs,
            self.rsp
        )
    }
}
