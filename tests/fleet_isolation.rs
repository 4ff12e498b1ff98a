//! Isolation between VMs with the memory mechanisms on: one VM never sees another's
//! memory (distinct patterns across K guests, with KSM merging the identical ones and
//! host swapping evicting pages), and a hostile neighbour — balloon abuse, a fault storm
//! through userfaultfd, a VM that dies with its balloon inflated — changes nobody else's
//! exact counts, result or balloon record.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use contract::overcommit::port;
use contract::{Mode, Outcome, RunOptions, RunRecord, SchedulerKind};
use guests::Params;
use iced_x86::code_asm::*;
use virtlab::fleet::{run_fleet, FleetDone, HostSpec, VmSpec};
use virtlab::harness::{Guest, Job};

const BASE: u64 = 4 << 20;
const PAGES: u64 = 512;

fn vm(name: &str, guest: Guest, mode: Mode) -> VmSpec {
    VmSpec {
        name: name.into(),
        job: Job {
            guest,
            mode,
            repeat: 0,
            warmup: false,
            backend: None,
        },
        weight: 1,
        cap: 0,
        wall: None,
    }
}

/// The fleet tests measure shares and pin their VMs to the first CPUs this process may
/// use: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether host swapping sees every touch of guest RAM here: userfaultfd works and KVM's
/// own writes fault through it (both probed by doing them).
fn swapping_here() -> Result<(), String> {
    machine::overcommit::swap::probe()?;
    machine::overcommit::probe::kvm_faults_through_userfaultfd()
}

/// One KSM reading: host-wide full scans and this process's merged pages (`None` where
/// the kernel does not say per process).
fn ksm_now() -> (Option<u64>, Option<u64>) {
    let scans = std::fs::read_to_string("/sys/kernel/mm/ksm/full_scans")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let own = std::fs::read_to_string("/proc/self/ksm_merging_pages")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    (scans, own)
}

/// Live processes other than this one with a KSM session open on the host.
fn other_ksm_sessions() -> Vec<u32> {
    let path =
        machine::overcommit::ksm::state_path(std::path::Path::new(machine::overcommit::ksm::SYSFS));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("pid ")?.parse::<u32>().ok())
        .filter(|&p| {
            p != std::process::id() && std::path::Path::new(&format!("/proc/{p}")).exists()
        })
        .collect()
}

fn records_of<'a>(done: &'a FleetDone, name: &str) -> &'a [RunRecord] {
    let mut start = 0;
    for v in &done.host.vms {
        let n = v.runs as usize;
        if v.name == name {
            return &done.records[start..start + n];
        }
        start += n;
    }
    panic!("no VM {name}")
}

/// A guest that writes `seed ^ i` and `seed` into the first two qwords of each of
/// [`PAGES`] pages, spins `hold` times, counts the pages that still hold exactly that,
/// rewrites each page's first qword with its complement (a write to a page KSM merged
/// breaks the sharing) and counts again, then counts the pages after its region that it
/// never wrote and that must read zero. Result (RBX): 3 × PAGES when nothing leaked in.
fn pattern_guest(seed: u64, hold: u64) -> Guest {
    let img = common::image(&format!("pattern-{seed:x}"), |a| {
        let page = |a: &mut CodeAssembler| {
            a.mov(rdi, rcx).unwrap();
            a.shl(rdi, 12).unwrap();
            a.mov(rax, BASE).unwrap();
            a.add(rdi, rax).unwrap();
            a.mov(rax, seed).unwrap();
            a.xor(rax, rcx).unwrap();
        };
        let each = |a: &mut CodeAssembler, first: u64, body: &dyn Fn(&mut CodeAssembler)| {
            let mut top = a.create_label();
            a.mov(rcx, first).unwrap();
            a.set_label(&mut top).unwrap();
            body(a);
            a.inc(rcx).unwrap();
            a.mov(rdx, first + PAGES).unwrap();
            a.cmp(rcx, rdx).unwrap();
            a.jb(top).unwrap();
        };
        a.xor(ebx, ebx).unwrap();
        a.mov(r8, seed).unwrap();
        each(a, 0, &|a| {
            page(a);
            a.mov(qword_ptr(rdi), rax).unwrap();
            a.mov(qword_ptr(rdi + 8), r8).unwrap();
        });
        let mut spin = a.create_label();
        a.mov(r9, hold).unwrap();
        a.set_label(&mut spin).unwrap();
        a.pause().unwrap();
        a.dec(r9).unwrap();
        a.jnz(spin).unwrap();
        let count = |a: &mut CodeAssembler, complement: bool| {
            let mut skip = a.create_label();
            page(a);
            if complement {
                a.not(rax).unwrap();
            }
            a.cmp(qword_ptr(rdi), rax).unwrap();
            a.jne(skip).unwrap();
            a.cmp(qword_ptr(rdi + 8), r8).unwrap();
            a.jne(skip).unwrap();
            a.inc(rbx).unwrap();
            a.set_label(&mut skip).unwrap();
        };
        each(a, 0, &|a| count(a, false));
        each(a, 0, &|a| {
            page(a);
            a.not(rax).unwrap();
            a.mov(qword_ptr(rdi), rax).unwrap();
        });
        each(a, 0, &|a| count(a, true));
        each(a, PAGES, &|a| {
            let mut skip = a.create_label();
            page(a);
            a.mov(rax, qword_ptr(rdi)).unwrap();
            a.or(rax, qword_ptr(rdi + 8)).unwrap();
            a.jnz(skip).unwrap();
            a.inc(rbx).unwrap();
            a.set_label(&mut skip).unwrap();
        });
        common::exit(a);
    });
    Guest::Binary(img)
}

fn completed_with(r: &RunRecord, want: u64) -> bool {
    matches!(r.outcome, Outcome::Completed { result, exit_code: 0, .. } if result == want)
}

#[test]
fn no_vm_sees_another_vms_memory_with_sharing_and_swapping_on() {
    if !common::kvm_or_skip("no_vm_sees_another_vms_memory_with_sharing_and_swapping_on") {
        return;
    }
    let _serial = serial();
    // Two pairs of identical guests (KSM may merge each pair's pages), four seeds' worth
    // of checks; 3 MiB of budget for 64 MiB of guest RAM: 192 pages each, fewer than the
    // 512 each writes. Each guest spins 10⁷ `pause`s between writing and checking: a
    // few tenths of a second or more, several of KSM's full scans at the run's rate.
    let seeds = [
        0x1111_0000_0000_0000u64,
        0x1111_0000_0000_0000,
        0x2222 << 48,
        0x2222 << 48,
    ];
    let vms: Vec<VmSpec> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vm(
                &format!("p{i}"),
                pattern_guest(*s, 10_000_000),
                Mode::TrapEmulate,
            )
        })
        .collect();
    let host = HostSpec {
        cpus: 2,
        scheduler: SchedulerKind::Linux,
        ksm: true,
        memory_budget_mib: Some(3),
        ..HostSpec::default()
    };
    let ksm_setting =
        |name: &str| std::fs::read_to_string(format!("/sys/kernel/mm/ksm/{name}")).ok();
    let before = (ksm_setting("run"), ksm_setting("pages_to_scan"));
    // KSM merges a page once two of its full scans saw it unchanged: a test thread
    // follows the full scans and this process's own merged pages while the guests run.
    let running = AtomicBool::new(true);
    let (done, trace) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut trace = vec![ksm_now()];
            while running.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(10));
                trace.push(ksm_now());
            }
            trace
        });
        let done = run_fleet(&host, &vms, &RunOptions::default()).unwrap();
        running.store(false, Ordering::SeqCst);
        (done, sampler.join().unwrap())
    });
    // Another process's session still open keeps KSM on: the last to end restores.
    let others = other_ksm_sessions();
    if others.is_empty() {
        assert_eq!(
            (ksm_setting("run"), ksm_setting("pages_to_scan")),
            before,
            "KSM's settings are the host's again"
        );
    } else {
        eprintln!("note: KSM sessions of processes {others:?} are open: they restore it");
    }
    assert!(done.failures.is_empty(), "{:?}", done.failures);
    let swapping = swapping_here();
    let hm = done.host.memory.as_ref().expect("memory was asked for");
    for v in &vms {
        let r = &records_of(&done, &v.name)[0];
        assert!(completed_with(r, 3 * PAGES), "{}: {:?}", v.name, r.outcome);
        let m = r.memory.as_ref().unwrap();
        match m.mergeable {
            Some(true) => assert!(
                !m.unavailable.iter().any(|u| u.contains("MADV_MERGEABLE")),
                "{}: {:?}",
                v.name,
                m.unavailable
            ),
            Some(false) => assert!(
                m.unavailable.iter().any(|u| u.contains("MADV_MERGEABLE")),
                "{}: {:?}",
                v.name,
                m.unavailable
            ),
            None => panic!("{}: asked for, so recorded", v.name),
        }
        match &swapping {
            Ok(()) => {
                let s = m.swap.as_ref().expect("swapping asked for and available");
                assert_eq!(s.budget_pages, 192);
                assert!(s.page_outs > 0 && s.page_ins > 0, "{}: {s:?}", v.name);
                assert!(s.max_resident <= 192, "{}: {s:?}", v.name);
                assert!(
                    !m.unavailable.iter().any(|u| u.contains("host swapping")),
                    "{}: {:?}",
                    v.name,
                    m.unavailable
                );
            }
            Err(why) => {
                if let Some(s) = &m.swap {
                    assert!(s.max_resident <= 192, "{}: {s:?}", v.name);
                }
                assert!(
                    m.unavailable.iter().any(|u| u.contains("host swapping")),
                    "{}: {why}: {:?}",
                    v.name,
                    m.unavailable
                );
            }
        }
    }
    if let Err(why) = &swapping {
        assert!(
            hm.unavailable.iter().any(|u| u.contains("host swapping")),
            "{why}: {:?}",
            hm.unavailable
        );
    }
    assert!(hm.ksm.is_some());
    assert!(!hm.samples.is_empty());
    let all_mergeable = done
        .records
        .iter()
        .all(|r| r.memory.as_ref().and_then(|m| m.mergeable) == Some(true));
    if hm.ksm == Some(true) && all_mergeable {
        // A merge is owed once KSM finished two full scans after the guests wrote their
        // pages and before they rewrote them: a scan of the whole run may overlap the
        // writes at the start and the rewrites at the end, hence four. Our own merged
        // pages where the kernel says them; KSM's host-wide peak otherwise.
        let scans = match (trace[0].0, trace.last().and_then(|t| t.0)) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        let own = trace.iter().filter_map(|t| t.1).max();
        eprintln!("KSM: {scans} full scans during the run, peak merged pages of this process {own:?}, host-wide peak {:?}", hm.ksm_peak);
        if scans >= 4 {
            match own {
                Some(pages) => assert!(pages > 0, "{scans} full scans, none of our pages merged"),
                None => assert!(hm.ksm_peak.1 > 0, "KSM merged nothing: {:?}", hm.ksm_peak),
            }
        } else {
            eprintln!(
                "note: KSM made {scans} full scans while the guests ran (4 needed to owe a \
                 merge); merged pages of this process: {own:?}"
            );
        }
    }
}

/// `balloon-abuse`: `rounds` × (inflate four pages it does not own, deflate one it never
/// inflated), then inflate its own page 0x600 twice; its result is a value it wrote
/// before, read back at the end.
fn balloon_abuse(rounds: u32) -> Guest {
    Guest::Binary(common::image("balloon-abuse", |a| {
        let mut top = a.create_label();
        a.mov(rax, 0x0BAD_BA11_0000u64).unwrap();
        a.mov(rdi, 0x50_0000u64).unwrap();
        a.mov(qword_ptr(rdi), rax).unwrap();
        a.mov(ecx, rounds).unwrap();
        a.set_label(&mut top).unwrap();
        for pfn in [4096u32, 0x4_0000, 0x4_0011, u32::MAX] {
            a.mov(eax, pfn).unwrap();
            a.out(u32::from(port::INFLATE), eax).unwrap();
        }
        a.mov(eax, 0x500u32).unwrap();
        a.out(u32::from(port::DEFLATE), eax).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.mov(eax, 0x600u32).unwrap();
        a.out(u32::from(port::INFLATE), eax).unwrap();
        a.out(u32::from(port::INFLATE), eax).unwrap();
        a.mov(rbx, qword_ptr(rdi)).unwrap();
        common::exit(a);
    }))
}

/// Touches 2,000 pages twice: under a small budget every touch is a userfaultfd fault.
fn fault_storm() -> Guest {
    Guest::Binary(common::image("fault-storm", |a| {
        let mut pass = a.create_label();
        let mut top = a.create_label();
        a.mov(r8d, 2).unwrap();
        a.set_label(&mut pass).unwrap();
        a.mov(rdi, BASE).unwrap();
        a.mov(ecx, 2000).unwrap();
        a.set_label(&mut top).unwrap();
        a.inc(qword_ptr(rdi)).unwrap();
        a.add(rdi, 4096).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.dec(r8d).unwrap();
        a.jnz(pass).unwrap();
        a.mov(rdi, BASE).unwrap();
        a.mov(rbx, qword_ptr(rdi)).unwrap();
        common::exit(a);
    }))
}

/// Inflates its balloon by 100 pages, then dies on `ud2`.
fn dies_inflated() -> Guest {
    Guest::Binary(common::image("dies-inflated", |a| {
        let mut top = a.create_label();
        a.mov(ecx, 100).unwrap();
        a.set_label(&mut top).unwrap();
        a.mov(eax, 0x700u32).unwrap();
        a.add(eax, ecx).unwrap();
        a.out(u32::from(port::INFLATE), eax).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.ud2().unwrap();
    }))
}

#[test]
fn a_hostile_neighbour_changes_no_one_elses_memory_or_counts() {
    if !common::kvm_or_skip("a_hostile_neighbour_changes_no_one_elses_memory_or_counts") {
        return;
    }
    let _serial = serial();
    let quiet = Params {
        n: 300,
        b: 100,
        ..Params::default()
    };
    let vms = [
        vm(
            "quiet",
            Guest::Workload(guests::find("balloon").unwrap(), quiet),
            Mode::HwAssisted,
        ),
        vm("abuse", balloon_abuse(500), Mode::HwAssisted),
        vm("storm", fault_storm(), Mode::TrapEmulate),
        vm("dies", dies_inflated(), Mode::HwAssisted),
    ];
    for budget in [None, Some(8)] {
        let host = HostSpec {
            cpus: 1,
            scheduler: SchedulerKind::Credit,
            slice_ms: 2,
            memory_budget_mib: budget,
            ..HostSpec::default()
        };
        let done = run_fleet(&host, &vms, &RunOptions::default()).unwrap();
        assert!(done.failures.is_empty(), "{budget:?}: {:?}", done.failures);
        let q = &records_of(&done, "quiet")[0];
        assert!(completed_with(q, 300), "{budget:?}: {:?}", q.outcome);
        assert!(q.mismatches.is_empty(), "{budget:?}: {:?}", q.mismatches);
        let b = &q.memory.as_ref().unwrap().balloon;
        assert_eq!(
            (b.inflated, b.deflated, b.peak),
            (100, 100, 100),
            "{budget:?}"
        );
        assert_eq!(b.refused_total(), 0, "{budget:?}: nobody else's refusals");
        assert_eq!(b.resident_drop(), Some(100), "{budget:?}: {b:?}");

        let ab = &records_of(&done, "abuse")[0];
        assert!(
            completed_with(ab, 0x0BAD_BA11_0000),
            "{budget:?}: {:?}",
            ab.outcome
        );
        let abb = &ab.memory.as_ref().unwrap().balloon;
        assert_eq!(abb.refused["outside RAM"], 2000, "{budget:?}");
        assert_eq!(abb.refused["not inflated"], 500, "{budget:?}");
        assert_eq!(abb.refused["already inflated"], 1, "{budget:?}");

        let st = &records_of(&done, "storm")[0];
        assert!(completed_with(st, 2), "{budget:?}: {:?}", st.outcome);
        let stm = st.memory.as_ref().unwrap();
        match (budget, swapping_here()) {
            (None, _) => assert!(stm.swap.is_none(), "{:?}", stm.swap),
            (Some(_), Ok(())) => {
                let s = stm.swap.as_ref().expect("swapping asked for and available");
                assert!(s.zero_fills >= 2000 && s.page_ins >= 1900, "{s:?}");
            }
            (Some(_), Err(why)) => assert!(
                stm.unavailable.iter().any(|u| u.contains("host swapping")),
                "{why}: {:?}",
                stm.unavailable
            ),
        }

        let died = &records_of(&done, "dies")[0];
        assert_eq!(common::fault_of(died).0, contract::FaultKind::Exception);
        assert_eq!(died.memory.as_ref().unwrap().balloon.size, 100);
    }
}
