//! A VMM-level vCPU scheduler for several VMs on a few host CPUs: at most one running
//! vCPU per host CPU (round-robin with a time slice, or Xen's credit scheduler with
//! weights, caps and a boost on wake-up), or every vCPU thread free for Linux to schedule
//! (the baseline, which still measures wake-up latency).
//!
//! The bookkeeping is [`core::Core`], pure and tested with a fake clock. [`HostScheduler`]
//! drives it: a ticker thread calls [`core::Core::tick`] every millisecond, and each vCPU
//! reaches it through its [`contract::Gate`] ([`HostScheduler::gate`]), which the exit
//! loop consults before every entry. A descheduled vCPU's thread is parked there on a
//! condition variable; a running one that loses its CPU is kicked out of `KVM_RUN` with
//! the watchdog's signal (which sets `immediate_exit`, so the kick is never lost).
//!
//! A vCPU whose thread is metered ([`HostScheduler::meter`]) is charged the CPU time that
//! thread consumed (its `pthread_getcpuclockid` clock, read at every tick), not the time
//! it was granted; the core says why ([`core`]).

pub mod core;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use contract::metrics::Latency;
use contract::{Gate, GateRef, LatencySummary, SchedulerKind};

use crate::watchdog::{self, ThreadHandle};
pub use core::{Core, Priority, State, VcpuSpec, VcpuStats};

/// How often the scheduler charges running vCPUs and checks slices and caps.
pub const TICK: Duration = Duration::from_millis(1);

/// What the scheduler knows about one vCPU at the end.
#[derive(Debug, Clone, Default)]
pub struct VcpuReport {
    /// CPU time granted and preemptions.
    pub stats: VcpuStats,
    /// `KVM_RUN`s that came back because of a kick.
    pub kicked_exits: u64,
    /// Wake-up latencies: from a timer being due to the vCPU running again (`None` if it
    /// never waited).
    pub wake_latency: Option<LatencySummary>,
    /// From the scheduler taking the vCPU's CPU to its thread reaching the gate (where it
    /// stops), wall time: how long a preempted vCPU goes on running (`None`: never
    /// preempted).
    pub stop_latency: Option<LatencySummary>,
    /// CPU time its thread consumed between two runs (from one run's `detach` to the
    /// next one's `attach`: tearing one VM down and building the next), metered vCPUs.
    pub between_runs_cpu: Option<LatencySummary>,
}

#[derive(Debug)]
struct PerVcpu {
    thread: Option<ThreadHandle>,
    /// The CPU clock of its thread while metered.
    clock: Option<libc::clockid_t>,
    due: Option<Instant>,
    wake: Latency,
    kicked_exits: u64,
    /// When the scheduler last took its CPU, until its thread reaches the gate.
    preempted_at: Option<Instant>,
    stop: Latency,
    /// Its thread's CPU clock when its last run detached.
    detached_cpu: Option<u64>,
    between_runs: Latency,
}

impl PerVcpu {
    fn new() -> Self {
        PerVcpu {
            thread: None,
            clock: None,
            due: None,
            wake: Latency::new(),
            kicked_exits: 0,
            preempted_at: None,
            stop: Latency::new(),
            detached_cpu: None,
            between_runs: Latency::new(),
        }
    }

    /// Its thread's CPU time, if metered.
    fn cpu_now(&self) -> Option<u64> {
        self.clock.and_then(read_cpu_clock)
    }
}

/// Reads a thread CPU clock, in nanoseconds (`None` if the clock cannot be read).
fn read_cpu_clock(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec written by the call. The clock is that of a
    // metered thread, which is alive: its `Metered` guard, dropped on that thread,
    // removes the clock under the lock every reader holds.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The CPU clock of the calling thread, readable from other threads while it lives.
fn current_thread_cpu_clock() -> Option<libc::clockid_t> {
    let mut id: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `me` is the live calling thread; `id` is written by the call.
    let r = unsafe { libc::pthread_getcpuclockid(me, &mut id) };
    (r == 0).then_some(id)
}

impl Inner {
    /// Which vCPUs hold a host CPU.
    fn holders(&self) -> Vec<bool> {
        (0..self.vcpus.len())
            .map(|i| self.core.running(i))
            .collect()
    }

    /// Hands the core a reading of every metered thread's CPU clock.
    fn read_meters(&mut self) {
        for id in 0..self.vcpus.len() {
            if let Some(ns) = self.vcpus[id].cpu_now() {
                self.core.used(id, ns);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    core: Core,
    vcpus: Vec<PerVcpu>,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    epoch: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent bookkeeping (every change is
        // one call into the core): carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Kicks the vCPUs the core took a CPU from and wakes the parked threads.
    fn apply(&self, inner: &mut Inner, kicks: &[usize]) {
        let now = Instant::now();
        for &id in kicks {
            inner.vcpus[id].preempted_at.get_or_insert(now);
            if let Some(t) = inner.vcpus[id].thread {
                // The thread is between `attach` and `detach`, which take this lock: it
                // is alive.
                watchdog::kick(t);
            }
        }
        self.changed.notify_all();
    }
}

/// The scheduler of one host-level run. Dropping it stops its ticker.
#[derive(Debug)]
pub struct HostScheduler {
    kind: SchedulerKind,
    shared: Arc<Shared>,
    ticker: Option<JoinHandle<()>>,
}

impl HostScheduler {
    /// A scheduler of `kind` for vCPUs `specs` on `cpus` host CPUs with time slices of
    /// `slice`; every vCPU starts away ([`HostScheduler::join`]).
    pub fn new(
        kind: SchedulerKind,
        cpus: usize,
        slice: Duration,
        specs: &[VcpuSpec],
    ) -> contract::Result<Self> {
        watchdog::install_kick_handler()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                core: Core::new(kind, cpus, slice.as_nanos() as u64, specs),
                vcpus: specs.iter().map(|_| PerVcpu::new()).collect(),
                stop: false,
            }),
            changed: Condvar::new(),
            epoch: Instant::now(),
        });
        let ticker = (kind != SchedulerKind::Linux)
            .then(|| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name("virtlab-sched".into())
                    .spawn(move || ticker(&shared))
                    .map_err(|e| {
                        contract::Error::Watchdog(format!("cannot start the scheduler: {e}"))
                    })
            })
            .transpose()?;
        Ok(HostScheduler {
            kind,
            shared,
            ticker,
        })
    }

    /// Credit scheduler: whether a vCPU in debt takes a CPU no one else wants
    /// ([`Core::set_work_conserving`]).
    pub fn set_work_conserving(&self, on: bool) {
        self.shared.lock().core.set_work_conserving(on);
    }

    /// Which scheduler this is.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// vCPU `id`'s gate, for its runs' [`contract::RunOptions::gate`].
    pub fn gate(&self, id: usize) -> GateRef {
        GateRef(Arc::new(VcpuGate {
            shared: self.shared.clone(),
            id,
        }))
    }

    /// vCPU `id` starts wanting a CPU (its VM starts).
    pub fn join(&self, id: usize) {
        let mut inner = self.shared.lock();
        let kicks = inner.core.join(id, self.shared.now());
        self.shared.apply(&mut inner, &kicks);
    }

    /// vCPU `id` no longer wants one (its VM is done).
    pub fn leave(&self, id: usize) {
        let mut inner = self.shared.lock();
        inner.read_meters();
        let kicks = inner.core.leave(id, self.shared.now());
        self.shared.apply(&mut inner, &kicks);
    }

    /// From now until the guard is dropped, vCPU `id` is charged the CPU time the calling
    /// thread consumes (all of it: its runs, the building of its VMs between them, the
    /// way to the gate after a kick), not the time it is granted. The guard stays on
    /// this thread; without a CPU clock the vCPU stays charged by grant (with a warning).
    pub fn meter(&self, id: usize) -> Metered<'_> {
        let clock = current_thread_cpu_clock();
        let mut inner = self.shared.lock();
        match clock.and_then(|c| read_cpu_clock(c).map(|ns| (c, ns))) {
            Some((clock, ns)) => {
                inner.vcpus[id].clock = Some(clock);
                inner.core.used(id, ns);
            }
            None => tracing::warn!("no CPU clock for vCPU {id}: charged by the time granted"),
        }
        Metered {
            sched: self,
            id,
            _this_thread: std::marker::PhantomData,
        }
    }

    /// What the scheduler knows about each vCPU now.
    pub fn reports(&self) -> Vec<VcpuReport> {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        inner.read_meters();
        let kicks = inner.core.tick(now);
        self.shared.apply(&mut inner, &kicks);
        let summary = |l: &Latency| (!l.is_empty()).then(|| l.summary());
        (0..inner.vcpus.len())
            .map(|id| {
                let v = &inner.vcpus[id];
                VcpuReport {
                    stats: inner.core.stats(id),
                    kicked_exits: v.kicked_exits,
                    wake_latency: summary(&v.wake),
                    stop_latency: summary(&v.stop),
                    between_runs_cpu: summary(&v.between_runs),
                }
            })
            .collect()
    }
}

impl Drop for HostScheduler {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A metered vCPU ([`HostScheduler::meter`]); dropping it (on the metered thread) stops
/// the metering.
#[derive(Debug)]
pub struct Metered<'a> {
    sched: &'a HostScheduler,
    id: usize,
    /// Not `Send`: dropped on the thread whose clock is read, while it is alive.
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl Drop for Metered<'_> {
    fn drop(&mut self) {
        let mut inner = self.sched.shared.lock();
        if let Some(ns) = inner.vcpus[self.id].cpu_now() {
            inner.core.used(self.id, ns);
        }
        inner.vcpus[self.id].clock = None;
        inner.core.unmeter(self.id);
    }
}

fn ticker(shared: &Shared) {
    loop {
        std::thread::park_timeout(TICK);
        let mut inner = shared.lock();
        if inner.stop {
            return;
        }
        inner.read_meters();
        let before = inner.holders();
        let kicks = inner.core.tick(shared.now());
        // A tick may grant a CPU without taking one (a parked vCPU let go at a new
        // period, or no longer held back by a debt): its thread waits at its gate and
        // must hear it.
        if !kicks.is_empty() || inner.holders() != before {
            shared.apply(&mut inner, &kicks);
        }
    }
}

/// One vCPU's hold on the scheduler.
#[derive(Debug)]
struct VcpuGate {
    shared: Arc<Shared>,
    id: usize,
}

impl Gate for VcpuGate {
    fn attach(&self) {
        let mut inner = self.shared.lock();
        let v = &mut inner.vcpus[self.id];
        v.thread = Some(ThreadHandle::current());
        if let (Some(before), Some(now)) = (v.detached_cpu.take(), v.cpu_now()) {
            v.between_runs.record(now.saturating_sub(before));
        }
    }

    fn enter(&self) {
        let mut inner = self.shared.lock();
        if let Some(at) = inner.vcpus[self.id].preempted_at.take() {
            inner.vcpus[self.id]
                .stop
                .record(at.elapsed().as_nanos() as u64);
        }
        while !inner.core.running(self.id) && inner.core.state(self.id) != State::Away {
            inner = self
                .shared
                .changed
                .wait(inner)
                .unwrap_or_else(|p| p.into_inner());
        }
        // Holding the CPU, under the lock: a kick from before (it made this thread stop)
        // is spent; one from after will find the vCPU in KVM_RUN or about to enter it.
        watchdog::clear_kick();
        if let Some(due) = inner.vcpus[self.id].due.take() {
            let late = Instant::now().saturating_duration_since(due);
            inner.vcpus[self.id].wake.record(late.as_nanos() as u64);
        }
    }

    fn preempted(&self) {
        self.shared.lock().vcpus[self.id].kicked_exits += 1;
    }

    fn block(&self) {
        let mut inner = self.shared.lock();
        if let Some(at) = inner.vcpus[self.id].preempted_at.take() {
            inner.vcpus[self.id]
                .stop
                .record(at.elapsed().as_nanos() as u64);
        }
        inner.read_meters();
        let kicks = inner.core.block(self.id, self.shared.now());
        self.shared.apply(&mut inner, &kicks);
    }

    fn wake(&self, due: Instant) {
        let mut inner = self.shared.lock();
        inner.vcpus[self.id].due = Some(due);
        let kicks = inner.core.wake(self.id, self.shared.now());
        self.shared.apply(&mut inner, &kicks);
    }

    fn detach(&self) {
        let mut inner = self.shared.lock();
        let v = &mut inner.vcpus[self.id];
        v.thread = None;
        v.detached_cpu = v.cpu_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descheduled_vcpu_waits_at_its_gate_until_the_cpu_is_free() {
        let s = HostScheduler::new(
            SchedulerKind::RoundRobin,
            1,
            Duration::from_secs(3600),
            &[VcpuSpec::default(); 2],
        )
        .unwrap();
        s.join(0);
        s.join(1);
        let (g0, g1) = (s.gate(0), s.gate(1));
        g0.0.enter(); // holds the one CPU: returns at once
        let entered = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                g1.0.attach();
                g1.0.enter();
                entered.store(true, std::sync::atomic::Ordering::SeqCst);
                g1.0.detach();
            });
            std::thread::sleep(Duration::from_millis(20));
            assert!(!entered.load(std::sync::atomic::Ordering::SeqCst));
            s.leave(0);
        });
        assert!(entered.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn a_vcpu_parked_by_its_cap_hears_the_next_period_let_it_go() {
        // One vCPU, capped at 10 % of one CPU: parked once it has used it, let go by the
        // next period's tick, which takes no one's CPU and so kicks no one: its thread,
        // waiting at the gate, must still hear it.
        let s = HostScheduler::new(
            SchedulerKind::Credit,
            1,
            Duration::from_millis(1),
            &[VcpuSpec { weight: 1, cap: 10 }],
        )
        .unwrap();
        s.join(0);
        let g = s.gate(0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                g.0.enter();
                // Hold the CPU until the scheduler parks the vCPU for its cap.
                while s.reports()[0].stats.preemptions == 0 {
                    std::hint::spin_loop();
                }
                g.0.enter();
                tx.send(()).unwrap();
            });
            // Not a measurement: a guard so that a lost wake-up fails instead of hanging.
            let woke = rx.recv_timeout(Duration::from_secs(10)).is_ok();
            if !woke {
                s.leave(0); // lets the thread out, so the scope can end
            }
            assert!(woke, "the parked vCPU was never let go");
        });
    }

    #[test]
    fn the_linux_baseline_never_parks_and_measures_wake_ups() {
        let s = HostScheduler::new(
            SchedulerKind::Linux,
            1,
            Duration::from_millis(10),
            &[VcpuSpec::default(); 3],
        )
        .unwrap();
        for id in 0..3 {
            s.join(id);
            s.gate(id).0.enter();
        }
        let g = s.gate(2);
        g.0.block();
        g.0.wake(Instant::now());
        g.0.enter();
        let r = s.reports();
        assert_eq!(r[2].wake_latency.as_ref().map(|w| w.count), Some(1));
        assert!(r[0].wake_latency.is_none());
    }
}
