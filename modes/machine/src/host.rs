//! The host check `virtlab doctor` prints, and the host a run happens on with its measured
//! capabilities.

use std::path::Path;

use contract::host::{Backend, HostInfo};
use contract::Result;
use kvm_ioctls::{Cap, Kvm};
use serde::Serialize;

/// The host this process runs on, with its measured capabilities (probed once per
/// process): what the harness records beside every run.
pub fn probe() -> Result<HostInfo> {
    let kvm = Kvm::new().map_err(crate::unavailable)?;
    let mut info = HostInfo::gather(kvm.get_api_version());
    info.capabilities = Some(crate::caps::probe()?.clone());
    Ok(info)
}

/// How a line of the host check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Works as every mode and lab expects.
    Ok,
    /// Works differently here: some counts or lessons show the host's variant.
    Warning,
    /// Absent: what needs it cannot run.
    Missing,
}

impl Level {
    /// The tag `virtlab doctor` prints.
    pub const fn tag(self) -> &'static str {
        match self {
            Level::Ok => "  ok   ",
            Level::Warning => "warning",
            Level::Missing => "missing",
        }
    }
}

/// One line of the host check `virtlab doctor` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// How it came out.
    pub level: Level,
    /// What was found.
    pub found: String,
    /// What it means for the modes and labs, when that is worth saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub means: Option<String>,
    /// How to fix it, if it is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Whether nothing can run without it.
    pub essential: bool,
}

impl Check {
    fn new(what: impl Into<String>, level: Level, found: impl Into<String>) -> Self {
        Check {
            what: what.into(),
            level,
            found: found.into(),
            means: None,
            fix: None,
            essential: false,
        }
    }
    fn essential(mut self) -> Self {
        self.essential = true;
        self
    }
    fn means(mut self, m: impl Into<String>) -> Self {
        self.means = Some(m.into());
        self
    }
    fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }

    /// Whether this check stops every run.
    pub fn blocks_everything(&self) -> bool {
        self.essential && self.level == Level::Missing
    }
}

/// The capabilities every engine needs.
pub const REQUIRED_CAPS: [(Cap, &str); 4] = [
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
];

/// The whole host check: device node, permissions, API version, backend, and every
/// capability measured by [`crate::caps`], each with what it means for the modes and labs.
pub fn doctor() -> Vec<Check> {
    let mut checks = Vec::new();
    let dev = Path::new("/dev/kvm");
    let exists = dev.exists();
    let mut c = Check::new(
        "/dev/kvm exists",
        if exists { Level::Ok } else { Level::Missing },
        if exists { "present" } else { "missing" },
    )
    .essential();
    if !exists {
        c = c.fix(
            "load a KVM module (`modprobe kvm_intel` or `modprobe kvm_amd`) or enable nested \
             virtualization for this VM",
        );
    }
    checks.push(c);
    let backend = Backend::detect_in(Path::new("/sys/module"));
    let mut c = Check::new(
        "KVM backend",
        if backend == Backend::Unknown {
            Level::Warning
        } else {
            Level::Ok
        },
        format!("{backend}: {}", backend.explanation()),
    );
    if backend == Backend::Unknown {
        c = c.fix("load kvm_intel, kvm_amd or kvm_pvm");
    }
    checks.push(c);
    let mmu = contract::host::guest_mmu_in(backend, Path::new("/sys/module"));
    checks.push(
        Check::new(
            "guest MMU under hw-assisted",
            if mmu.starts_with("nested") {
                Level::Ok
            } else {
                Level::Warning
            },
            mmu.clone(),
        )
        .means(
            "how KVM runs a guest kernel's own page tables (the memory workloads): with \
             shadow paging KVM intercepts every guest page fault and injects it back \
             (KVM's pf_guest statistic counts them), with nested paging it never sees them",
        ),
    );
    if !exists {
        return checks;
    }
    let kvm = match Kvm::new() {
        Err(e) => {
            checks.push(
                Check::new(
                    "/dev/kvm can be opened read-write",
                    Level::Missing,
                    e.to_string(),
                )
                .essential()
                .fix(
                    "add yourself to the `kvm` group (`sudo usermod -aG kvm $USER`, then log \
                     in again) or run as root",
                ),
            );
            return checks;
        }
        Ok(kvm) => kvm,
    };
    checks.push(Check::new(
        "/dev/kvm can be opened read-write",
        Level::Ok,
        "yes",
    ));
    let v = kvm.get_api_version();
    let mut c = Check::new(
        "KVM API version is 12",
        if v == 12 { Level::Ok } else { Level::Missing },
        v.to_string(),
    )
    .essential();
    if v != 12 {
        c = c.fix("use a Linux kernel with the stable KVM API (12)");
    }
    checks.push(c);
    for (cap, name) in REQUIRED_CAPS {
        let ok = kvm.check_extension(cap);
        let mut c = Check::new(
            format!("capability {name}"),
            if ok { Level::Ok } else { Level::Missing },
            if ok { "offered" } else { "missing" },
        )
        .essential();
        if !ok {
            c = c.fix("use a newer host kernel");
        }
        checks.push(c);
    }
    let info = HostInfo::gather(kvm.get_api_version());
    checks.push(Check::new(
        "CPU",
        Level::Ok,
        format!(
            "{} (umip flag: {})",
            info.cpu_model,
            if info.umip { "yes" } else { "no" }
        ),
    ));
    checks.push(Check::new("kernel", Level::Ok, info.kernel));
    match crate::caps::probe() {
        Err(e) => checks.push(
            Check::new("capability probe", Level::Missing, e.to_string())
                .essential()
                .means("no guest could run to measure the host"),
        ),
        Ok(caps) => checks.extend(capability_checks(caps)),
    }
    checks.push(host_swapping_check());
    checks
}

/// Host swapping needs a userfaultfd, and KVM's own writes to guest memory must fault
/// through it: the same two probes a run under a memory budget makes, with the ways to a
/// userfaultfd beside them.
fn host_swapping_check() -> Check {
    use crate::overcommit::{probe, swap};
    let access = swap::UffdAccess::find();
    let verdict = swap::probe().and_then(|()| probe::kvm_faults_through_userfaultfd());
    let found = match &verdict {
        Ok(()) => format!("works ({})", access.describe()),
        Err(e) => format!("unavailable: {e} ({})", access.describe()),
    };
    let c = Check::new(
        "host swapping (userfaultfd)",
        if verdict.is_ok() {
            Level::Ok
        } else {
            Level::Warning
        },
        found,
    );
    if verdict.is_ok() {
        return c;
    }
    c.means(
        "a run under a memory budget cannot swap guest pages: it records swapping as \
         unavailable (ballooning and page sharing do not need it)",
    )
    .fix(
        "run as root, or let unprivileged processes have one (`sysctl \
         vm.unprivileged_userfaultfd=1`), or give your user read-write access to \
         /dev/userfaultfd (Linux 6.1 and later)",
    )
}

/// One check per measured capability, with what it means where it is absent.
fn capability_checks(caps: &crate::caps::Capabilities) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, p) in caps.rows() {
        let (label, level, means, essential) = match (name, p.present) {
            (_, None) => (
                name,
                Level::Warning,
                "could not be measured; the modes that rely on it may not behave as the labs \
                 describe"
                    .to_string(),
                false,
            ),
            ("cpuid_faulting", Some(true)) => (
                "CPUID faulting",
                Level::Ok,
                "trap-emulate emulates CPUID from the virtual CPU (lab 2 step 3 shows both \
                 outcomes: on and off)"
                    .into(),
                false,
            ),
            ("cpuid_faulting", Some(false)) => (
                "CPUID faulting",
                Level::Warning,
                format!(
                    "not effective here: in trap-emulate CPUID never traps, so the cpuid \
                     workload is a declared host divergence (0 cpuid traps) and lab 2 step 3 \
                     shows the host variant; {}",
                    caps.describe_cpuid_leaks()
                ),
                false,
            ),
            ("umip", Some(true)) => (
                "UMIP",
                Level::Ok,
                "`--umip` makes SGDT/SIDT/SLDT/SMSW/STR trap in trap-emulate (lab 2 step 2)".into(),
                false,
            ),
            ("umip", Some(false)) => (
                "UMIP",
                Level::Warning,
                "not effective here: `--umip` cannot close that part of the x86 hole; lab 2 \
                 step 2 shows SIDT reading the monitor's table either way"
                    .into(),
                false,
            ),
            ("io_bitmap", Some(true)) => (
                "TSS I/O bitmap",
                Level::Ok,
                "paravirt's hypercall port exits directly; trap-emulate's port I/O traps".into(),
                false,
            ),
            ("io_bitmap", Some(false)) => (
                "TSS I/O bitmap",
                Level::Missing,
                "paravirt cannot open its hypercall port and trap-emulate cannot trap port I/O: \
                 neither deprivileged mode can run as designed"
                    .into(),
                false,
            ),
            ("sync_regs", Some(true)) => (
                "KVM_CAP_SYNC_REGS",
                Level::Ok,
                "paravirt reads and writes registers through kvm_run: one ioctl less per \
                 hypercall"
                    .into(),
                false,
            ),
            ("sync_regs", Some(false)) => (
                "KVM_CAP_SYNC_REGS",
                Level::Missing,
                "paravirt reads registers through kvm_run and cannot run".into(),
                false,
            ),
            ("immediate_exit", Some(true)) => (
                "immediate exit",
                Level::Ok,
                "the watchdog can kick a runaway guest out of KVM_RUN".into(),
                false,
            ),
            ("immediate_exit", Some(false)) => (
                "immediate exit",
                Level::Missing,
                "the watchdog cannot stop a guest that spins without exits: runaway guests \
                 end only at the exit-count limit"
                    .into(),
                false,
            ),
            ("stats_fd", Some(true)) => (
                "KVM statistics",
                Level::Ok,
                "every record carries KVM's own counters (insn_emulation, exits, …); lab 4 \
                 reads them"
                    .into(),
                false,
            ),
            ("stats_fd", Some(false)) => (
                "KVM statistics",
                Level::Warning,
                "records carry no KVM counters; lab 4's kvm_stat rows stay empty".into(),
                false,
            ),
            ("kernel_code_emulated", Some(true)) => (
                "guest CPL 0 code",
                Level::Warning,
                "emulated one instruction at a time: hw-assisted compute and every trap's \
                 monitor stub are slow here (lab 4 explains why); counts are unaffected"
                    .into(),
                false,
            ),
            ("kernel_code_emulated", Some(false)) => (
                "guest CPL 0 code",
                Level::Ok,
                "runs natively: hw-assisted compute runs at native speed".into(),
                false,
            ),
            ("syscall_to_kernel", Some(true)) => (
                "SYSCALL to the guest kernel",
                Level::Ok,
                "the guest kernel's system calls use SYSCALL/SYSRETQ".into(),
                false,
            ),
            ("syscall_to_kernel", Some(false)) => (
                "SYSCALL to the guest kernel",
                Level::Warning,
                "the guest kernel's system calls enter with int3 (a trap through a DPL 3 \
                 gate) and leave with SYSRETQ: the syscall workload measures that path here"
                    .into(),
                false,
            ),
            ("ioeventfd", Some(true)) => (
                "ioeventfd",
                Level::Ok,
                "the disk's kernel-notify and driver-domain backends run here".into(),
                false,
            ),
            ("ioeventfd", Some(false)) => (
                "ioeventfd",
                Level::Warning,
                "the disk's kernel-notify and driver-domain backends are unavailable: a run \
                 that asks for one says so and does not run; inline works"
                    .into(),
                false,
            ),
            (other, Some(_)) => (other, Level::Ok, String::new(), false),
        };
        let mut c = Check::new(label, level, p.detail.clone());
        if !means.is_empty() {
            c = c.means(means);
        }
        if essential {
            c = c.essential();
        }
        out.push(c);
    }
    out
}
