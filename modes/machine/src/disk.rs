//! Attaching a run's disk to the device bus, and recording what its devices did.

use contract::record::{Mode, RunRecord};
use contract::{DiskOptions, Error, Result};
use vm_memory::GuestMemoryMmap;

use crate::lifecycle::Policy;

/// Opens the image and attaches both device models to the handler's devices, with the
/// backend asked for.
pub fn attach<P: Policy>(
    mode: Mode,
    disk: &DiskOptions,
    mem: &GuestMemoryMmap,
    handler: &mut P,
) -> Result<()> {
    let devices = handler.devices().ok_or_else(|| Error::Unsupported {
        mode,
        why: "this engine has no device bus to attach a disk to".into(),
    })?;
    let path = disk
        .path
        .as_ref()
        .ok_or_else(|| Error::InvalidOption("a disk without an image file".into()))?;
    let image = blk::DiskImage::open(path).map_err(|e| Error::InvalidOption(e.to_string()))?;
    let block = blk::BlockDevices::new(image, mem)
        .ok_or_else(|| Error::GuestMemoryAlloc("no guest RAM at address 0".into()))?;
    devices.block = Some(block);
    Ok(())
}

/// Copies the devices' counters into the record, with a note on the disk.
pub fn report<P: Policy>(disk: &DiskOptions, handler: &mut P, record: &mut RunRecord) {
    let Some(block) = handler.devices().and_then(|d| d.block.as_ref()) else {
        return;
    };
    record.device = block.counters();
    record.notes.push(format!(
        "disk: an image of {} sectors, device model {}",
        block.disk.sectors(),
        match disk.backend {
            contract::BlockBackend::Inline => "inline (in the vCPU thread)",
        }
    ));
}
