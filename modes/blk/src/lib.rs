//! virtlab's disk: one image file on the host behind two device models — a legacy ATA
//! disk driven register by register, and a virtio-blk device with a split virtqueue whose
//! device side is rust-vmm's `virtio-queue` over `vm-memory`. The machine's device bus
//! routes port I/O and MMIO here; nothing in this crate knows KVM.
//!
//! ```
//! use std::sync::Arc;
//! use blk::{AtaDisk, DiskImage};
//! use contract::abi::blk::*;
//!
//! let path = std::env::temp_dir().join(format!("blk-doc-{}.img", std::process::id()));
//! let disk = Arc::new(DiskImage::create(&path, 8 * SECTOR_SIZE)?);
//! let mut ata = AtaDisk::new(disk.clone());
//! // WRITE SECTORS: one sector at LBA 3, then 512 bytes through the data port.
//! for (port, value) in [(ATA_DRIVE, 0xE0), (ATA_SECTOR_COUNT, 1), (ATA_LBA_LOW, 3),
//!                       (ATA_LBA_MID, 0), (ATA_LBA_HIGH, 0), (ATA_COMMAND, ATA_CMD_WRITE)] {
//!     ata.io_out(port, &[value]).unwrap();
//! }
//! ata.io_out(ATA_DATA, &[0xAB; 512]).unwrap();
//! let mut status = [0u8];
//! ata.io_in(ATA_COMMAND, &mut status).unwrap();
//! assert_eq!(status[0], ATA_SR_DRDY);
//! let mut back = [0u8; 512];
//! disk.read_at(3 * SECTOR_SIZE, &mut back)?;
//! assert_eq!(back, [0xAB; 512]);
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod ata;
pub mod image;
pub mod stats;
pub mod virtio;

use std::collections::BTreeMap;
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap};

pub use ata::AtaDisk;
pub use image::{DiskImage, ImageError};
pub use stats::BlockStats;
pub use virtio::{ChainFault, QueueServer, VirtioBlk, VirtioError};

/// A view of guest memory with only the RAM that starts at 0 in it (the same mapping,
/// shared): what a device may reach on the guest's behalf. The monitor's region, mapped
/// above RAM in the full guest memory, is not in it.
pub fn ram_view(mem: &GuestMemoryMmap) -> Option<GuestMemoryMmap> {
    let region = mem.find_region(GuestAddress(0))?;
    let view = GuestRegionMmap::with_arc(region.get_mmap(), GuestAddress(0))?;
    GuestMemoryMmap::from_regions(vec![view]).ok()
}

/// Both device models on one image.
#[derive(Debug)]
pub struct BlockDevices {
    /// The image they share.
    pub disk: Arc<DiskImage>,
    /// virtio-blk.
    pub virtio: VirtioBlk,
    /// The ATA disk.
    pub ata: AtaDisk,
}

impl BlockDevices {
    /// Both devices on `disk`, reaching guest RAM through `mem` (see [`ram_view`]).
    pub fn new(disk: DiskImage, mem: &GuestMemoryMmap) -> Option<Self> {
        let disk = Arc::new(disk);
        Some(BlockDevices {
            virtio: VirtioBlk::new(disk.clone(), ram_view(mem)?),
            ata: AtaDisk::new(disk.clone()),
            disk,
        })
    }

    /// Both devices' counters, named as a record keeps them (`virtio:notifications`,
    /// `ata:commands`…); a device the guest never used adds nothing.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for (prefix, notify, stats) in [
            ("virtio", "notifications", self.virtio.stats()),
            ("ata", "commands", self.ata.stats),
        ] {
            if stats != BlockStats::default() {
                all.extend(stats.named(prefix, notify));
            }
        }
        all
    }
}

#[cfg(test)]
mod tests;
