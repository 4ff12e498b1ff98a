//! The translation cache: translated blocks placed one after the other in the monitor's
//! region, indexed by guest RIP, by TC address and by the guest pages they were read from;
//! the VMM entries (sites) they contain; chain patching; the lookup table; and flushing
//! when the cache is full. Works on guest memory only (no KVM), so it is tested on plain
//! memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use contract::abi::PAGE_SIZE;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;
use crate::translate::{self, chain_patch, Block, Site, Stats, TranslateError};

/// A VMM entry of translated code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A site of a block.
    Site(Site),
    /// The lookup routine's miss.
    LookupMiss,
}

/// Counters of the translation cache (the record's `translation` rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Blocks translated.
    pub blocks: u64,
    /// What the blocks are made of.
    pub stats: Stats,
    /// Chaining stubs patched into direct jumps.
    pub chains: u64,
    /// Lookups that missed the table (entries into the VMM).
    pub lookup_misses: u64,
    /// Blocks thrown away because the guest wrote to their code.
    pub invalidations: u64,
    /// Whole-cache flushes because it was full.
    pub flushes: u64,
}

/// The translation cache.
#[derive(Debug)]
pub struct Cache {
    /// Blocks by their TC address.
    blocks: BTreeMap<u64, Block>,
    /// TC address of the block translating each guest RIP.
    by_guest: HashMap<u64, u64>,
    /// VMM entries by TC address.
    sites: HashMap<u64, Entry>,
    /// Blocks (TC addresses) by guest page they read from.
    by_page: HashMap<u64, BTreeSet<u64>>,
    /// Where the first block goes.
    start: u64,
    /// Where the next block goes.
    next: u64,
    /// The end of the cache.
    end: u64,
    /// The lookup routine.
    pub lookup: u64,
    /// Counters.
    pub counters: Counters,
}

/// Writes `bytes` at `addr` of guest memory.
fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), String> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|e| format!("writing the translation cache at {addr:#x}: {e}"))
}

impl Cache {
    /// An empty cache of `[layout::TC, end)`: writes the lookup routine and clears the
    /// data page and the lookup table.
    pub fn new(mem: &GuestMemoryMmap, end: u64) -> Result<Cache, String> {
        let (code, miss) = translate::lookup_routine(layout::TC).map_err(|e| e.to_string())?;
        write(mem, layout::TC, &code)?;
        write(mem, layout::DATA, &[0u8; PAGE_SIZE as usize])?;
        let start = (layout::TC + code.len() as u64 + 15) & !15;
        let mut c = Cache {
            start,
            blocks: BTreeMap::new(),
            by_guest: HashMap::new(),
            sites: HashMap::from([(miss, Entry::LookupMiss)]),
            by_page: HashMap::new(),
            next: start,
            end,
            lookup: layout::TC,
            counters: Counters::default(),
        };
        c.clear_table(mem)?;
        Ok(c)
    }

    fn clear_table(&mut self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let empty: Vec<u8> = (0..layout::TABLE_ENTRIES)
            .flat_map(|_| {
                let mut e = [0u8; 16];
                e[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                e
            })
            .collect();
        write(mem, layout::TABLE, &empty)
    }

    /// The VMM entry at TC address `rip`.
    pub fn entry(&self, rip: u64) -> Option<Entry> {
        self.sites.get(&rip).copied()
    }

    /// The translation of guest `rip`, if there is one.
    pub fn find(&self, guest: u64) -> Option<u64> {
        self.by_guest.get(&guest).copied()
    }

    /// The guest instruction whose translation starts at TC address `tc`, and the block.
    pub fn guest_of(&self, tc: u64) -> Option<(u64, &Block)> {
        let (_, b) = self.blocks.range(..=tc).next_back()?;
        b.insns.iter().find(|(_, t)| *t == tc).map(|(g, _)| (*g, b))
    }

    /// The TC address of guest instruction `guest` inside the block at `block_tc`.
    pub fn within(&self, block_tc: u64, guest: u64) -> Option<u64> {
        self.blocks
            .get(&block_tc)?
            .insns
            .iter()
            .find(|(g, _)| *g == guest)
            .map(|(_, t)| *t)
    }

    /// Whether `rip` lies in the translation cache.
    pub fn contains(&self, rip: u64) -> bool {
        (layout::TC..self.end).contains(&rip)
    }

    /// The guest pages that hold translated code.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_page.keys().copied()
    }

    /// The translation of guest `rip`, translating it (and flushing a full cache) if
    /// needed. `read` reads guest code.
    pub fn get(
        &mut self,
        mem: &GuestMemoryMmap,
        rip: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    ) -> Result<u64, TranslateError> {
        if let Some(tc) = self.find(rip) {
            return Ok(tc);
        }
        let mut block = translate::translate(read, rip, self.next, self.lookup)?;
        if block.tc + block.code.len() as u64 > self.end {
            self.flush(mem).map_err(TranslateError::Encode)?;
            block = translate::translate(read, rip, self.next, self.lookup)?;
            if block.tc + block.code.len() as u64 > self.end {
                return Err(TranslateError::Encode(
                    "one block does not fit in the translation cache".into(),
                ));
            }
        }
        write(mem, block.tc, &block.code).map_err(TranslateError::Encode)?;
        let tc = block.tc;
        self.next = (tc + block.code.len() as u64 + 15) & !15;
        self.counters.blocks += 1;
        let s = &mut self.counters.stats;
        s.copied += block.stats.copied;
        s.inline += block.stats.inline;
        s.callouts += block.stats.callouts;
        s.branches += block.stats.branches;
        for (at, site) in &block.sites {
            self.sites.insert(*at, Entry::Site(*site));
        }
        let last = block.guest_end.max(block.guest + 1) - 1;
        let mut page = block.guest & !(PAGE_SIZE - 1);
        while page <= last {
            self.by_page.entry(page).or_default().insert(tc);
            page += PAGE_SIZE;
        }
        self.by_guest.insert(rip, tc);
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&rip.to_le_bytes());
        entry[8..].copy_from_slice(&tc.to_le_bytes());
        write(mem, layout::entry_of(rip), &entry).map_err(TranslateError::Encode)?;
        self.blocks.insert(tc, block);
        Ok(tc)
    }

    /// Patches the chaining stub at `stub` into a jump to `to`.
    pub fn chain(&mut self, mem: &GuestMemoryMmap, stub: u64, to: u64) -> Result<(), String> {
        if self.sites.remove(&stub).is_none() {
            return Ok(()); // flushed or invalidated meanwhile
        }
        write(mem, stub, &chain_patch(stub, to))?;
        self.counters.chains += 1;
        Ok(())
    }

    /// Throws away every block translated from guest page `page`: their entries, their
    /// sites, and every chain into them (by flushing whatever jumps to them: the stubs
    /// that were patched to reach them are re-armed).
    pub fn invalidate_page(&mut self, mem: &GuestMemoryMmap, page: u64) -> Result<u64, String> {
        let Some(tcs) = self.by_page.remove(&page) else {
            return Ok(0);
        };
        let n = tcs.len() as u64;
        for tc in &tcs {
            self.drop_block(mem, *tc)?;
        }
        // Chains into the dropped blocks: re-arm every patched stub that targets one.
        let dropped: BTreeSet<u64> = tcs;
        let mut rearm = Vec::new();
        for b in self.blocks.values() {
            for (at, site) in &b.sites {
                if let Site::Branch { .. } = site {
                    if !self.sites.contains_key(at) {
                        let mut bytes = [0u8; 5];
                        mem.read_slice(&mut bytes, GuestAddress(*at))
                            .map_err(|e| e.to_string())?;
                        let rel = i32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                        let to = at.wrapping_add(5).wrapping_add(rel as i64 as u64);
                        if dropped.contains(&to) {
                            rearm.push((*at, *site));
                        }
                    }
                }
            }
        }
        for (at, site) in rearm {
            write(mem, at, &[0x0F, 0x0B, 0x90, 0x90, 0x90])?;
            self.sites.insert(at, Entry::Site(site));
        }
        self.counters.invalidations += n;
        Ok(n)
    }

    fn drop_block(&mut self, mem: &GuestMemoryMmap, tc: u64) -> Result<(), String> {
        let Some(b) = self.blocks.remove(&tc) else {
            return Ok(());
        };
        if self.by_guest.get(&b.guest) == Some(&tc) {
            self.by_guest.remove(&b.guest);
        }
        for (at, _) in &b.sites {
            self.sites.remove(at);
        }
        for set in self.by_page.values_mut() {
            set.remove(&tc);
        }
        // Its lookup entry, if it still names it; its code becomes a trap.
        let at = layout::entry_of(b.guest);
        let mut key = [0u8; 8];
        mem.read_slice(&mut key, GuestAddress(at))
            .map_err(|e| e.to_string())?;
        if u64::from_le_bytes(key) == b.guest {
            write(mem, at, &u64::MAX.to_le_bytes())?;
        }
        let traps: Vec<u8> = (0..b.code.len())
            .map(|i| if i % 2 == 0 { 0x0F } else { 0x0B })
            .collect();
        write(mem, tc, &traps)?;
        Ok(())
    }

    /// Empties the cache (it is full).
    pub fn flush(&mut self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let lookup_miss: Vec<_> = self
            .sites
            .iter()
            .filter(|(_, e)| **e == Entry::LookupMiss)
            .map(|(a, _)| *a)
            .collect();
        self.blocks.clear();
        self.by_guest.clear();
        self.by_page.clear();
        self.sites.clear();
        for a in lookup_miss {
            self.sites.insert(a, Entry::LookupMiss);
        }
        self.next = self.start;
        self.clear_table(mem)?;
        self.counters.flushes += 1;
        Ok(())
    }
}
