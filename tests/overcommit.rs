//! Memory overcommit in one machine: the balloon returns pages to the host in every mode
//! (resident memory falls by exactly what it inflates), host swapping keeps a guest's data
//! intact under a budget, and a balloon request for what the guest does not own is
//! refused and counted.

mod common;

use common::{kvm_or_skip, run, workload_image};
use contract::overcommit::MemoryOptions;
use contract::{Outcome, RunOptions, RunRecord};
use guests::Params;

fn balloon(n: u64, b: u64) -> Params {
    Params {
        n,
        b,
        ..Params::default()
    }
}

fn run_balloon(engine: &dyn contract::Engine, p: Params, memory: MemoryOptions) -> RunRecord {
    let image = workload_image("balloon", engine.flavour(), p);
    let opts = RunOptions {
        memory,
        ..RunOptions::default()
    };
    run(engine, &image, &opts)
}

fn assert_ok(r: &RunRecord, n: u64) {
    assert!(
        matches!(r.outcome, Outcome::Completed { result, exit_code: 0, .. } if result == n),
        "{}: {:?}",
        r.mode,
        r.outcome
    );
    assert!(r.mismatches.is_empty(), "{}: {:?}", r.mode, r.mismatches);
}

#[test]
fn the_balloon_returns_exactly_what_it_inflates_in_every_mode() {
    if !kvm_or_skip("the_balloon_returns_exactly_what_it_inflates_in_every_mode") {
        return;
    }
    for engine in virtlab::engines::all() {
        let r = run_balloon(engine, balloon(300, 100), MemoryOptions::default());
        assert_ok(&r, 300);
        let m = r.memory.as_ref().expect("every machine records its memory");
        let b = &m.balloon;
        assert_eq!((b.inflated, b.deflated, b.size, b.peak), (100, 100, 0, 100));
        assert_eq!(b.refused_total(), 0, "{}", r.mode);
        assert_eq!(b.resident_drop(), Some(100), "{}: {b:?}", r.mode);
        assert_eq!(m.ram_pages, 4096);
        assert!(m.swap.is_none() && m.mergeable.is_none());
    }
}

#[test]
fn swapping_under_a_budget_keeps_the_data_and_the_budget() {
    if !kvm_or_skip("swapping_under_a_budget_keeps_the_data_and_the_budget") {
        return;
    }
    let budget = 64;
    for engine in virtlab::engines::all() {
        let r = run_balloon(
            engine,
            balloon(400, 50),
            MemoryOptions {
                mergeable: false,
                swap_budget_pages: Some(budget),
            },
        );
        let m = r.memory.as_ref().unwrap();
        let uffd = machine::overcommit::swap::probe();
        let kvm = machine::overcommit::probe::kvm_faults_through_userfaultfd();
        if let Err(why) = uffd.as_ref().and(kvm.as_ref()) {
            // Swapping cannot see the guest's touches here: the data stays intact, the
            // budget holds, and the record says swapping is unavailable.
            assert_ok(&r, 400);
            assert!(
                m.unavailable.iter().any(|u| u.contains("host swapping")),
                "{}: {why}: {:?}",
                r.mode,
                m.unavailable
            );
            match (&uffd, &m.swap) {
                (Err(_), None) => {}
                (Ok(()), Some(s)) => assert!(s.max_resident <= budget, "{}: {s:?}", r.mode),
                (u, s) => panic!("{}: userfaultfd {u:?}, swap {s:?}", r.mode),
            }
            continue;
        }
        assert!(
            !m.unavailable.iter().any(|u| u.contains("host swapping")),
            "{}: {:?}",
            r.mode,
            m.unavailable
        );
        assert_ok(&r, 400);
        let s = m.swap.as_ref().expect("swap stats");
        // Every touch of a page not resident went through userfaultfd: the 400 pages the
        // guest wrote were first touches (KVM's accesses fault through it on this host).
        assert!(s.zero_fills >= 400, "{}: {s:?}", r.mode);
        assert!(s.page_outs > 0 && s.page_ins > 0, "{}: {s:?}", r.mode);
        assert_eq!(s.max_resident, budget, "{}: {s:?}", r.mode);
        assert!(m.resident_end <= budget, "{}: {}", r.mode, m.resident_end);
        assert_eq!(s.page_in_ns.count, s.page_ins);
        assert_eq!(s.page_out_ns.count, s.page_outs);
        // The balloon and swapping together: the balloon's pages were forgotten by the
        // swap, so they read back as zeros (the result says so: all 400 pages matched).
        assert_eq!(m.balloon.inflated, 50);
    }
}

#[test]
fn mergeable_memory_is_marked_or_said_unavailable() {
    if !kvm_or_skip("mergeable_memory_is_marked_or_said_unavailable") {
        return;
    }
    let engine = virtlab::engines::all()[0];
    let r = run_balloon(
        engine,
        balloon(64, 1),
        MemoryOptions {
            mergeable: true,
            swap_budget_pages: None,
        },
    );
    assert_ok(&r, 64);
    let m = r.memory.unwrap();
    match m.mergeable {
        Some(true) => assert!(m.unavailable.is_empty()),
        Some(false) => assert!(m.unavailable.iter().any(|u| u.contains("MADV_MERGEABLE"))),
        None => panic!("asked for, so recorded"),
    }
}

/// A guest that abuses the balloon: pages beyond its RAM, the monitor's, the largest PFN,
/// the same page twice, deflating what it never inflated, over and over. Every request is
/// refused and counted, its own data is untouched, and the run ends as it should.
#[test]
fn balloon_abuse_is_refused_and_counted() {
    use contract::overcommit::port;
    use iced_x86::code_asm::*;
    if !kvm_or_skip("balloon_abuse_is_refused_and_counted") {
        return;
    }
    const DATA: u64 = 0x50_0000;
    let rounds = 20u64;
    let bad = [
        4096u32,                                            // first page beyond 16 MiB of RAM
        (contract::abi::layout::MONITOR_BASE >> 12) as u32, // the monitor's first page
        (contract::abi::layout::BOOT_INFO >> 12) as u32,    // the boot-info page
        u32::MAX,
    ];
    let img = common::image("balloon-abuse", |a| {
        a.mov(rax, 0x1234_5678_9ABC_DEF0u64).unwrap();
        a.mov(rdi, DATA).unwrap();
        a.mov(qword_ptr(rdi), rax).unwrap();
        a.mov(ecx, rounds as u32).unwrap();
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        for pfn in bad {
            a.mov(eax, pfn).unwrap();
            a.out(u32::from(port::INFLATE), eax).unwrap();
        }
        // Deflate a page never inflated.
        a.mov(eax, (DATA >> 12) as u32).unwrap();
        a.out(u32::from(port::DEFLATE), eax).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        // Inflate one page of its own twice: the second is refused.
        a.mov(eax, 0x600u32).unwrap();
        a.out(u32::from(port::INFLATE), eax).unwrap();
        a.out(u32::from(port::INFLATE), eax).unwrap();
        a.mov(rbx, qword_ptr(rdi)).unwrap();
        common::exit(a);
    });
    let engine = virtlab::engines::for_mode(contract::Mode::HwAssisted).unwrap();
    let r = run(engine, &img, &RunOptions::default());
    assert!(
        matches!(
            r.outcome,
            Outcome::Completed {
                result: 0x1234_5678_9ABC_DEF0,
                exit_code: 0,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    let b = &r.memory.unwrap().balloon;
    assert_eq!(b.refused["outside RAM"], rounds * bad.len() as u64);
    assert_eq!(b.refused["not inflated"], rounds);
    assert_eq!(b.refused["already inflated"], 1);
    assert_eq!((b.inflated, b.size), (1, 1));
}
