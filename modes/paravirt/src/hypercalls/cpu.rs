//! `cpuid` and `set_tpr`: the virtual CPU's identification and task priority.

use contract::abi::hypercall::{errno, shared_info};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

impl Hypervisor {
    pub(super) fn cpuid(
        &self,
        mem: &GuestMemoryMmap,
        leaf: u64,
        subleaf: u64,
        out: u64,
    ) -> Check<i64> {
        self.writable_range(out, 16, 16)?;
        let regs = self.cpuid.lookup(leaf as u32, subleaf as u32);
        let mut bytes = [0u8; 16];
        for (i, r) in regs.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        mem.write_slice(&bytes, GuestAddress(out))
            .map_err(|_| errno::EFAULT)?;
        Ok(0)
    }

    pub(super) fn set_tpr(&mut self, mem: &GuestMemoryMmap, value: u64) -> Check<i64> {
        if value > 15 {
            return Err(errno::EINVAL);
        }
        Self::set_shared(mem, shared_info::TPR, value);
        Ok(0)
    }
}
