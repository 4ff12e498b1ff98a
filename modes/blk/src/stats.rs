//! What the disk's devices did, counted.

use std::collections::BTreeMap;

/// Counters of one device model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Doorbell writes (virtio) or commands issued (ATA).
    pub notifications: u64,
    /// Requests served (virtio chains, ATA commands).
    pub requests: u64,
    /// Bytes read from the image into the guest.
    pub bytes_read: u64,
    /// Bytes written from the guest into the image.
    pub bytes_written: u64,
    /// Requests answered with an I/O error (past the end of the disk).
    pub io_errors: u64,
    /// Requests of a type or command the device does not support.
    pub unsupported: u64,
    /// Completion interrupts the device raised (virtio with an irqfd: one per pass over
    /// the queue that put requests on the used ring).
    pub interrupts: u64,
}

impl BlockStats {
    /// The counters as `PREFIX:name` entries (only those that are not zero, plus
    /// `requests` always), as a record keeps them.
    pub fn named(&self, prefix: &str, notify: &str) -> BTreeMap<String, u64> {
        [
            (notify, self.notifications),
            ("requests", self.requests),
            ("bytes_read", self.bytes_read),
            ("bytes_written", self.bytes_written),
            ("io_errors", self.io_errors),
            ("unsupported", self.unsupported),
            ("interrupts", self.interrupts),
        ]
        .into_iter()
        .filter(|(name, v)| *v != 0 || *name == "requests")
        .map(|(name, v)| (format!("{prefix}:{name}"), v))
        .collect()
    }
}
