//! The exit loop: the one place where every exit is classified, counted and timed.
//!
//! It is built from three parts, two of them pure so they are unit-tested with synthetic
//! exits and no `/dev/kvm` (as firecracker tests its `handle_kvm_exit`):
//! - [`classify`] turns what `KVM_RUN` returned into an [`Exit`]: data copied out of
//!   `kvm_run` where the handler may need the vCPU, or the outcome of an exit no handler
//!   sees (shutdown, entry failure, an interrupted run);
//! - [`Tally`] counts each handled exit once, under the kind *and* the name the handler
//!   gave it, times it once (the `KVM_RUN` round trip and the handler), keeps the trace,
//!   and says when a limit ends the run;
//! - the loop itself enters the guest and hands each exit to the engine's [`ExitHandler`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use contract::abi;
use contract::engine::Limits;
use contract::fleet::Gate;
use contract::metrics::{ExitMetrics, NamedCounters};
use contract::record::{ExitKind, FaultKind, Limit, Outcome};
use contract::trace::{TraceEvent, TraceNote};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use crate::vcpu::Vcpu;
use crate::watchdog;

/// What to do after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-enter the guest.
    Continue,
    /// End the run with this outcome (the guest's doing, or a limit).
    Stop(Outcome),
    /// The VMM itself failed (a KVM call, its own memory): the run ends with an `Err`,
    /// never as a guest fault.
    Fail(String),
}

/// What an exit was, as the handler names it: how the machine counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The exit is what KVM says it is (port I/O, MMIO, `hlt`…).
    Exit,
    /// A trap into the monitor, by instruction or exception name (`cli`, `#pf`…), or
    /// unnamed (an exception the monitor reflected or could not read).
    Trap(Option<Cow<'static, str>>),
    /// A hypercall, by name (`console_write`, `rejected:mmu_update`…).
    Hypercall(Cow<'static, str>),
}

/// A handler's answer to one exit: what it was, what to do next, and — when the run is
/// traced — what the handler did, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// What the exit was.
    pub event: Event,
    /// What to do next.
    pub action: Action,
    /// For the trace (only looked at when the run is traced).
    pub note: Option<Box<TraceNote>>,
}

impl Handled {
    /// A trap named `name`.
    pub fn trap(name: impl Into<Cow<'static, str>>, action: Action) -> Self {
        Handled {
            event: Event::Trap(Some(name.into())),
            action,
            note: None,
        }
    }

    /// A trap counted as one, under no name.
    pub fn unnamed_trap(action: Action) -> Self {
        Handled {
            event: Event::Trap(None),
            action,
            note: None,
        }
    }

    /// A hypercall named `name`.
    pub fn hypercall(name: impl Into<Cow<'static, str>>, action: Action) -> Self {
        Handled {
            event: Event::Hypercall(name.into()),
            action,
            note: None,
        }
    }

    /// With a trace note.
    pub fn noted(mut self, note: Option<TraceNote>) -> Self {
        self.note = note.map(Box::new);
        self
    }
}

impl From<Action> for Handled {
    fn from(action: Action) -> Self {
        Handled {
            event: Event::Exit,
            action,
            note: None,
        }
    }
}

/// An engine's reaction to exits. The machine classifies, counts and times every exit
/// around these calls; the handlers decide and name what happened.
pub trait ExitHandler {
    /// Called before every entry into the guest (for example to inject an interrupt).
    fn before_entry(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        let _ = vcpu;
        Action::Continue
    }
    /// `out` to `port` with `data`.
    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, port: u16, data: &[u8]) -> Handled;
    /// `in` from `port`: fill `data`.
    fn io_in(&mut self, port: u16, data: &mut [u8]) -> Handled;
    /// Read from MMIO: fill `data`.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Handled;
    /// Write to MMIO.
    fn mmio_write(&mut self, vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Handled;
    /// `hlt` reached user space.
    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Handled;
    /// KVM reports an open interrupt window.
    fn interrupt_window(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        vcpu.request_interrupt_window(false);
        Action::Continue.into()
    }
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

/// One exit, classified. Data the handler may read while it uses the vCPU is copied out
/// of `kvm_run` (into the loop's buffer); `in` and MMIO-read data stay borrowed, since
/// their handlers fill them without the vCPU.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit<'a> {
    /// `out`; the data is in the loop's buffer.
    IoOut(u16),
    /// `in`: fill the data.
    IoIn(u16, &'a mut [u8]),
    /// MMIO read: fill the data.
    MmioRead(u64, &'a mut [u8]),
    /// MMIO write; the data is in the loop's buffer.
    MmioWrite(u64),
    /// `hlt`.
    Halt,
    /// The interrupt window opened.
    Window,
    /// KVM's internal error; its suberror is read from `kvm_run`.
    InternalError,
    /// An exit no handler sees: counted as `kind`, then `action`.
    Done(ExitKind, Action),
}

/// Classifies what `KVM_RUN` returned, copying `out`/MMIO-write data into `buf`.
pub fn classify<'a>(exit: Result<VcpuExit<'a>, kvm_ioctls::Error>, buf: &mut Vec<u8>) -> Exit<'a> {
    let mut copy = |data: &[u8]| {
        buf.clear();
        buf.extend_from_slice(data);
    };
    match exit {
        Ok(VcpuExit::IoOut(port, data)) => {
            copy(data);
            Exit::IoOut(port)
        }
        Ok(VcpuExit::IoIn(port, data)) => Exit::IoIn(port, data),
        Ok(VcpuExit::MmioRead(addr, data)) => Exit::MmioRead(addr, data),
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            copy(data);
            Exit::MmioWrite(addr)
        }
        Ok(VcpuExit::Hlt) => Exit::Halt,
        Ok(VcpuExit::IrqWindowOpen) => Exit::Window,
        Ok(VcpuExit::InternalError) => Exit::InternalError,
        Ok(VcpuExit::Shutdown) => Exit::Done(
            ExitKind::Shutdown,
            fault(
                FaultKind::Shutdown,
                None,
                "triple fault: the guest shut down",
            ),
        ),
        Ok(VcpuExit::FailEntry(reason, _)) => Exit::Done(
            ExitKind::EntryFailure,
            fault(
                FaultKind::EntryFailure,
                None,
                format!("KVM could not enter the guest (hardware reason {reason:#x})"),
            ),
        ),
        Ok(other) => Exit::Done(
            ExitKind::Other,
            fault(
                FaultKind::KvmInternalError,
                None,
                format!("unexpected exit from KVM: {other:?}"),
            ),
        ),
        // The watchdog's kick (immediate_exit or its signal) or a signal for the VMM.
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            Exit::Done(ExitKind::Interrupted, Action::Continue)
        }
        Err(e) => Exit::Done(
            ExitKind::EntryFailure,
            fault(
                FaultKind::EntryFailure,
                None,
                format!("KVM_RUN failed: {e}"),
            ),
        ),
    }
}

/// The outcome of `KVM_EXIT_INTERNAL_ERROR` with its suberror.
pub fn internal_error(suberror: u32) -> Action {
    fault(
        FaultKind::KvmInternalError,
        None,
        format!(
            "KVM internal error (suberror {suberror}{})",
            if suberror == 1 {
                ": an instruction KVM cannot emulate"
            } else {
                ""
            }
        ),
    )
}

/// Everything counted during a run: exits by kind with their latencies and ports, traps
/// and hypercalls by name with the handler's time, and the trace.
#[derive(Debug, Default)]
pub struct Tally {
    /// Exits by kind, latencies, ports.
    pub metrics: ExitMetrics,
    /// Traps by name.
    pub traps: NamedCounters,
    /// Hypercalls by name.
    pub hypercalls: NamedCounters,
    /// Traced exits.
    pub trace: Vec<TraceEvent>,
}

/// Where a port-I/O exit went, for the port counts.
pub type PortAccess = Option<(u16, bool)>;

impl Tally {
    /// The limit that ends the run before the next entry, if one does.
    pub fn limit_reached(&self, limits: &Limits, watchdog_fired: bool) -> Option<Limit> {
        if watchdog_fired {
            Some(Limit::WallClock)
        } else if self.metrics.total() >= limits.max_exits {
            Some(Limit::ExitCount)
        } else {
            None
        }
    }

    /// Counts one handled exit once: under the handler's event when it names one (a
    /// trap's or a hypercall's `out` is not port I/O too), else under the exit's own
    /// kind with its port.
    pub fn count(
        &mut self,
        exit_kind: ExitKind,
        event: &Event,
        port: PortAccess,
        round_trip_ns: u64,
        handler_ns: u64,
    ) -> ExitKind {
        let kind = match event {
            Event::Exit => {
                if let Some((p, write)) = port {
                    self.metrics.record_port(p, write);
                }
                exit_kind
            }
            Event::Trap(name) => {
                if let Some(name) = name {
                    self.traps.record(name, handler_ns);
                }
                ExitKind::Trap
            }
            Event::Hypercall(name) => {
                self.hypercalls.record(name, handler_ns);
                ExitKind::Hypercall
            }
        };
        self.metrics.record(kind, round_trip_ns, handler_ns);
        kind
    }

    /// Keeps one traced exit, while the trace has room.
    pub fn trace(&mut self, limits: &Limits, event: impl FnOnce(u64) -> TraceEvent) {
        if self.trace.len() < limits.trace_events {
            let seq = self.metrics.total();
            self.trace.push(event(seq));
        }
    }
}

fn rip_of(vcpu: &VcpuFd) -> Option<u64> {
    vcpu.get_regs().ok().map(|r| r.rip)
}

/// An exit whose `kvm_run` data is no longer borrowed.
enum Step {
    Handled(ExitKind, PortAccess, Handled),
    InternalError,
    IoOut(u16),
    MmioWrite(u64),
    Halt,
    Window,
}

/// How the exit loop ended: the outcome, or the VMM's own failure.
pub(crate) type Ended = Result<Outcome, String>;

/// The exit loop: enter, classify, hand to the handler, count — until a handler or a
/// limit ends the run.
#[allow(clippy::too_many_arguments)]
pub(crate) fn exit_loop<H: ExitHandler>(
    fd: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    handler: &mut H,
    limits: &Limits,
    deadline: Instant,
    fired: &AtomicBool,
    sync_regs: bool,
    tally: &mut Tally,
    gate: Option<&dyn Gate>,
    memory: Option<&crate::overcommit::MemoryManager>,
) -> Ended {
    // From here on a kick sets immediate_exit: it cannot slip in before KVM_RUN unseen.
    let _armed = watchdog::arm(fd.get_kvm_run());
    let tracing = limits.trace_events > 0;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if let Some(limit) = tally.limit_reached(limits, fired.load(Ordering::SeqCst)) {
            return Ok(Outcome::TimedOut {
                limit,
                rip: rip_of(fd),
            });
        }
        if sync_regs {
            // Have KVM hand the registers over in `kvm_run` at the next exit.
            fd.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
        }
        if let Some(g) = gate {
            // Parked here while the scheduler has given the CPU to another; then the
            // limits again, since the wait may have been long (and may have spent a
            // watchdog kick: its flag is set before it kicks).
            g.enter();
            if let Some(limit) = tally.limit_reached(limits, fired.load(Ordering::SeqCst)) {
                return Ok(Outcome::TimedOut {
                    limit,
                    rip: rip_of(fd),
                });
            }
        }
        let mut vcpu = Vcpu::new(fd, mem, deadline, tracing, gate, memory);
        match handler.before_entry(&mut vcpu) {
            Action::Continue => {}
            Action::Stop(o) => return Ok(o),
            Action::Fail(e) => return Err(e),
        }
        let t0 = Instant::now();
        let exit = fd.run();
        let t1 = Instant::now();
        // First what needs `kvm_run`'s data in place, then (the borrow over) what needs
        // the vCPU.
        let step = match classify(exit, &mut buf) {
            Exit::IoIn(p, data) => {
                Step::Handled(ExitKind::IoIn, Some((p, false)), handler.io_in(p, data))
            }
            Exit::MmioRead(addr, data) => {
                Step::Handled(ExitKind::MmioRead, None, handler.mmio_read(addr, data))
            }
            Exit::Done(kind, action) => Step::Handled(kind, None, action.into()),
            Exit::InternalError => Step::InternalError,
            Exit::IoOut(p) => Step::IoOut(p),
            Exit::MmioWrite(addr) => Step::MmioWrite(addr),
            Exit::Halt => Step::Halt,
            Exit::Window => Step::Window,
        };
        let (exit_kind, port, handled) = match step {
            Step::Handled(kind, port, handled) => (kind, port, handled),
            Step::InternalError => {
                // SAFETY: exit_reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active union member.
                let sub = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                (ExitKind::EntryFailure, None, internal_error(sub).into())
            }
            Step::IoOut(p) => (
                ExitKind::IoOut,
                Some((p, true)),
                // The balloon is the machine's device, the same in every mode.
                match memory.filter(|_| crate::overcommit::MemoryManager::claims(p)) {
                    Some(m) => m.io_out(p, &buf).into(),
                    None => handler.io_out(
                        &mut Vcpu::new(fd, mem, deadline, tracing, gate, memory),
                        p,
                        &buf,
                    ),
                },
            ),
            Step::MmioWrite(addr) => (
                ExitKind::MmioWrite,
                None,
                handler.mmio_write(
                    &mut Vcpu::new(fd, mem, deadline, tracing, gate, memory),
                    addr,
                    &buf,
                ),
            ),
            Step::Halt => (
                ExitKind::Halt,
                None,
                handler.halt(&mut Vcpu::new(fd, mem, deadline, tracing, gate, memory)),
            ),
            Step::Window => (
                ExitKind::InterruptWindow,
                None,
                handler.interrupt_window(&mut Vcpu::new(fd, mem, deadline, tracing, gate, memory)),
            ),
        };
        let t2 = Instant::now();
        if let Some(g) = gate {
            // The scheduler's kick is not the guest's exit: not counted, not traced.
            if exit_kind == ExitKind::Interrupted && !fired.load(Ordering::SeqCst) {
                g.preempted();
                continue;
            }
        }
        let (round_trip_ns, handler_ns) =
            ((t1 - t0).as_nanos() as u64, (t2 - t1).as_nanos() as u64);
        let Handled {
            event,
            action,
            note,
        } = handled;
        if tracing {
            let kind = match &event {
                Event::Exit => exit_kind,
                Event::Trap(_) => ExitKind::Trap,
                Event::Hypercall(_) => ExitKind::Hypercall,
            };
            let exit_rip = rip_of(fd);
            tally.trace(limits, |seq| TraceEvent {
                seq,
                kind,
                exit_rip,
                note: note.map(|n| *n),
                round_trip_ns,
                handler_ns,
            });
        }
        tally.count(exit_kind, &event, port, round_trip_ns, handler_ns);
        match action {
            Action::Continue => {}
            Action::Fail(e) => return Err(e),
            Action::Stop(mut outcome) => {
                if let Outcome::GuestFault {
                    rip: rip @ None, ..
                }
                | Outcome::TimedOut {
                    rip: rip @ None, ..
                } = &mut outcome
                {
                    *rip = rip_of(fd);
                }
                return Ok(outcome);
            }
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
        Err(e) => Action::Fail(format!("reading the fault frame: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn errno(n: i32) -> kvm_ioctls::Error {
        kvm_ioctls::Error::new(n)
    }

    #[test]
    fn classify_copies_what_handlers_read_with_the_vcpu() {
        let mut buf = Vec::new();
        assert_eq!(
            classify(Ok(VcpuExit::IoOut(0xE9, b"hi")), &mut buf),
            Exit::IoOut(0xE9)
        );
        assert_eq!(buf, b"hi");
        assert_eq!(
            classify(
                Ok(VcpuExit::MmioWrite(0xD000_0000, &[1, 2, 3, 4])),
                &mut buf
            ),
            Exit::MmioWrite(0xD000_0000)
        );
        assert_eq!(buf, [1, 2, 3, 4]);
        let mut data = [0u8; 4];
        assert!(matches!(
            classify(Ok(VcpuExit::IoIn(0x40, &mut data)), &mut buf),
            Exit::IoIn(0x40, d) if d.len() == 4
        ));
        assert_eq!(classify(Ok(VcpuExit::Hlt), &mut buf), Exit::Halt);
        assert_eq!(
            classify(Ok(VcpuExit::IrqWindowOpen), &mut buf),
            Exit::Window
        );
        assert_eq!(
            classify(Ok(VcpuExit::InternalError), &mut buf),
            Exit::InternalError
        );
    }

    #[test]
    fn classify_ends_the_run_on_exits_no_handler_sees() {
        let mut buf = Vec::new();
        let fault_kind = |e: Exit<'_>| match e {
            Exit::Done(kind, Action::Stop(Outcome::GuestFault { kind: f, .. })) => (kind, f),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fault_kind(classify(Ok(VcpuExit::Shutdown), &mut buf)),
            (ExitKind::Shutdown, FaultKind::Shutdown)
        );
        assert_eq!(
            fault_kind(classify(Ok(VcpuExit::FailEntry(0x21, 0)), &mut buf)),
            (ExitKind::EntryFailure, FaultKind::EntryFailure)
        );
        assert_eq!(
            fault_kind(classify(Ok(VcpuExit::Debug(Default::default())), &mut buf)),
            (ExitKind::Other, FaultKind::KvmInternalError)
        );
        assert_eq!(
            fault_kind(classify(Err(errno(libc::EFAULT)), &mut buf)),
            (ExitKind::EntryFailure, FaultKind::EntryFailure)
        );
        // A kick is not a fault: the loop re-enters (and then sees the limit).
        for e in [libc::EINTR, libc::EAGAIN] {
            assert_eq!(
                classify(Err(errno(e)), &mut buf),
                Exit::Done(ExitKind::Interrupted, Action::Continue)
            );
        }
        let Action::Stop(Outcome::GuestFault { detail, .. }) = internal_error(1) else {
            panic!()
        };
        assert!(detail.contains("cannot emulate"), "{detail}");
    }

    #[test]
    fn an_exit_counts_once_under_what_the_handler_says_it_is() {
        let mut t = Tally::default();
        let console = Some((abi::port::CONSOLE, true));
        assert_eq!(
            t.count(ExitKind::IoOut, &Event::Exit, console, 10, 1),
            ExitKind::IoOut
        );
        t.count(
            ExitKind::IoIn,
            &Event::Exit,
            Some((abi::port::TIMER, false)),
            10,
            1,
        );
        // The monitor's fault port and the hypercall gate are traps and hypercalls.
        assert_eq!(
            t.count(
                ExitKind::IoOut,
                &Event::Trap(Some("cli".into())),
                Some((abi::port::FAULT, true)),
                10,
                7
            ),
            ExitKind::Trap
        );
        t.count(
            ExitKind::IoOut,
            &Event::Trap(Some("cli".into())),
            Some((abi::port::FAULT, true)),
            10,
            9,
        );
        t.count(
            ExitKind::IoOut,
            &Event::Hypercall("console_write".into()),
            Some((abi::hypercall::PORT, true)),
            10,
            3,
        );
        t.count(ExitKind::Halt, &Event::Exit, None, 10, 1);
        // An unnamed trap is a trap exit, under no name.
        t.count(ExitKind::IoOut, &Event::Trap(None), None, 10, 1);
        assert_eq!(t.metrics.total(), 7);
        assert_eq!(t.metrics.count(ExitKind::IoOut), 1);
        assert_eq!(t.metrics.count(ExitKind::IoIn), 1);
        assert_eq!(t.metrics.count(ExitKind::Trap), 3);
        assert_eq!(t.traps.counts().len(), 1);
        assert_eq!(t.metrics.count(ExitKind::Hypercall), 1);
        assert_eq!(t.metrics.count(ExitKind::Halt), 1);
        let ports: Vec<u16> = t.metrics.ports().keys().copied().collect();
        assert_eq!(ports, [abi::port::CONSOLE, abi::port::TIMER]);
        assert_eq!(t.traps.counts()["cli"], 2);
        assert_eq!(t.hypercalls.counts()["console_write"], 1);
        // Timed once, by the machine: the handler's time is the event's time.
        assert_eq!(t.traps.summaries()["cli"].count, 2);
        assert_eq!(t.traps.summaries()["cli"].max, 9);
    }

    #[test]
    fn limits_end_the_run_before_the_next_entry() {
        let limits = Limits {
            wall: Duration::from_secs(1),
            max_exits: 2,
            max_console_bytes: 16,
            trace_events: 1,
        };
        let mut t = Tally::default();
        assert_eq!(t.limit_reached(&limits, false), None);
        assert_eq!(t.limit_reached(&limits, true), Some(Limit::WallClock));
        for _ in 0..2 {
            t.trace(&limits, |seq| TraceEvent {
                seq,
                kind: ExitKind::Halt,
                exit_rip: None,
                note: None,
                round_trip_ns: 1,
                handler_ns: 1,
            });
            t.count(ExitKind::Halt, &Event::Exit, None, 1, 1);
        }
        assert_eq!(t.limit_reached(&limits, false), Some(Limit::ExitCount));
        // The trace keeps only as many exits as asked for.
        assert_eq!(t.trace.len(), 1);
        assert_eq!(t.trace[0].seq, 0);
    }
}
