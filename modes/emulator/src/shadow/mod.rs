//! Shadow paging: the page tables the real CPU runs on while a deprivileged guest
//! (trap-and-emulate, binary translation) believes its own tables are in charge.
//!
//! The guest's tables live in its RAM and say what it wants; the VMM builds *shadow*
//! tables in its own pool ([`layout::SHADOW_BASE`]) that say what the real CPU may do, and
//! keeps the two consistent:
//!
//! * a guest CR3 load selects the shadow of that root ([`ShadowMmu::activate`]), from a
//!   cache keyed by guest root (or, with the cache off, rebuilt from nothing);
//! * shadows are filled lazily: a #PF on an address the guest *does* map is a **hidden
//!   fault**, filled here and never seen by the guest ([`Resolution::Hidden`]); one it does
//!   not map (or maps without the right) is a **true fault**, for the guest's own handler
//!   with the virtual CR2 ([`Resolution::True`]);
//! * every guest page-table page the builder reads is mapped read-only in the shadows, so
//!   the guest's PTE stores fault ([`Resolution::PageTableWrite`]); the VMM emulates the
//!   store and [`ShadowMmu::pt_write`] drops what the old entry had produced;
//! * guest kernel and guest user both run at CPL 3, so each root has two shadows, as Xen's
//!   64-bit PV guests have two tables per process: the kernel's maps every page the guest
//!   maps, the user's only pages the guest maps user-accessible ([`Privilege`]);
//! * the VMM inserts the monitor's region in every shadow itself, whatever the guest maps
//!   there; a guest entry that would map the monitor, a frame beyond RAM, a table outside
//!   RAM or a huge page where none is allowed ends as a named [`ShadowError`].
//!
//! The shadow pages are written only through [`Effects::stores`]: on KVM the monitor's
//! CPL 0 routine executes them inside the guest, because the host's own MMU may shadow
//! these tables in turn and learns of changes only from the guest's stores. The builder
//! keeps a mirror of every shadow page, so it never reads them back.
//!
//! ```
//! use emulator::shadow::{Config, Effects, Privilege, Resolution, ShadowMmu};
//! use std::collections::HashMap;
//!
//! // The guest's tables: PML4 at 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000, and one
//! // user page at 0x40_0000 → frame 0x9000.
//! let mut ram: HashMap<u64, u64> = HashMap::new();
//! ram.insert(0x1000, 0x2000 | 7);
//! ram.insert(0x2000, 0x3000 | 7);
//! ram.insert(0x3000 + 2 * 8, 0x4000 | 7);
//! ram.insert(0x4000, 0x9000 | 7);
//! let mut read = |a: u64| Some(ram.get(&a).copied().unwrap_or(0));
//!
//! let mut mmu = ShadowMmu::new(Config::new(1 << 20, true));
//! let mut fx = Effects::default();
//! let real_cr3 = mmu.activate(0x1000, Privilege::Kernel, &mut read, &mut fx).unwrap();
//! assert_eq!(fx.load_cr3, Some(real_cr3));
//! // The first touch of the mapped page is hidden; an unmapped one is the guest's.
//! assert_eq!(mmu.page_fault(0x40_0000, 0, &mut read, &mut fx), Ok(Resolution::Hidden));
//! assert_eq!(
//!     mmu.page_fault(0x50_0000, 0b10, &mut read, &mut fx),
//!     Ok(Resolution::True { error_code: 0b10 })
//! );
//! assert_eq!((mmu.stats().hidden_faults, mmu.stats().true_faults), (1, 1));
//! ```

mod walk;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use contract::abi::{layout, PAGE_SIZE};
use contract::x86::pte;

pub use walk::{frame_kind, walk, FrameKind, Mapped, Step, Walk};

/// Accessed bit of a page-table entry.
const A: u64 = 1 << 5;
/// Dirty bit of a page-table entry.
const D: u64 = 1 << 6;
/// The rights of every non-leaf shadow entry: the leaf decides.
const LINK: u64 = pte::P | pte::RW | pte::US;
/// Free pages the builder wants before it fills: a fill allocates at most three.
const ROOM: usize = 4;

/// #PF error-code bits.
pub mod error_code {
    /// The page was present (a protection fault).
    pub const PRESENT: u64 = 1;
    /// A write.
    pub const WRITE: u64 = 1 << 1;
    /// From user mode.
    pub const USER: u64 = 1 << 2;
    /// An instruction fetch.
    pub const FETCH: u64 = 1 << 4;
}

/// Which of a root's two shadows: the guest kernel's or the guest user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    /// The guest kernel (virtual CPL 0): every page the guest maps.
    Kernel,
    /// Guest user mode (virtual CPL 3): only the pages the guest maps user-accessible.
    User,
}

/// How the shadow MMU is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Guest RAM size (frames below it are the guest's).
    pub ram: u64,
    /// Guest-physical base of the pool of shadow pages.
    pub pool_base: u64,
    /// Pages in the pool.
    pub pool_pages: usize,
    /// Whether shadows are kept per guest root across CR3 loads.
    pub cache: bool,
    /// The entry every shadow's PDPT (under PML4 entry 0) holds at index 1: the monitor's
    /// page directory, as the boot tables map it.
    pub monitor_link: u64,
}

impl Config {
    /// The layout of [`contract::abi`]: the pool at [`layout::SHADOW_BASE`], the monitor's
    /// page directory at [`layout::PD_MONITOR`].
    pub fn new(ram: u64, cache: bool) -> Self {
        Config {
            ram,
            pool_base: layout::SHADOW_BASE,
            pool_pages: (layout::SHADOW_SIZE / PAGE_SIZE) as usize,
            cache,
            monitor_link: layout::PD_MONITOR | LINK,
        }
    }
}

/// What the caller must make happen on the real CPU, in this order: the stores into
/// shadow pages, the `invlpg`s, then a TLB flush or a CR3 load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// `(guest-physical address, value)` stores into shadow pages.
    pub stores: Vec<(u64, u64)>,
    /// Addresses whose translation the real TLB must drop.
    pub invlpg: Vec<u64>,
    /// Flush the real TLB (reload CR3).
    pub flush: bool,
    /// Load the real CR3 with this value (a shadow root, or the boot tables).
    pub load_cr3: Option<u64>,
}

impl Effects {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty() && self.invlpg.is_empty() && !self.flush && self.load_cr3.is_none()
    }
}

/// The shadow MMU's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Faults on an address the guest maps, filled by the VMM.
    pub hidden_faults: u64,
    /// Faults the guest's own tables cause, reflected to its #PF handler.
    pub true_faults: u64,
    /// Guest page-table stores emulated.
    pub pt_writes: u64,
    /// Shadow pages built (allocated and filled from nothing).
    pub pages_built: u64,
    /// CR3 loads that found the root's shadow in the cache.
    pub cache_hits: u64,
    /// CR3 loads that had to build a new shadow.
    pub cache_misses: u64,
    /// Times shadows were dropped wholesale (the cache off, or the pool full).
    pub flushes: u64,
    /// Guest page tables given up (written other than by a plain MOV: reused as data),
    /// their shadows dropped.
    pub unshadowed: u64,
}

impl Stats {
    /// The counters by name, as the record stores them.
    pub fn entries(&self) -> [(&'static str, u64); 8] {
        [
            ("hidden_faults", self.hidden_faults),
            ("true_faults", self.true_faults),
            ("pt_writes", self.pt_writes),
            ("pages_built", self.pages_built),
            ("cache_hits", self.cache_hits),
            ("cache_misses", self.cache_misses),
            ("flushes", self.flushes),
            ("unshadowed", self.unshadowed),
        ]
    }
}

/// Why a guest's tables cannot be shadowed: each ends the run with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShadowError {
    /// A leaf maps one of the monitor's private frames.
    #[error("the guest's page tables map {va:#x} to {frame:#x}, a page of the monitor")]
    MapsMonitor {
        /// Virtual address.
        va: u64,
        /// Frame.
        frame: u64,
    },
    /// A leaf maps a frame beyond guest RAM (and not a device or shared page).
    #[error("the guest's page tables map {va:#x} to {frame:#x}, beyond guest RAM")]
    BeyondRam {
        /// Virtual address.
        va: u64,
        /// Frame.
        frame: u64,
    },
    /// A table of the walk lies in the monitor's region.
    #[error("walking {va:#x}: the level-{level} table at {table:#x} is in the monitor's region")]
    TableInMonitor {
        /// Virtual address.
        va: u64,
        /// The table's address.
        table: u64,
        /// Its level (4 = PML4).
        level: u8,
    },
    /// A table of the walk lies beyond guest RAM.
    #[error("walking {va:#x}: the level-{level} table at {table:#x} is beyond guest RAM")]
    TableBeyondRam {
        /// Virtual address.
        va: u64,
        /// The table's address.
        table: u64,
        /// Its level (4 = PML4).
        level: u8,
    },
    /// A page-size bit where the architecture reserves it (PML4) or where the shadow
    /// builder allows none (1 GiB pages).
    #[error("walking {va:#x}: a huge page at level {level}, where none is allowed")]
    HugePage {
        /// Virtual address.
        va: u64,
        /// Level of the entry (4 = PML4, 3 = PDPT).
        level: u8,
    },
    /// The guest addressed the gigabyte the monitor reserves (1–2 GiB).
    #[error("{va:#x} is in the gigabyte the monitor reserves for itself")]
    ReservedGigabyte {
        /// Virtual address.
        va: u64,
    },
    /// A CR3 load of a root outside guest RAM.
    #[error("CR3 load of {root:#x}: the root table is not in guest RAM")]
    RootOutsideRam {
        /// The value loaded.
        root: u64,
    },
    /// A write the shadow builder cannot let through: to the active root, or to a table
    /// every shadow needs.
    #[error("the guest rewrites its page table at {frame:#x} wholesale while the shadows need it")]
    CannotUnshadow {
        /// The table's frame.
        frame: u64,
    },
    /// Every page of the shadow pool is in use by the current shadow.
    #[error("the shadow pool ({pages} pages) is full with the current address space")]
    PoolExhausted {
        /// Pages in the pool.
        pages: usize,
    },
}

impl ShadowError {
    /// Whether the guest reached for the monitor (else it pointed at memory it lacks).
    pub fn is_monitor_violation(&self) -> bool {
        matches!(
            self,
            ShadowError::MapsMonitor { .. }
                | ShadowError::TableInMonitor { .. }
                | ShadowError::ReservedGigabyte { .. }
        ) || matches!(self, ShadowError::RootOutsideRam { root } if layout::is_monitor(*root))
    }
}

/// What a #PF turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The guest maps the address: the shadow was filled; retry the instruction.
    Hidden,
    /// The guest's own fault: reflect #PF with this error code and CR2 = the address.
    True {
        /// The error code the guest's tables give.
        error_code: u64,
    },
    /// A write the guest allows to one of its page-table pages: emulate the store at this
    /// guest-physical address, then call [`ShadowMmu::pt_write`].
    PageTableWrite {
        /// Guest-physical address of the store.
        gpa: u64,
    },
}

/// One page of the pool: what it mirrors and its entries as the VMM wrote them.
#[derive(Debug, Clone)]
struct Page {
    used: bool,
    /// 4 = PML4 … 1 = PT.
    level: u8,
    /// The guest table it shadows (`None`: a PT split from a guest 2 MiB page, or the
    /// PDPT under PML4 entry 0 while the guest maps nothing there).
    guest: Option<u64>,
    /// First virtual address it covers.
    va_base: u64,
    /// The root and shadow it belongs to.
    owner: (u64, Privilege),
    /// The shadow entry that links it (`None`: a root).
    parent: Option<(usize, usize)>,
    entries: Box<[u64; 512]>,
}

/// The shadow MMU of one vCPU.
#[derive(Debug, Clone)]
pub struct ShadowMmu {
    cfg: Config,
    pages: Vec<Page>,
    /// Free pages whose entries are all zero.
    clean: Vec<usize>,
    /// Free pages with entries left (zeroed with stores when reused).
    dirty: Vec<usize>,
    /// Pages freed by the current operation: not reused before the next one, since the
    /// real CPU may still run on them until the operation's effects are applied.
    quarantine: Vec<usize>,
    /// Guest table → the shadow pages that mirror it (its page is write-protected).
    mirrors: HashMap<u64, Vec<usize>>,
    /// Frame → shadow leaves that map it writable (to write-protect it later).
    writable: HashMap<u64, Vec<(usize, usize)>>,
    /// Guest root → its shadows' root pages.
    roots: BTreeMap<u64, BTreeMap<Privilege, usize>>,
    /// The guest root and privilege the real CPU runs on.
    active: Option<(u64, Privilege)>,
    stats: Stats,
}

fn index(va: u64, level: u8) -> usize {
    ((va >> (12 + 9 * (u64::from(level) - 1))) & 511) as usize
}

fn span(level: u8) -> u64 {
    1u64 << (12 + 9 * u64::from(level))
}

/// Whether `va` lies in the gigabyte the monitor reserves (PML4 0, PDPT 1).
fn reserved(va: u64) -> bool {
    (1 << 30..2 << 30).contains(&va)
}

impl ShadowMmu {
    /// An empty shadow MMU (no shadow yet: the guest runs on the boot tables).
    pub fn new(cfg: Config) -> Self {
        let page = Page {
            used: false,
            level: 0,
            guest: None,
            va_base: 0,
            owner: (0, Privilege::Kernel),
            parent: None,
            entries: Box::new([0; 512]),
        };
        ShadowMmu {
            cfg,
            pages: vec![page; cfg.pool_pages],
            clean: (0..cfg.pool_pages).rev().collect(),
            dirty: Vec::new(),
            quarantine: Vec::new(),
            mirrors: HashMap::new(),
            writable: HashMap::new(),
            roots: BTreeMap::new(),
            active: None,
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The guest root and privilege the real CPU runs on, if a shadow is active.
    pub fn active(&self) -> Option<(u64, Privilege)> {
        self.active
    }

    /// The real CR3 of the active shadow.
    pub fn real_cr3(&self) -> Option<u64> {
        let (root, prv) = self.active?;
        Some(self.gpa(*self.roots.get(&root)?.get(&prv)?))
    }

    /// Whether `frame` holds one of the guest's page tables the shadows mirror (so it is
    /// write-protected).
    pub fn is_page_table(&self, frame: u64) -> bool {
        self.mirrors.contains_key(&(frame & pte::FRAME))
    }

    /// Shadow pages in use.
    pub fn pages_in_use(&self) -> usize {
        self.pages.iter().filter(|p| p.used).count()
    }

    fn gpa(&self, slot: usize) -> u64 {
        self.cfg.pool_base + slot as u64 * PAGE_SIZE
    }

    fn slot_of(&self, entry: u64) -> Option<usize> {
        let frame = entry & pte::FRAME;
        let off = frame.checked_sub(self.cfg.pool_base)?;
        let slot = (off / PAGE_SIZE) as usize;
        (slot < self.cfg.pool_pages).then_some(slot)
    }

    /// Starts an operation: pages freed by the previous one may be reused now.
    fn begin(&mut self) {
        let q = std::mem::take(&mut self.quarantine);
        self.dirty.extend(q);
    }

    fn store(&mut self, slot: usize, idx: usize, value: u64, fx: &mut Effects) {
        let page = &mut self.pages[slot];
        page.entries[idx] = value;
        if page.level == 1 && value & pte::P != 0 && value & pte::RW != 0 {
            self.writable
                .entry(value & pte::FRAME)
                .or_default()
                .push((slot, idx));
        }
        fx.stores.push((self.gpa(slot) + idx as u64 * 8, value));
    }

    fn alloc(
        &mut self,
        level: u8,
        guest: Option<u64>,
        va_base: u64,
        owner: (u64, Privilege),
        fx: &mut Effects,
    ) -> Result<usize, ShadowError> {
        let slot = match self.clean.pop() {
            Some(s) => s,
            None => {
                // The dirty page with the fewest entries left costs the fewest stores.
                let (i, _) = self
                    .dirty
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, &s)| self.pages[s].entries.iter().filter(|&&e| e != 0).count())
                    .ok_or(ShadowError::PoolExhausted {
                        pages: self.cfg.pool_pages,
                    })?;
                let s = self.dirty.swap_remove(i);
                let base = self.gpa(s);
                for (idx, e) in self.pages[s].entries.iter_mut().enumerate() {
                    if *e != 0 {
                        *e = 0;
                        fx.stores.push((base + idx as u64 * 8, 0));
                    }
                }
                s
            }
        };
        let page = &mut self.pages[slot];
        page.used = true;
        page.level = level;
        page.guest = guest;
        page.va_base = va_base;
        page.owner = owner;
        page.parent = None;
        self.stats.pages_built += 1;
        if let Some(table) = guest {
            let list = self.mirrors.entry(table).or_default();
            list.push(slot);
            if list.len() == 1 {
                self.write_protect(table, fx);
            }
        }
        Ok(slot)
    }

    /// Takes write access to `frame` away from every shadow leaf: it became a page table.
    fn write_protect(&mut self, frame: u64, fx: &mut Effects) {
        for (slot, idx) in self.writable.remove(&frame).unwrap_or_default() {
            let page = &self.pages[slot];
            let e = page.entries[idx];
            if page.used && page.level == 1 && e & pte::FRAME == frame && e & pte::RW != 0 {
                let va = page.va_base + idx as u64 * PAGE_SIZE;
                self.store(slot, idx, e & !pte::RW, fx);
                fx.invlpg.push(va);
            }
        }
    }

    /// Frees a shadow page and everything below it (no stores: whoever linked it unlinks
    /// it, or it is a root no CR3 will load).
    fn free_tree(&mut self, slot: usize) {
        if !self.pages[slot].used {
            return;
        }
        if self.pages[slot].level > 1 {
            let children: Vec<usize> = self.pages[slot]
                .entries
                .iter()
                .filter(|&&e| e != 0)
                .filter_map(|&e| self.slot_of(e))
                .collect();
            for c in children {
                self.free_tree(c);
            }
        }
        let page = &mut self.pages[slot];
        page.used = false;
        if let Some(table) = page.guest.take() {
            if let Some(list) = self.mirrors.get_mut(&table) {
                list.retain(|&s| s != slot);
                if list.is_empty() {
                    self.mirrors.remove(&table);
                }
            }
        }
        if page.entries.iter().all(|&e| e == 0) {
            self.clean.push(slot);
        } else {
            self.quarantine.push(slot);
        }
    }

    /// Clears one shadow entry and what hangs below it.
    fn zap(
        &mut self,
        slot: usize,
        idx: usize,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), ShadowError> {
        let page = &self.pages[slot];
        let e = page.entries[idx];
        if e == 0 {
            return Ok(());
        }
        let (level, va) = (page.level, page.va_base + idx as u64 * span(page.level - 1));
        if level > 1 {
            if let Some(child) = self.slot_of(e) {
                self.free_tree(child);
            }
            fx.flush = true;
        } else {
            fx.invlpg.push(va);
        }
        self.store(slot, idx, 0, fx);
        if level == 4 && idx == 0 {
            self.link_monitor(slot, read, fx)?;
        }
        Ok(())
    }

    /// Gives a shadow PML4 its entry 0: a PDPT whose entry 1 is the monitor's.
    fn link_monitor(
        &mut self,
        pml4: usize,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), ShadowError> {
        if self.pages[pml4].entries[0] != 0 {
            return Ok(());
        }
        let owner = self.pages[pml4].owner;
        let guest = self.pages[pml4].guest.and_then(|root| {
            let e = read(root)?;
            let table = e & pte::FRAME;
            (e & pte::P != 0 && e & pte::PS == 0 && table.saturating_add(PAGE_SIZE) <= self.cfg.ram)
                .then_some(table)
        });
        let pdpt = self.alloc(3, guest, 0, owner, fx)?;
        self.store(pdpt, 1, self.cfg.monitor_link, fx);
        self.pages[pdpt].parent = Some((pml4, 0));
        let link = self.gpa(pdpt) | LINK;
        self.store(pml4, 0, link, fx);
        Ok(())
    }

    /// The root page of `root`'s shadow for `prv`, built if missing.
    fn tree(
        &mut self,
        root: u64,
        prv: Privilege,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<usize, ShadowError> {
        if let Some(&slot) = self.roots.get(&root).and_then(|t| t.get(&prv)) {
            return Ok(slot);
        }
        let slot = self.alloc(4, Some(root), 0, (root, prv), fx)?;
        self.link_monitor(slot, read, fx)?;
        self.roots.entry(root).or_default().insert(prv, slot);
        Ok(slot)
    }

    /// Drops every shadow except those of `keep`'s root.
    fn drop_trees(&mut self, keep: Option<u64>) -> bool {
        let gone: Vec<u64> = self
            .roots
            .keys()
            .copied()
            .filter(|&r| Some(r) != keep)
            .collect();
        for root in &gone {
            for (_, slot) in self.roots.remove(root).unwrap_or_default() {
                self.free_tree(slot);
            }
        }
        !gone.is_empty()
    }

    fn free_pages(&self) -> usize {
        self.clean.len() + self.dirty.len()
    }

    /// A guest CR3 load of `root` (with the guest at `prv`): selects its shadow, from the
    /// cache or built anew, and returns the real CR3 to load (also in `fx.load_cr3`).
    pub fn activate(
        &mut self,
        root: u64,
        prv: Privilege,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<u64, ShadowError> {
        self.begin();
        let table = root & pte::FRAME;
        if table.saturating_add(PAGE_SIZE) > self.cfg.ram {
            return Err(ShadowError::RootOutsideRam { root });
        }
        if !self.cfg.cache {
            if self.drop_trees(None) {
                self.stats.flushes += 1;
            }
            self.stats.cache_misses += 1;
        } else if self.roots.get(&table).is_some_and(|t| t.contains_key(&prv)) {
            self.stats.cache_hits += 1;
        } else {
            self.stats.cache_misses += 1;
            if self.free_pages() < ROOM && self.drop_trees(None) {
                self.stats.flushes += 1;
            }
        }
        self.active = Some((table, prv));
        let slot = self.tree(table, prv, read, fx)?;
        let cr3 = self.gpa(slot);
        fx.load_cr3 = Some(cr3);
        Ok(cr3)
    }

    /// The guest changed privilege (SYSCALL, SYSRET, an event from user mode, IRETQ to
    /// it): the real CPU moves to the other shadow of the same root. Returns the real CR3
    /// to load, or `None` when no shadow is active (the boot tables serve both).
    pub fn set_privilege(
        &mut self,
        prv: Privilege,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<Option<u64>, ShadowError> {
        self.begin();
        let Some((root, old)) = self.active else {
            return Ok(None);
        };
        if old == prv {
            return Ok(None);
        }
        self.active = Some((root, prv));
        let slot = self.tree(root, prv, read, fx)?;
        let cr3 = self.gpa(slot);
        fx.load_cr3 = Some(cr3);
        Ok(Some(cr3))
    }

    /// The guest went back to the boot tables (a CR3 load of the monitor's PML4): no
    /// shadow is active; with the cache off, every shadow is dropped.
    pub fn deactivate(&mut self, fx: &mut Effects) {
        self.begin();
        self.active = None;
        if !self.cfg.cache && self.drop_trees(None) {
            self.stats.flushes += 1;
        }
        fx.load_cr3 = Some(layout::PML4);
    }

    /// A #PF at `va` with `error_code` while a shadow is active: hidden (filled now), the
    /// guest's own, or a store to one of its page tables.
    pub fn page_fault(
        &mut self,
        va: u64,
        error_code: u64,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<Resolution, ShadowError> {
        self.begin();
        let Some((root, prv)) = self.active else {
            return Err(ShadowError::RootOutsideRam { root: 0 });
        };
        if reserved(va) {
            return Err(ShadowError::ReservedGigabyte { va });
        }
        let write = error_code & error_code::WRITE != 0;
        let user = prv == Privilege::User;
        let bit = |on: bool, b: u64| if on { b } else { 0 };
        let code = |present: bool| {
            bit(present, error_code::PRESENT)
                | bit(write, error_code::WRITE)
                | bit(user, error_code::USER)
                | (error_code & error_code::FETCH)
        };
        let m = match walk::walk(root, va, self.cfg.ram, read)? {
            Walk::NotPresent => {
                self.stats.true_faults += 1;
                return Ok(Resolution::True {
                    error_code: code(false),
                });
            }
            Walk::Mapped(m) => m,
        };
        if (user && !m.user) || (write && !m.writable) {
            self.stats.true_faults += 1;
            return Ok(Resolution::True {
                error_code: code(true),
            });
        }
        if write && m.kind == FrameKind::Ram && self.is_page_table(m.frame) {
            return Ok(Resolution::PageTableWrite {
                gpa: m.frame | (va & (PAGE_SIZE - 1)),
            });
        }
        if self.free_pages() < ROOM && self.drop_trees(Some(root)) {
            self.stats.flushes += 1;
        }
        self.fill(root, prv, va, &m, read, fx)?;
        self.stats.hidden_faults += 1;
        Ok(Resolution::Hidden)
    }

    /// Builds the shadow path to `va` from the guest's walk `m`.
    fn fill(
        &mut self,
        root: u64,
        prv: Privilege,
        va: u64,
        m: &Mapped,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), ShadowError> {
        let mut slot = self.tree(root, prv, read, fx)?;
        for d in 0..3 {
            let level = 4 - d as u8;
            let idx = index(va, level);
            let expected = (d + 1 < m.depth).then(|| m.steps[d + 1].table);
            let mut e = self.pages[slot].entries[idx];
            if e != 0 {
                match self.slot_of(e) {
                    Some(c) if self.pages[c].guest == expected => {
                        slot = c;
                        continue;
                    }
                    // Stale (the guest changed a table without a trapped store): rebuilt.
                    _ => {
                        self.zap(slot, idx, read, fx)?;
                        e = self.pages[slot].entries[idx];
                    }
                }
            }
            if e != 0 {
                // PML4 entry 0 was relinked from the guest's current table.
                match self.slot_of(e) {
                    Some(c) if self.pages[c].guest == expected => {
                        slot = c;
                        continue;
                    }
                    _ => return Err(ShadowError::ReservedGigabyte { va }),
                }
            }
            let child_base = va & !(span(level - 1) - 1);
            let child = self.alloc(level - 1, expected, child_base, (root, prv), fx)?;
            self.pages[child].parent = Some((slot, idx));
            let link = self.gpa(child) | LINK;
            self.store(slot, idx, link, fx);
            slot = child;
        }
        let writable = m.writable && !(m.kind == FrameKind::Ram && self.is_page_table(m.frame));
        let value = m.frame | pte::P | pte::US | A | if writable { pte::RW | D } else { 0 };
        let idx = index(va, 1);
        if self.pages[slot].entries[idx] != value {
            self.store(slot, idx, value, fx);
            fx.invlpg.push(va & !(PAGE_SIZE - 1));
        }
        Ok(())
    }

    /// The VMM emulated a guest store at guest-physical `gpa` in one of the guest's page
    /// tables: every shadow entry the old value produced is dropped (refilled on demand).
    pub fn pt_write(
        &mut self,
        gpa: u64,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), ShadowError> {
        self.begin();
        self.stats.pt_writes += 1;
        let table = gpa & pte::FRAME;
        let idx = ((gpa & (PAGE_SIZE - 1)) / 8) as usize;
        let slots = self.mirrors.get(&table).cloned().unwrap_or_default();
        for slot in slots {
            let p = &self.pages[slot];
            if !p.used || p.guest != Some(table) {
                continue;
            }
            if p.level == 3 && p.va_base == 0 && idx == 1 {
                continue; // the monitor's entry, never the guest's
            }
            self.zap(slot, idx, read, fx)?;
        }
        Ok(())
    }

    /// The guest writes one of its page tables other than by a plain MOV (it reuses the
    /// frame, zeroing it with `rep stosq`): every shadow page that mirrors it is dropped
    /// (refilled on demand if the guest still uses it as a table), so the write can run.
    pub fn unprotect(
        &mut self,
        frame: u64,
        read: &mut dyn FnMut(u64) -> Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), ShadowError> {
        self.begin();
        let frame = frame & pte::FRAME;
        if self.active.is_some_and(|(root, _)| root == frame) {
            return Err(ShadowError::CannotUnshadow { frame });
        }
        self.stats.unshadowed += 1;
        for slot in self.mirrors.get(&frame).cloned().unwrap_or_default() {
            if !self.pages[slot].used || self.pages[slot].guest != Some(frame) {
                continue;
            }
            match self.pages[slot].parent {
                Some((p, i)) => self.zap(p, i, read, fx)?,
                None => {
                    let (root, prv) = self.pages[slot].owner;
                    if let Some(t) = self.roots.get_mut(&root) {
                        t.remove(&prv);
                        if t.is_empty() {
                            self.roots.remove(&root);
                        }
                    }
                    self.free_tree(slot);
                }
            }
        }
        if self.is_page_table(frame) {
            return Err(ShadowError::CannotUnshadow { frame });
        }
        Ok(())
    }

    /// Counts a true fault the caller classified itself (guest user mode reaching the
    /// monitor's private pages, which every shadow maps supervisor-only).
    pub fn count_true_fault(&mut self) {
        self.stats.true_faults += 1;
    }

    /// Reads one entry of a shadow page, as the builder wrote it (tests, explanations).
    pub fn shadow_entry(&self, table: u64, idx: usize) -> Option<u64> {
        let slot = self.slot_of(table)?;
        self.pages[slot].used.then(|| self.pages[slot].entries[idx])
    }
}
