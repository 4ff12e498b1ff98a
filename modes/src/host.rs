//! What host the runs happen on: the KVM backend, the CPU, the kernel.
//!
//! The backend matters for every number: on `kvm_pvm` (no VT-x/SVM) guest code at CPL 0
//! is emulated instruction by instruction, so reports must say so.

use std::fmt;
use std::fs;
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};
use serde::{Deserialize, Serialize};

/// The module that backs `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// Intel VT-x.
    #[serde(rename = "kvm_intel", alias = "kvm-intel")]
    KvmIntel,
    /// AMD SVM.
    #[serde(rename = "kvm_amd", alias = "kvm-amd")]
    KvmAmd,
    /// A software backend without VT-x: guest CPL 3 runs natively, CPL 0 is emulated.
    #[serde(rename = "kvm_pvm", alias = "kvm-pvm")]
    KvmPvm,
    /// No known backend module was found.
    #[serde(rename = "unknown")]
    Unknown,
}

impl Backend {
    /// Name as printed in reports (the module name).
    pub const fn name(self) -> &'static str {
        match self {
            Backend::KvmIntel => "kvm_intel",
            Backend::KvmAmd => "kvm_amd",
            Backend::KvmPvm => "kvm_pvm",
            Backend::Unknown => "unknown",
        }
    }

    /// Whether this backend emulates guest code that runs at CPL 0.
    pub const fn emulates_kernel_code(self) -> bool {
        matches!(self, Backend::KvmPvm)
    }

    /// One sentence on what the backend means for the numbers.
    pub const fn explanation(self) -> &'static str {
        match self {
            Backend::KvmIntel => {
                "Intel VT-x: guest kernel code runs natively in VMX non-root mode."
            }
            Backend::KvmAmd => "AMD SVM: guest kernel code runs natively in guest mode.",
            Backend::KvmPvm => {
                "kvm_pvm, a software backend without VT-x/SVM: guest user code (CPL 3) runs \
                 natively, but guest kernel code (CPL 0) is emulated one instruction at a time, \
                 so hw-assisted compute is slow here and KVM's insn_emulation count is high."
            }
            Backend::Unknown => {
                "unknown KVM backend: no kvm_intel, kvm_amd or kvm_pvm module found."
            }
        }
    }

    /// Detects the backend from the loaded modules under `sys_module` (normally
    /// `/sys/module`).
    pub fn detect_in(sys_module: &Path) -> Backend {
        [
            ("kvm_intel", Backend::KvmIntel),
            ("kvm_amd", Backend::KvmAmd),
            ("kvm_pvm", Backend::KvmPvm),
        ]
        .into_iter()
        .find(|(m, _)| sys_module.join(m).exists())
        .map_or(Backend::Unknown, |(_, b)| b)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The host a run happened on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The KVM backend module.
    pub backend: Backend,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// KVM API version.
    pub kvm_api_version: i32,
    /// vCPU TSC frequency in kHz, if KVM reports one.
    pub tsc_khz: Option<u32>,
    /// Whether the host CPU has UMIP (SGDT/SIDT/SMSW/STR/SLDT fault at CPL 3 when enabled).
    pub umip: bool,
    /// virtlab version that recorded this.
    pub tool_version: String,
    /// Git revision the tool was built from, if known.
    pub git_revision: Option<String>,
    /// What this host's KVM was measured to do ([`crate::caps`]); absent in records
    /// written before the probe existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::caps::Capabilities>,
}

impl HostInfo {
    /// Gathers what can be known without a VM (the TSC frequency comes from a vCPU later).
    pub fn gather(kvm: &Kvm) -> HostInfo {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostInfo {
            backend: Backend::detect_in(Path::new("/sys/module")),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            kvm_api_version: kvm.get_api_version(),
            tsc_khz: None,
            umip: cpu_flag(&cpuinfo, "umip"),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            git_revision: option_env!("VIRTLAB_GIT_REVISION").map(str::to_string),
            capabilities: None,
        }
    }

    /// What every engine's [`crate::Engine::probe`] answers: the host, with its measured
    /// capabilities (probed once per process).
    pub fn probe() -> crate::Result<HostInfo> {
        let kvm = Kvm::new().map_err(crate::Error::KvmUnavailable)?;
        let mut info = HostInfo::gather(&kvm);
        info.capabilities = Some(crate::caps::probe()?.clone());
        Ok(info)
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn cpu_flag(cpuinfo: &str, flag: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
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
    let info = HostInfo::gather(&kvm);
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
    checks
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_detection_prefers_hardware_modules() {
        let dir = std::env::temp_dir().join(format!("virtlab-sysmod-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("kvm")).unwrap();
        assert_eq!(Backend::detect_in(&dir), Backend::Unknown);
        fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(Backend::detect_in(&dir), Backend::KvmPvm);
        fs::create_dir_all(dir.join("kvm_intel")).unwrap();
        assert_eq!(Backend::detect_in(&dir), Backend::KvmIntel);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backends_serialize_as_their_module_names() {
        for b in [
            Backend::KvmIntel,
            Backend::KvmAmd,
            Backend::KvmPvm,
            Backend::Unknown,
        ] {
            assert_eq!(
                serde_json::to_string(&b).unwrap(),
                format!("\"{}\"", b.name())
            );
        }
    }

    #[test]
    fn cpuinfo_parsing() {
        let text = "processor\t: 0\nmodel name\t: Test CPU @ 1GHz\nflags\t\t: fpu umip sse\n";
        assert_eq!(cpu_model(text).as_deref(), Some("Test CPU @ 1GHz"));
        assert!(cpu_flag(text, "umip"));
        assert!(!cpu_flag(text, "vmx"));
        assert_eq!(cpu_model("nothing"), None);
    }
}
