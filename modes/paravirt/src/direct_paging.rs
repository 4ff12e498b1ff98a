//! Direct paging: the validation model of a paravirtual guest's own page tables, as Xen
//! keeps it. The guest's four-level tables are the real ones; the guest never writes them
//! (they are read-only to it) and changes them only through validated updates, which this
//! model checks and the monitor then applies.
//!
//! Every frame has a *type*: none, or a page table of one level (L1 … L4), with a count of
//! the references that hold the type (entries of higher-level tables and pins). A frame
//! takes a type only when it is validated: every present entry checked, and every table it
//! references typed one level lower (recursively). The invariant kept at every step:
//!
//! * a frame is never a page table and mapped writable at once (the writable mappings of
//!   every frame through validated L1 entries are counted);
//! * no entry maps the monitor's region (except the VMM's own tables in the slot the VMM
//!   reserves, [`VMM_SLOT`]), nor a frame beyond RAM;
//! * no entry sets PS (the guest maps 4 KiB pages only, so every frame a large page would
//!   cover stays accounted for), nor a reserved bit;
//! * no table references itself or a table above it: since a frame has one level at a
//!   time, a loop would need a frame of two levels, and is refused as [`Refusal::Loop`].
//!
//! ```
//! use paravirt::direct_paging::{DirectPaging, Level, Refusal};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! let mem = machine::guest_memory(4 << 20)?;
//! let (l4, l3, l2, l1, data) = (0x10_0000u64, 0x10_1000u64, 0x10_2000u64, 0x10_3000u64, 0x20_0000u64);
//! // Entry 1 of each table (entry 0 of the L4 is the VMM's slot): present, writable, user.
//! for (table, next) in [(l4, l3), (l3, l2), (l2, l1), (l1, data)] {
//!     mem.write_obj(next | 0b111, GuestAddress(table + 8))?;
//! }
//! let mut dp = DirectPaging::new(4 << 20, &[]);
//! dp.pin(&mem, l4, Level::L4).unwrap();
//! assert_eq!(dp.level_of(l1), Some(Level::L1));
//! // The L1 table may not map a page table writable …
//! let r = dp.update_batch(&mem, &[(l1 + 8, l2 | 0b111)]);
//! assert!(matches!(r, Err((0, Refusal::WritablePageTable { .. }))));
//! // … but read-only it may.
//! assert_eq!(dp.update_batch(&mem, &[(l1 + 8, l2 | 0b101)]), Ok(vec![(l1 + 8, l2 | 0b101)]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The model only reads guest memory (when a table is first typed); it keeps a validated
//! copy of every typed table and returns the writes for the monitor to apply. Two duties
//! stay with its caller: making every frame that takes a type read-only in the VMM's own
//! mapping of RAM ([`DirectPaging::take_type_changes`] says which frames changed), and
//! applying the returned writes inside the guest (`docs/hypercall-abi.md`, "Direct
//! paging").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use contract::abi::hypercall::errno;
use contract::abi::{layout, PAGE_SIZE};
use contract::x86::pte;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The PML4 slot the VMM reserves for its own tables (the first 512 GiB: the guest's RAM
/// as the VMM maps it, and the monitor's region). A guest L4 entry there may only point
/// at one of the L3 tables the VMM offers ([`DirectPaging::new`]).
pub const VMM_SLOT: usize = 0;

/// Entries per table.
const ENTRIES: usize = 512;
/// Bits 9–11: ignored by the MMU, the guest's own (the kernel marks frames it owns).
const SOFTWARE: u64 = 0xE00;
/// Flags an L1 entry may carry besides the frame: P, RW, US, PWT, PCD, A, D, the
/// software bits and NX (PAT and G are refused).
const L1_ALLOWED: u64 = 0x7F | SOFTWARE | (1 << 63);
/// Flags an L2–L4 entry may carry: P, RW, US, PWT, PCD, A, the software bits and NX
/// (PS is [`Refusal::LargePage`]).
const UPPER_ALLOWED: u64 = 0x3F | SOFTWARE | (1 << 63);

/// A page-table level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// A page table (its entries map 4 KiB pages).
    L1 = 1,
    /// A page directory.
    L2 = 2,
    /// A page-directory-pointer table.
    L3 = 3,
    /// The top-level table (PML4).
    L4 = 4,
}

impl Level {
    /// The level of the tables this level's entries reference (`None` for L1).
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::L1 => None,
            Level::L2 => Some(Level::L1),
            Level::L3 => Some(Level::L2),
            Level::L4 => Some(Level::L3),
        }
    }

    /// The level with this number (1–4).
    pub const fn from_number(n: u64) -> Option<Level> {
        match n {
            1 => Some(Level::L1),
            2 => Some(Level::L2),
            3 => Some(Level::L3),
            4 => Some(Level::L4),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", *self as u8)
    }
}

/// Why an update, a pin or an unpin is refused. Each has a name for counters and
/// reports ([`Refusal::name`]) and an error code for the guest ([`Refusal::errno`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A writable mapping of a frame that is (or is becoming) a page table, or a page
    /// table made of a frame that is mapped writable.
    WritablePageTable {
        /// The page-table frame.
        frame: u64,
    },
    /// A mapping of the monitor's region.
    MonitorRegion {
        /// The frame named.
        frame: u64,
    },
    /// A frame beyond guest RAM.
    BeyondRam {
        /// The frame named.
        frame: u64,
    },
    /// PS set in an entry of this level (large pages are not allowed).
    LargePage {
        /// The level of the entry.
        level: Level,
    },
    /// A reserved or unsupported bit set in an entry of this level.
    ReservedBits {
        /// The level of the entry.
        level: Level,
        /// The entry.
        entry: u64,
    },
    /// A table that references itself or a table above it.
    Loop {
        /// The frame referenced.
        frame: u64,
    },
    /// A table referenced at another level than the one it has.
    WrongType {
        /// The frame referenced.
        frame: u64,
        /// Its level.
        has: Level,
        /// The level the reference needs.
        wanted: Level,
    },
    /// An update of an address that is not in a page table.
    NotAPageTable {
        /// The address.
        ptr: u64,
    },
    /// An address not aligned as it must be (8 bytes for an entry, a page for a table).
    Misaligned {
        /// The address.
        addr: u64,
    },
    /// A pin of a frame already pinned, or an unpin of a frame that is not.
    PinState {
        /// The frame.
        frame: u64,
    },
    /// The VMM's slot ([`VMM_SLOT`]) of an L4 table set to something other than one of
    /// the VMM's tables.
    VmmSlot {
        /// The entry.
        entry: u64,
    },
    /// A frame the VMM already uses as a page table of another kind
    /// ([`DirectPaging::set_reserved_tables`]).
    ReservedTable {
        /// The frame.
        frame: u64,
    },
    /// A page table in a frame the VMM cannot write-protect on its own (beyond
    /// [`DirectPaging::with_table_end`]).
    Unprotectable {
        /// The frame.
        frame: u64,
    },
}

impl Refusal {
    /// The refusal's name, as counters and reports show it.
    pub const fn name(&self) -> &'static str {
        match self {
            Refusal::WritablePageTable { .. } => "writable_page_table",
            Refusal::MonitorRegion { .. } => "monitor_region",
            Refusal::BeyondRam { .. } => "beyond_ram",
            Refusal::LargePage { .. } => "large_page",
            Refusal::ReservedBits { .. } => "reserved_bits",
            Refusal::Loop { .. } => "loop",
            Refusal::WrongType { .. } => "wrong_type",
            Refusal::NotAPageTable { .. } => "not_a_page_table",
            Refusal::Misaligned { .. } => "misaligned",
            Refusal::PinState { .. } => "pin_state",
            Refusal::VmmSlot { .. } => "vmm_slot",
            Refusal::Unprotectable { .. } => "unprotectable",
            Refusal::ReservedTable { .. } => "reserved_table",
        }
    }

    /// The error code the guest gets.
    pub const fn errno(&self) -> i64 {
        match self {
            Refusal::MonitorRegion { .. } | Refusal::BeyondRam { .. } => errno::EFAULT,
            Refusal::LargePage { .. }
            | Refusal::ReservedBits { .. }
            | Refusal::Misaligned { .. }
            | Refusal::PinState { .. }
            | Refusal::Unprotectable { .. } => errno::EINVAL,
            Refusal::WritablePageTable { .. }
            | Refusal::Loop { .. }
            | Refusal::WrongType { .. }
            | Refusal::NotAPageTable { .. }
            | Refusal::VmmSlot { .. }
            | Refusal::ReservedTable { .. } => errno::EPERM,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::WritablePageTable { frame } => {
                write!(
                    f,
                    "frame {frame:#x} would be a page table and writable at once"
                )
            }
            Refusal::MonitorRegion { frame } => {
                write!(f, "frame {frame:#x} is in the monitor's region")
            }
            Refusal::BeyondRam { frame } => write!(f, "frame {frame:#x} is beyond guest RAM"),
            Refusal::LargePage { level } => write!(f, "PS set in an {level} entry"),
            Refusal::ReservedBits { level, entry } => {
                write!(f, "reserved bits in the {level} entry {entry:#x}")
            }
            Refusal::Loop { frame } => {
                write!(
                    f,
                    "table {frame:#x} would reference itself or a table above it"
                )
            }
            Refusal::WrongType { frame, has, wanted } => {
                write!(f, "table {frame:#x} is an {has}, referenced as an {wanted}")
            }
            Refusal::NotAPageTable { ptr } => {
                write!(f, "{ptr:#x} is not in a validated page table")
            }
            Refusal::Misaligned { addr } => write!(f, "{addr:#x} is misaligned"),
            Refusal::PinState { frame } => {
                write!(
                    f,
                    "frame {frame:#x}: pinned twice, or unpinned and not pinned"
                )
            }
            Refusal::VmmSlot { entry } => {
                write!(
                    f,
                    "the VMM's L4 slot set to {entry:#x}, not one of its tables"
                )
            }
            Refusal::ReservedTable { frame } => {
                write!(
                    f,
                    "frame {frame:#x} is already a page table of the VMM's kind"
                )
            }
            Refusal::Unprotectable { frame } => write!(
                f,
                "frame {frame:#x} cannot be a page table: the VMM cannot write-protect it"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// What the model counts, for the run record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Update batches applied (refused ones included).
    pub batches: u64,
    /// Update entries applied (those of a refused batch are not).
    pub entries: u64,
    /// Pins done.
    pub pins: u64,
    /// Unpins done.
    pub unpins: u64,
    /// Tables validated (a frame taking a type).
    pub validations: u64,
    /// Refusals, by name.
    pub refusals: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// The counters as `(name, count)` pairs (`"direct_paging:entries"`,
    /// `"direct_paging:refused:loop"`, …), zero counts left out.
    pub fn named(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (name, n) in [
            ("batches", self.batches),
            ("entries", self.entries),
            ("pins", self.pins),
            ("unpins", self.unpins),
            ("validations", self.validations),
        ] {
            if n > 0 {
                m.insert(format!("direct_paging:{name}"), n);
            }
        }
        for (name, &n) in &self.refusals {
            m.insert(format!("direct_paging:refused:{name}"), n);
        }
        m
    }
}

/// A typed frame.
#[derive(Debug, Clone)]
struct Typed {
    level: Level,
    /// References holding the type: entries of higher-level tables, and the pin.
    refs: u32,
    /// The table as validated (the guest cannot change it behind the model's back: it is
    /// read-only to the guest, and the VMM writes it only through the model).
    entries: Box<[u64; ENTRIES]>,
}

/// The direct-paging state of one guest.
#[derive(Debug, Clone)]
pub struct DirectPaging {
    ram_size: u64,
    /// The VMM's L3 tables a guest L4 may put in [`VMM_SLOT`].
    vmm_tables: BTreeSet<u64>,
    typed: BTreeMap<u64, Typed>,
    pinned: BTreeSet<u64>,
    /// Writable mappings of each frame through validated L1 entries.
    writable: BTreeMap<u64, u32>,
    /// Writable mappings the guest holds by other means
    /// ([`DirectPaging::set_foreign_writable`]).
    foreign_writable: BTreeMap<u64, u32>,
    /// Frames that are page tables outside this model ([`DirectPaging::set_reserved_tables`]).
    reserved: BTreeSet<u64>,
    /// Page tables must end at or below this address.
    table_end: u64,
    /// Frames that took a type (`true`) or lost it (`false`) since the last
    /// [`DirectPaging::take_type_changes`].
    changes: Vec<(u64, bool)>,
    /// Entry writes this model handed out that guest memory may not hold yet, by address
    /// (the monitor makes them after the hypercall, or the multicall, returns). A table
    /// that loses its type and takes it again before then is validated from memory
    /// *with these writes*: read from memory alone, a writable mapping written earlier
    /// in the batch would escape the count, and the frame it maps could become a page
    /// table the guest writes. Cleared by [`DirectPaging::writes_applied`].
    pending: BTreeMap<u64, u64>,
    /// What happened so far.
    pub counters: Counters,
}

impl DirectPaging {
    /// The model for `ram_size` bytes of guest RAM; `vmm_tables` are the VMM's own L3
    /// tables a guest L4 may reference in [`VMM_SLOT`] (outside the model's types).
    pub fn new(ram_size: u64, vmm_tables: &[u64]) -> Self {
        DirectPaging {
            ram_size,
            vmm_tables: vmm_tables.iter().copied().collect(),
            typed: BTreeMap::new(),
            pinned: BTreeSet::new(),
            writable: BTreeMap::new(),
            foreign_writable: BTreeMap::new(),
            reserved: BTreeSet::new(),
            table_end: ram_size,
            changes: Vec::new(),
            pending: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    /// Page tables only below `end` (where the VMM maps RAM with 4 KiB pages and can
    /// write-protect one); a table beyond is [`Refusal::Unprotectable`].
    pub fn with_table_end(mut self, end: u64) -> Self {
        self.table_end = end;
        self
    }

    /// The writable mappings of frames the guest holds outside the tables of this model
    /// (another page table of the VMM's it changes through its own validation): such a
    /// frame does not become a page table either.
    pub fn set_foreign_writable(&mut self, writable: BTreeMap<u64, u32>) {
        self.foreign_writable = writable;
    }

    /// The frames that are page tables outside this model (roots pinned another way):
    /// they take no type here and are never mapped writable.
    pub fn set_reserved_tables(&mut self, frames: BTreeSet<u64>) {
        self.reserved = frames;
    }

    /// Entry `index` of the page table `table`, as validated.
    pub fn entry(&self, table: u64, index: usize) -> Option<u64> {
        self.typed
            .get(&table)
            .and_then(|t| t.entries.get(index).copied())
    }

    /// Whether `[addr, addr + len)` touches a page table.
    pub fn touches_table(&self, addr: u64, len: u64) -> bool {
        let first = addr & !(PAGE_SIZE - 1);
        let end = addr.saturating_add(len);
        len > 0 && self.typed.range(first..end).next().is_some()
    }

    /// The level of `frame`, if it is a page table.
    pub fn level_of(&self, frame: u64) -> Option<Level> {
        self.typed.get(&frame).map(|t| t.level)
    }

    /// Whether `frame` is pinned.
    pub fn is_pinned(&self, frame: u64) -> bool {
        self.pinned.contains(&frame)
    }

    /// Writable mappings of `frame` through validated L1 entries.
    pub fn writable_mappings(&self, frame: u64) -> u32 {
        self.writable.get(&frame).copied().unwrap_or(0)
    }

    /// The frames that are page tables, with their levels, in address order.
    pub fn typed_frames(&self) -> impl Iterator<Item = (u64, Level)> + '_ {
        self.typed.iter().map(|(&f, t)| (f, t.level))
    }

    /// Number of frames that are page tables.
    pub fn tables(&self) -> usize {
        self.typed.len()
    }

    /// The frames that became page tables (`true`) or stopped being ones (`false`) since
    /// the last call, in order: the caller makes them read-only (or writable again) in
    /// its own mapping of RAM.
    pub fn take_type_changes(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.changes)
    }

    /// Says that guest memory now holds every write [`DirectPaging::update_batch`]
    /// returned so far: tables validated from now on are read from memory alone.
    pub fn writes_applied(&mut self) {
        self.pending.clear();
    }

    fn refuse<T>(&mut self, r: Refusal) -> Result<T, Refusal> {
        *self.counters.refusals.entry(r.name()).or_default() += 1;
        Err(r)
    }

    /// Pins `frame` as a table of `level`, validating it (and what it references) if it
    /// is not typed yet: it stays a page table until [`DirectPaging::unpin`].
    pub fn pin(&mut self, mem: &GuestMemoryMmap, frame: u64, level: Level) -> Result<(), Refusal> {
        if self.pinned.contains(&frame) {
            return self.refuse(Refusal::PinState { frame });
        }
        let r = self.get_type(mem, frame, level, &mut Vec::new());
        if let Err(e) = r {
            return self.refuse(e);
        }
        self.pinned.insert(frame);
        self.counters.pins += 1;
        Ok(())
    }

    /// Unpins `frame`: its type goes when no table references it any more (and with it
    /// the references it held).
    pub fn unpin(&mut self, frame: u64) -> Result<(), Refusal> {
        if !self.pinned.remove(&frame) {
            return self.refuse(Refusal::PinState { frame });
        }
        self.put_type(frame);
        self.counters.unpins += 1;
        Ok(())
    }

    /// Applies a batch of `(ptr, val)` updates (write `val` to the entry at
    /// guest-physical `ptr`), all or none: on a refusal the entries already applied are
    /// undone, and the error names the entry refused. Returns the writes the monitor
    /// must make, in order.
    pub fn update_batch(
        &mut self,
        mem: &GuestMemoryMmap,
        updates: &[(u64, u64)],
    ) -> Result<Vec<(u64, u64)>, (usize, Refusal)> {
        self.counters.batches += 1;
        let mut undo = Vec::with_capacity(updates.len());
        for (i, &(ptr, val)) in updates.iter().enumerate() {
            match self.update(mem, ptr, val) {
                Ok(old) => undo.push((ptr, old)),
                Err(e) => {
                    for &(ptr, old) in undo.iter().rev() {
                        // The state before was valid: restoring it, newest first, is too.
                        let restored = self.update(mem, ptr, old);
                        debug_assert!(restored.is_ok(), "undo of {ptr:#x}: {restored:?}");
                    }
                    *self.counters.refusals.entry(e.name()).or_default() += 1;
                    return Err((i, e));
                }
            }
        }
        self.counters.entries += updates.len() as u64;
        Ok(updates.to_vec())
    }

    /// One update; returns the entry it replaced.
    fn update(&mut self, mem: &GuestMemoryMmap, ptr: u64, val: u64) -> Result<u64, Refusal> {
        if ptr % 8 != 0 {
            return Err(Refusal::Misaligned { addr: ptr });
        }
        let table = ptr & !(PAGE_SIZE - 1);
        let index = ((ptr - table) / 8) as usize;
        let Some(t) = self.typed.get(&table) else {
            return Err(Refusal::NotAPageTable { ptr });
        };
        let level = t.level;
        let old = t.entries[index];
        // Take the new reference before dropping the old (the same child stays typed).
        self.acquire(mem, level, index, val, &mut vec![table])?;
        self.release(level, old);
        if let Some(t) = self.typed.get_mut(&table) {
            t.entries[index] = val;
        }
        self.pending.insert(ptr, val);
        Ok(old)
    }

    /// Validates `entry` as entry `index` of a table of `level` and takes what it holds:
    /// the child table's type (validating it if needed), or the writable mapping of a
    /// leaf frame. `stack` holds the tables being validated above it.
    fn acquire(
        &mut self,
        mem: &GuestMemoryMmap,
        level: Level,
        index: usize,
        entry: u64,
        stack: &mut Vec<u64>,
    ) -> Result<(), Refusal> {
        if entry & pte::P == 0 {
            return Ok(());
        }
        let frame = entry & pte::FRAME;
        if level == Level::L4 && index == VMM_SLOT {
            return if self.vmm_tables.contains(&frame) && entry & !(pte::FRAME | 0x3F) == 0 {
                Ok(())
            } else {
                Err(Refusal::VmmSlot { entry })
            };
        }
        let allowed = if level == Level::L1 {
            L1_ALLOWED
        } else {
            if entry & pte::PS != 0 {
                return Err(Refusal::LargePage { level });
            }
            UPPER_ALLOWED
        };
        if entry & !(pte::FRAME | allowed) != 0 {
            return Err(Refusal::ReservedBits { level, entry });
        }
        self.check_frame(frame)?;
        match level.below() {
            Some(child) => self.get_type(mem, frame, child, stack),
            None => {
                if entry & pte::RW != 0 {
                    if self.typed.contains_key(&frame)
                        || stack.contains(&frame)
                        || self.reserved.contains(&frame)
                    {
                        return Err(Refusal::WritablePageTable { frame });
                    }
                    *self.writable.entry(frame).or_default() += 1;
                }
                Ok(())
            }
        }
    }

    /// Drops what a validated `entry` of a table of `level` held.
    fn release(&mut self, level: Level, entry: u64) {
        if entry & pte::P == 0 {
            return;
        }
        let frame = entry & pte::FRAME;
        if level == Level::L4 && self.vmm_tables.contains(&frame) {
            return;
        }
        match level {
            Level::L1 => {
                if entry & pte::RW != 0 {
                    if let Some(n) = self.writable.get_mut(&frame) {
                        *n -= 1;
                        if *n == 0 {
                            self.writable.remove(&frame);
                        }
                    }
                }
            }
            _ => self.put_type(frame),
        }
    }

    fn check_frame(&self, frame: u64) -> Result<(), Refusal> {
        if layout::overlaps_monitor(frame, PAGE_SIZE) {
            return Err(Refusal::MonitorRegion { frame });
        }
        if frame >= self.ram_size || frame + PAGE_SIZE > self.ram_size {
            return Err(Refusal::BeyondRam { frame });
        }
        Ok(())
    }

    /// Takes one reference to `frame` as a table of `level`, validating it first if it
    /// has no type.
    fn get_type(
        &mut self,
        mem: &GuestMemoryMmap,
        frame: u64,
        level: Level,
        stack: &mut Vec<u64>,
    ) -> Result<(), Refusal> {
        if frame % PAGE_SIZE != 0 {
            return Err(Refusal::Misaligned { addr: frame });
        }
        self.check_frame(frame)?;
        if stack.contains(&frame) {
            return Err(Refusal::Loop { frame });
        }
        if let Some(t) = self.typed.get_mut(&frame) {
            if t.level != level {
                return Err(if t.level > level {
                    Refusal::Loop { frame }
                } else {
                    Refusal::WrongType {
                        frame,
                        has: t.level,
                        wanted: level,
                    }
                });
            }
            t.refs += 1;
            return Ok(());
        }
        if self.reserved.contains(&frame) {
            return Err(Refusal::ReservedTable { frame });
        }
        if frame + PAGE_SIZE > self.table_end {
            return Err(Refusal::Unprotectable { frame });
        }
        if self.writable_mappings(frame) > 0 || self.foreign_writable.contains_key(&frame) {
            return Err(Refusal::WritablePageTable { frame });
        }
        let mut entries = Box::new([0u64; ENTRIES]);
        for (i, e) in entries.iter_mut().enumerate() {
            let at = frame + i as u64 * 8;
            // A write handed out but not made yet is what the entry will hold.
            *e = match self.pending.get(&at) {
                Some(&v) => v,
                // In RAM (checked above), so the read cannot fail.
                None => mem
                    .read_obj(GuestAddress(at))
                    .map_err(|_| Refusal::BeyondRam { frame })?,
            };
        }
        stack.push(frame);
        for i in 0..ENTRIES {
            if let Err(e) = self.acquire(mem, level, i, entries[i], stack) {
                for j in (0..i).rev() {
                    self.release(level, entries[j]);
                }
                stack.pop();
                return Err(e);
            }
        }
        stack.pop();
        self.typed.insert(
            frame,
            Typed {
                level,
                refs: 1,
                entries,
            },
        );
        self.changes.push((frame, true));
        self.counters.validations += 1;
        Ok(())
    }

    /// Drops one reference to the type of `frame`; the last one drops the type and what
    /// the table held.
    fn put_type(&mut self, frame: u64) {
        let Some(t) = self.typed.get_mut(&frame) else {
            return;
        };
        t.refs -= 1;
        if t.refs > 0 {
            return;
        }
        let Some(t) = self.typed.remove(&frame) else {
            return;
        };
        self.changes.push((frame, false));
        for &e in t.entries.iter() {
            self.release(t.level, e);
        }
    }
}

#[cfg(test)]
mod tests;
