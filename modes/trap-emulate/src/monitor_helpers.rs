//! The monitor helpers: tiny CPL 0 routines the VMM enters when a privileged effect must
//! happen inside the guest so that KVM sees it (a validated PTE store, `invlpg`, a CR3
//! reload).

/// Where the monitor helpers live: the monitor's spare page above its stack.
pub(crate) const HELPERS: u64 = contract::abi::layout::TRAP_HELPERS;
/// The helpers' operands, written by the VMM before it enters one.
pub(crate) const MAILBOX: u64 = HELPERS + 0x800;

/// Monitor helpers: tiny CPL 0 routines the VMM enters *instead of the rest of the fault
/// stub* when a privileged effect must happen inside the guest so that KVM sees it. A
/// page-table store written by the VMM from user space bypasses KVM's tracking of guest
/// page tables (its shadow MMU would keep the old translation, whatever INVLPG or CR3
/// reload follows), so the validated store and the INVLPG are executed by the monitor at
/// CPL 0 on the guest's behalf. Each helper ends like the stub (`add rsp, 16; iretq`), so
/// the fault frame the VMM edited still decides where the guest resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Helper {
    /// `mov [mailbox[0]], mailbox[1]`.
    StorePte = 0,
    /// `invlpg [mailbox[0]]`.
    Invlpg = 1,
    /// `mov rax, cr3; mov cr3, rax`.
    ReloadCr3 = 2,
}

impl Helper {
    /// Every helper.
    pub(crate) const ALL: [Helper; 3] = [Helper::StorePte, Helper::Invlpg, Helper::ReloadCr3];

    /// Entry address.
    pub(crate) fn addr(self) -> u64 {
        HELPERS + self as u64 * 64
    }

    /// Machine code, assembled for its address.
    pub(crate) fn code(self) -> Result<Vec<u8>, iced_x86::IcedError> {
        use iced_x86::code_asm::*;
        let mut a = CodeAssembler::new(64)?;
        a.push(rax)?;
        match self {
            Helper::StorePte => {
                a.push(rdx)?;
                a.mov(rax, MAILBOX)?;
                a.mov(rdx, qword_ptr(rax + 8))?;
                a.mov(rax, qword_ptr(rax))?;
                a.mov(qword_ptr(rax), rdx)?;
                a.pop(rdx)?;
            }
            Helper::Invlpg => {
                a.mov(rax, MAILBOX)?;
                a.mov(rax, qword_ptr(rax))?;
                a.invlpg(byte_ptr(rax))?;
            }
            Helper::ReloadCr3 => {
                a.mov(rax, cr3)?;
                a.mov(cr3, rax)?;
            }
        }
        a.pop(rax)?;
        a.add(rsp, 16)?;
        a.iretq()?;
        a.assemble(self.addr())
    }
}
