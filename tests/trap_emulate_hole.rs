//! The Popek–Goldberg hole on a real CPU: sensitive-but-unprivileged instructions run
//! silently at CPL 3 — until UMIP or CPUID faulting turns some of them into traps. The
//! `popf` and `cpuid` workloads, whose runs in trap-emulate diverge by design, are checked
//! with every other workload in `tests/engines.rs`; here, what `explain` says of them.

mod common;

use contract::abi::port;
use contract::{Flavour, Outcome, RunOptions};
use iced_x86::code_asm::*;
use trap_emulate::TrapEmulate;

/// LIDT a table of the guest's own, then SIDT, and return the base SIDT reported.
fn sidt_guest() -> contract::GuestImage {
    common::image("sidt", |a| {
        let mut table = a.create_label();
        a.sub(rsp, 32).unwrap();
        a.mov(word_ptr(rsp), 0x20F).unwrap();
        a.lea(rax, ptr(table)).unwrap();
        a.mov(qword_ptr(rsp + 2), rax).unwrap();
        a.lidt(ptr(rsp)).unwrap();
        a.sidt(ptr(rsp + 16)).unwrap();
        a.mov(rbx, qword_ptr(rsp + 18)).unwrap();
        a.xor(eax, eax).unwrap();
        a.out(u32::from(port::EXIT), eax).unwrap();
        a.set_label(&mut table).unwrap();
        a.db(&[0u8; 0x210]).unwrap();
    })
}

#[test]
fn umip_turns_sidt_from_a_silent_leak_into_a_trap() {
    if !common::kvm_or_skip("umip_turns_sidt_from_a_silent_leak_into_a_trap") {
        return;
    }
    let umip_works = machine::caps::probe().unwrap().umip.is_present();
    let img = sidt_guest();
    let guest_table = {
        // The table follows the code: find it from the LIDT the VMM recorded — simpler,
        // from the image layout: it is the last 0x210 bytes.
        img.load_addr + img.bytes.len() as u64 - 0x210
    };
    // Without UMIP, SIDT runs natively and reveals the monitor's IDT.
    let r = common::run(&TrapEmulate, &img, &RunOptions::default());
    assert_eq!(r.outcome.result(), Some(contract::abi::layout::IDT));
    assert_eq!(r.traps.get("sidt"), None);
    assert_eq!(r.traps["lidt"], 1);
    // With UMIP, SIDT traps and the VMM answers with the guest's own (virtual) IDTR.
    let opts = RunOptions {
        umip: true,
        ..RunOptions::default()
    };
    let r = common::run(&TrapEmulate, &img, &opts);
    let setting = r.options.umip.unwrap();
    assert_eq!((setting.requested, setting.effective), (true, umip_works));
    if umip_works {
        assert_eq!(r.outcome.result(), Some(guest_table));
        assert_eq!(r.traps["sidt"], 1);
        assert!(r.notes.iter().any(|n| n.contains("UMIP")), "{:?}", r.notes);
    } else {
        // Asked for on a host without it: SIDT still leaks, and the run says so.
        assert_eq!(r.outcome.result(), Some(contract::abi::layout::IDT));
        assert_eq!(r.traps.get("sidt"), None);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("not effective on this host")),
            "{:?}",
            r.notes
        );
    }
}

/// CPUID leaf 1, ECX (feature flags) into RBX.
fn cpuid_guest() -> contract::GuestImage {
    common::image("cpuid-leaf1", |a| {
        a.mov(eax, 1).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
        a.mov(ebx, ecx).unwrap();
        a.xor(eax, eax).unwrap();
        a.out(u32::from(port::EXIT), eax).unwrap();
    })
}

#[test]
fn cpuid_faulting_decides_whether_cpuid_reaches_this_vmm() {
    if !common::kvm_or_skip("cpuid_faulting_decides_whether_cpuid_reaches_this_vmm") {
        return;
    }
    let caps = machine::caps::probe().unwrap();
    let faulting_works = caps.cpuid_faulting.is_present();
    let img = cpuid_guest();

    // Asked for (the default): it traps exactly where the probe says it can.
    let on = common::run(&TrapEmulate, &img, &RunOptions::default());
    let setting = on.options.cpuid_faulting.unwrap();
    assert!(setting.requested);
    assert_eq!(setting.effective, faulting_works);
    assert!(
        matches!(on.outcome, Outcome::Completed { .. }),
        "{:?}",
        on.outcome
    );
    if faulting_works {
        assert_eq!(
            on.traps["cpuid"], 1,
            "emulated from the virtual CPU's table"
        );
        assert_eq!(on.outcome.result(), Some(u64::from(virtual_leaf1_ecx(&on))));
    } else {
        assert_eq!(
            on.traps.get("cpuid"),
            None,
            "the host lets CPUID run natively"
        );
        let note = on
            .notes
            .iter()
            .find(|n| n.contains("requested but is not effective on this host"))
            .unwrap_or_else(|| panic!("no host note: {:?}", on.notes));
        assert!(note.contains("at CPL 3"), "{note}");
        // What the guest saw is what the probe saw at CPL 3, not the virtual CPU's value.
        let seen = caps.cpuid_at_cpl3.iter().find(|s| s.leaf == 1).unwrap();
        assert_eq!(on.outcome.result(), Some(u64::from(seen.seen[2])));
    }

    // Switched off: never a trap, on every host, and the run says so.
    let opts = RunOptions {
        cpuid_faulting: false,
        ..RunOptions::default()
    };
    let off = common::run(&TrapEmulate, &img, &opts);
    assert_eq!(
        off.options.cpuid_faulting,
        Some(contract::Setting {
            requested: false,
            effective: false
        })
    );
    assert_eq!(
        off.traps.get("cpuid"),
        None,
        "CPUID ran without trapping to the VMM"
    );
    assert_eq!(
        off.exit_count(contract::ExitKind::Trap),
        1,
        "only the exit port"
    );
    assert!(off
        .notes
        .iter()
        .any(|n| n.contains("CPUID faulting was off")));
    let seen = caps.cpuid_at_cpl3.iter().find(|s| s.leaf == 1).unwrap();
    assert_eq!(off.outcome.result(), Some(u64::from(seen.seen[2])));
}

/// Leaf 1 ECX of the virtual CPU the record's host gave the vCPU, from the probe.
fn virtual_leaf1_ecx(r: &contract::RunRecord) -> u32 {
    let caps = r
        .host
        .capabilities
        .as_ref()
        .expect("records carry the capabilities");
    caps.cpuid_at_cpl3
        .iter()
        .find(|s| s.leaf == 1)
        .unwrap()
        .virtual_cpu[2]
}

#[test]
fn explain_lists_pushf_and_popf_as_sensitive_unprivileged() {
    use trap_emulate::classify::Class;
    let img = common::workload_image("popf", Flavour::Native, common::params("popf"));
    let e = trap_emulate::explain(&img);
    for m in ["pushfq", "popfq"] {
        let g = e.group(m).unwrap_or_else(|| panic!("{m} missing:\n{e}"));
        assert_eq!(g.class, Class::SensitiveUnprivileged);
    }
    // 3 checks + 2 read-modify-writes per loop body: 5 PUSHFQ, 2 POPFQ.
    assert_eq!(e.group("pushfq").unwrap().count, 5);
    assert_eq!(e.group("popfq").unwrap().count, 2);
    for m in ["cli", "sti", "out"] {
        assert_eq!(e.group(m).unwrap().class, Class::Privileged, "{m}");
    }
    let text = e.to_string();
    assert!(text.contains("SENSITIVE BUT UNPRIVILEGED"), "{text}");
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["image"], "popf");
}

#[test]
fn explain_names_traps_like_the_run_record_and_skips_trailing_data() {
    use trap_emulate::classify::Class;
    for (w, names) in [
        ("cr8wr", &["mov to cr8", "mov from cr8", "out"][..]),
        (
            "hlt-timer",
            &["lidt", "sti", "hlt", "iretq", "cli", "out"][..],
        ),
        (
            "ptemod",
            &["invlpg", "mov to cr3", "wrmsr", "sysretq", "out"][..],
        ),
        ("cpuid", &["cpuid", "out"][..]),
    ] {
        let img = common::workload_image(w, Flavour::Native, common::params(w));
        let e = trap_emulate::explain(&img);
        for n in names {
            assert_eq!(
                e.group(n).map(|g| g.class),
                Some(Class::Privileged),
                "{w}: {n}\n{e}"
            );
        }
        // The guest kernel's image keeps its data (variables, process descriptors, the
        // trap table) after its code and its user program: a linear listing decodes
        // some of it as invalid.
        if !guests::kernel::workloads::KERNEL_WORKLOADS.contains(&w) {
            assert_eq!(e.invalid, 0, "{w}:\n{e}");
        }
    }
    let img = common::workload_image("hlt-timer", Flavour::Native, common::params("hlt-timer"));
    // The IDT, after the page of padding that keeps it out of the code's pages.
    assert_eq!(
        trap_emulate::explain(&img).data_bytes,
        contract::abi::PAGE_SIZE + 0x21 * 16
    );
}
