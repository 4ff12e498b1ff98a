//! Errors of the VMM itself. Problems caused by the guest are not errors: they end the
//! run with a classified [`crate::Outcome`].

use std::io;

/// Something the VMM could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` is missing or cannot be opened.
    #[error(
        "cannot open /dev/kvm ({0}); load a KVM module or add yourself to the `kvm` group \
         (`virtlab doctor` checks the whole host)"
    )]
    KvmUnavailable(#[source] io::Error),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// The operation.
        op: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate guest memory: {0}")]
    GuestMemoryAlloc(String),
    /// The image does not fit the guest ABI.
    #[error("invalid guest image: {0}")]
    InvalidImage(String),
    /// A run option is out of range.
    #[error("invalid run option: {0}")]
    InvalidOption(String),
    /// KVM's binary statistics could not be read.
    #[error("cannot read KVM statistics: {0}")]
    KvmStats(#[source] io::Error),
    /// The watchdog thread or signal could not be set up.
    #[error("cannot set up the watchdog: {0}")]
    Watchdog(String),
    /// The host's capabilities could not be probed.
    #[error("cannot probe the host's capabilities: {0}")]
    Probe(String),
    /// The VMM failed while handling an exit (a KVM call, its own memory): not the
    /// guest's doing.
    #[error("the VMM failed during the run: {0}")]
    Vmm(String),
    /// KVM refused an MSR an engine needs.
    #[error("KVM refused MSR {index:#x} ({what})")]
    MsrRefused {
        /// The MSR.
        index: u32,
        /// What it does.
        what: &'static str,
    },
    /// The host cannot run this mode (missing capability or feature).
    #[error("this host cannot run {mode}: {why}")]
    Unsupported {
        /// The mode.
        mode: crate::Mode,
        /// Why not.
        why: String,
    },
}

/// Result of VMM operations.
pub type Result<T> = std::result::Result<T, Error>;
