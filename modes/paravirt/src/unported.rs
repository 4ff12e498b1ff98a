//! Recognising a privileged instruction that a paravirtual guest executed instead of
//! calling the hypervisor: the CPU raised #GP (or #UD) at CPL 3, and the bytes at the
//! faulting RIP decode to an instruction only CPL 0 (or IOPL) may execute.

use ::monitor::{decode_at, text_of};
use contract::abi::hypercall;
use iced_x86::Instruction;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// If the instruction at `rip` is privileged, its text (`cli`, `mov cr8,rax`, …).
pub fn privileged_at(mem: &GuestMemoryMmap, rip: u64) -> Option<String> {
    decode_at(mem, rip)
        .filter(Instruction::is_privileged)
        .map(|i| text_of(&i))
}

/// The text of the instruction at `rip` (Intel syntax), if it decodes.
pub fn instruction_at(mem: &GuestMemoryMmap, rip: u64) -> Option<String> {
    decode_at(mem, rip).map(|i| text_of(&i))
}

/// The hypercall instruction: `out 0xFC, eax` (`E7 FC`).
pub const HYPERCALL_INSN: [u8; 2] = [0xE7, hypercall::PORT as u8];

/// Where KVM left RIP when it reported an I/O exit. With the fast port-I/O path RIP is
/// still on the `out` (KVM skips it when the vCPU re-enters, unless RIP was changed);
/// when KVM emulated the `out`, RIP is already past it. It depends on the backend, so
/// the engine learns it from the first hypercall of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitRip {
    /// RIP is on the `out`.
    OnInstruction,
    /// RIP is past the `out`.
    PastInstruction,
}

fn is_hypercall_at(mem: &GuestMemoryMmap, addr: u64) -> bool {
    let mut b = [0u8; 2];
    mem.read_slice(&mut b, GuestAddress(addr)).is_ok() && b == HYPERCALL_INSN
}

/// Which [`ExitRip`] explains a hypercall exit at `rip`: `None` if neither (the guest
/// used another form of `out`), both if the bytes are ambiguous.
pub fn explain_exit_rip(mem: &GuestMemoryMmap, rip: u64) -> (bool, bool) {
    let on = is_hypercall_at(mem, rip);
    let past = rip >= 2 && is_hypercall_at(mem, rip - 2);
    (on, past)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_with(code: &[u8]) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 21)]).unwrap();
        mem.write_slice(code, GuestAddress(0x10_0000)).unwrap();
        mem
    }

    #[test]
    fn names_privileged_instructions() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (&[0xFA], Some("cli")),
            (&[0xF4], Some("hlt")),
            (&[0x44, 0x0F, 0x22, 0xC0], Some("mov cr8,rax")),
            (&[0x0F, 0x01, 0x3E], Some("invlpg [rsi]")),
            (&[0xE6, 0xE9], Some("out 0E9h,al")),
            (&[0x48, 0x01, 0xD8], None), // add rax, rbx
        ];
        for (code, want) in cases {
            let mem = mem_with(code);
            assert_eq!(privileged_at(&mem, 0x10_0000).as_deref(), want, "{code:x?}");
        }
    }

    #[test]
    fn hypercall_exit_rip() {
        let mem = mem_with(&[0x90, 0xE7, 0xFC, 0x90]);
        assert_eq!(explain_exit_rip(&mem, 0x10_0001), (true, false));
        assert_eq!(explain_exit_rip(&mem, 0x10_0003), (false, true));
        assert_eq!(explain_exit_rip(&mem, 0x10_0000), (false, false));
        // Outside RAM: nothing to read, no panic.
        assert_eq!(explain_exit_rip(&mem, 1 << 40), (false, false));
    }
}
