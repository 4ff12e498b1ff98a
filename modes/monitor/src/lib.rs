//! The toolkit of the deprivileged engines (trap-and-emulate, paravirt): what a monitor
//! needs to look at the guest's code when the guest traps into it. Architecture constants
//! and gate encodings are `contract::x86`; the CPUID table is `contract::cpuid`.
//!
//! ```
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
//! mem.write_slice(&[0x0F, 0x22, 0xC0], GuestAddress(0x100)).unwrap(); // mov cr0, rax
//! let insn = monitor::decode_at(&mem, 0x100).unwrap();
//! assert!(insn.is_privileged());
//! assert_eq!(monitor::text_of(&insn), "mov cr0,rax");
//! ```

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The longest x86 instruction.
pub const MAX_INSN: usize = 15;

/// Decodes the 64-bit instruction at guest-physical (= virtual, identity-mapped) `rip`;
/// `None` if nothing there decodes. Near the end of memory it decodes what is readable.
pub fn decode_at(mem: &GuestMemoryMmap, rip: u64) -> Option<Instruction> {
    let mut bytes = [0u8; MAX_INSN];
    let n = (0..=MAX_INSN)
        .rev()
        .find(|&n| mem.read_slice(&mut bytes[..n], GuestAddress(rip)).is_ok())?;
    let insn = Decoder::with_ip(64, &bytes[..n], rip, DecoderOptions::NONE).decode();
    (!insn.is_invalid()).then_some(insn)
}

/// An instruction in Intel syntax, as traces and notes print it (`mov cr8,rax`).
pub fn text_of(insn: &Instruction) -> String {
    let mut text = String::new();
    IntelFormatter::new().format(insn, &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_is_readable_at_the_end_of_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        mem.write_slice(&[0xFA], GuestAddress(0xFFF)).unwrap(); // cli, last byte of RAM
        let insn = decode_at(&mem, 0xFFF).unwrap();
        assert_eq!((text_of(&insn).as_str(), insn.len()), ("cli", 1));
        mem.write_slice(&[0x0F], GuestAddress(0xFFF)).unwrap(); // a cut-off two-byte opcode
        assert!(decode_at(&mem, 0xFFF).is_none());
        assert!(decode_at(&mem, 0x2000).is_none(), "outside memory");
    }
}
