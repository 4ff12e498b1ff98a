//! `device_read`: string reads of the MMIO device's registers.

use contract::abi::hypercall::{errno, MAX_BATCH};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

impl Hypervisor {
    pub(super) fn device_read(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: u64,
        count: u64,
        buf: u64,
    ) -> Check<i64> {
        if count == 0 {
            return Err(errno::EINVAL);
        }
        if count > MAX_BATCH {
            return Err(errno::E2BIG);
        }
        self.writable_range(buf, count * 8, MAX_BATCH * 8)?;
        for i in 0..count {
            let mut value = [0u8; 8];
            // A bad register fails on the first read, before any side effect.
            self.devices
                .mmio
                .read(addr, &mut value)
                .map_err(|_| errno::EINVAL)?;
            mem.write_slice(&value, GuestAddress(buf + i * 8))
                .map_err(|_| errno::EFAULT)?;
        }
        Ok(count as i64)
    }
}
