//! The guest's own page walk, as the shadow builder reads it: every table it passes
//! through (those pages are then write-protected), the rights it grants, and what its leaf
//! maps — classified, so that a hostile table ends with a name and never reaches the
//! monitor.

use contract::abi::{layout, PAGE_SIZE};
use contract::x86::pte;

use super::ShadowError;

/// Where a guest leaf may point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Guest RAM.
    Ram,
    /// The MMIO device page (no RAM behind it: accesses exit).
    Mmio,
    /// One of the monitor's pages the ABI shares with the guest (boot-info, scratch
    /// frames, shared-info).
    Shared,
}

/// One level of a guest walk: the table read and the entry found in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Guest-physical address of the table (4 KiB aligned).
    pub table: u64,
    /// The entry read at the walked index.
    pub entry: u64,
}

/// A guest walk that found a present translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    /// The tables walked, PML4 first; `depth` of them are valid.
    pub steps: [Step; 4],
    /// How many levels the walk used (4 for a 4 KiB page, 3 for a 2 MiB page).
    pub depth: usize,
    /// The 4 KiB frame that holds the address.
    pub frame: u64,
    /// What kind of frame it is.
    pub kind: FrameKind,
    /// Every level allows user access.
    pub user: bool,
    /// Every level allows writes.
    pub writable: bool,
}

/// What the guest's tables say about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// A present translation.
    Mapped(Mapped),
    /// Not present at some level: a true fault.
    NotPresent,
}

/// Whether a guest-physical table address may be read as a page table: guest RAM, or the
/// scratch page table the ABI shares (a PT only).
fn table_allowed(table: u64, ram: u64, level: u8) -> bool {
    table.saturating_add(PAGE_SIZE) <= ram || (level == 1 && table == layout::SCRATCH_PT)
}

/// Classifies a leaf frame.
pub fn frame_kind(frame: u64, ram: u64, va: u64) -> Result<FrameKind, ShadowError> {
    if frame.saturating_add(PAGE_SIZE) <= ram {
        Ok(FrameKind::Ram)
    } else if frame == layout::MMIO_BASE {
        Ok(FrameKind::Mmio)
    } else if layout::is_shared_page(frame) && frame != layout::SCRATCH_PT {
        Ok(FrameKind::Shared)
    } else if layout::is_monitor(frame) {
        Err(ShadowError::MapsMonitor { va, frame })
    } else {
        Err(ShadowError::BeyondRam { va, frame })
    }
}

/// Walks the guest's tables from `root` for `va`; `read` reads a u64 of guest-physical
/// memory. Bounded by the four levels, so a table that points at itself (a loop) ends.
pub fn walk(
    root: u64,
    va: u64,
    ram: u64,
    read: &mut dyn FnMut(u64) -> Option<u64>,
) -> Result<Walk, ShadowError> {
    let mut table = root & pte::FRAME;
    let mut steps = [Step { table: 0, entry: 0 }; 4];
    let (mut user, mut writable) = (true, true);
    for (depth, level) in (1..=4u8).rev().enumerate() {
        if !table_allowed(table, ram, level) {
            return Err(if layout::is_monitor(table) {
                ShadowError::TableInMonitor { va, table, level }
            } else {
                ShadowError::TableBeyondRam { va, table, level }
            });
        }
        let idx = (va >> (12 + 9 * (u64::from(level) - 1))) & 511;
        let entry =
            read(table + idx * 8).ok_or(ShadowError::TableBeyondRam { va, table, level })?;
        steps[depth] = Step { table, entry };
        if entry & pte::P == 0 {
            return Ok(Walk::NotPresent);
        }
        user &= entry & pte::US != 0;
        writable &= entry & pte::RW != 0;
        let large = entry & pte::PS != 0;
        if level == 1 || (large && level == 2) {
            let frame = if level == 1 {
                entry & pte::FRAME
            } else {
                (entry & pte::FRAME & !((2 << 20) - 1)) | (va & ((2 << 20) - 1) & !(PAGE_SIZE - 1))
            };
            let kind = frame_kind(frame, ram, va)?;
            return Ok(Walk::Mapped(Mapped {
                steps,
                depth: depth + 1,
                frame,
                kind,
                user,
                writable,
            }));
        }
        if large {
            return Err(ShadowError::HugePage { va, level });
        }
        table = entry & pte::FRAME;
    }
    unreachable!("a walk ends at level 1")
}
