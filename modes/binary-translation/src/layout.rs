//! Where the engine's structures live: pages of the monitor's region after
//! [`layout::MONITOR_END`], identity-mapped like the rest of it.
//!
//! ```text
//! DATA        vCPU data page (user, writable): virtual IF, scratch slots, lookup counter
//! TABLE       indirect-branch lookup table (user, writable): 1,024 × {guest RIP, TC address}
//! TC          translation cache (user, read + execute, not writable by the guest)
//! ```
//!
//! Everything the guest can write here is virtual state of this guest only: its IF, the
//! registers translated code parks while it looks a target up, and hints where its
//! translations are. Nothing the VMM trusts is read back from it without checking.

use contract::abi::{layout, PAGE_SIZE};

/// The vCPU data page.
pub const DATA: u64 = layout::MONITOR_END;
/// The virtual IF, as a qword: 0 or `0x200` (RFLAGS.IF), so PUSHF can OR it in.
pub const VIF: u64 = DATA;
/// Where translated code parks RAX.
pub const SAVE_RAX: u64 = DATA + 0x08;
/// Where translated code parks RCX.
pub const SAVE_RCX: u64 = DATA + 0x10;
/// The guest target of the indirect branch being looked up (read by the VMM on a miss).
pub const TARGET: u64 = DATA + 0x18;
/// The translated address the lookup jumps to.
pub const JUMP: u64 = DATA + 0x20;
/// Lookups made by translated code (incremented by it).
pub const LOOKUPS: u64 = DATA + 0x28;
/// The lookup table: `TABLE_ENTRIES` entries of {guest RIP, TC address}.
pub const TABLE: u64 = DATA + PAGE_SIZE;
/// Entries of the lookup table (a power of two).
pub const TABLE_ENTRIES: u64 = 1024;
/// Size of one entry.
pub const ENTRY: u64 = 16;
/// The translation cache.
pub const TC: u64 = TABLE + TABLE_ENTRIES * ENTRY;
/// The end of the translation cache (the event stack, then the shadow page tables).
pub const TC_END: u64 = layout::EVENT_STACK;

/// Size of the small pages of the identity map: the first 2 MiB of guest RAM.
const SMALL_REGION: u64 = 2 << 20;

/// The unit of write protection of translated guest code: the one entry of the VMM's
/// identity map that maps an address of guest RAM. Below 2 MiB that is a 4 KiB page of
/// [`layout::PT0`]; above, the map has only 2 MiB pages, so the unit is a 2 MiB page and
/// its entry is in [`layout::PD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Its first address.
    pub base: u64,
    /// Its size: 4 KiB or 2 MiB.
    pub size: u64,
    /// The address of the page-table entry that maps it (its RW bit is the protection).
    pub entry: u64,
}

impl Unit {
    /// The unit that holds guest address `addr`, if it is guest RAM (`ram` bytes from 0,
    /// identity-mapped). The scratch window is not guest RAM: it is the guest's own
    /// mapping, not the VMM's.
    pub const fn of(addr: u64, ram: u64) -> Option<Unit> {
        if addr >= ram || ram > layout::MAX_RAM_SIZE {
            return None;
        }
        if addr < SMALL_REGION {
            let base = addr & !(PAGE_SIZE - 1);
            Some(Unit {
                base,
                size: PAGE_SIZE,
                entry: layout::PT0 + base / PAGE_SIZE * 8,
            })
        } else {
            let base = addr & !(SMALL_REGION - 1);
            Some(Unit {
                base,
                size: SMALL_REGION,
                entry: layout::PD + (base >> 21) * 8,
            })
        }
    }

    /// Whether `addr` lies in the unit.
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size
    }
}

/// The lookup-table entry of a guest RIP.
pub const fn entry_of(guest: u64) -> u64 {
    TABLE + (guest & (TABLE_ENTRIES - 1)) * ENTRY
}

const _: () = assert!(TC < TC_END);
const _: () = assert!(TC_END <= 1 << 31); // absolute disp32 operands reach everything

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_the_identity_maps_entries() {
        let ram = 16 << 20;
        let u = Unit::of(0x10_0123, ram).unwrap();
        assert_eq!((u.base, u.size), (0x10_0000, PAGE_SIZE));
        assert_eq!(u.entry, layout::PT0 + 0x100 * 8);
        assert_eq!(u.entry, layout::pte_address(0x10_0000).unwrap());
        let u = Unit::of(0x35_0000, ram).unwrap();
        assert_eq!((u.base, u.size), (0x20_0000, 2 << 20));
        assert_eq!(u.entry, layout::PD + 8);
        assert!(u.contains(0x3F_FFFF) && !u.contains(0x40_0000));
        assert_eq!(Unit::of(ram, ram), None);
        assert_eq!(Unit::of(layout::SCRATCH_VA, ram), None);
        assert_eq!(Unit::of(layout::MONITOR_BASE, ram), None);
    }
}
