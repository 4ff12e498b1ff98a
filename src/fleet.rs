//! Many VMs at once: one thread per VM, each running its VM's job again and again (a set
//! number of times, or until the measured window ends), all pinned to the same few host
//! CPUs and scheduled by Linux or by the VMM ([`machine::sched::HostScheduler`]). Every
//! run keeps its own record, judged as always; the host-level record says what each VM
//! got of the CPUs.
//!
//! A VM whose guest faults, or whose run the VMM cannot carry out, is one VM's record or
//! failure: the other threads go on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use contract::fleet::jain_index;
use contract::{HostRecord, RunOptions, RunRecord, SchedulerKind, VmShare};
use machine::sched::{HostScheduler, VcpuSpec};
use reports::RunFailure;

use crate::harness::{run_job, Job};
use crate::images::Images;

/// Most runs one VM makes in a timed window (a VM whose runs fail at once stops there).
pub const MAX_RUNS_PER_VM: u32 = 10_000;

/// The host of a run of several VMs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    /// Host CPUs the vCPU threads are pinned to (the first ones this process may use).
    pub cpus: u32,
    /// Who schedules the vCPUs.
    pub scheduler: SchedulerKind,
    /// Time slice of the VMM schedulers, in milliseconds.
    pub slice_ms: u32,
    /// The measured window, in seconds: every VM repeats its job until it ends. `None`:
    /// every VM runs its job `runs` times and the window is the whole run.
    pub duration_s: Option<f64>,
    /// Runs per VM when there is no window.
    pub runs: u32,
    /// How far a share may be from its weight's part, relative to it.
    pub tolerance: f64,
    /// Credit scheduler: whether a vCPU in debt takes a CPU no one else wants (Xen's
    /// default) or waits for the next accounting period, leaving the CPU to the host's
    /// other processes ([`machine::sched::Core::set_work_conserving`]).
    pub work_conserving: bool,
    /// Switch Linux KSM on for the run (its settings restored afterwards) and mark every
    /// guest's RAM mergeable.
    pub ksm: bool,
    /// A budget for all guests' RAM, in MiB, split evenly among the VMs: each VM's host
    /// swapping keeps at most its part resident.
    pub memory_budget_mib: Option<u64>,
}

impl Default for HostSpec {
    fn default() -> Self {
        HostSpec {
            cpus: 2,
            scheduler: SchedulerKind::Linux,
            slice_ms: 10,
            duration_s: None,
            runs: 1,
            tolerance: 0.1,
            work_conserving: true,
            ksm: false,
            memory_budget_mib: None,
        }
    }
}

/// One VM: its job (the repeat index is counted up run by run), weight and cap.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Its name in the run.
    pub name: String,
    /// What it runs.
    pub job: Job,
    /// Weight (credit scheduler).
    pub weight: u32,
    /// Cap in percent of one host CPU (credit scheduler; 0: none).
    pub cap: u32,
    /// Wall-clock limit of each of this VM's runs, in place of the run options' one
    /// (`None`: the run options' limit). A tight limit for a hostile VM leaves the quiet
    /// ones the time a loaded host may need.
    pub wall: Option<Duration>,
}

/// What a run of several VMs made.
#[derive(Debug)]
pub struct FleetDone {
    /// Every VM's records, VM after VM, in run order.
    pub records: Vec<RunRecord>,
    /// Runs the VMM could not carry out.
    pub failures: Vec<RunFailure>,
    /// The host-level record.
    pub host: HostRecord,
}

/// What one VM's thread made.
#[derive(Debug, Default)]
struct VmDone {
    records: Vec<RunRecord>,
    failures: Vec<RunFailure>,
    runs: u32,
}

/// Runs `vms` at once on `host`, each run with `opts` (and the VM's gate). `Err` when the
/// scheduler cannot start.
pub fn run_fleet(
    host: &HostSpec,
    vms: &[VmSpec],
    opts: &RunOptions,
) -> contract::Result<FleetDone> {
    let specs: Vec<VcpuSpec> = vms
        .iter()
        .map(|v| VcpuSpec {
            weight: v.weight.max(1),
            cap: v.cap,
        })
        .collect();
    let sched = HostScheduler::new(
        host.scheduler,
        host.cpus as usize,
        Duration::from_millis(u64::from(host.slice_ms.max(1))),
        &specs,
    )?;
    sched.set_work_conserving(host.work_conserving);
    let cpus = host_cpus(host.cpus as usize);
    let k = vms.len();
    let (opts, mut memory, ksm) = crate::fleet_memory::prepare(host, k, opts);
    let opts = &opts;
    let sampling = AtomicBool::new(true);
    let started = Barrier::new(k + 1);
    let finished = Barrier::new(k + 1);
    let released = Barrier::new(k + 1);
    let stop = AtomicBool::new(false);
    let clocks: Vec<std::sync::OnceLock<libc::clockid_t>> =
        (0..k).map(|_| std::sync::OnceLock::new()).collect();
    let (done, wall_ns, cpu, granted, timeline) = std::thread::scope(|s| {
        let threads: Vec<_> = vms
            .iter()
            .enumerate()
            .map(|(id, vm)| {
                let (sched, cpus, clocks) = (&sched, &cpus, &clocks);
                let (started, finished, released, stop) = (&started, &finished, &released, &stop);
                let mut opts = opts.clone();
                opts.gate = Some(sched.gate(id));
                if let Some(wall) = vm.wall {
                    opts.limits.wall = wall;
                }
                s.spawn(move || {
                    pin_to(cpus);
                    let _ = clocks[id].set(thread_cpu_clock());
                    // Charged what this thread consumes, whatever it was granted.
                    let _metered = sched.meter(id);
                    let mut images = Images::for_jobs(std::slice::from_ref(&vm.job));
                    sched.join(id);
                    started.wait();
                    let mut done = VmDone::default();
                    loop {
                        let job = Job {
                            repeat: done.runs,
                            ..vm.job.clone()
                        };
                        // Building the next VM is this VM's work too: it waits for its
                        // CPU as its guest does, so the time goes to its share, not to
                        // the CPU of one the scheduler chose.
                        if let Some(g) = &opts.gate {
                            g.0.enter();
                        }
                        match run_job(&job, &mut images, &opts) {
                            Ok(r) => done.records.push(r),
                            Err(f) => done.failures.push(f),
                        }
                        done.runs += 1;
                        let more = match host.duration_s {
                            Some(_) => !stop.load(Ordering::SeqCst) && done.runs < MAX_RUNS_PER_VM,
                            None => done.runs < host.runs,
                        };
                        if !more {
                            break;
                        }
                    }
                    sched.leave(id);
                    finished.wait();
                    // Alive until the main thread has read this thread's CPU clock.
                    released.wait();
                    done
                })
            })
            .collect();
        started.wait();
        let t0 = Instant::now();
        let (running, session, vm_clocks) = (&sampling, &ksm, &clocks);
        let want_memory = memory.is_some();
        let sampler = s.spawn(move || {
            crate::fleet_memory::sample(running, want_memory, session.as_ref(), &|| {
                read_clocks(vm_clocks)
            })
        });
        let cpu0 = read_clocks(&clocks);
        let sched0 = sched.reports();
        let (wall, cpu1, sched1) = match host.duration_s {
            Some(d) => {
                std::thread::sleep(Duration::from_secs_f64(d));
                let r = (t0.elapsed(), read_clocks(&clocks), sched.reports());
                stop.store(true, Ordering::SeqCst);
                finished.wait();
                r
            }
            None => {
                finished.wait();
                (t0.elapsed(), read_clocks(&clocks), sched.reports())
            }
        };
        sampling.store(false, Ordering::SeqCst);
        // The sampler reads the VM threads' clocks: done before they are released.
        let (samples, timeline) = sampler.join().unwrap_or_default();
        released.wait();
        let done: Vec<VmDone> = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect();
        if let Some(m) = memory.as_mut() {
            m.ksm_peak = samples
                .iter()
                .map(|s| (s.pages_shared, s.pages_sharing))
                .max_by_key(|p| p.1)
                .unwrap_or_default();
            m.samples = samples;
        }
        let cpu: Vec<u64> = cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).collect();
        let granted: Vec<(u64, u64)> = sched1
            .iter()
            .zip(&sched0)
            .map(|(b, a)| {
                (
                    b.stats.ran_ns - a.stats.ran_ns,
                    b.stats.overrun_ns - a.stats.overrun_ns,
                )
            })
            .collect();
        (done, wall.as_nanos() as u64, cpu, granted, timeline)
    });
    let reports = sched.reports();
    let total_cpu: u64 = cpu.iter().sum();
    let total_weight: u64 = vms.iter().map(|v| u64::from(v.weight.max(1))).sum();
    let mut shares = Vec::with_capacity(k);
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for (id, (vm, d)) in vms.iter().zip(done).enumerate() {
        let share = if total_cpu == 0 {
            0.0
        } else {
            cpu[id] as f64 / total_cpu as f64
        };
        shares.push(VmShare {
            name: vm.name.clone(),
            workload: vm.job.guest.name().to_string(),
            mode: vm.job.mode,
            weight: vm.weight.max(1),
            cap: vm.cap,
            runs: d.runs,
            cpu_ns: cpu[id],
            granted_ns: if host.scheduler == SchedulerKind::Linux {
                0
            } else {
                granted[id].0
            },
            overrun_ns: if host.scheduler == SchedulerKind::Linux {
                0
            } else {
                granted[id].1
            },
            stop_latency_ns: reports[id].stop_latency.clone(),
            between_runs_cpu_ns: reports[id].between_runs_cpu.clone(),
            share,
            target: f64::from(vm.weight.max(1)) / total_weight as f64,
            preemptions: reports[id].stats.preemptions,
            wake_latency_ns: reports[id].wake_latency.clone(),
        });
        records.extend(d.records);
        failures.extend(d.failures);
    }
    let normalised: Vec<f64> = shares.iter().map(|v| v.share / v.target).collect();
    let fairness = jain_index(&normalised);
    Ok(FleetDone {
        records,
        failures,
        host: HostRecord {
            scheduler: host.scheduler,
            cpus: host.cpus,
            slice_ms: host.slice_ms,
            wall_ns,
            vms: shares,
            fairness,
            tolerance: host.tolerance,
            work_conserving: host.work_conserving || host.scheduler != SchedulerKind::Credit,
            memory,
            timeline,
        },
    })
}

/// The first `n` CPUs this process may run on.
fn host_cpus(n: usize) -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given, written by the call.
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, inside the set.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .take(n)
        .collect()
}

/// Pins the calling thread to `cpus` (a failure leaves it where it was, with a warning).
fn pin_to(cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` came from a cpu_set_t, so it is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        tracing::warn!(
            "cannot pin a VM thread to CPUs {cpus:?}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The CPU-time clock of the calling thread, readable from other threads while it lives.
fn thread_cpu_clock() -> libc::clockid_t {
    let mut id: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `me` is the live calling thread; `id` is written by the call.
    let r = unsafe { libc::pthread_getcpuclockid(me, &mut id) };
    if r != 0 {
        tracing::warn!("no CPU clock for a VM thread (error {r})");
    }
    id
}

/// CPU time of every VM thread, in nanoseconds (0 for a thread without a clock). The
/// threads are alive: they wait at a barrier only the caller releases.
fn read_clocks(clocks: &[std::sync::OnceLock<libc::clockid_t>]) -> Vec<u64> {
    clocks
        .iter()
        .map(|c| {
            let Some(&clock) = c.get() else { return 0 };
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec written by the call; `clock` is the CPU
            // clock of a thread that is still alive.
            let r = unsafe { libc::clock_gettime(clock, &mut ts) };
            if r != 0 {
                return 0;
            }
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        })
        .collect()
}
