//! The virtual CPU's CPUID table: the leaves KVM was given for the vCPU, and the lookup
//! every engine answers a guest's CPUID from (trap-and-emulate's emulation, paravirt's
//! `cpuid` hypercall, the capability probe's leak check).

use serde::{Deserialize, Serialize};

/// One CPUID leaf of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidLeaf {
    /// EAX input.
    pub function: u32,
    /// ECX input.
    pub index: u32,
    /// Whether `index` matters.
    pub indexed: bool,
    /// EAX, EBX, ECX, EDX.
    pub regs: [u32; 4],
}

/// A vCPU's CPUID table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuidTable(pub Vec<CpuidLeaf>);

impl CpuidTable {
    /// EAX, EBX, ECX, EDX for `leaf`/`subleaf` (zeros for a leaf the table lacks, as a
    /// CPU answers an out-of-range leaf within its own ranges).
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.0
            .iter()
            .find(|c| c.function == leaf && (!c.indexed || c.index == subleaf))
            .map_or([0; 4], |c| c.regs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_leaves_match_their_subleaf_others_ignore_it() {
        let t = CpuidTable(vec![
            CpuidLeaf {
                function: 0,
                index: 0,
                indexed: false,
                regs: [1, 2, 3, 4],
            },
            CpuidLeaf {
                function: 7,
                index: 1,
                indexed: true,
                regs: [5, 6, 7, 8],
            },
        ]);
        assert_eq!(t.lookup(0, 99), [1, 2, 3, 4]);
        assert_eq!(t.lookup(7, 1), [5, 6, 7, 8]);
        assert_eq!(t.lookup(7, 0), [0; 4]);
        assert_eq!(t.lookup(0x4000_0000, 0), [0; 4]);
    }
}
