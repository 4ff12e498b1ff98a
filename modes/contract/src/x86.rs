//! x86-64 architecture knowledge the VMM and every engine share, written once: RFLAGS
//! bits, exception vectors, page-table-entry bits and IDT gates.

/// RFLAGS bits.
pub mod rflags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Bit 1, always set.
    pub const FIXED: u64 = 1 << 1;
    /// Parity.
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry.
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Trap (single step).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (two bits).
    pub const IOPL: u64 = 3 << 12;
    /// Resume: set in fault frames so the faulting instruction's breakpoint is not retaken.
    pub const RF: u64 = 1 << 16;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
    /// CPUID available (software-writable).
    pub const ID: u64 = 1 << 21;
    /// The arithmetic status flags: CF, PF, AF, ZF, SF, OF.
    pub const ARITHMETIC: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Exception vectors.
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Breakpoint (`int3`).
    pub const BP: u8 = 3;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
}

/// Page-table entry bits.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User-accessible.
    pub const US: u64 = 1 << 2;
    /// Large page (in a page directory entry).
    pub const PS: u64 = 1 << 7;
    /// The frame address bits.
    pub const FRAME: u64 = 0x000F_FFFF_FFFF_F000;
}

/// Size of a 64-bit IDT gate.
pub const GATE_SIZE: u64 = 16;

const GATE_PRESENT: u64 = 1 << 47;
const GATE_INTERRUPT: u64 = 0xE;
const GATE_TRAP: u64 = 0xF;

/// A decoded 64-bit IDT gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Handler address.
    pub handler: u64,
    /// Code selector.
    pub selector: u16,
    /// Interrupt gate (clears IF) rather than trap gate.
    pub clears_if: bool,
}

/// Encodes a present 64-bit interrupt gate to `handler` as its two 8-byte halves.
pub fn interrupt_gate(handler: u64, selector: u16, dpl: u8) -> (u64, u64) {
    let low = (handler & 0xFFFF)
        | (u64::from(selector) << 16)
        | ((0x80 | GATE_INTERRUPT | (u64::from(dpl & 3) << 5)) << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    (low, handler >> 32)
}

/// Decodes the 16 bytes of a 64-bit gate; `None` if it is not a present interrupt or trap
/// gate.
pub fn decode_gate(low: u64, high: u64) -> Option<Gate> {
    let kind = (low >> 40) & 0xF;
    if low & GATE_PRESENT == 0 || (kind != GATE_INTERRUPT && kind != GATE_TRAP) {
        return None;
    }
    Some(Gate {
        handler: (low & 0xFFFF) | ((low >> 32) & 0xFFFF_0000) | ((high & 0xFFFF_FFFF) << 32),
        selector: ((low >> 16) & 0xFFFF) as u16,
        clears_if: kind == GATE_INTERRUPT,
    })
}

/// Decodes a 64-bit gate from its 16 bytes as they lie in memory (see [`decode_gate`]).
pub fn decode_gate_bytes(raw: &[u8; 16]) -> Option<Gate> {
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    low.copy_from_slice(&raw[..8]);
    high.copy_from_slice(&raw[8..]);
    decode_gate(u64::from_le_bytes(low), u64::from_le_bytes(high))
}

/// Where the gate of `vector` lies in an IDT whose limit is `limit` (its offset from the
/// IDT's base); `None` if the limit cuts the gate off, as the CPU would raise #GP.
pub fn gate_offset(vector: u8, limit: u16) -> Option<u64> {
    let offset = u64::from(vector) * GATE_SIZE;
    (offset + GATE_SIZE - 1 <= u64::from(limit)).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_gate_layout() {
        let (low, high) = interrupt_gate(0x1234_5678_9ABC_DEF0, 0x08, 0);
        assert_eq!(low & 0xFFFF, 0xDEF0);
        assert_eq!((low >> 16) & 0xFFFF, 0x08);
        assert_eq!((low >> 40) & 0xFF, 0x8E);
        assert_eq!(low >> 48, 0x9ABC);
        assert_eq!(high, 0x1234_5678);
        let (low3, _) = interrupt_gate(0, 0x08, 3);
        assert_eq!((low3 >> 40) & 0xFF, 0xEE);
    }

    #[test]
    fn gates_round_trip_and_absent_or_odd_gates_decode_to_none() {
        let (low, high) = interrupt_gate(0xFFFF_8000_0010_2030, 0x08, 0);
        assert_eq!(
            decode_gate(low, high),
            Some(Gate {
                handler: 0xFFFF_8000_0010_2030,
                selector: 0x08,
                clears_if: true
            })
        );
        let trap = low | (1 << 40); // type 0xF
        assert!(!decode_gate(trap, high).unwrap().clears_if);
        assert_eq!(decode_gate(low & !GATE_PRESENT, high), None);
        assert_eq!(decode_gate(low & !(0xF << 40) | (0xC << 40), high), None);
    }

    #[test]
    fn gates_decode_from_their_bytes_in_memory() {
        let (low, high) = interrupt_gate(0x0000_7FFF_1234_5678, 0x08, 0);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&low.to_le_bytes());
        raw[8..].copy_from_slice(&high.to_le_bytes());
        assert_eq!(decode_gate_bytes(&raw), decode_gate(low, high));
        assert_eq!(
            decode_gate_bytes(&raw).unwrap().handler,
            0x0000_7FFF_1234_5678
        );
        assert_eq!(decode_gate_bytes(&[0; 16]), None);
    }

    #[test]
    fn the_idt_limit_cuts_off_whole_gates() {
        assert_eq!(gate_offset(0, 15), Some(0));
        assert_eq!(gate_offset(0, 14), None);
        assert_eq!(gate_offset(0x20, 0x20 * 16 + 15), Some(0x200));
        assert_eq!(gate_offset(0x20, 0x20 * 16 + 14), None);
        assert_eq!(gate_offset(255, u16::MAX), Some(255 * 16));
    }

    #[test]
    fn arithmetic_flags_are_the_six_status_bits() {
        assert_eq!(rflags::ARITHMETIC, 0x8D5);
        assert_eq!(rflags::ARITHMETIC | rflags::DF | rflags::TF, 0xDD5);
    }
}
