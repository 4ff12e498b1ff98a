//! Resident pages of a mapping, from `mincore(2)`.

use std::io;

use contract::abi::PAGE_SIZE;

/// How many of the `len / 4096` pages from `addr` are resident in memory.
///
/// `addr` must be page-aligned. Asking about memory this process does not map is an
/// error (`ENOMEM`), never undefined behaviour: `mincore` only reads the page tables.
pub fn resident_pages(addr: *const u8, len: usize) -> io::Result<u64> {
    let pages = len.div_ceil(PAGE_SIZE as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte for each page of the range, as mincore writes; the call
    // only inspects the page tables of the range (an unmapped range fails with ENOMEM).
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(vec.iter().filter(|b| *b & 1 != 0).count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_touched_pages_of_a_private_mapping() {
        let len = 16 * PAGE_SIZE as usize;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = p as *mut u8;
        let page = |i: usize| (p as usize + i * PAGE_SIZE as usize) as *mut u8;
        assert_eq!(resident_pages(p, len).unwrap(), 0);
        for i in [0usize, 3, 7, 15] {
            // SAFETY: inside the mapping.
            unsafe { page(i).write(1) };
        }
        assert_eq!(resident_pages(p, len).unwrap(), 4);
        // SAFETY: page 3 of the mapping; dropping it is what the balloon does.
        let r = unsafe {
            libc::madvise(
                page(3) as *mut libc::c_void,
                PAGE_SIZE as usize,
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(r, 0);
        assert_eq!(resident_pages(p, len).unwrap(), 3);
        // SAFETY: the mapping made above, no longer used.
        assert_eq!(unsafe { libc::munmap(p as *mut libc::c_void, len) }, 0);
        assert!(resident_pages(p, len).is_err());
    }
}
