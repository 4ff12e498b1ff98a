//! Paravirtual: the guest kernel runs at CPL 3 and never executes a sensitive instruction;
//! every exit is a hypercall (`out` to the hypercall port), except the CPU exceptions the
//! guest causes itself (#DE in divzero), which the monitor reflects to the callback the
//! guest registered. Every workload ends with one `exit` hypercall.
//!
//! What batches: console bytes (`console_write` every B bytes, ⌈N/B⌉), device reads
//! (`device_read` of up to B values, ⌈N/B⌉) and ptemod's PTE changes (the guest kernel's
//! `mmu_update` of B requests per round; see [`super::paravirt_kernel`]). What does not,
//! and why:
//! - cr8wr: N + 1 `set_tpr` (the loop's N writes and the final reset to 0) — the task
//!   priority gates event delivery, so the VMM must see each write when it happens.
//! - irq-toggle and popf: 0 — the virtual interrupt flag is a byte in the shared-info page.

use contract::abi::hypercall::Hypercall;
use contract::{CountKey, ExitKind, Oracle};

use crate::workloads::Params;

fn hc(h: Hypercall) -> CountKey {
    CountKey::Hypercalls(h.name().to_string())
}

pub(super) fn oracle(workload: &str, p: &Params) -> Option<Oracle> {
    if crate::kernel::workloads::KERNEL_WORKLOADS.contains(&workload) {
        return super::paravirt_kernel::oracle(workload, p);
    }
    let (n, b) = (p.n, p.b.max(1));
    let batches = n.div_ceil(b);
    let calls: Vec<(Hypercall, u64)> = match workload {
        "compute" | "irq-toggle" | "popf" | "call-ret" | "balloon" => vec![],
        "pio" => vec![(Hypercall::ConsoleWrite, batches)],
        "cpuid" => vec![(Hypercall::Cpuid, n + 1)],
        "cr8wr" => vec![(Hypercall::SetTpr, n + 1)],
        "mmio" => vec![(Hypercall::DeviceRead, batches)],
        "hlt-timer" => vec![
            (Hypercall::SetTrapTable, 1),
            (Hypercall::SetTimer, n),
            (Hypercall::Block, n),
            (Hypercall::Iret, n),
        ],
        "divzero" => vec![(Hypercall::SetTrapTable, 1), (Hypercall::Iret, n)],
        _ => return None,
    };
    let total = 1 + calls.iter().map(|c| c.1).sum::<u64>();
    let mut o = Oracle::default()
        .expect(hc(Hypercall::Exit), 1)
        .expect(CountKey::Exits(ExitKind::Hypercall), total);
    for (h, count) in calls {
        o = o.expect(hc(h), count);
    }
    Some(match workload {
        "hlt-timer" => o.expect(CountKey::Injections, n),
        "divzero" => o
            .expect(CountKey::Exits(ExitKind::Trap), n)
            .expect(CountKey::Injections, n),
        // The balloon's ports are open to CPL 3: each `out` exits to the machine directly.
        "balloon" => super::balloon_ports(o, p.b),
        _ => o,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pio_batches_round_up() {
        let p = Params {
            n: 1000,
            b: 64,
            ..Params::default()
        };
        let o = oracle("pio", &p).unwrap();
        assert_eq!(o.counts[&hc(Hypercall::ConsoleWrite)], 16);
        assert_eq!(o.counts[&CountKey::Exits(ExitKind::Hypercall)], 17);
        let o = oracle("irq-toggle", &p).unwrap();
        assert_eq!(o.counts[&CountKey::Exits(ExitKind::Hypercall)], 1);
    }
}
