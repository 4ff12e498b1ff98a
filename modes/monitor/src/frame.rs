//! The 64-bit interrupt frame: what the CPU pushes when it delivers an exception or an
//! interrupt through a gate, and what IRETQ pops. A monitor builds it on the guest's own
//! stack to deliver an event to a guest handler (trap-and-emulate's reflection through the
//! virtual IDT, paravirt's callbacks) and reads it back when the handler returns.
//!
//! In memory, lowest address first: `[error code]`, RIP, CS, RFLAGS, RSP, SS — one 8-byte
//! word each, below the interrupted RSP aligned down to 16 bytes (the CPU's alignment in
//! 64-bit mode).
//!
//! Guest memory is reached through a closure, so that each engine keeps its own access
//! rules (trap-and-emulate writes through the guest's page tables with its rights,
//! paravirt through guest-physical memory it has checked).
//!
//! ```
//! use monitor::frame::Frame;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
//! let write = |at: u64, bytes: &[u8]| mem.write_slice(bytes, GuestAddress(at));
//! let read = |at: u64, buf: &mut [u8]| mem.read_slice(buf, GuestAddress(at));
//! let interrupted = Frame { rip: 0x1234, cs: 0x08, rflags: 0x202, rsp: 0x8008, ss: 0x10 };
//! let rsp = interrupted.push(Some(0x2A), write)?; // a #GP with its error code
//! assert_eq!(rsp, 0x8000 - 48);
//! assert_eq!(mem.read_obj::<u64>(GuestAddress(rsp))?, 0x2A);
//! assert_eq!(Frame::pop(rsp + 8, read)?, interrupted); // what the handler's IRETQ pops
//! # Ok::<(), vm_memory::GuestMemoryError>(())
//! ```

/// Size of the frame without an error code: five 8-byte words.
pub const SIZE: u64 = 40;

/// The stack alignment of a 64-bit event delivery.
pub const ALIGN: u64 = 16;

/// The state a frame saves: where and how the interrupted code resumes. CS and SS are
/// the whole 8-byte words of the frame (the CPU ignores their upper bits on IRETQ; a
/// monitor checking a guest-built frame may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frame {
    /// Instruction pointer to resume at.
    pub rip: u64,
    /// Code segment selector.
    pub cs: u64,
    /// RFLAGS to resume with.
    pub rflags: u64,
    /// Stack pointer to resume with.
    pub rsp: u64,
    /// Stack segment selector.
    pub ss: u64,
}

impl Frame {
    /// The frame's words, lowest address first: `[error code]`, RIP, CS, RFLAGS, RSP, SS.
    pub fn words(&self, error_code: Option<u64>) -> Vec<u64> {
        let mut words = Vec::with_capacity(6);
        words.extend(error_code);
        words.extend([self.rip, self.cs, self.rflags, self.rsp, self.ss]);
        words
    }

    /// The frame as it lies in memory (see [`Frame::words`]).
    pub fn to_bytes(&self, error_code: Option<u64>) -> Vec<u8> {
        self.words(error_code)
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    /// Reads a frame (without an error code) from its bytes in memory.
    pub fn from_bytes(raw: &[u8; SIZE as usize]) -> Frame {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Frame {
            rip: word(0),
            cs: word(1),
            rflags: word(2),
            rsp: word(3),
            ss: word(4),
        }
    }

    /// Size in bytes of the frame pushed with or without an error code.
    pub fn size(error_code: Option<u64>) -> u64 {
        SIZE + if error_code.is_some() { 8 } else { 0 }
    }

    /// Where the delivery of an event pushes this frame, which is the handler's RSP: below
    /// [`Frame::rsp`] aligned down to 16 bytes.
    pub fn push_address(&self, error_code: Option<u64>) -> u64 {
        (self.rsp & !(ALIGN - 1)).wrapping_sub(Self::size(error_code))
    }

    /// Pushes the frame as the CPU does when it delivers an event: `write(address, bytes)`
    /// once with the whole frame at [`Frame::push_address`]. Returns the handler's RSP.
    pub fn push<E>(
        &self,
        error_code: Option<u64>,
        write: impl FnOnce(u64, &[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let at = self.push_address(error_code);
        write(at, &self.to_bytes(error_code))?;
        Ok(at)
    }

    /// Pops the frame at `rsp` as IRETQ does: `read(address, buffer)` once for its
    /// [`SIZE`] bytes. The caller checks what it may resume to.
    pub fn pop<E>(
        rsp: u64,
        read: impl FnOnce(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<Frame, E> {
        let mut raw = [0u8; SIZE as usize];
        read(rsp, &mut raw)?;
        Ok(Frame::from_bytes(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap()
    }

    fn words_at(mem: &GuestMemoryMmap, at: u64, n: u64) -> Vec<u64> {
        (0..n)
            .map(|i| mem.read_obj(GuestAddress(at + i * 8)).unwrap())
            .collect()
    }

    const F: Frame = Frame {
        rip: 0x10_0123,
        cs: 0x08,
        rflags: 0x246,
        rsp: 0xFF08,
        ss: 0x10,
    };

    #[test]
    fn push_without_an_error_code_lays_out_five_words_below_the_aligned_stack() {
        let mem = memory();
        let rsp = F
            .push(None, |at, b| mem.write_slice(b, GuestAddress(at)))
            .unwrap();
        assert_eq!(rsp, 0xFF00 - 40);
        assert_eq!(
            words_at(&mem, rsp, 5),
            [0x10_0123, 0x08, 0x246, 0xFF08, 0x10]
        );
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(0xFF00)).unwrap(),
            0,
            "nothing above the aligned stack pointer"
        );
    }

    #[test]
    fn push_with_an_error_code_puts_it_lowest() {
        let mem = memory();
        let rsp = F
            .push(Some(0xE), |at, b| mem.write_slice(b, GuestAddress(at)))
            .unwrap();
        assert_eq!(rsp, 0xFF00 - 48);
        assert_eq!(
            words_at(&mem, rsp, 6),
            [0xE, 0x10_0123, 0x08, 0x246, 0xFF08, 0x10]
        );
    }

    #[test]
    fn an_aligned_stack_is_not_moved_before_the_push() {
        let f = Frame { rsp: 0x8000, ..F };
        assert_eq!(f.push_address(None), 0x8000 - 40);
        assert_eq!(f.push_address(Some(0)), 0x8000 - 48);
        assert_eq!((Frame::size(None), Frame::size(Some(3))), (40, 48));
    }

    #[test]
    fn push_is_one_write_of_the_whole_frame_and_passes_its_error_on() {
        let mut seen = Vec::new();
        let r: Result<u64, &str> = F.push(Some(1), |at, b| {
            seen.push((at, b.to_vec()));
            Err("read-only")
        });
        assert_eq!(r, Err("read-only"));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, 0xFF00 - 48);
        assert_eq!(seen[0].1, F.to_bytes(Some(1)));
        assert_eq!(
            &seen[0].1[..16],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0x23, 0x01, 0x10, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn pop_reads_back_what_push_wrote_and_keeps_whole_selector_words() {
        let mem = memory();
        let rsp = F
            .push(Some(7), |at, b| mem.write_slice(b, GuestAddress(at)))
            .unwrap();
        let popped = Frame::pop(rsp + 8, |at, b| mem.read_slice(b, GuestAddress(at))).unwrap();
        assert_eq!(popped, F);
        mem.write_obj(0x1_0023u64, GuestAddress(rsp + 16)).unwrap();
        let popped = Frame::pop(rsp + 8, |at, b| mem.read_slice(b, GuestAddress(at))).unwrap();
        assert_eq!(popped.cs, 0x1_0023);
    }

    #[test]
    fn pop_outside_memory_is_the_readers_error() {
        let mem = memory();
        let r: Result<Frame, GuestMemoryError> =
            Frame::pop(0xFFF0, |at, b| mem.read_slice(b, GuestAddress(at)));
        assert!(r.is_err());
    }

    #[test]
    fn words_and_bytes_agree() {
        assert_eq!(F.words(None), [0x10_0123, 0x08, 0x246, 0xFF08, 0x10]);
        let bytes = F.to_bytes(None);
        assert_eq!(bytes.len(), 40);
        let mut raw = [0u8; 40];
        raw.copy_from_slice(&bytes);
        assert_eq!(Frame::from_bytes(&raw), F);
    }
}
