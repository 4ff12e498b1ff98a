//! The exit loop: the one place where every exit is counted and timed, the contract
//! handlers implement ([`ExitHandler`], [`Action`]), and the ways a run ends on a guest's
//! misbehaviour.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use crate::vcpu::Vcpu;
use crate::watchdog;
use contract::abi;
use contract::engine::Limits;
use contract::metrics::ExitMetrics;
use contract::record::{ExitKind, FaultKind, Limit, Outcome};
use contract::trace::{TraceEvent, TraceNote};

/// What a handler tells the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-enter the guest.
    Continue,
    /// End the run.
    Stop(Outcome),
}

/// An engine's reaction to exits. The loop counts and times every exit around these
/// calls; the handlers only decide.
pub trait ExitHandler {
    /// The exit kind an I/O exit on `port` counts as (a hypercall port, a trap port…).
    fn io_kind(&self, port: u16, write: bool) -> ExitKind {
        let _ = port;
        if write {
            ExitKind::IoOut
        } else {
            ExitKind::IoIn
        }
    }
    /// Called before every entry into the guest (for example to inject an interrupt).
    fn before_entry(&mut self, vcpu: &mut Vcpu<'_>) -> Action;
    /// `out` to `port` with `data`.
    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, port: u16, data: &[u8]) -> Action;
    /// `in` from `port`: fill `data`.
    fn io_in(&mut self, port: u16, data: &mut [u8]) -> Action;
    /// Read from MMIO: fill `data`.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Action;
    /// Write to MMIO.
    fn mmio_write(&mut self, vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Action;
    /// `hlt` reached user space.
    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Action;
    /// KVM reports an open interrupt window.
    fn interrupt_window(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        vcpu.request_interrupt_window(false);
        Action::Continue
    }
    /// When tracing, called after each handled exit: what the handler just did.
    fn trace_note(&mut self) -> Option<TraceNote> {
        None
    }
}

/// An exit whose data has been copied out of `kvm_run`, so the handler may use the vCPU.
enum Pending {
    Done(ExitKind, Action),
    IoOut(u16),
    MmioWrite(u64),
    Halt,
    Window,
}

fn rip_of(vcpu: &VcpuFd) -> Option<u64> {
    vcpu.get_regs().ok().map(|r| r.rip)
}

/// Ends the run with a classified guest fault (the loop fills in the RIP when `None`).
pub fn fault(kind: FaultKind, rip: Option<u64>, detail: impl Into<String>) -> Action {
    Action::Stop(Outcome::GuestFault {
        kind,
        rip,
        detail: detail.into(),
    })
}

/// Ends the run because the guest used a port where no device is.
pub fn no_such_port(port: u16, write: bool) -> Action {
    fault(FaultKind::BadDeviceAccess, None, no_device(port, write))
}

/// What a guest did when it used a port where no device is, in one sentence: a
/// paravirtual build's hypercall outside paravirt is named as such.
pub fn no_device(port: u16, write: bool) -> String {
    let dir = if write { "out to" } else { "in from" };
    let gate = abi::hypercall::PORT..abi::hypercall::PORT + abi::hypercall::PORT_SPAN;
    if gate.contains(&port) {
        format!(
            "{dir} port {port:#x}, the paravirtual hypercall gate, in a mode without a \
             hypervisor interface: this is a paravirtual build; run it with --mode paravirt \
             (or build the guest without its pv-ops)"
        )
    } else {
        format!("{dir} port {port:#x}, where there is no device")
    }
}

/// Counts one handled exit: its kind and latencies, and its port when the exit *is* port
/// I/O. A trap's or a hypercall's `out` counts as the trap or the hypercall alone, not as
/// port I/O too.
fn account(
    metrics: &mut ExitMetrics,
    kind: ExitKind,
    io_port: Option<(u16, bool)>,
    round_trip_ns: u64,
    handler_ns: u64,
) {
    if let Some((port, write)) = io_port {
        if kind == ExitKind::IoOut || kind == ExitKind::IoIn {
            metrics.record_port(port, write);
        }
    }
    metrics.record(kind, round_trip_ns, handler_ns);
}

/// The exit loop: one place where every exit is counted and timed.
pub(super) fn exit_loop<H: ExitHandler>(
    fd: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    handler: &mut H,
    limits: &Limits,
    deadline: Instant,
    fired: &AtomicBool,
) -> (Outcome, ExitMetrics, Vec<TraceEvent>) {
    // From here on a kick sets immediate_exit: it cannot slip in before KVM_RUN unseen.
    let _armed = watchdog::arm(fd.get_kvm_run());
    let mut metrics = ExitMetrics::default();
    let mut trace = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if fired.load(Ordering::SeqCst) {
            let rip = rip_of(fd);
            return (
                Outcome::TimedOut {
                    limit: Limit::WallClock,
                    rip,
                },
                metrics,
                trace,
            );
        }
        if metrics.total() >= limits.max_exits {
            let rip = rip_of(fd);
            return (
                Outcome::TimedOut {
                    limit: Limit::ExitCount,
                    rip,
                },
                metrics,
                trace,
            );
        }
        if let Action::Stop(o) = handler.before_entry(&mut Vcpu { fd, mem, deadline }) {
            return (o, metrics, trace);
        }
        let t0 = Instant::now();
        let exit = fd.run();
        let t1 = Instant::now();
        let mut io_port = None;
        let pending = match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                buf.clear();
                buf.extend_from_slice(data);
                Pending::IoOut(port)
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                io_port = Some((port, false));
                Pending::Done(handler.io_kind(port, false), handler.io_in(port, data))
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                Pending::Done(ExitKind::MmioRead, handler.mmio_read(addr, data))
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                buf.clear();
                buf.extend_from_slice(data);
                Pending::MmioWrite(addr)
            }
            Ok(VcpuExit::Hlt) => Pending::Halt,
            Ok(VcpuExit::IrqWindowOpen) => Pending::Window,
            Ok(VcpuExit::Shutdown) => Pending::Done(
                ExitKind::Shutdown,
                fault(
                    FaultKind::Shutdown,
                    None,
                    "triple fault: the guest shut down",
                ),
            ),
            Ok(VcpuExit::FailEntry(reason, _)) => Pending::Done(
                ExitKind::EntryFailure,
                fault(
                    FaultKind::EntryFailure,
                    None,
                    format!("KVM could not enter the guest (hardware reason {reason:#x})"),
                ),
            ),
            Ok(VcpuExit::InternalError) => {
                let run = fd.get_kvm_run();
                // SAFETY: exit_reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active union member.
                let sub = unsafe { run.__bindgen_anon_1.internal.suberror };
                Pending::Done(
                    ExitKind::EntryFailure,
                    fault(
                        FaultKind::KvmInternalError,
                        None,
                        format!(
                            "KVM internal error (suberror {sub}{})",
                            if sub == 1 {
                                ": an instruction KVM cannot emulate"
                            } else {
                                ""
                            }
                        ),
                    ),
                )
            }
            Ok(other) => Pending::Done(
                ExitKind::Other,
                fault(
                    FaultKind::KvmInternalError,
                    None,
                    format!("unexpected exit from KVM: {other:?}"),
                ),
            ),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Pending::Done(ExitKind::Interrupted, Action::Continue)
            }
            Err(e) => Pending::Done(
                ExitKind::EntryFailure,
                fault(
                    FaultKind::EntryFailure,
                    None,
                    format!("KVM_RUN failed: {e}"),
                ),
            ),
        };
        let mut vcpu = Vcpu { fd, mem, deadline };
        let (kind, action) = match pending {
            Pending::Done(kind, action) => (kind, action),
            Pending::IoOut(port) => {
                io_port = Some((port, true));
                (
                    handler.io_kind(port, true),
                    handler.io_out(&mut vcpu, port, &buf),
                )
            }
            Pending::MmioWrite(addr) => (
                ExitKind::MmioWrite,
                handler.mmio_write(&mut vcpu, addr, &buf),
            ),
            Pending::Halt => (ExitKind::Halt, handler.halt(&mut vcpu)),
            Pending::Window => (
                ExitKind::InterruptWindow,
                handler.interrupt_window(&mut vcpu),
            ),
        };
        let t2 = Instant::now();
        let (round_trip_ns, handler_ns) =
            ((t1 - t0).as_nanos() as u64, (t2 - t1).as_nanos() as u64);
        if trace.len() < limits.trace_events {
            trace.push(TraceEvent {
                seq: metrics.total(),
                kind,
                exit_rip: rip_of(fd),
                note: handler.trace_note(),
                round_trip_ns,
                handler_ns,
            });
        }
        account(&mut metrics, kind, io_port, round_trip_ns, handler_ns);
        if let Action::Stop(mut outcome) = action {
            if let Outcome::GuestFault {
                rip: rip @ None, ..
            }
            | Outcome::TimedOut {
                rip: rip @ None, ..
            } = &mut outcome
            {
                *rip = rip_of(fd);
            }
            return (outcome, metrics, trace);
        }
    }
}

/// Reads the guest's fault frame and ends the run with it.
pub fn unhandled_exception(vcpu: &Vcpu<'_>) -> Action {
    match vcpu.fault_frame() {
        Ok(Some(f)) => Action::Stop(Outcome::GuestFault {
            kind: FaultKind::Exception,
            rip: Some(f.rip),
            detail: format!("unhandled exception {}", f.describe()),
        }),
        Ok(None) => fault(
            FaultKind::Exception,
            None,
            "unhandled exception; its frame is outside guest RAM",
        ),
        Err(e) => fault(
            FaultKind::Exception,
            None,
            format!("unhandled exception: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_counts_once_under_what_it_is() {
        let mut m = ExitMetrics::default();
        account(
            &mut m,
            ExitKind::IoOut,
            Some((abi::port::CONSOLE, true)),
            10,
            1,
        );
        account(
            &mut m,
            ExitKind::IoIn,
            Some((abi::port::TIMER, false)),
            10,
            1,
        );
        // The monitor's fault port and the hypercall gate are traps and hypercalls.
        account(
            &mut m,
            ExitKind::Trap,
            Some((abi::port::FAULT, true)),
            10,
            1,
        );
        account(
            &mut m,
            ExitKind::Hypercall,
            Some((abi::hypercall::PORT, true)),
            10,
            1,
        );
        account(&mut m, ExitKind::Halt, None, 10, 1);
        assert_eq!(m.total(), 5);
        for k in [
            ExitKind::IoOut,
            ExitKind::IoIn,
            ExitKind::Trap,
            ExitKind::Hypercall,
            ExitKind::Halt,
        ] {
            assert_eq!(m.count(k), 1, "{k}");
        }
        let ports: Vec<u16> = m.ports().keys().copied().collect();
        assert_eq!(ports, [abi::port::CONSOLE, abi::port::TIMER]);
        assert_eq!(m.ports()[&abi::port::CONSOLE].writes, 1);
        assert_eq!(m.ports()[&abi::port::TIMER].reads, 1);
    }
}
