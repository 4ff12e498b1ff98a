//! What this host's KVM was measured to do: the data every record carries
//! (`RunRecord::host.capabilities`). The probes that measure it run tiny guests on the
//! KVM machine (`machine::caps`).

use serde::{Deserialize, Serialize};

/// MSR_MISC_FEATURES_ENABLES; bit 0 turns on CPUID faulting.
pub const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;

/// The leaves the CPUID probe executes at CPL 3 (vendor, features, extended range,
/// extended features).
pub const PROBED_LEAVES: [u32; 4] = [0, 1, 0x8000_0000, 0x8000_0001];

/// Iterations of the CPL 0 loop that tells whether kernel code is emulated.
pub const KERNEL_LOOP: u32 = 1000;

/// One probed capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probed {
    /// `Some(true)`: the behaviour was observed; `Some(false)`: it was not; `None`: the
    /// probe could not run.
    pub present: Option<bool>,
    /// What the probe did and saw, in one sentence.
    pub detail: String,
}

impl Probed {
    /// Observed.
    pub fn yes(detail: impl Into<String>) -> Self {
        Probed {
            present: Some(true),
            detail: detail.into(),
        }
    }
    /// Not observed.
    pub fn no(detail: impl Into<String>) -> Self {
        Probed {
            present: Some(false),
            detail: detail.into(),
        }
    }
    /// The probe could not tell.
    pub fn unknown(detail: impl Into<String>) -> Self {
        Probed {
            present: None,
            detail: detail.into(),
        }
    }
    /// A probe's answer, or why it could not run.
    pub fn from_result<E: std::fmt::Display>(r: Result<Probed, E>) -> Self {
        r.unwrap_or_else(|e| Probed::unknown(format!("the probe failed: {e}")))
    }

    /// Whether the behaviour was observed.
    pub fn is_present(&self) -> bool {
        self.present == Some(true)
    }
}

/// What a CPUID executed at CPL 3 returned, next to the virtual CPU's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidSample {
    /// EAX input (ECX was 0).
    pub leaf: u32,
    /// EAX, EBX, ECX, EDX the guest saw.
    pub seen: [u32; 4],
    /// EAX, EBX, ECX, EDX of the virtual CPU (the table KVM was given for the vCPU).
    pub virtual_cpu: [u32; 4],
}

impl CpuidSample {
    /// The registers that differ, as `EBX 0x… (virtual 0x…)`.
    pub fn differences(&self) -> Vec<String> {
        ["EAX", "EBX", "ECX", "EDX"]
            .iter()
            .zip(self.seen.iter().zip(self.virtual_cpu.iter()))
            .filter(|(_, (s, v))| s != v)
            .map(|(r, (s, v))| format!("{r} {s:#010x} (virtual {v:#010x})"))
            .collect()
    }
}

/// Every capability a mode or a lab relies on, as measured on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// CPUID at CPL 3 raises #GP once MSR 0x140 bit 0 is set (trap-emulate can then
    /// emulate CPUID).
    pub cpuid_faulting: Probed,
    /// SGDT at CPL 3 raises #GP with CR4.UMIP set.
    pub umip: Probed,
    /// The TSS I/O permission bitmap decides: an open port exits to the VMM, a closed one
    /// raises #GP (paravirt's hypercall port and trap-emulate's traps rely on it).
    pub io_bitmap: Probed,
    /// `KVM_CAP_SYNC_REGS`: registers come back in `kvm_run` without `KVM_GET_REGS`.
    pub sync_regs: Probed,
    /// `KVM_CAP_IMMEDIATE_EXIT`: `KVM_RUN` returns at once when asked (the watchdog's kick).
    pub immediate_exit: Probed,
    /// KVM's binary statistics file descriptor (`KVM_GET_STATS_FD`).
    pub stats_fd: Probed,
    /// Guest code at CPL 0 is emulated instruction by instruction (the `kvm_pvm`
    /// backend): measured as KVM's `insn_emulation` over a short CPL 0 loop.
    pub kernel_code_emulated: Probed,
    /// `insn_emulation` counted over the CPL 0 loop of [`KERNEL_LOOP`] iterations.
    pub kernel_loop_insn_emulation: Option<u64>,
    /// Where RIP points at an I/O exit from CPL 3: `Some(true)` past the `out`, `Some(false)`
    /// on it (backends differ; paravirt resumes its hypercalls past the `out` itself).
    #[serde(default)]
    pub io_exit_rip_past: Option<bool>,
    /// What CPUID at CPL 3 returns without CPUID faulting, against the virtual CPU.
    pub cpuid_at_cpl3: Vec<CpuidSample>,
    /// SYSCALL from CPL 3 arrives at LSTAR at CPL 0 (the guest kernel's system-call
    /// entry); where it does not, the guest kernel enters with `int3` instead.
    #[serde(default = "not_probed")]
    pub syscall_to_kernel: Probed,
    /// A KVM ioeventfd on an MMIO address: a guest's write there signals an eventfd
    /// inside KVM, with no exit to the VMM (what the `kernel-notify` and `driver-domain`
    /// disk backends are built on).
    #[serde(default = "not_probed")]
    pub ioeventfd: Probed,
    /// An in-kernel irqchip, a GSI routed to an MSI and an irqfd on it: an eventfd write
    /// interrupts a guest waiting in `hlt`, inside KVM (the `kernel-notify` disk
    /// backend's completion interrupt, where the guest runs at CPL 0).
    #[serde(default = "not_probed")]
    pub irqfd: Probed,
}

/// A capability a record written before its probe existed does not carry.
fn not_probed() -> Probed {
    Probed::unknown("not probed when this record was written")
}

impl Capabilities {
    /// Every probed capability with its name, in the order reports list them.
    pub fn rows(&self) -> [(&'static str, &Probed); 10] {
        [
            ("cpuid_faulting", &self.cpuid_faulting),
            ("umip", &self.umip),
            ("io_bitmap", &self.io_bitmap),
            ("sync_regs", &self.sync_regs),
            ("immediate_exit", &self.immediate_exit),
            ("stats_fd", &self.stats_fd),
            ("kernel_code_emulated", &self.kernel_code_emulated),
            ("syscall_to_kernel", &self.syscall_to_kernel),
            ("ioeventfd", &self.ioeventfd),
            ("irqfd", &self.irqfd),
        ]
    }

    /// The CPUID samples whose values differ from the virtual CPU's.
    pub fn cpuid_leaks(&self) -> impl Iterator<Item = &CpuidSample> {
        self.cpuid_at_cpl3
            .iter()
            .filter(|s| !s.differences().is_empty())
    }

    /// One sentence on what a guest saw when CPUID did not trap.
    pub fn describe_cpuid_leaks(&self) -> String {
        if self.cpuid_at_cpl3.is_empty() {
            return "no CPUID sample was taken at CPL 3".into();
        }
        let leaks: Vec<String> = self
            .cpuid_leaks()
            .map(|s| format!("leaf {:#x}: {}", s.leaf, s.differences().join(", ")))
            .collect();
        if leaks.is_empty() {
            format!(
                "at CPL 3 leaves {} returned the same values as the virtual CPU's table \
                 (the layer below answers from an identical table)",
                leaf_list(&self.cpuid_at_cpl3)
            )
        } else {
            format!(
                "at CPL 3 the guest saw the layer below, not the virtual CPU: {}",
                leaks.join("; ")
            )
        }
    }
}

fn leaf_list(samples: &[CpuidSample]) -> String {
    samples
        .iter()
        .map(|s| format!("{:#x}", s.leaf))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_samples_name_the_registers_that_differ() {
        let s = CpuidSample {
            leaf: 1,
            seen: [1, 2, 3, 4],
            virtual_cpu: [1, 2, 0x30, 4],
        };
        assert_eq!(s.differences(), ["ECX 0x00000003 (virtual 0x00000030)"]);
        let caps = Capabilities {
            cpuid_faulting: Probed::no("x"),
            umip: Probed::yes("x"),
            io_bitmap: Probed::yes("x"),
            sync_regs: Probed::yes("x"),
            immediate_exit: Probed::yes("x"),
            stats_fd: Probed::yes("x"),
            kernel_code_emulated: Probed::unknown("x"),
            kernel_loop_insn_emulation: None,
            io_exit_rip_past: None,
            cpuid_at_cpl3: vec![s],
            syscall_to_kernel: Probed::no("x"),
            ioeventfd: Probed::yes("x"),
            irqfd: Probed::yes("x"),
        };
        assert_eq!(
            caps.describe_cpuid_leaks(),
            "at CPL 3 the guest saw the layer below, not the virtual CPU: leaf 0x1: ECX \
             0x00000003 (virtual 0x00000030)"
        );
        assert_eq!(caps.rows().len(), 10);
    }
}
