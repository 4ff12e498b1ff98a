//! `console_write`: the debug console, a buffer per hypercall.

use contract::abi::hypercall::{errno, MAX_CONSOLE_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

impl Hypervisor {
    pub(super) fn console_write(
        &mut self,
        mem: &GuestMemoryMmap,
        buf: u64,
        len: u64,
    ) -> Check<bool> {
        self.guest_range(buf, len, MAX_CONSOLE_WRITE)?;
        let mut bytes = vec![0u8; len as usize];
        mem.read_slice(&mut bytes, GuestAddress(buf))
            .map_err(|_| errno::EFAULT)?;
        Ok(self.devices.console.write(&bytes))
    }
}
