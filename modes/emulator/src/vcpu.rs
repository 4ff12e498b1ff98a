//! The virtual CPU: the privileged state the guest believes it owns, kept by the VMM and
//! never loaded into the real vCPU, plus the guest's general registers at a trap.

use std::collections::BTreeMap;

use contract::abi::selector;
use contract::x86::rflags;
use iced_x86::Register;

/// Flags an emulated IRETQ may restore into the real RFLAGS: the arithmetic flags, DF,
/// AC and ID. IF and IOPL stay the monitor's (IF = 1, IOPL = 0) and TF is not honoured.
pub const RFLAGS_RESTORABLE: u64 = rflags::ARITHMETIC | rflags::DF | rflags::AC | rflags::ID;

/// The guest's registers at a trap, as the guest sees them (RSP and RIP from the fault
/// frame, not the monitor's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestRegs {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15 (iced-x86's register order).
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// The real RFLAGS (IF = 1 and IOPL = 0 while the guest runs).
    pub rflags: u64,
    /// FS base (for FS-relative memory operands).
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
}

fn gpr_index(r: Register) -> Option<usize> {
    let full = r.full_register();
    let idx = (full as usize).checked_sub(Register::RAX as usize)?;
    (r.is_gpr() && idx < 16).then_some(idx)
}

fn is_high_byte(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

impl GuestRegs {
    /// RSP.
    pub fn rsp(&self) -> u64 {
        self.gpr[4]
    }

    /// Sets RSP.
    pub fn set_rsp(&mut self, v: u64) {
        self.gpr[4] = v;
    }

    /// Reads a register by its iced-x86 name (GPRs of every width, segment bases).
    pub fn get(&self, r: Register) -> Option<u64> {
        if r.is_segment_register() {
            return Some(match r {
                Register::FS => self.fs_base,
                Register::GS => self.gs_base,
                _ => 0, // flat segments in 64-bit mode
            });
        }
        let v = self.gpr[gpr_index(r)?];
        Some(match r.size() {
            8 => v,
            4 => v & 0xFFFF_FFFF,
            2 => v & 0xFFFF,
            _ if is_high_byte(r) => (v >> 8) & 0xFF,
            _ => v & 0xFF,
        })
    }

    /// Writes a register with the architectural partial-register rules (32-bit writes
    /// zero-extend, 8- and 16-bit writes merge).
    pub fn set(&mut self, r: Register, value: u64) -> Option<()> {
        let i = gpr_index(r)?;
        let old = self.gpr[i];
        self.gpr[i] = match r.size() {
            8 => value,
            4 => value & 0xFFFF_FFFF,
            2 => (old & !0xFFFF) | (value & 0xFFFF),
            _ if is_high_byte(r) => (old & !0xFF00) | ((value & 0xFF) << 8),
            _ => (old & !0xFF) | (value & 0xFF),
        };
        Some(())
    }

    /// Whether the string-instruction direction flag is set.
    pub fn df(&self) -> bool {
        self.rflags & rflags::DF != 0
    }
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TableReg {
    /// Linear base address.
    pub base: u64,
    /// Limit (size - 1).
    pub limit: u16,
}

impl TableReg {
    /// Whether [base, base + limit] overlaps `[lo, hi)`.
    pub fn overlaps(&self, lo: u64, hi: u64) -> bool {
        let end = self.base.saturating_add(u64::from(self.limit));
        self.base < hi && end >= lo
    }
}

/// The guest's privileged state, virtualised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualCpu {
    /// The virtual interrupt flag: what CLI/STI/IRETQ change and what gates delivery.
    pub vif: bool,
    /// The CPL the guest believes it runs at (always 0: the guest is a kernel).
    pub cpl: u8,
    /// CR0.
    pub cr0: u64,
    /// CR2 (written when a #PF is reflected).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 (task priority).
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
    /// GDTR as the guest loaded it.
    pub gdtr: TableReg,
    /// IDTR as the guest loaded it; until the guest's first LIDT it is the monitor's,
    /// which means "the guest has no handlers".
    pub idtr: TableReg,
    /// Whether `idtr` is the guest's own table.
    pub guest_idt: bool,
    /// LDTR selector.
    pub ldtr: u16,
    /// Task register selector.
    pub tr: u16,
    /// MSRs the guest wrote (and the ones it may read).
    pub msrs: BTreeMap<u32, u64>,
    /// RIP of the instruction that follows an emulated STI (the interrupt shadow covers
    /// it: no interrupt is delivered before it has executed).
    pub sti_shadow: Option<u64>,
}

/// MSR numbers the virtual CPU knows.
pub mod msr {
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1B;
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_EFER.
    pub const EFER: u32 = 0xC000_0080;
    /// IA32_STAR.
    pub const STAR: u32 = 0xC000_0081;
    /// IA32_LSTAR.
    pub const LSTAR: u32 = 0xC000_0082;
    /// IA32_CSTAR.
    pub const CSTAR: u32 = 0xC000_0083;
    /// IA32_FMASK.
    pub const FMASK: u32 = 0xC000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xC000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xC000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
    /// IA32_TSC_AUX.
    pub const TSC_AUX: u32 = 0xC000_0103;
}

impl VirtualCpu {
    /// The virtual CPU of a guest the machine just booted: its control registers, EFER and
    /// descriptor-table registers as the machine set them up.
    pub fn at_boot(boot: &machine::Boot<'_>) -> Self {
        let s = &boot.sregs;
        VirtualCpu::boot(
            s.cr0,
            s.cr3,
            s.cr4,
            s.efer,
            TableReg {
                base: s.gdt.base,
                limit: s.gdt.limit,
            },
            TableReg {
                base: s.idt.base,
                limit: s.idt.limit,
            },
        )
    }

    /// The state the guest boots with, per the guest ABI: interrupts off, the VMM's
    /// control registers and descriptor tables as its own.
    pub fn boot(cr0: u64, cr3: u64, cr4: u64, efer: u64, gdtr: TableReg, idtr: TableReg) -> Self {
        let msrs = [
            (msr::APIC_BASE, 0xFEE0_0900),
            (msr::SYSENTER_CS, 0),
            (msr::SYSENTER_ESP, 0),
            (msr::SYSENTER_EIP, 0),
            (msr::PAT, 0x0007_0406_0007_0406),
            (msr::STAR, 0),
            (msr::LSTAR, 0),
            (msr::CSTAR, 0),
            (msr::FMASK, 0),
            (msr::FS_BASE, 0),
            (msr::GS_BASE, 0),
            (msr::KERNEL_GS_BASE, 0),
            (msr::TSC_AUX, 0),
        ]
        .into_iter()
        .collect();
        VirtualCpu {
            vif: false,
            cpl: 0,
            cr0,
            cr2: 0,
            cr3,
            cr4,
            cr8: 0,
            efer,
            gdtr,
            idtr,
            guest_idt: false,
            ldtr: 0,
            tr: selector::TSS,
            msrs,
            sti_shadow: None,
        }
    }

    /// RFLAGS as the guest should see it: the real one with the virtual IF and IOPL 0.
    pub fn guest_rflags(&self, real: u64) -> u64 {
        let vif = if self.vif { rflags::IF } else { 0 };
        (real & !(rflags::IF | rflags::IOPL)) | vif | rflags::FIXED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_registers_follow_the_architecture() {
        let mut r = GuestRegs::default();
        r.set(Register::RAX, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(r.get(Register::EAX), Some(0x5566_7788));
        assert_eq!(r.get(Register::AX), Some(0x7788));
        assert_eq!(r.get(Register::AL), Some(0x88));
        assert_eq!(r.get(Register::AH), Some(0x77));
        r.set(Register::AH, 0xAB).unwrap();
        assert_eq!(r.gpr[0], 0x1122_3344_5566_AB88);
        r.set(Register::AX, 0xCDEF).unwrap();
        assert_eq!(r.gpr[0], 0x1122_3344_5566_CDEF);
        r.set(Register::EAX, 0x1).unwrap();
        assert_eq!(r.gpr[0], 1);
        r.set(Register::R15D, 0xFFFF_FFFF).unwrap();
        assert_eq!(r.get(Register::R15), Some(0xFFFF_FFFF));
        r.set(Register::SIL, 0x42).unwrap();
        assert_eq!(r.get(Register::RSI), Some(0x42));
        assert_eq!(r.get(Register::CR0), None);
    }

    #[test]
    fn guest_rflags_show_the_virtual_if() {
        let mut v = VirtualCpu::boot(0, 0, 0, 0, TableReg::default(), TableReg::default());
        assert_eq!(v.guest_rflags(0x202) & rflags::IF, 0);
        v.vif = true;
        assert_eq!(v.guest_rflags(0x2) & rflags::IF, rflags::IF);
    }

    #[test]
    fn iretq_restores_the_arithmetic_flags_df_ac_and_id() {
        assert_eq!(RFLAGS_RESTORABLE, 0x24_0CD5);
    }

    #[test]
    fn table_overlap() {
        let t = TableReg {
            base: 0x6000,
            limit: 0xFFF,
        };
        assert!(t.overlaps(0x1000, 0x1_0000));
        let t = TableReg {
            base: 0xFFF0,
            limit: 0x1F,
        };
        assert!(t.overlaps(0x1000, 0x1_0000));
        let t = TableReg {
            base: 0x1_0000,
            limit: 0x1F,
        };
        assert!(!t.overlaps(0x1000, 0x1_0000));
    }
}
