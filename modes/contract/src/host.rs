//! What host the runs happen on: the KVM backend, the CPU, the kernel.
//!
//! The backend matters for every number: on `kvm_pvm` (no VT-x/SVM) guest code at CPL 0
//! is emulated instruction by instruction, so reports must say so.

use std::fmt;
use std::fs;
use std::path::Path;

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
    /// What this host's KVM was measured to do ([`crate::caps`], probed by `machine::caps`); absent in records
    /// written before the probe existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::caps::Capabilities>,
    /// How KVM virtualizes the guest's MMU underneath hw-assisted ([`guest_mmu_in`]);
    /// absent in records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mmu: Option<String>,
}

/// How KVM virtualizes a guest's own page tables on this host, from the backend module's
/// parameters under `sys_module` (normally `/sys/module`): nested paging (EPT on VT-x, NPT
/// on SVM) when the module has it on, shadow paging otherwise — always on `kvm_pvm`,
/// which has neither. A guest's own page faults tell them apart in KVM's statistics: with
/// shadow paging KVM intercepts each one and injects it back (`pf_guest` grows by one per
/// fault), with nested paging it never sees them.
pub fn guest_mmu_in(backend: Backend, sys_module: &Path) -> String {
    let param = |module: &str, name: &str| {
        fs::read_to_string(sys_module.join(module).join("parameters").join(name))
            .map(|s| s.trim().to_string())
            .ok()
    };
    let on = |v: &Option<String>| matches!(v.as_deref(), Some("Y" | "1"));
    match backend {
        Backend::KvmIntel => match param("kvm_intel", "ept") {
            ref v if on(v) => "nested paging (EPT)".into(),
            v => format!(
                "shadow paging (kvm_intel with ept = {})",
                v.as_deref().unwrap_or("unknown")
            ),
        },
        Backend::KvmAmd => match param("kvm_amd", "npt") {
            ref v if on(v) => "nested paging (NPT)".into(),
            v => format!(
                "shadow paging (kvm_amd with npt = {})",
                v.as_deref().unwrap_or("unknown")
            ),
        },
        Backend::KvmPvm => "shadow paging (kvm_pvm has neither EPT nor NPT)".into(),
        Backend::Unknown => "unknown".into(),
    }
}

impl HostInfo {
    /// Gathers what can be known without a VM, given the KVM API version `/dev/kvm`
    /// reported (the TSC frequency comes from a vCPU later).
    pub fn gather(kvm_api_version: i32) -> HostInfo {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let backend = Backend::detect_in(Path::new("/sys/module"));
        HostInfo {
            backend,
            guest_mmu: Some(guest_mmu_in(backend, Path::new("/sys/module"))),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            kvm_api_version,
            tsc_khz: None,
            umip: cpu_flag(&cpuinfo, "umip"),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            git_revision: option_env!("VIRTLAB_GIT_REVISION").map(str::to_string),
            capabilities: None,
        }
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
    fn the_guest_mmu_follows_the_module_parameters() {
        let dir = std::env::temp_dir().join(format!("virtlab-mmu-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let params = dir.join("kvm_intel/parameters");
        fs::create_dir_all(&params).unwrap();
        fs::write(params.join("ept"), "Y\n").unwrap();
        assert_eq!(guest_mmu_in(Backend::KvmIntel, &dir), "nested paging (EPT)");
        fs::write(params.join("ept"), "N\n").unwrap();
        assert_eq!(
            guest_mmu_in(Backend::KvmIntel, &dir),
            "shadow paging (kvm_intel with ept = N)"
        );
        assert!(guest_mmu_in(Backend::KvmAmd, &dir).contains("npt = unknown"));
        assert!(guest_mmu_in(Backend::KvmPvm, &dir).starts_with("shadow paging"));
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
