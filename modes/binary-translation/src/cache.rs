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
    /// Lookup-table entries found forged (not the VMM's) and cleared.
    pub repairs: u64,
}

/// The translation cache.
#[derive(Debug)]
pub struct Cache {
    /// Blocks by their TC address.
    blocks: BTreeMap<u64, Block>,
    /// The block whose guest code was invalidated while it ran: it finishes the guest
    /// instruction that wrote its code, then enters the VMM (see [`Cache::invalidate_unit`]).
    dying: Option<Dying>,
    /// Guest pages of the blocks translated since the last [`Cache::take_fresh_pages`].
    fresh: Vec<u64>,
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

/// A block invalidated while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dying {
    /// Its TC address.
    tc: u64,
    /// The `ud2` placed after the translation of the instruction that wrote its code.
    stop: Option<u64>,
}

/// `ud2`, then `nop`s: a chaining stub before it is patched.
const STUB: [u8; translate::STUB_LEN] = [0x0F, 0x0B, 0x90, 0x90, 0x90];

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
            dying: None,
            fresh: Vec::new(),
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

    /// Checks every lookup-table entry against the cache and clears those the VMM did not
    /// write: the table is writable by the guest (translated code reads it at CPL 3), so
    /// guest *user* code, which runs untranslated on the same monitor pages, could forge
    /// an entry that sends its kernel's translated code anywhere. Run before guest kernel
    /// code runs again after user mode; returns how many entries were cleared.
    pub fn repair_table(&mut self, mem: &GuestMemoryMmap) -> Result<u64, String> {
        let mut table = vec![0u8; (layout::TABLE_ENTRIES * layout::ENTRY) as usize];
        mem.read_slice(&mut table, GuestAddress(layout::TABLE))
            .map_err(|e| format!("reading the lookup table: {e}"))?;
        let mut cleared = 0;
        for (i, e) in table.chunks_exact(layout::ENTRY as usize).enumerate() {
            let key = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
            let tc = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
            let slot = layout::TABLE + i as u64 * layout::ENTRY;
            let ours =
                key == u64::MAX || (layout::entry_of(key) == slot && self.find(key) == Some(tc));
            if !ours {
                let mut empty = [0u8; 16];
                empty[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                write(mem, slot, &empty)?;
                cleared += 1;
            }
        }
        self.counters.repairs += cleared;
        Ok(cleared)
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
        self.by_page
            .iter()
            .filter(|(_, blocks)| !blocks.is_empty())
            .map(|(page, _)| *page)
    }

    /// The guest pages read by the blocks translated since the last call (the pages the
    /// VMM must write-protect, if they are not yet).
    pub fn take_fresh_pages(&mut self) -> Vec<u64> {
        let mut pages = std::mem::take(&mut self.fresh);
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// The TC address of the block whose code holds TC address `rip`.
    pub fn block_at(&self, rip: u64) -> Option<u64> {
        let (tc, b) = self.blocks.range(..=rip).next_back()?;
        (rip - tc < b.code.len() as u64).then_some(*tc)
    }

    /// Whether translated code at `rip` still runs the guest code it was made from: it
    /// lies in a block that is neither thrown away nor dying.
    pub fn is_live(&self, rip: u64) -> bool {
        self.block_at(rip)
            .is_some_and(|tc| self.dying.map(|d| d.tc) != Some(tc))
    }

    /// Whether `rip` lies in the block that is dying.
    pub fn in_dying(&self, rip: u64) -> bool {
        self.dying.is_some_and(|d| self.block_at(rip) == Some(d.tc))
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
            self.fresh.push(page);
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
        if self.in_dying(stub) {
            return Ok(()); // the block is thrown away as soon as the guest leaves it
        }
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
        self.invalidate_unit(mem, page & !(PAGE_SIZE - 1), PAGE_SIZE, None)
    }

    /// Throws away every block translated from guest code in `[base, base + size)`:
    /// lookups of their guest RIPs miss from now on, their lookup-table entries are
    /// cleared, the stubs chained to them are re-armed, and their code becomes traps.
    /// Returns how many blocks went.
    ///
    /// `running` is the TC address where the guest stopped, in the middle of a guest
    /// instruction (the store that wrote the code). If its block is among those thrown
    /// away, the block *dies* instead: it can no longer be reached, but its code stays
    /// until the guest leaves it, so that the instruction can finish; a `ud2` after that
    /// instruction's translation (a stub to the next guest instruction) brings the guest
    /// back to the VMM, which retranslates from there. [`Cache::finish_dying`] then
    /// throws it away.
    pub fn invalidate_unit(
        &mut self,
        mem: &GuestMemoryMmap,
        base: u64,
        size: u64,
        running: Option<u64>,
    ) -> Result<u64, String> {
        let pages: Vec<u64> = self
            .by_page
            .keys()
            .copied()
            .filter(|p| p.wrapping_sub(base) < size)
            .collect();
        let mut dropped = BTreeSet::new();
        for p in pages {
            dropped.extend(self.by_page.remove(&p).unwrap_or_default());
        }
        if dropped.is_empty() {
            return Ok(0);
        }
        let keep = running.and_then(|rip| self.block_at(rip).map(|tc| (tc, rip)));
        for tc in &dropped {
            match keep {
                Some((k, rip)) if k == *tc => self.retire(mem, k, rip)?,
                _ => self.drop_block(mem, *tc)?,
            }
        }
        // Chains into the dropped blocks: re-arm every patched stub that targets one.
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
            write(mem, at, &STUB)?;
            self.sites.insert(at, Entry::Site(site));
        }
        let n = dropped.len() as u64;
        self.counters.invalidations += n;
        Ok(n)
    }

    /// Makes the block at `tc` unreachable but leaves its code, with a `ud2` after the
    /// translation of the guest instruction at TC address `rip`.
    fn retire(&mut self, mem: &GuestMemoryMmap, tc: u64, rip: u64) -> Result<(), String> {
        self.finish_dying(mem)?;
        let Some(b) = self.blocks.get(&tc) else {
            return Ok(());
        };
        let (guest, insns) = (b.guest, b.insns.clone());
        if self.by_guest.get(&guest) == Some(&tc) {
            self.by_guest.remove(&guest);
        }
        for set in self.by_page.values_mut() {
            set.remove(&tc);
        }
        self.forget_lookup(mem, guest, tc)?;
        let mut stop = None;
        if let Some(i) = insns.iter().rposition(|(_, t)| *t <= rip) {
            if let Some(&(next, at)) = insns.get(i + 1) {
                write(mem, at, &STUB[..2])?;
                self.sites
                    .insert(at, Entry::Site(Site::Branch { target: next }));
                stop = Some(at);
            }
        }
        self.dying = Some(Dying { tc, stop });
        Ok(())
    }

    /// Throws away the dying block, if there is one (the guest has left it).
    pub fn finish_dying(&mut self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let Some(d) = self.dying.take() else {
            return Ok(());
        };
        if let Some(at) = d.stop {
            self.sites.remove(&at);
        }
        self.drop_block(mem, d.tc)
    }

    /// Clears the lookup-table entry of `guest` if it still sends it to `tc`.
    fn forget_lookup(&self, mem: &GuestMemoryMmap, guest: u64, tc: u64) -> Result<(), String> {
        let at = layout::entry_of(guest);
        let mut entry = [0u8; 16];
        mem.read_slice(&mut entry, GuestAddress(at))
            .map_err(|e| e.to_string())?;
        let (key, to) = entry.split_at(8);
        if key == guest.to_le_bytes() && to == tc.to_le_bytes() {
            write(mem, at, &u64::MAX.to_le_bytes())?;
        }
        Ok(())
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
        self.forget_lookup(mem, b.guest, tc)?;
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
        self.dying = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest RAM's first 2 MiB and the engine's pages.
    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 2 << 20),
            (
                GuestAddress(layout::DATA),
                (layout::TC_END - layout::DATA) as usize,
            ),
        ])
        .unwrap()
    }

    const A: u64 = 0x1000;
    /// Another page, and another lookup-table entry than A's.
    const B: u64 = 0x2010;

    /// `A: mov eax, 1; mov ecx, 2; jmp B` and `B: jmp A`, translated, A chained to B.
    fn two_blocks(mem: &GuestMemoryMmap) -> (Cache, u64, u64) {
        let rel = |from: u64, to: u64| (to.wrapping_sub(from + 5) as u32).to_le_bytes();
        let mut code_a = vec![0xB8, 1, 0, 0, 0, 0xB9, 2, 0, 0, 0, 0xE9];
        code_a.extend(rel(A + 10, B));
        let mut code_b = vec![0xE9];
        code_b.extend(rel(B, A));
        mem.write_slice(&code_a, GuestAddress(A)).unwrap();
        mem.write_slice(&code_b, GuestAddress(B)).unwrap();
        let mut c = Cache::new(mem, layout::TC_END).unwrap();
        let mut read = |at: u64, buf: &mut [u8]| {
            mem.read_slice(buf, GuestAddress(at))
                .map_or(0, |()| buf.len())
        };
        let a = c.get(mem, A, &mut read).unwrap();
        let b = c.get(mem, B, &mut read).unwrap();
        let stub = c.blocks[&a]
            .sites
            .iter()
            .find(|(_, s)| *s == Site::Branch { target: B })
            .unwrap()
            .0;
        c.chain(mem, stub, b).unwrap();
        (c, a, stub)
    }

    fn lookup_key(mem: &GuestMemoryMmap, guest: u64) -> u64 {
        mem.read_obj(GuestAddress(layout::entry_of(guest))).unwrap()
    }

    #[test]
    fn invalidating_a_page_unchains_and_forgets_its_blocks() {
        let mem = memory();
        let (mut c, a, stub) = two_blocks(&mem);
        assert_eq!(c.take_fresh_pages(), vec![A, B & !0xFFF]);
        assert_eq!(lookup_key(&mem, B), B);
        assert_eq!(c.invalidate_page(&mem, B & !0xFFF).unwrap(), 1);
        assert_eq!(c.find(B), None);
        assert_eq!(lookup_key(&mem, B), u64::MAX);
        // The stub that jumped to B is a stub again.
        let mut bytes = [0u8; 5];
        mem.read_slice(&mut bytes, GuestAddress(stub)).unwrap();
        assert_eq!(bytes, STUB);
        assert_eq!(c.entry(stub), Some(Entry::Site(Site::Branch { target: B })));
        assert!(c.is_live(a));
        assert_eq!(c.counters.invalidations, 1);
        assert_eq!(c.pages().collect::<Vec<_>>(), vec![A]);
    }

    #[test]
    fn a_block_that_wrote_its_own_code_dies_after_the_instruction() {
        let mem = memory();
        let (mut c, a, stub) = two_blocks(&mem);
        let (first, second) = (c.blocks[&a].insns[0].1, c.blocks[&a].insns[1].1);
        // The guest stopped in A's first instruction (its store wrote A's page).
        assert_eq!(
            c.invalidate_unit(&mem, A, PAGE_SIZE, Some(first)).unwrap(),
            1
        );
        assert_eq!(c.find(A), None);
        assert_eq!(lookup_key(&mem, A), u64::MAX);
        assert!(c.in_dying(first) && !c.is_live(first));
        // The first instruction's translation is intact; the second's is a stub to it.
        let mut bytes = [0u8; 2];
        mem.read_slice(&mut bytes, GuestAddress(first)).unwrap();
        assert_eq!(bytes, [0xB8, 1]);
        mem.read_slice(&mut bytes, GuestAddress(second)).unwrap();
        assert_eq!(bytes, [0x0F, 0x0B]);
        assert_eq!(
            c.entry(second),
            Some(Entry::Site(Site::Branch { target: A + 5 }))
        );
        // Its stubs are not chained any more.
        let chains = c.counters.chains;
        c.chain(&mem, second, 0x4010_0000).unwrap();
        assert_eq!(c.counters.chains, chains);
        c.finish_dying(&mem).unwrap();
        assert!(!c.in_dying(first) && c.block_at(first).is_none());
        assert_eq!(c.entry(second), None);
        assert_eq!(c.entry(stub), None);
        mem.read_slice(&mut bytes, GuestAddress(first)).unwrap();
        assert_eq!(bytes, [0x0F, 0x0B]);
        assert!(c.find(B).is_some());
    }

    #[test]
    fn a_lookup_entry_that_names_a_newer_translation_is_kept() {
        let mem = memory();
        let (mut c, a, _) = two_blocks(&mem);
        // A newer translation of A took over the table entry: dropping the old one
        // leaves it.
        mem.write_obj(0x4010_0000u64, GuestAddress(layout::entry_of(A) + 8))
            .unwrap();
        c.invalidate_page(&mem, A).unwrap();
        assert!(!c.is_live(a));
        assert_eq!(lookup_key(&mem, A), A);
    }

    #[test]
    fn forged_lookup_entries_are_cleared_and_the_vmms_kept() {
        let mem = memory();
        let (mut c, _, _) = two_blocks(&mem);
        assert_eq!(c.repair_table(&mem).unwrap(), 0);
        let entry = |guest: u64, tc: u64| {
            mem.write_obj(guest, GuestAddress(layout::entry_of(guest)))
                .unwrap();
            mem.write_obj(tc, GuestAddress(layout::entry_of(guest) + 8))
                .unwrap();
        };
        // A's entry redirected; a target never translated given an entry; B's entry moved
        // to another slot.
        entry(A, 0x80_0000_0000);
        entry(0x3005, 0x80_0000_0000);
        let b_tc: u64 = mem.read_obj(GuestAddress(layout::entry_of(B) + 8)).unwrap();
        mem.write_obj(B, GuestAddress(layout::entry_of(B + 1)))
            .unwrap();
        mem.write_obj(b_tc, GuestAddress(layout::entry_of(B + 1) + 8))
            .unwrap();
        assert_eq!(c.repair_table(&mem).unwrap(), 3);
        assert_eq!(lookup_key(&mem, A), u64::MAX);
        assert_eq!(lookup_key(&mem, 0x3005), u64::MAX);
        assert_eq!(lookup_key(&mem, B + 1), u64::MAX);
        assert_eq!(lookup_key(&mem, B), B, "the VMM's own entry stays");
        assert_eq!(c.counters.repairs, 3);
    }

    #[test]
    fn a_flush_forgets_the_dying_block() {
        let mem = memory();
        let (mut c, a, _) = two_blocks(&mem);
        c.invalidate_unit(&mem, A, PAGE_SIZE, Some(a)).unwrap();
        c.flush(&mem).unwrap();
        assert!(!c.in_dying(a));
        c.finish_dying(&mem).unwrap();
        assert_eq!(c.counters.flushes, 1);
    }
}
