//! Trap-and-emulate: the guest runs at CPL 3, so every privileged instruction it executes
//! is one trap (one `Trap` exit on the monitor's FAULT port), named by its lowercase
//! mnemonic (`mov to cr8` / `mov from cr8` for control registers, `pte write` for a store
//! to the write-protected page table, `#de` for a reflected divide error). MMIO at CPL 3
//! still exits directly. Interrupts and exceptions reflected into the guest are
//! injections. Every workload also traps once on its `out` to the exit port. The counts
//! assume the default run options (CPUID faulting on, UMIP off); [`variants`] gives the
//! counts when CPUID faulting is not in effect.

use contract::{Condition, CountKey, ExitKind, Mode, Oracle, OracleVariant};

use crate::workloads::Params;

fn traps(list: &[(&str, u64)]) -> Oracle {
    let total: u64 = list.iter().map(|(_, n)| n).sum();
    list.iter().fold(
        Oracle::default().expect(CountKey::Exits(ExitKind::Trap), total),
        |o, (name, n)| o.expect(CountKey::Traps((*name).to_string()), *n),
    )
}

pub(super) fn oracle(workload: &str, p: &Params) -> Option<Oracle> {
    if crate::kernel::workloads::KERNEL_WORKLOADS.contains(&workload) {
        return super::trap_emulate_kernel::oracle(workload, p);
    }
    let n = p.n;
    Some(match workload {
        "compute" | "call-ret" => traps(&[("out", 1)]),
        "pio" => traps(&[("out", n + 1)]),
        // One CPUID before the loop reads the vendor to compare against.
        "cpuid" => traps(&[("cpuid", n + 1), ("out", 1)]),
        "irq-toggle" | "popf" => traps(&[("cli", n), ("sti", n), ("out", 1)]),
        // N writes in the loop and a final write of 0; one read back.
        "cr8wr" => traps(&[("mov to cr8", n + 1), ("mov from cr8", 1), ("out", 1)]),
        "mmio" => traps(&[("out", 1)]).expect(CountKey::Exits(ExitKind::MmioRead), n),
        // Per iteration: OUT (arm), STI, HLT (the timer is reflected there), IRETQ, CLI.
        "hlt-timer" => traps(&[
            ("lidt", 1),
            ("out", n + 1),
            ("sti", n),
            ("hlt", n),
            ("iretq", n),
            ("cli", n),
        ])
        .expect(CountKey::Injections, n),
        "divzero" => traps(&[("lidt", 1), ("#de", n), ("iretq", n), ("out", 1)])
            .expect(CountKey::Injections, n),
        // The balloon's ports are open to CPL 3: each `out` exits to the machine directly.
        "balloon" => super::balloon_ports(traps(&[("out", 1)]), p.b),
        _ => return None,
    })
}

/// Without CPUID faulting (switched off, or accepted by KVM but without effect on this
/// host) CPUID runs natively at CPL 3: no `cpuid` trap, and a declared divergence.
pub(super) fn variants(workload: &str, p: &Params) -> Vec<OracleVariant> {
    if crate::kernel::workloads::KERNEL_WORKLOADS.contains(&workload) {
        return super::trap_emulate_kernel::variants(workload, p);
    }
    match workload {
        "cpuid" => vec![OracleVariant {
            mode: Mode::TrapEmulate,
            when: Condition::CpuidFaultingOff,
            oracle: traps(&[("out", 1)]).expect(CountKey::Traps("cpuid".into()), 0),
            expected: format!(
                "CPUID answered by the virtual CPU ({} cpuid traps)",
                p.n + 1
            ),
            got: "CPUID ran natively at CPL 3 (0 cpuid traps)".into(),
            why: "CPUID is sensitive but not privileged: without CPUID faulting it never traps \
                  at CPL 3, so the guest sees the CPU identification of the layer below instead \
                  of the virtual CPU's — it joins PUSHF/POPF in the x86 hole"
                .into(),
        }],
        _ => Vec::new(),
    }
}
