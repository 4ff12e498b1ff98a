//! A run's disk: which image file backs the block devices, and where the device model
//! runs (its backend). Data only; the devices are in the `blk` crate.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the block device's model runs, and so what a notification costs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum BlockBackend {
    /// In the VMM's vCPU thread: the exit of the doorbell (or of each ATA register
    /// access) is handled where it lands, and the I/O is done before the guest resumes —
    /// QEMU's classic path, the type-2 shape.
    #[default]
    Inline,
    /// The virtio doorbell is a KVM ioeventfd: the guest's write never leaves the kernel,
    /// and a backend thread woken by the eventfd serves the queue — vhost's shape. The
    /// ATA disk's registers still exit to the vCPU thread (an emulated device has no
    /// doorbell to hand over).
    KernelNotify,
    /// The device model runs in a separate process — a driver domain, as Xen's Dom0 or
    /// a driver domain serves its guests — that shares the guest's RAM through a memfd
    /// and is woken by the doorbell's eventfd (a KVM ioeventfd): one more process hop per
    /// batch, seen in its context switches.
    DriverDomain,
}

impl BlockBackend {
    /// Every backend, in the order reports list them.
    pub const ALL: [BlockBackend; 3] = [
        BlockBackend::Inline,
        BlockBackend::KernelNotify,
        BlockBackend::DriverDomain,
    ];

    /// The name used on the command line and in records.
    pub const fn name(self) -> &'static str {
        match self {
            BlockBackend::Inline => "inline",
            BlockBackend::KernelNotify => "kernel-notify",
            BlockBackend::DriverDomain => "driver-domain",
        }
    }
}

impl fmt::Display for BlockBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that names no backend of this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown block backend `{0}` (this build has: inline, kernel-notify, driver-domain)")]
pub struct UnknownBackend(pub String);

impl FromStr for BlockBackend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlockBackend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

/// The disk a run attaches: an image file (it must exist, with a whole number of
/// sectors) and the backend of its device models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskOptions {
    /// The image file; `None`: the harness makes one for each run that needs a disk
    /// (and an engine refuses a run without one).
    pub path: Option<PathBuf>,
    /// Where the device model runs.
    pub backend: BlockBackend,
    /// Leave KVM's ioeventfd unused even where the host has it (`--no-ioeventfd`), as if
    /// the probe had not found it: the backends woken by one are then unavailable, and
    /// a run asking for them ends declared as such.
    pub no_ioeventfd: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in BlockBackend::ALL {
            assert_eq!(b.name().parse::<BlockBackend>(), Ok(b));
        }
        let e = "vhost".parse::<BlockBackend>().unwrap_err();
        assert!(
            e.to_string().contains("unknown block backend `vhost`"),
            "{e}"
        );
    }
}
