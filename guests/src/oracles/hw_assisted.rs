//! Hardware-assisted: the guest kernel runs at CPL 0, so only port I/O, MMIO and `hlt`
//! reach user space. Everything else (CLI/STI, POPF, CR8, INVLPG, CPUID, #DE) the CPU or
//! KVM handles in the kernel. Every workload also makes one `out` to the exit port.

use contract::abi::port;
use contract::{CountKey, ExitKind, Oracle};

use crate::workloads::Params;

pub(super) fn oracle(workload: &str, p: &Params) -> Option<Oracle> {
    let base = Oracle::default()
        .expect(CountKey::Exits(ExitKind::IoOut), 1)
        .expect(CountKey::PortWrites(port::EXIT), 1);
    let n = p.n;
    Some(match workload {
        "compute" | "cpuid" | "irq-toggle" | "popf" | "cr8wr" | "divzero" | "call-ret" => base,
        // The guest kernel owns its MMU: system calls, page faults, CR3 loads and INVLPG
        // never leave KVM; only the exit port does.
        "ptemod" | "syscall" | "pgfault" | "ctxswitch" | "forkwait" | "tlb-walk" => base,
        "pio" => base
            .expect(CountKey::Exits(ExitKind::IoOut), n + 1)
            .expect(CountKey::PortWrites(port::CONSOLE), n),
        "mmio" => base.expect(CountKey::Exits(ExitKind::MmioRead), n),
        "hlt-timer" => base
            .expect(CountKey::Exits(ExitKind::IoOut), n + 1)
            .expect(CountKey::PortWrites(port::TIMER), n)
            .expect(CountKey::Exits(ExitKind::Halt), n)
            .expect(CountKey::Injections, n),
        // One `out` per page into the balloon and one per page out of it.
        "balloon" => {
            super::balloon_ports(base, p.b).expect(CountKey::Exits(ExitKind::IoOut), 2 * p.b + 1)
        }
        _ => return None,
    })
}
