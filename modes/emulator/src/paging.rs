//! A 4-level page walk over the guest's page tables, so the VMM reaches guest memory
//! exactly as the guest's own (CPL 3) accesses would: supervisor pages — the monitor —
//! stay out of reach.

use crate::platform::MemError;

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const ADDR: u64 = contract::x86::pte::FRAME;

/// Where a virtual address leads and with which rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Guest-physical address.
    pub gpa: u64,
    /// Every level allows user access.
    pub user: bool,
    /// Every level allows writes.
    pub writable: bool,
}

/// Whether `va` is canonical for 48-bit virtual addresses.
pub fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_FFFF
}

/// Translates `gva` through the tables at `cr3`; `read` reads a u64 of guest-physical
/// memory.
pub fn translate(
    cr3: u64,
    gva: u64,
    read: impl Fn(u64) -> Option<u64>,
) -> Result<Translation, MemError> {
    let missing = MemError::NotMapped { addr: gva };
    if !canonical(gva) {
        return Err(missing);
    }
    let mut table = cr3 & ADDR;
    let (mut user, mut writable) = (true, true);
    for level in (0..4).rev() {
        let shift = 12 + 9 * level;
        let idx = (gva >> shift) & 0x1FF;
        let e = read(table + idx * 8).ok_or(MemError::NotRam { addr: gva })?;
        if e & P == 0 {
            return Err(missing);
        }
        user &= e & US != 0;
        writable &= e & RW != 0;
        if level == 0 || (e & PS != 0 && (level == 1 || level == 2)) {
            let page_mask = (1u64 << shift) - 1;
            return Ok(Translation {
                gpa: (e & ADDR & !page_mask) | (gva & page_mask),
                user,
                writable,
            });
        }
        table = e & ADDR;
    }
    Err(missing)
}

/// Checks the rights of a translation for a CPL 3 access.
pub fn check(t: &Translation, gva: u64, write: bool) -> Result<u64, MemError> {
    if !t.user {
        return Err(MemError::Supervisor { addr: gva });
    }
    if write && !t.writable {
        return Err(MemError::ReadOnly { addr: gva });
    }
    Ok(t.gpa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn walks_4k_and_2m_pages_and_ands_the_rights() {
        let mut m = HashMap::new();
        m.insert(0x1000u64, 0x2000 | P | RW | US); // PML4[0]
        m.insert(0x2000, 0x3000 | P | RW | US); // PDPT[0]
        m.insert(0x3000, 0x4000 | P | RW | US); // PD[0] -> PT
        m.insert(0x3008, 0x20_0000 | P | RW | US | PS); // PD[1] 2 MiB page
        m.insert(0x4000 + 8 * 6, 0x6000 | P | RW); // supervisor page
        m.insert(0x4000 + 8 * 0x20, 0x5_5000 | P | US); // read-only user page
        let read = |a: u64| m.get(&a).copied().or(Some(0));
        let t = translate(0x1000, 0x6010, read).unwrap();
        assert_eq!(t.gpa, 0x6010);
        assert_eq!(
            check(&t, 0x6010, false),
            Err(MemError::Supervisor { addr: 0x6010 })
        );
        let t = translate(0x1000, 0x2_0004, read).unwrap();
        assert_eq!(t.gpa, 0x5_5004);
        assert_eq!(check(&t, 0x2_0004, false), Ok(0x5_5004));
        assert_eq!(
            check(&t, 0x2_0004, true),
            Err(MemError::ReadOnly { addr: 0x2_0004 })
        );
        let t = translate(0x1000, 0x21_2345, read).unwrap();
        assert_eq!(t.gpa, 0x21_2345);
        assert!(t.user && t.writable);
        assert_eq!(
            translate(0x1000, 0x7000, read),
            Err(MemError::NotMapped { addr: 0x7000 })
        );
        assert!(translate(0x1000, 0x8000_0000_0000, read).is_err());
    }
}
