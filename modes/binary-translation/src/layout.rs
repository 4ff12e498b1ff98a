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
/// The end of the translation cache (the end of the monitor's region).
pub const TC_END: u64 = layout::MONITOR_BASE + layout::MONITOR_SIZE;

/// The lookup-table entry of a guest RIP.
pub const fn entry_of(guest: u64) -> u64 {
    TABLE + (guest & (TABLE_ENTRIES - 1)) * ENTRY
}

const _: () = assert!(TC < TC_END);
const _: () = assert!(TC_END <= 1 << 31); // absolute disp32 operands reach everything
