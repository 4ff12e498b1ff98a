//! Guest RAM in a memfd, mapped shared: the same RAM a separate process (a driver
//! domain) maps after `fork`. Off by default — private anonymous RAM stays the rule (page
//! sharing and host swapping rely on it); a run asks for this through its disk's
//! `driver-domain` backend.

use std::fs::File;
use std::os::fd::FromRawFd;

use contract::{Error, Result};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::memory_slots;

/// An empty memfd of `len` bytes.
fn memfd(len: u64) -> std::io::Result<File> {
    // SAFETY: the name is a NUL-terminated constant; memfd_create has no other input.
    let fd = unsafe { libc::memfd_create(c"virtlab-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len)?;
    Ok(file)
}

/// Guest memory whose RAM (from 0) is a memfd mapped shared; the monitor's region stays
/// private.
pub fn guest_memory(ram_size: u64) -> Result<GuestMemoryMmap> {
    let file = memfd(ram_size).map_err(|e| Error::GuestMemoryAlloc(format!("memfd: {e}")))?;
    let [(ram_base, ram), (mon_base, mon)] = memory_slots(ram_size);
    GuestMemoryMmap::<()>::from_ranges_with_files([
        (
            GuestAddress(ram_base),
            ram as usize,
            Some(FileOffset::new(file, 0)),
        ),
        (GuestAddress(mon_base), mon as usize, None),
    ])
    .map_err(|e| Error::GuestMemoryAlloc(e.to_string()))
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    #[test]
    fn ram_is_a_shared_file_mapping_and_the_monitor_region_is_not() {
        let mem = guest_memory(4 << 20).unwrap();
        let ram = mem.find_region(GuestAddress(0)).unwrap();
        assert!(ram.file_offset().is_some());
        let mon = mem
            .find_region(GuestAddress(contract::abi::layout::MONITOR_BASE))
            .unwrap();
        assert!(mon.file_offset().is_none());
        mem.write_obj(0xABCDu64, GuestAddress(0x1000)).unwrap();
        // The memfd holds what the guest wrote: another mapping of it sees the same.
        let f = ram.file_offset().unwrap().file();
        let mut b = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(f, &mut b, 0x1000).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0xABCD);
    }
}
