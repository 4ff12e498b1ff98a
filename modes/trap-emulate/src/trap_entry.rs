//! The trap entry: the exit handler that turns each FAULT-port exit into one
//! emulation step on real KVM, through the [`emulator::live`] platform and the
//! monitor's routine ([`monitor::routine`]).

use contract::abi::port;
use contract::x86::vector::PF;
use contract::{FaultKind, Outcome, TraceNote};
use machine::{no_such_port, Action, Devices, ExitHandler, FaultFrame, Handled, Vcpu};

use emulator::live::{regs_at_trap, write_back, KvmPlatform};
use emulator::vcpu::{GuestRegs, VirtualCpu};
use emulator::{Emulator, TrapInfo};
use monitor::routine::Request;

/// The trap-and-emulate exit policy.
#[derive(Debug)]
pub(crate) struct Handler {
    pub devices: Devices,
    pub emu: Emulator,
    pub cpuid: contract::cpuid::CpuidTable,
    /// The real CR3 (the page walks use it).
    pub cr3: u64,
    pub ram: u64,
    /// Whether the run is traced (`Limits::trace_events` > 0).
    pub tracing: bool,
    /// What the last trap did, for the trace.
    pub last: Option<TraceNote>,
    /// The guest's registers after the last trap was handled (what it sees at the end).
    pub last_regs: Option<GuestRegs>,
    /// CPUID faulting and UMIP, as requested and as in effect.
    pub settings: contract::RunSettings,
    /// What the host was measured to do.
    pub caps: &'static contract::caps::Capabilities,
    /// Whether the image executes CPUID (notes about CPUID only then).
    pub uses_cpuid: bool,
    /// Whether the backend emulates the monitor's CPL 0 code.
    pub emulates_kernel_code: bool,
}

fn stop(kind: FaultKind, rip: Option<u64>, detail: String) -> Action {
    Action::Stop(Outcome::GuestFault { kind, rip, detail })
}

/// A trap the monitor could not even read: a trap exit, under no name.
fn unread(action: Action) -> Handled {
    Handled::unnamed_trap(action)
}

impl Handler {
    fn trap(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        // One KVM_GET_REGS serves both the guest's GPRs (the stub only pushes) and the
        // stub's RSP, which locates the frame.
        let kregs = match vcpu.regs() {
            Ok(r) => r,
            Err(e) => return unread(Action::Fail(format!("reading registers: {e}"))),
        };
        let Some(frame) = FaultFrame::read(vcpu.mem, kregs.rsp) else {
            return unread(stop(
                FaultKind::Exception,
                None,
                "the monitor's fault frame is outside guest RAM".into(),
            ));
        };
        if frame.cs & 3 != 3 {
            // Only guest (CPL 3) faults are expected; a fault at CPL 0 is inside the monitor.
            return unread(stop(
                FaultKind::Exception,
                Some(frame.rip),
                format!("fault inside the monitor: {}", frame.describe()),
            ));
        }
        let cr2 = if frame.vector == PF {
            match vcpu.sregs() {
                Ok(s) => s.cr2,
                Err(e) => return unread(Action::Fail(format!("reading CR2: {e}"))),
            }
        } else {
            0
        };
        let mut regs = regs_at_trap(&kregs, &frame);
        let before = regs;
        let info = TrapInfo {
            vector: frame.vector,
            error_code: frame.error_code,
            cr2,
        };
        let traced = self.tracing.then(|| {
            (
                self.emu.cpu.clone(),
                self.emu.injections,
                self.devices.console.len(),
                self.devices.timer.armed(),
            )
        });
        let mut routine = Request::default();
        let mut failed = None;
        // While a shadow is active the VMM reads guest memory through the guest's own
        // tables, with the rights of the guest's current privilege.
        let (walk_root, supervisor) = emulator::live::walk_root(&self.emu, self.cr3);
        let handled = {
            let mut p = KvmPlatform {
                vcpu,
                devices: &mut self.devices,
                cpuid: &self.cpuid,
                cr3: walk_root,
                supervisor,
                ram: self.ram,
                routine: &mut routine,
                failed: &mut failed,
            };
            self.emu.handle(&info, &mut regs, &mut p)
        };
        let stopped = handled.stop.is_some();
        self.last_regs = Some(regs);
        let action = match (failed, handled.stop) {
            (Some(e), _) => Action::Fail(e),
            (None, Some(o)) => Action::Stop(o),
            (None, None) => {
                match write_back(vcpu, &frame, &kregs, &before, &regs, regs.rip, &routine) {
                    Ok(()) => Action::Continue,
                    Err(e) => Action::Fail(e),
                }
            }
        };
        if let Some((cpu, injections, console_len, armed)) = traced {
            let mut changes = describe_changes(&cpu, &self.emu.cpu);
            let written = &self.devices.console.bytes()[console_len..];
            if !written.is_empty() {
                changes.push(format!("console ← {:?}", String::from_utf8_lossy(written)));
            }
            let decoded = decode_at(vcpu, frame.rip);
            let next = decoded.as_ref().map(|(_, len)| frame.rip + *len as u64);
            if !armed && self.devices.timer.armed() {
                changes.push("timer armed".into());
            }
            if self.emu.injections > injections {
                changes.push(format!(
                    "reflected through the guest's IDT to {:#x}",
                    regs.rip
                ));
            } else if Some(regs.rip) != next && !stopped {
                changes.push(format!("resume at {:#x}", regs.rip));
            }
            if changes.is_empty() {
                changes.push(
                    if stopped {
                        "the run ends"
                    } else {
                        "emulated; no virtual-CPU change"
                    }
                    .into(),
                );
            }
            self.last = Some(TraceNote {
                rip: Some(frame.rip),
                instruction: decoded.map(|(text, _)| text),
                event: handled.name.clone(),
                action: changes.join(", "),
            });
        }
        Handled::trap(handled.name, action).noted(self.last.take())
    }
}

/// The virtual-CPU fields that changed, as `vIF 1 → 0`, `CR8 0x3 → 0x4`, ….
fn describe_changes(a: &VirtualCpu, b: &VirtualCpu) -> Vec<String> {
    let mut out = Vec::new();
    if a.vif != b.vif {
        out.push(format!("vIF {} → {}", u8::from(a.vif), u8::from(b.vif)));
    }
    let regs = [
        ("CR0", a.cr0, b.cr0),
        ("CR2", a.cr2, b.cr2),
        ("CR3", a.cr3, b.cr3),
        ("CR4", a.cr4, b.cr4),
        ("CR8", a.cr8, b.cr8),
        ("EFER", a.efer, b.efer),
        ("IDTR.base", a.idtr.base, b.idtr.base),
        ("GDTR.base", a.gdtr.base, b.gdtr.base),
        ("vCPL", u64::from(a.cpl), u64::from(b.cpl)),
    ];
    for (name, x, y) in regs {
        if x != y {
            out.push(format!("{name} {x:#x} → {y:#x}"));
        }
    }
    out
}

/// The instruction at a guest RIP, decoded (Intel syntax), and its length.
fn decode_at(vcpu: &Vcpu<'_>, rip: u64) -> Option<(String, usize)> {
    monitor::decode_at(vcpu.mem, rip).map(|i| (monitor::text_of(&i), i.len()))
}

impl ExitHandler for Handler {
    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, p: u16, _data: &[u8]) -> Handled {
        if p == port::FAULT {
            self.trap(vcpu)
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
        // HLT at CPL 3 faults; a real halt exit can only come from the monitor.
        self.devices.halt(vcpu).into()
    }
}
