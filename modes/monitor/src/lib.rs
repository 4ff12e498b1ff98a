//! The toolkit of the deprivileged engines (trap-and-emulate, paravirt): what a monitor
//! that runs the guest kernel at CPL 3 needs, written once.
//!
//! - [`routine`]: the monitor's CPL 0 routine that applies validated PTE stores, `invlpg`
//!   and a CR3 reload inside the guest, with its mailbox and its two ways in (from the
//!   fault stub, from a guest context); [`install`] puts it in the monitor's region.
//! - [`frame`]: the 64-bit interrupt frame, pushed on the guest's stack to deliver an
//!   event to its handler and popped when the handler returns.
//! - [`decode_at`], [`decode`], [`text_of`]: the guest instruction at a trap, as the
//!   monitor reads and prints it.
//!
//! Architecture constants and gate encodings are `contract::x86`; the CPUID table is
//! `contract::cpuid`; the monitor's addresses are `contract::abi::layout`. Nothing here
//! touches KVM: everything works on guest memory.
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

pub mod frame;
pub mod routine;

use contract::abi::layout;
use contract::x86::pte;
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
    decode(&bytes[..n], rip)
}

/// Decodes the 64-bit instruction at the start of `bytes`, fetched from `rip` (at most
/// [`MAX_INSN`] of them are looked at); `None` if they do not decode.
pub fn decode(bytes: &[u8], rip: u64) -> Option<Instruction> {
    let bytes = &bytes[..bytes.len().min(MAX_INSN)];
    let insn = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE).decode();
    (!insn.is_invalid()).then_some(insn)
}

/// An instruction in Intel syntax, as traces and notes print it (`mov cr8,rax`).
pub fn text_of(insn: &Instruction) -> String {
    let mut text = String::new();
    IntelFormatter::new().format(insn, &mut text);
    text
}

/// Installs what the deprivileged engines add to the monitor's region the machine built:
/// the [`routine`]'s code, and the scratch page table mapped supervisor-only (writable at
/// CPL 0), so that the guest at CPL 3 changes it only through the monitor — trapped and
/// validated stores in trap-and-emulate, `mmu_update` in paravirt. Without that a guest
/// could point its PTE at a monitor frame and rewrite the IDT.
pub fn install(mem: &GuestMemoryMmap) -> Result<(), String> {
    for (at, code) in routine::code()? {
        mem.write_slice(&code, GuestAddress(at))
            .map_err(|e| format!("writing the monitor routine at {at:#x}: {e}"))?;
    }
    let page = layout::SCRATCH_PT;
    let entry = layout::pte_address(page).ok_or("the scratch page table has no 4 KiB PTE")?;
    mem.write_obj(page | pte::P | pte::RW, GuestAddress(entry))
        .map_err(|e| format!("write-protecting the scratch page table: {e}"))
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

    #[test]
    fn decode_reads_one_instruction_from_bytes() {
        let insn = decode(&[0x0F, 0x01, 0x3E, 0x90], 0x10_0000).unwrap(); // invlpg [rsi]; nop
        assert_eq!((text_of(&insn).as_str(), insn.len()), ("invlpg [rsi]", 3));
        assert_eq!(insn.ip(), 0x10_0000);
        assert!(decode(&[0x0F], 0).is_none(), "cut off");
        assert!(decode(&[], 0).is_none());
        let long = [0x66; 20]; // prefixes only: longer than any instruction
        assert!(decode(&long, 0).is_none());
    }

    #[test]
    fn install_writes_the_routine_and_hides_the_scratch_page_table() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(
            GuestAddress(layout::MONITOR_BASE),
            layout::MONITOR_SIZE as usize,
        )])
        .unwrap();
        install(&mem).unwrap();
        for (at, code) in routine::code().unwrap() {
            let mut got = vec![0u8; code.len()];
            mem.read_slice(&mut got, GuestAddress(at)).unwrap();
            assert_eq!(got, code);
        }
        let entry = layout::PT_MONITOR + (layout::SCRATCH_PT - layout::MONITOR_BASE) / 0x1000 * 8;
        let pte: u64 = mem.read_obj(GuestAddress(entry)).unwrap();
        assert_eq!(
            pte,
            layout::SCRATCH_PT | 0b011,
            "present, writable, supervisor-only"
        );
        let empty = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(install(&empty).is_err(), "no monitor region");
    }
}
