//! Memory of a run of several VMs: KSM switched on for the run (and put back), each VM's
//! part of the memory budget for host swapping, and the host's resident memory and KSM's
//! counters sampled over the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use contract::fleet::CpuSample;
use contract::overcommit::{HostMemory, MemorySample};
use contract::RunOptions;
use machine::overcommit::ksm::KsmSession;

use crate::fleet::HostSpec;

/// How often the host's memory is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// KSM's scan rate during a run: pages per wake-up, and the sleep between wake-ups
/// (fast enough to merge a few guests' RAM in about a second).
pub const KSM_RATE: (u64, u64) = (4000, 20);

/// Every VM's options for `host` with `k` VMs, the host-level memory record to fill in
/// (resident memory is sampled in every run of several VMs), and the KSM session (held
/// for the run; dropping it restores KSM's settings).
pub fn prepare(
    host: &HostSpec,
    k: usize,
    opts: &RunOptions,
) -> (RunOptions, Option<HostMemory>, Option<KsmSession>) {
    let mut opts = opts.clone();
    let mut memory = HostMemory::default();
    let mut session = None;
    if host.ksm {
        opts.memory.mergeable = true;
        match KsmSession::start(KSM_RATE.0, KSM_RATE.1) {
            Ok(s) => {
                session = Some(s);
                memory.ksm = Some(true);
            }
            Err(e) => {
                memory.ksm = Some(false);
                memory.unavailable.push(format!(
                    "page sharing: this host does not let KSM be switched on ({e})"
                ));
            }
        }
    }
    if let Some(mib) = host.memory_budget_mib {
        let pages = (mib << 20) / contract::abi::PAGE_SIZE / (k.max(1) as u64);
        opts.memory.swap_budget_pages = Some(pages.max(1));
        memory.budget_pages_per_vm = Some(pages.max(1));
        if let Err(e) = machine::overcommit::swap::probe() {
            memory
                .unavailable
                .push(format!("host swapping: userfaultfd unavailable ({e})"));
        } else if let Err(e) = machine::overcommit::probe::kvm_faults_through_userfaultfd() {
            // Swapping stays correct (only pages the handler filled are evicted) but
            // cannot see the guest's own touches.
            memory.unavailable.push(format!("host swapping: {e}"));
        }
    }
    (opts, Some(memory), session)
}

/// Samples the host's memory (when `memory` is asked for) and every VM's CPU time
/// (`cpu`, cumulative ns) every [`SAMPLE_EVERY`] while `running` holds; the CPU times from
/// the first sample on.
pub fn sample(
    running: &AtomicBool,
    memory: bool,
    ksm: Option<&KsmSession>,
    cpu: &dyn Fn() -> Vec<u64>,
) -> (Vec<MemorySample>, Vec<CpuSample>) {
    let t0 = Instant::now();
    let cpu0 = cpu();
    let (mut mem, mut cpus) = (Vec::new(), Vec::new());
    while running.load(Ordering::SeqCst) {
        let t_ms = t0.elapsed().as_millis() as u64;
        cpus.push(CpuSample {
            t_ms,
            cpu_ns: cpu()
                .iter()
                .zip(&cpu0)
                .map(|(b, a)| b.saturating_sub(*a))
                .collect(),
        });
        if memory {
            let k = ksm.and_then(|s| s.counters().ok()).unwrap_or_default();
            mem.push(MemorySample {
                t_ms,
                rss_anon_kib: rss_anon_kib().unwrap_or(0),
                pages_shared: k.pages_shared,
                pages_sharing: k.pages_sharing,
            });
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    (mem, cpus)
}

/// This process's `RssAnon` from `/proc/self/status`, in KiB.
pub fn rss_anon_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The memory lines of the host-level summary: page sharing, the balloon, swapping, and
/// how long a run took on average (the guests' speed).
pub fn summary(host: &HostMemory, records: &[contract::RunRecord]) -> String {
    use std::fmt::Write;
    let mut out = String::from("memory\n");
    let peak_rss = host
        .samples
        .iter()
        .map(|s| s.rss_anon_kib)
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "  resident (RssAnon) peak {:.1} MiB over {} samples",
        peak_rss as f64 / 1024.0,
        host.samples.len()
    );
    match host.ksm {
        Some(true) => {
            let (shared, sharing) = host.ksm_peak;
            let _ = writeln!(
                out,
                "  KSM: at most {shared} pages shared by {sharing} sites: {:.1} MiB saved",
                (sharing * 4) as f64 / 1024.0
            );
        }
        Some(false) => out.push_str("  KSM: unavailable on this host\n"),
        None => {}
    }
    let mems: Vec<_> = records.iter().filter_map(|r| r.memory.as_ref()).collect();
    let inflated: u64 = mems.iter().map(|m| m.balloon.inflated).sum();
    let dropped: u64 = mems.iter().filter_map(|m| m.balloon.resident_drop()).sum();
    if inflated > 0 {
        let _ = writeln!(
            out,
            "  balloon: {inflated} pages inflated, resident fell by {dropped} pages at the peaks"
        );
    }
    if let Some(b) = host.budget_pages_per_vm {
        let swaps: Vec<_> = mems.iter().filter_map(|m| m.swap.as_ref()).collect();
        let ins: u64 = swaps.iter().map(|s| s.page_ins).sum();
        let outs: u64 = swaps.iter().map(|s| s.page_outs).sum();
        let max = swaps.iter().map(|s| s.max_resident).max().unwrap_or(0);
        let p50 = swaps
            .iter()
            .filter(|s| s.page_in_ns.count > 0)
            .map(|s| s.page_in_ns.p50)
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "  swapping: budget {b} pages per VM (max resident {max}); {outs} page-outs, {ins} page-ins (p50 page-in ≤ {:.1} µs)",
            p50 as f64 / 1000.0
        );
    }
    if !records.is_empty() {
        let mean = records.iter().map(|r| r.wall_ns).sum::<u64>() as f64 / records.len() as f64;
        let _ = writeln!(
            out,
            "  guest speed: {:.1} ms per run on average",
            mean / 1e6
        );
    }
    for u in &host.unavailable {
        let _ = writeln!(out, "  unavailable: {u}");
    }
    out
}
