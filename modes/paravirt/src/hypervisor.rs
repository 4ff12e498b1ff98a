//! The paravirtual hypervisor's state and its hypercalls: argument validation, the
//! shared-info page, the trap table and event delivery.
//!
//! Nothing here touches KVM: it works on guest memory and a copy of the registers, so
//! the tests drive it directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use kvm_bindings::kvm_regs;
use modes::abi::hypercall::{
    self, errno, mmu, multicall, shared_info, Hypercall, MAX_BATCH, MAX_CONSOLE_WRITE,
    MAX_MULTICALL, MAX_TRAP_TABLE,
};
use modes::abi::{layout, selector, PAGE_SIZE, TIMER_VECTOR};
use modes::machine::setup::{pte, set_page_flags};
use modes::machine::Devices;
use modes::record::{FaultKind, Limit, Outcome};
use modes::{Limits, NamedCounters};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use modes::x86::rflags::IF as RFLAGS_IF;
/// RFLAGS bits a guest may set through `iret`: CF, PF, AF, ZF, SF, DF, OF.
const RFLAGS_USER: u64 = 0xDD5;
/// Bits a PTE written through `mmu_update` may carry besides the frame: P, RW, US, PWT,
/// PCD, A, D and NX. Large pages, global pages and the ignored bits are refused.
const PTE_ALLOWED_FLAGS: u64 = 0x7F | (1 << 63);
/// Frame bits of a PTE.
const PTE_FRAME: u64 = modes::x86::pte::FRAME;
/// Page tables the guest may pin as a new root must lie in the first 2 MiB, which the
/// VMM maps with 4 KiB pages and can therefore make read-only page by page.
const PINNABLE_END: u64 = 2 << 20;

pub use modes::cpuid::{CpuidLeaf, CpuidTable};

/// What a hypercall asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Put this value in RAX and resume after the `out`.
    Return(i64),
    /// End the run with this exit code (result in RBX).
    Exit(u32),
    /// Enable events and wait for one.
    Block,
    /// Return from a callback through the frame at RSP.
    Iret,
    /// End the run (a limit).
    Stop(Outcome),
}

/// What the VMM must do to the vCPU's MMU after a hypercall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MmuSync {
    /// Validated PTE writes `(ptr, val)`, in order. The monitor performs them at CPL 0
    /// inside the guest, so that KVM's MMU sees them as guest writes (a write from the
    /// VMM's side of guest memory would bypass the shadow MMU's write tracking).
    pub writes: Vec<(u64, u64)>,
    /// Flush the TLB after the writes.
    pub flush: bool,
    /// Load this page-table root.
    pub new_root: Option<u64>,
}

/// Xen's invariant, kept by the VMM: a frame is never a page table (pinned) and writable
/// by the guest at once. The guest's only way to map a frame is its scratch page table,
/// which it changes through `mmu_update` alone; the VMM keeps its own copy of that table as
/// validated, and from it the number of writable mappings of every frame. (The identity
/// map of RAM is the VMM's: pinning a frame makes its entry there read-only.)
#[derive(Debug, Clone)]
struct PageTypes {
    /// Page-table frames the guest may not write (nor have the VMM write for it).
    pinned: BTreeSet<u64>,
    /// The scratch page table, as validated (what the monitor routine wrote into it).
    scratch: Vec<u64>,
    /// Writable mappings of each frame through the scratch page table.
    writable: BTreeMap<u64, u32>,
}

impl PageTypes {
    fn new(scratch: Vec<u64>) -> Self {
        let mut t = PageTypes {
            pinned: BTreeSet::from([layout::SCRATCH_PT]),
            scratch: vec![0; 512],
            writable: BTreeMap::new(),
        };
        for (i, e) in scratch.into_iter().enumerate().take(512) {
            t.set(i, e);
        }
        t
    }

    fn writable_frame(pte: u64) -> Option<u64> {
        (pte & pte::P != 0 && pte & pte::RW != 0).then_some(pte & PTE_FRAME)
    }

    /// Records a validated write of scratch entry `index`.
    fn set(&mut self, index: usize, pte: u64) {
        if let Some(old) = Self::writable_frame(self.scratch[index]) {
            if let Some(n) = self.writable.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.writable.remove(&old);
                }
            }
        }
        self.scratch[index] = pte;
        if let Some(new) = Self::writable_frame(pte) {
            *self.writable.entry(new).or_default() += 1;
        }
    }

    /// Writable mappings of `frame` the guest holds.
    fn writable_mappings(&self, frame: u64) -> u32 {
        self.writable.get(&frame).copied().unwrap_or(0)
    }

    fn is_pinned(&self, frame: u64) -> bool {
        self.pinned.contains(&frame)
    }

    /// Whether `[addr, addr + len)` touches a pinned page table.
    fn touches_pinned(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        self.pinned.iter().any(|&p| addr < p + PAGE_SIZE && p < end)
    }
}

/// The paravirtual hypervisor of one run.
#[derive(Debug)]
pub struct Hypervisor {
    ram_size: u64,
    /// The standard devices (console, timer, MMIO device page).
    pub devices: Devices,
    /// Callbacks by vector, from `set_trap_table`.
    trap_table: BTreeMap<u8, u64>,
    cpuid: CpuidTable,
    /// Page types, as Xen keeps them: which frames are page tables, and how many writable
    /// mappings each frame has. A frame is never both.
    types: PageTypes,
    /// Hypercalls by name, with their latency.
    pub counters: NamedCounters,
    /// Events and exceptions delivered to guest callbacks.
    pub injections: u64,
    /// MMU work for the engine.
    pub mmu_sync: MmuSync,
}

/// Result of a check: `Err` carries the error code for the guest.
type Check<T = ()> = Result<T, i64>;

impl Hypervisor {
    /// A hypervisor for `ram_size` bytes of guest RAM and a vCPU with these CPUID leaves.
    pub fn new(ram_size: u64, limits: &Limits, cpuid: CpuidTable) -> Self {
        Hypervisor {
            ram_size,
            devices: Devices::new(limits),
            trap_table: BTreeMap::new(),
            cpuid,
            types: PageTypes::new(Vec::new()),
            counters: NamedCounters::default(),
            injections: 0,
            mmu_sync: MmuSync::default(),
        }
    }

    /// Prepares guest memory: events masked (the guest starts with interrupts off) and
    /// the scratch page table supervisor-only, so the guest changes it only through
    /// `mmu_update` (the monitor writes it at CPL 0); learns that table's entries as the
    /// machine built them.
    pub fn setup(&mut self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let page = vec![0u8; PAGE_SIZE as usize];
        mem.write_slice(&page, GuestAddress(hypercall::SHARED_INFO))
            .map_err(|e| e.to_string())?;
        self.set_mask(mem, true);
        set_page_flags(mem, layout::SCRATCH_PT, pte::P | pte::RW)?;
        let scratch = (0..512)
            .map(|i| Self::read_u64(mem, layout::SCRATCH_PT + i * 8).map_err(|e| e.to_string()))
            .collect::<Result<Vec<u64>, String>>()?;
        self.types = PageTypes::new(scratch);
        Ok(())
    }

    /// Pins a page-table page: read-only to the guest.
    fn pin(&self, mem: &GuestMemoryMmap, page: u64) -> Result<(), String> {
        set_page_flags(mem, page, pte::P | pte::US)
    }

    // ------------------------------------------------------------ shared-info page

    fn shared_u8(mem: &GuestMemoryMmap, off: u64) -> u8 {
        mem.read_obj(GuestAddress(hypercall::SHARED_INFO + off))
            .unwrap_or(0)
    }

    fn set_shared<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, off: u64, v: T) {
        // The shared-info page is inside guest RAM (checked at setup), so this cannot fail.
        let _ = mem.write_obj(v, GuestAddress(hypercall::SHARED_INFO + off));
    }

    /// Whether events are masked (the virtual IF is clear).
    pub fn masked(&self, mem: &GuestMemoryMmap) -> bool {
        Self::shared_u8(mem, shared_info::UPCALL_MASK) != 0
    }

    /// Sets the event mask.
    pub fn set_mask(&self, mem: &GuestMemoryMmap, masked: bool) {
        Self::set_shared(mem, shared_info::UPCALL_MASK, u8::from(masked));
    }

    /// Whether an event waits.
    pub fn pending(&self, mem: &GuestMemoryMmap) -> bool {
        Self::shared_u8(mem, shared_info::UPCALL_PENDING) != 0
    }

    fn tpr(mem: &GuestMemoryMmap) -> u64 {
        mem.read_obj(GuestAddress(hypercall::SHARED_INFO + shared_info::TPR))
            .unwrap_or(0)
    }

    /// Fires the timer if it is due: the event becomes pending.
    pub fn poll_timer(&mut self, mem: &GuestMemoryMmap) {
        if self.devices.timer.due(Instant::now()) {
            self.devices.timer.fire();
            Self::set_shared(mem, shared_info::TIMER_FIRED, self.devices.timer.fired());
            Self::set_shared(mem, shared_info::UPCALL_PENDING, 1u8);
        }
    }

    /// Whether the pending event can be delivered now: not masked, above the task
    /// priority, and the guest registered a callback for it.
    pub fn deliverable(&self, mem: &GuestMemoryMmap) -> bool {
        self.pending(mem)
            && !self.masked(mem)
            && u64::from(TIMER_VECTOR >> 4) > Self::tpr(mem)
            && self.trap_table.contains_key(&TIMER_VECTOR)
    }

    /// The callback the guest registered for `vector`.
    pub fn callback(&self, vector: u8) -> Option<u64> {
        self.trap_table.get(&vector).copied()
    }

    // ------------------------------------------------------------ validation

    /// A range of guest RAM the guest may name: inside RAM (never the monitor's region
    /// above it), at most `max` bytes.
    fn guest_range(&self, addr: u64, len: u64, max: u64) -> Check {
        if len > max {
            return Err(errno::E2BIG);
        }
        let end = addr.checked_add(len).ok_or(errno::EFAULT)?;
        if end > self.ram_size {
            return Err(errno::EFAULT);
        }
        Ok(())
    }

    /// A range the VMM will write for the guest: also not a pinned page table (the VMM
    /// must not write what the guest itself may not).
    fn writable_range(&self, addr: u64, len: u64, max: u64) -> Check {
        self.guest_range(addr, len, max)?;
        if self.types.touches_pinned(addr, len) {
            return Err(errno::EFAULT);
        }
        Ok(())
    }

    fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> Check<u64> {
        mem.read_obj(GuestAddress(addr)).map_err(|_| errno::EFAULT)
    }

    fn write_u64(mem: &GuestMemoryMmap, addr: u64, v: u64) -> Check {
        mem.write_obj(v, GuestAddress(addr))
            .map_err(|_| errno::EFAULT)
    }

    // ------------------------------------------------------------ dispatch

    /// Runs hypercall `h` with `args`. The caller counts and times it.
    pub fn call(&mut self, mem: &GuestMemoryMmap, h: Hypercall, args: [u64; 3]) -> Effect {
        let [a0, a1, a2] = args;
        let ret = |r: Check<i64>| Effect::Return(r.unwrap_or_else(|e| e));
        match h {
            Hypercall::ConsoleWrite => match self.console_write(mem, a0, a1) {
                Ok(true) => Effect::Return(a1 as i64),
                Ok(false) => Effect::Stop(Outcome::TimedOut {
                    limit: Limit::ConsoleBytes,
                    rip: None,
                }),
                Err(e) => Effect::Return(e),
            },
            Hypercall::Exit => match u32::try_from(a0) {
                Ok(code) => Effect::Exit(code),
                Err(_) => Effect::Return(errno::EINVAL),
            },
            Hypercall::Block => Effect::Block,
            Hypercall::SetTimer => ret(self.set_timer(a0)),
            Hypercall::MmuUpdate => ret(self.mmu_update(mem, a0, a1, a2)),
            Hypercall::NewBaseptr => ret(self.new_baseptr(mem, a0)),
            Hypercall::Cpuid => ret(self.cpuid(mem, a0, a1, a2)),
            Hypercall::Multicall => match self.multicall(mem, a0, a1) {
                Ok(None) => Effect::Return(0),
                Ok(Some(stop)) => stop,
                Err(e) => Effect::Return(e),
            },
            Hypercall::SetTrapTable => ret(self.set_trap_table(mem, a0, a1)),
            Hypercall::Iret => Effect::Iret,
            Hypercall::EventCheck => Effect::Return(0),
            Hypercall::SetTpr => ret(self.set_tpr(mem, a0)),
            Hypercall::DeviceRead => ret(self.device_read(mem, a0, a1, a2)),
        }
    }

    fn console_write(&mut self, mem: &GuestMemoryMmap, buf: u64, len: u64) -> Check<bool> {
        self.guest_range(buf, len, MAX_CONSOLE_WRITE)?;
        let mut bytes = vec![0u8; len as usize];
        mem.read_slice(&mut bytes, GuestAddress(buf))
            .map_err(|_| errno::EFAULT)?;
        Ok(self.devices.console.write(&bytes))
    }

    fn set_timer(&mut self, micros: u64) -> Check<i64> {
        let micros = u32::try_from(micros).map_err(|_| errno::EINVAL)?;
        self.devices.timer.arm(micros);
        Ok(0)
    }

    fn mmu_update(
        &mut self,
        mem: &GuestMemoryMmap,
        reqs: u64,
        count: u64,
        flags: u64,
    ) -> Check<i64> {
        if flags & !mmu::FLUSH_TLB != 0 {
            return Err(errno::EINVAL);
        }
        if count > MAX_BATCH {
            return Err(errno::E2BIG);
        }
        self.guest_range(
            reqs,
            count * mmu::REQUEST_SIZE,
            MAX_BATCH * mmu::REQUEST_SIZE,
        )?;
        // One hypercall (a multicall included) applies at most MAX_BATCH requests.
        if self.mmu_sync.writes.len() as u64 + count > MAX_BATCH {
            return Err(errno::E2BIG);
        }
        let mut updates = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = reqs + i * mmu::REQUEST_SIZE;
            let (ptr, val) = (Self::read_u64(mem, at)?, Self::read_u64(mem, at + 8)?);
            self.check_pte_update(ptr, val)?;
            updates.push((ptr, val));
        }
        // All valid: the page types follow at once, so a later call of the same hypercall
        // (a multicall) already sees the new mappings.
        for &(ptr, val) in &updates {
            self.types
                .set(((ptr - layout::SCRATCH_PT) / 8) as usize, val);
        }
        self.mmu_sync.writes.extend(updates);
        if flags & mmu::FLUSH_TLB != 0 {
            self.mmu_sync.flush = true;
        }
        Ok(count as i64)
    }

    /// Only the guest's own page table (the scratch page table), only frames of guest
    /// RAM or the ABI's two scratch frames, never a page table mapped writable.
    fn check_pte_update(&self, ptr: u64, val: u64) -> Check {
        let pt = layout::SCRATCH_PT;
        if !(pt..pt + PAGE_SIZE).contains(&ptr) || ptr % 8 != 0 {
            return Err(errno::EPERM);
        }
        if val & pte::P == 0 {
            return Ok(());
        }
        if val & !(PTE_FRAME | PTE_ALLOWED_FLAGS) != 0 {
            return Err(errno::EINVAL);
        }
        let frame = val & PTE_FRAME;
        let scratch = [layout::SCRATCH_FRAME_A, layout::SCRATCH_FRAME_B];
        if frame + PAGE_SIZE > self.ram_size && !scratch.contains(&frame) {
            return Err(errno::EINVAL);
        }
        if self.types.is_pinned(frame) && val & pte::RW != 0 {
            return Err(errno::EPERM);
        }
        Ok(())
    }

    fn new_baseptr(&mut self, mem: &GuestMemoryMmap, root: u64) -> Check<i64> {
        if root == layout::PML4 {
            self.mmu_sync.new_root = Some(root);
            return Ok(0);
        }
        // `root >= PINNABLE_END`, not `root + PAGE_SIZE > PINNABLE_END`: the sum overflows
        // for a root in the last page of the address space (found by fuzzing).
        if root % PAGE_SIZE != 0 || root >= PINNABLE_END {
            return Err(errno::EINVAL);
        }
        self.guest_range(root, PAGE_SIZE, PAGE_SIZE)?;
        if root == layout::SCRATCH_PT {
            return Err(errno::EPERM);
        }
        // The new root may only repeat entries of the VMM's own (up to the accessed and
        // dirty bits the CPU sets): it then maps nothing the guest could not reach already.
        const AD: u64 = 0x60;
        for i in 0..512 {
            let e = Self::read_u64(mem, root + i * 8)?;
            let vmm = Self::read_u64(mem, layout::PML4 + i * 8)?;
            if e & pte::P != 0 && (e | AD) != (vmm | AD) {
                return Err(errno::EPERM);
            }
        }
        // The other half of the invariant: a frame the guest can still write through an
        // alias never becomes a page table.
        if self.types.writable_mappings(root) > 0 {
            return Err(errno::EPERM);
        }
        self.pin(mem, root).map_err(|_| errno::EFAULT)?;
        self.types.pinned.insert(root);
        self.mmu_sync.new_root = Some(root);
        Ok(0)
    }

    fn cpuid(&self, mem: &GuestMemoryMmap, leaf: u64, subleaf: u64, out: u64) -> Check<i64> {
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

    /// Runs each entry; `Ok(Some(stop))` if one of them ended the run.
    fn multicall(
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

    fn set_trap_table(&mut self, mem: &GuestMemoryMmap, table: u64, bytes: u64) -> Check<i64> {
        if bytes == 0 {
            self.trap_table.clear();
            return Ok(0);
        }
        if bytes % 16 != 0 {
            return Err(errno::EINVAL);
        }
        self.guest_range(table, bytes, MAX_TRAP_TABLE)?;
        let mut callbacks = BTreeMap::new();
        for v in 0..bytes / 16 {
            let low = Self::read_u64(mem, table + v * 16)?;
            let high = Self::read_u64(mem, table + v * 16 + 8)?;
            // Only present interrupt or trap gates register a callback.
            let Some(gate) = modes::x86::decode_gate(low, high) else {
                continue;
            };
            let handler = gate.handler;
            if handler >= self.ram_size {
                return Err(errno::EINVAL);
            }
            callbacks.insert(v as u8, handler);
        }
        let n = callbacks.len() as i64;
        self.trap_table = callbacks;
        Ok(n)
    }

    fn set_tpr(&mut self, mem: &GuestMemoryMmap, value: u64) -> Check<i64> {
        if value > 15 {
            return Err(errno::EINVAL);
        }
        Self::set_shared(mem, shared_info::TPR, value);
        Ok(0)
    }

    fn device_read(
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

    // ------------------------------------------------------------ events

    /// Pushes a callback frame `{[error code], rip, cs, rflags, rsp, ss}` on the guest
    /// stack at `regs.rsp` (aligned down to 16 bytes, as the CPU does), masks events and
    /// points `regs` at `handler`. The saved RFLAGS carry the virtual IF.
    pub fn push_callback_frame(
        &mut self,
        mem: &GuestMemoryMmap,
        regs: &mut kvm_regs,
        handler: u64,
        error_code: Option<u64>,
    ) -> Result<(), Outcome> {
        let virtual_if = if self.masked(mem) { 0 } else { RFLAGS_IF };
        let mut frame = Vec::with_capacity(6);
        frame.extend(error_code);
        frame.extend([
            regs.rip,
            u64::from(selector::USER_CODE),
            (regs.rflags & !RFLAGS_IF) | virtual_if,
            regs.rsp,
            u64::from(selector::USER_DATA),
        ]);
        let size = frame.len() as u64 * 8;
        let top = regs.rsp & !0xF;
        let base = top.wrapping_sub(size);
        if self.writable_range(base, size, size).is_err() {
            return Err(Outcome::GuestFault {
                kind: FaultKind::BadMemoryAccess,
                rip: Some(regs.rip),
                detail: format!(
                    "cannot deliver an event: the guest stack at {:#x} is not writable guest RAM",
                    regs.rsp
                ),
            });
        }
        for (i, w) in frame.iter().enumerate() {
            let _ = Self::write_u64(mem, base + i as u64 * 8, *w);
        }
        self.set_mask(mem, true);
        regs.rsp = base;
        regs.rip = handler;
        self.injections += 1;
        Ok(())
    }

    /// Delivers the pending timer event to its callback if it can be delivered now.
    pub fn deliver_pending(
        &mut self,
        mem: &GuestMemoryMmap,
        regs: &mut kvm_regs,
    ) -> Result<bool, Outcome> {
        if !self.deliverable(mem) {
            return Ok(false);
        }
        let handler = self.trap_table[&TIMER_VECTOR];
        self.push_callback_frame(mem, regs, handler, None)?;
        Self::set_shared(mem, shared_info::UPCALL_PENDING, 0u8);
        Ok(true)
    }

    /// `iret`: pops `{rax, rip, cs, rflags, rsp, ss}` at `regs.rsp` into `regs` and sets
    /// the event mask from the saved IF. `Err` is the error code for a bad frame.
    pub fn iret(&mut self, mem: &GuestMemoryMmap, regs: &mut kvm_regs) -> Check {
        self.guest_range(regs.rsp, 48, 48)?;
        let w = |i: u64| Self::read_u64(mem, regs.rsp + i * 8);
        let (rax, rip, cs, rflags, rsp, ss) = (w(0)?, w(1)?, w(2)?, w(3)?, w(4)?, w(5)?);
        if cs != u64::from(selector::USER_CODE) || ss != u64::from(selector::USER_DATA) {
            return Err(errno::EINVAL);
        }
        if rip >= self.ram_size {
            return Err(errno::EFAULT);
        }
        regs.rax = rax;
        regs.rip = rip;
        regs.rsp = rsp;
        regs.rflags = (regs.rflags & !RFLAGS_USER) | (rflags & RFLAGS_USER);
        self.set_mask(mem, rflags & RFLAGS_IF == 0);
        Ok(())
    }

    /// Records where the last page fault happened, for the guest's handler.
    pub fn set_fault_addr(&self, mem: &GuestMemoryMmap, cr2: u64) {
        Self::set_shared(mem, shared_info::FAULT_ADDR, cr2);
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 4 << 20;

    fn setup() -> (Hypervisor, GuestMemoryMmap) {
        let mem = modes::machine::guest_memory(RAM).unwrap();
        modes::machine::setup::write_page_tables(&mem, RAM).unwrap();
        let leaf = CpuidLeaf {
            function: 0,
            index: 0,
            indexed: false,
            regs: [0xD, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
        };
        let mut hv = Hypervisor::new(RAM, &Limits::default(), CpuidTable(vec![leaf]));
        hv.setup(&mem).unwrap();
        (hv, mem)
    }

    fn ret(e: Effect) -> i64 {
        match e {
            Effect::Return(v) => v,
            other => panic!("expected a return, got {other:?}"),
        }
    }

    #[test]
    fn numbers_round_trip() {
        for h in Hypercall::ALL {
            assert_eq!(Hypercall::try_from(h.number()), Ok(h));
        }
        assert!(Hypercall::try_from(0).is_err());
        assert!(Hypercall::try_from(u64::MAX).is_err());
    }

    #[test]
    fn setup_masks_events_and_hides_the_scratch_table() {
        let (hv, mem) = setup();
        assert!(hv.masked(&mem));
        assert!(!hv.pending(&mem));
        let at = modes::machine::setup::pte_address(layout::SCRATCH_PT).unwrap();
        let e: u64 = mem.read_obj(GuestAddress(at)).unwrap();
        assert_eq!(e & pte::US, 0);
    }

    #[test]
    fn console_write_validates_its_buffer() {
        let (mut hv, mem) = setup();
        mem.write_slice(b"hello", GuestAddress(0x20_000)).unwrap();
        assert_eq!(
            ret(hv.call(&mem, Hypercall::ConsoleWrite, [0x20_000, 5, 0])),
            5
        );
        assert_eq!(hv.devices.console.text(), "hello");
        let bad = [
            ([layout::BOOT_INFO, 5, 0], errno::EFAULT), // the monitor's region
            ([RAM - 2, 5, 0], errno::EFAULT),           // runs off the end of RAM
            ([u64::MAX - 1, 5, 0], errno::EFAULT),      // wraps around
            ([0x20_000, 1 << 40, 0], errno::E2BIG),     // absurd length
            ([0x20_000, MAX_CONSOLE_WRITE + 1, 0], errno::E2BIG),
        ];
        for (args, want) in bad {
            assert_eq!(
                ret(hv.call(&mem, Hypercall::ConsoleWrite, args)),
                want,
                "{args:x?}"
            );
        }
        assert_eq!(hv.devices.console.text(), "hello");
    }

    #[test]
    fn mmu_update_only_touches_the_guests_own_page_table() {
        let (mut hv, mem) = setup();
        let reqs = 0x20_000;
        let good = layout::SCRATCH_FRAME_B | pte::P | pte::RW | pte::US;
        let cases = [
            ((layout::SCRATCH_PT, good), 1),
            ((layout::PML4, good), errno::EPERM), // the VMM's table
            ((layout::SCRATCH_PT + 3, good), errno::EPERM), // misaligned
            ((layout::SCRATCH_PT, layout::GDT | 7), errno::EINVAL), // maps the VMM's GDT
            ((layout::SCRATCH_PT, RAM | 7), errno::EINVAL), // beyond RAM
            ((layout::SCRATCH_PT, good | pte::PS), errno::EINVAL),
            ((layout::SCRATCH_PT, layout::SCRATCH_PT | 7), errno::EINVAL), // its own table
            ((layout::SCRATCH_PT, layout::SCRATCH_PT | 5), errno::EINVAL), // … even read-only
            ((layout::SCRATCH_PT, 0x5000 | 7), 1), // any page of guest RAM, page 0 included
            ((layout::SCRATCH_PT, 7), 1),
        ];
        for ((ptr, val), want) in cases {
            Hypervisor::write_u64(&mem, reqs, ptr).unwrap();
            Hypervisor::write_u64(&mem, reqs + 8, val).unwrap();
            let got = ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, mmu::FLUSH_TLB]));
            assert_eq!(got, want, "{ptr:#x} <- {val:#x}");
        }
        assert!(hv.mmu_sync.flush);
        assert_eq!(hv.mmu_sync.writes.len(), 3);
        assert_eq!(hv.mmu_sync.writes[0], (layout::SCRATCH_PT, good));
        assert_eq!(
            ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, MAX_BATCH + 1, 0])),
            errno::E2BIG
        );
        assert_eq!(
            ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, 2])),
            errno::EINVAL
        );
        assert_eq!(
            ret(hv.call(&mem, Hypercall::MmuUpdate, [layout::PML4, 1, 0])),
            errno::EFAULT
        );
    }

    #[test]
    fn a_batch_is_all_or_nothing() {
        let (mut hv, mem) = setup();
        let reqs = 0x20_000;
        Hypervisor::write_u64(&mem, reqs, layout::SCRATCH_PT).unwrap();
        Hypervisor::write_u64(&mem, reqs + 8, layout::SCRATCH_FRAME_B | 7).unwrap();
        Hypervisor::write_u64(&mem, reqs + 16, layout::PD).unwrap();
        Hypervisor::write_u64(&mem, reqs + 24, layout::SCRATCH_FRAME_B | 7).unwrap();
        assert_eq!(
            ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 2, 0])),
            errno::EPERM
        );
        assert!(hv.mmu_sync.writes.is_empty());
        // Two batches of 300 in one hypercall (a multicall) exceed MAX_BATCH.
        assert_eq!(ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, 0])), 1);
        hv.mmu_sync
            .writes
            .resize(MAX_BATCH as usize, (layout::SCRATCH_PT, 0));
        assert_eq!(
            ret(hv.call(&mem, Hypercall::MmuUpdate, [reqs, 1, 0])),
            errno::E2BIG
        );
    }

    #[test]
    fn new_baseptr_accepts_only_a_copy_of_the_vmm_root() {
        let (mut hv, mem) = setup();
        let root = 0x18_0000;
        let e0: u64 = mem.read_obj(GuestAddress(layout::PML4)).unwrap();
        Hypervisor::write_u64(&mem, root, e0).unwrap();
        Hypervisor::write_u64(&mem, root + 8, layout::SCRATCH_FRAME_A | 7).unwrap();
        assert_eq!(
            ret(hv.call(&mem, Hypercall::NewBaseptr, [root, 0, 0])),
            errno::EPERM
        );
        Hypervisor::write_u64(&mem, root + 8, 0).unwrap();
        assert_eq!(ret(hv.call(&mem, Hypercall::NewBaseptr, [root, 0, 0])), 0);
        assert_eq!(hv.mmu_sync.new_root, Some(root));
        // Pinned: read-only to the guest, and the VMM will not write it for the guest.
        assert_eq!(
            ret(hv.call(&mem, Hypercall::Cpuid, [0, 0, root])),
            errno::EFAULT
        );
        for bad in [root + 8, layout::GDT, layout::SCRATCH_PT, RAM, 4 << 20] {
            assert_ne!(
                ret(hv.call(&mem, Hypercall::NewBaseptr, [bad, 0, 0])),
                0,
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn new_baseptr_of_the_last_page_of_the_address_space_is_refused() {
        // Regression: `root + PAGE_SIZE` overflowed (a panic in a debug build).
        let (mut hv, mem) = setup();
        for bad in [!0xFFF, 0x000F_FFFF_FFFF_F000, PINNABLE_END] {
            assert_eq!(
                ret(hv.call(&mem, Hypercall::NewBaseptr, [bad, 0, 0])),
                errno::EINVAL,
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn cpuid_multicall_tpr_and_device_read() {
        let (mut hv, mem) = setup();
        assert_eq!(ret(hv.call(&mem, Hypercall::Cpuid, [0, 0, 0x20_000])), 0);
        let ebx: u32 = mem.read_obj(GuestAddress(0x20_004)).unwrap();
        assert_eq!(ebx, 0x756E_6547);

        let calls = 0x30_000;
        let entries: [[u64; 4]; 4] = [
            [Hypercall::SetTpr.number(), 3, 0, 0],
            [Hypercall::SetTpr.number(), 99, 0, 0],
            [Hypercall::Exit.number(), 0, 0, 0],
            [0xBAD, 0, 0, 0],
        ];
        for (i, e) in entries.iter().enumerate() {
            for (j, w) in e.iter().enumerate() {
                Hypervisor::write_u64(&mem, calls + i as u64 * 40 + j as u64 * 8, *w).unwrap();
            }
        }
        assert_eq!(ret(hv.call(&mem, Hypercall::Multicall, [calls, 4, 0])), 0);
        let results: Vec<i64> = (0..4)
            .map(|i| Hypervisor::read_u64(&mem, calls + i * 40 + 32).unwrap() as i64)
            .collect();
        assert_eq!(results, [0, errno::EINVAL, errno::EINVAL, errno::ENOSYS]);
        assert_eq!(Hypervisor::tpr(&mem), 3);
        assert_eq!(hv.counters.counts()["multicall:set_tpr"], 1);
        assert_eq!(hv.counters.counts()["rejected:multicall:unknown"], 1);
        assert_eq!(
            ret(hv.call(&mem, Hypercall::Multicall, [calls, MAX_MULTICALL + 1, 0])),
            errno::E2BIG
        );

        let ticket = layout::MMIO_BASE + modes::abi::mmio::TICKET;
        assert_eq!(
            ret(hv.call(&mem, Hypercall::DeviceRead, [ticket, 3, 0x20_000])),
            3
        );
        let third: u64 = mem.read_obj(GuestAddress(0x20_010)).unwrap();
        assert_eq!(third, 3);
        assert_eq!(
            ret(hv.call(&mem, Hypercall::DeviceRead, [ticket + 4, 1, 0x20_000])),
            errno::EINVAL
        );
        assert_eq!(
            ret(hv.call(
                &mem,
                Hypercall::DeviceRead,
                [ticket, 1, layout::SHARED_INFO]
            )),
            errno::EFAULT
        );
        assert_eq!(
            ret(hv.call(&mem, Hypercall::DeviceRead, [ticket, 0, 0x20_000])),
            errno::EINVAL
        );
    }

    #[test]
    fn events_are_delivered_only_when_unmasked_and_registered() {
        let (mut hv, mem) = setup();
        // A trap table with the timer's gate pointing at 0x10_0040.
        let table = 0x20_000;
        let (low, high) = modes::machine::setup::interrupt_gate(0x10_0040, 0x08, 0);
        let gate = table + u64::from(TIMER_VECTOR) * 16;
        Hypervisor::write_u64(&mem, gate, low).unwrap();
        Hypervisor::write_u64(&mem, gate + 8, high).unwrap();
        let bytes = (u64::from(TIMER_VECTOR) + 1) * 16;
        assert_eq!(
            ret(hv.call(&mem, Hypercall::SetTrapTable, [table, bytes, 0])),
            1
        );

        assert_eq!(ret(hv.call(&mem, Hypercall::SetTimer, [0, 0, 0])), 0);
        hv.poll_timer(&mem);
        assert!(hv.pending(&mem));
        let mut regs = kvm_regs {
            rip: 0x10_0000,
            rsp: 0xF_FF08,
            rflags: 0x2,
            rax: 7,
            ..Default::default()
        };
        assert_eq!(hv.deliver_pending(&mem, &mut regs), Ok(false)); // masked
        hv.set_mask(&mem, false);
        assert_eq!(hv.deliver_pending(&mem, &mut regs), Ok(true));
        assert_eq!(regs.rip, 0x10_0040);
        assert_eq!(regs.rsp, 0xF_FF00 - 40);
        assert!(hv.masked(&mem) && !hv.pending(&mem));
        assert_eq!(hv.injections, 1);

        // The guest's `iret` pushes RAX and returns through the frame.
        regs.rsp -= 8;
        Hypervisor::write_u64(&mem, regs.rsp, 7).unwrap();
        regs.rax = 0;
        hv.iret(&mem, &mut regs).unwrap();
        assert_eq!((regs.rip, regs.rsp, regs.rax), (0x10_0000, 0xF_FF08, 7));
        assert!(!hv.masked(&mem));

        // A frame that would return to the kernel's code selector is refused.
        regs.rsp = 0x40_000;
        for (i, w) in [0u64, 0x10_0000, 0x08, 0x202, 0x40_100, 0x1B]
            .iter()
            .enumerate()
        {
            Hypervisor::write_u64(&mem, regs.rsp + i as u64 * 8, *w).unwrap();
        }
        assert_eq!(hv.iret(&mem, &mut regs), Err(errno::EINVAL));
        regs.rsp = layout::MONITOR_STACK_TOP - 0x100;
        assert_eq!(hv.iret(&mem, &mut regs), Err(errno::EFAULT));
    }

    #[test]
    fn a_callback_frame_needs_a_writable_stack() {
        let (mut hv, mem) = setup();
        let mut regs = kvm_regs {
            rip: 0x10_0000,
            rsp: layout::MONITOR_STACK_TOP, // the monitor's stack
            ..Default::default()
        };
        let r = hv.push_callback_frame(&mem, &mut regs, 0x10_0040, Some(0));
        assert!(matches!(
            r,
            Err(Outcome::GuestFault {
                kind: FaultKind::BadMemoryAccess,
                ..
            })
        ));
        assert_eq!(hv.injections, 0);
    }

    /// A root that repeats the VMM's first PML4 entry and nothing else (a valid copy).
    fn valid_root(mem: &GuestMemoryMmap, root: u64) {
        let e0: u64 = mem.read_obj(GuestAddress(layout::PML4)).unwrap();
        for i in 0..512 {
            Hypervisor::write_u64(mem, root + i * 8, 0).unwrap();
        }
        Hypervisor::write_u64(mem, root, e0).unwrap();
    }

    fn map_scratch(hv: &mut Hypervisor, mem: &GuestMemoryMmap, index: u64, val: u64) -> i64 {
        let reqs = 0x20_000;
        Hypervisor::write_u64(mem, reqs, layout::SCRATCH_PT + index * 8).unwrap();
        Hypervisor::write_u64(mem, reqs + 8, val).unwrap();
        ret(hv.call(mem, Hypercall::MmuUpdate, [reqs, 1, 0]))
    }

    #[test]
    fn a_frame_with_a_writable_alias_is_never_pinned() {
        let (mut hv, mem) = setup();
        let x = 0x18_0000;
        valid_root(&mem, x);
        // (a) an alias of X, writable: allowed while X is an ordinary page …
        assert_eq!(map_scratch(&mut hv, &mem, 1, x | 7), 1);
        assert_eq!(hv.types.writable_mappings(x), 1);
        // (b) … so X cannot become a page table: the escape's pin is refused.
        assert_eq!(
            ret(hv.call(&mem, Hypercall::NewBaseptr, [x, 0, 0])),
            errno::EPERM
        );
        assert_eq!(hv.mmu_sync.new_root, None);
        // A second writable alias, then both made read-only: now X may be pinned.
        assert_eq!(map_scratch(&mut hv, &mem, 2, x | 7), 1);
        assert_eq!(hv.types.writable_mappings(x), 2);
        assert_eq!(map_scratch(&mut hv, &mem, 1, x | 5), 1);
        assert_eq!(map_scratch(&mut hv, &mem, 2, 0), 1);
        assert_eq!(hv.types.writable_mappings(x), 0);
        assert_eq!(ret(hv.call(&mem, Hypercall::NewBaseptr, [x, 0, 0])), 0);
        // The reverse order: a pinned X is never mapped writable again.
        assert_eq!(map_scratch(&mut hv, &mem, 3, x | 7), errno::EPERM);
        assert_eq!(map_scratch(&mut hv, &mem, 3, x | 5), 1);
        // The counts are the scratch table's, recomputed.
        let recount = hv
            .types
            .scratch
            .iter()
            .filter(|&&e| PageTypes::writable_frame(e) == Some(x))
            .count();
        assert_eq!(recount as u32, hv.types.writable_mappings(x));
    }

    #[test]
    fn a_batch_that_aliases_then_a_pin_in_one_multicall_is_refused() {
        let (mut hv, mem) = setup();
        let x = 0x18_0000;
        valid_root(&mem, x);
        let (reqs, calls) = (0x20_000, 0x21_000);
        Hypervisor::write_u64(&mem, reqs, layout::SCRATCH_PT + 8).unwrap();
        Hypervisor::write_u64(&mem, reqs + 8, x | 7).unwrap();
        for (i, (nr, a0, a1)) in [
            (Hypercall::MmuUpdate.number(), reqs, 1),
            (Hypercall::NewBaseptr.number(), x, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let at = calls + i as u64 * multicall::ENTRY_SIZE;
            for (k, v) in [nr, a0, a1, 0, 0].into_iter().enumerate() {
                Hypervisor::write_u64(&mem, at + k as u64 * 8, v).unwrap();
            }
        }
        assert_eq!(ret(hv.call(&mem, Hypercall::Multicall, [calls, 2, 0])), 0);
        let second: u64 = mem
            .read_obj(GuestAddress(
                calls + multicall::ENTRY_SIZE + multicall::RESULT,
            ))
            .unwrap();
        assert_eq!(second as i64, errno::EPERM);
        assert_eq!(hv.mmu_sync.new_root, None);
    }

    #[test]
    fn a_multicall_that_pins_its_own_page_gets_no_result_written_there() {
        let (mut hv, mem) = setup();
        // The list sits in page P at +0x800; its entries look "not present" to the root
        // check (bit 0 clear), so P passes as a copy of the VMM's root.
        let p = 0x19_0000;
        valid_root(&mem, p);
        let calls = p + 0x800;
        let sentinel = 0x54u64; // bit 0 clear: not a present entry
        for (i, (nr, a0)) in [
            (Hypercall::NewBaseptr.number(), p),
            (Hypercall::SetTpr.number(), 4),
        ]
        .into_iter()
        .enumerate()
        {
            let at = calls + i as u64 * multicall::ENTRY_SIZE;
            for (k, v) in [nr, a0, 0, 0, sentinel].into_iter().enumerate() {
                Hypervisor::write_u64(&mem, at + k as u64 * 8, v).unwrap();
            }
        }
        assert_eq!(
            ret(hv.call(&mem, Hypercall::Multicall, [calls, 2, 0])),
            errno::EFAULT
        );
        // P is pinned, and not one byte of it was written by the VMM.
        assert_eq!(hv.mmu_sync.new_root, Some(p));
        for i in 0..2 {
            let at = calls + i * multicall::ENTRY_SIZE + multicall::RESULT;
            let v: u64 = mem.read_obj(GuestAddress(at)).unwrap();
            assert_eq!(v, sentinel, "entry {i}");
        }
        // The second entry never ran.
        assert_eq!(Hypervisor::tpr(&mem), 0);
    }
}
