//! `multicall`: a batch of hypercalls in one exit, each result written back.

use contract::abi::hypercall::{errno, multicall, Hypercall, MAX_MULTICALL};
use vm_memory::GuestMemoryMmap;

use super::*;

impl Hypervisor {
    /// Runs each entry; `Ok(Some(stop))` if one of them ended the run.
    pub(super) fn multicall(
        &mut self,
        mem: &GuestMemoryMmap,
        calls: u64,
        count: u64,
    ) -> Check<Option<Effect>> {
        if count > MAX_MULTICALL {
            return Err(errno::E2BIG);
        }
        self.writable_range(
            calls,
            count * multicall::ENTRY_SIZE,
            MAX_MULTICALL * multicall::ENTRY_SIZE,
        )?;
        for i in 0..count {
            let at = calls + i * multicall::ENTRY_SIZE;
            let nr = Self::read_u64(mem, at)?;
            let args = [
                Self::read_u64(mem, at + 8)?,
                Self::read_u64(mem, at + 16)?,
                Self::read_u64(mem, at + 24)?,
            ];
            let t0 = Instant::now();
            let (name, result) = match Hypercall::try_from(nr) {
                Err(_) => ("unknown", errno::ENOSYS),
                Ok(
                    h @ (Hypercall::Exit
                    | Hypercall::Block
                    | Hypercall::Iret
                    | Hypercall::Multicall),
                ) => (h.name(), errno::EINVAL),
                Ok(h) => match self.call(mem, h, args) {
                    Effect::Return(v) => (h.name(), v),
                    stop @ Effect::Stop(_) => return Ok(Some(stop)),
                    // Excluded above.
                    Effect::Exit(_) | Effect::Block | Effect::Iret => (h.name(), errno::EINVAL),
                },
            };
            // The entry may have pinned the page that holds the list: the VMM never writes
            // into a page table for the guest, so the multicall stops there.
            self.writable_range(at + multicall::RESULT, 8, 8)?;
            Self::write_u64(mem, at + multicall::RESULT, result as u64)?;
            let label = if result < 0 {
                format!("rejected:multicall:{name}")
            } else {
                format!("multicall:{name}")
            };
            self.counters.record(&label, t0.elapsed().as_nanos() as u64);
        }
        Ok(None)
    }
}
