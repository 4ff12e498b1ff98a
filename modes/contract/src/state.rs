//! What the guest left behind: its final registers and pieces of its memory, captured
//! after a run when a user asks (`--show-regs`, `--peek ADDR:LEN`).

use serde::{Deserialize, Serialize};

/// Most bytes one peek may read.
pub const MAX_PEEK_LEN: u64 = 4096;
/// Most peeks one run may ask for.
pub const MAX_PEEKS: usize = 16;

/// A range of guest-physical memory to read after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeekRequest {
    /// Guest-physical address (= the guest's virtual address: memory is identity-mapped).
    pub addr: u64,
    /// Bytes to read, 1..=[`MAX_PEEK_LEN`].
    pub len: u64,
}

impl std::str::FromStr for PeekRequest {
    type Err = String;

    /// `ADDR:LEN`, each decimal or `0x` hexadecimal: `0x400:8`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not ADDR:LEN (for example 0x400:8)"))?;
        let num = |t: &str| -> Result<u64, String> {
            let t = t.trim();
            let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
                None => t.replace('_', "").parse(),
            };
            r.map_err(|e| format!("`{t}` in `{s}` is not a number: {e}"))
        };
        let (addr, len) = (num(a)?, num(l)?);
        if len == 0 || len > MAX_PEEK_LEN {
            return Err(format!(
                "a peek reads 1 to {MAX_PEEK_LEN} bytes, not {len} (`{s}`)"
            ));
        }
        addr.checked_add(len)
            .ok_or_else(|| format!("`{s}` runs past the end of the address space"))?;
        Ok(PeekRequest { addr, len })
    }
}

/// The bytes of one peek, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peek {
    /// Guest-physical address.
    pub addr: u64,
    /// Bytes asked for.
    pub len: u64,
    /// The bytes, as lowercase hexadecimal pairs (empty when they could not be read).
    pub hex: String,
    /// Why they could not be read (the range is neither guest RAM nor the monitor's
    /// region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Peek {
    /// The bytes read.
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&self.hex[2 * i..2 * i + 2], 16).ok())
            .collect()
    }

    /// A peek of `bytes` at `addr`.
    pub fn of(addr: u64, bytes: &[u8]) -> Self {
        Peek {
            addr,
            len: bytes.len() as u64,
            hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            error: None,
        }
    }
}

/// The final register file as the guest sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRegs {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15, in encoding order.
    pub gpr: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// RFLAGS (IF is the guest's own, virtual in the deprivileged modes).
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// Whose values these are: the real vCPU's, or the virtual CPU the VMM keeps.
    pub view: RegsView,
}

/// Where a register file comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegsView {
    /// The vCPU's own registers: the guest kernel runs at CPL 0 and owns them.
    #[default]
    Real,
    /// General registers from the vCPU, RIP/RSP/RFLAGS from the guest's last trap frame,
    /// IF and control registers from the virtual CPU the VMM emulates.
    Virtual,
    /// The vCPU's registers at CPL 3; IF from the shared-info page's event mask; the
    /// control registers are the VMM's (a paravirtual guest has none of its own).
    Paravirtual,
}

/// The names of [`FinalRegs::gpr`], in order.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

impl FinalRegs {
    /// A register by its lowercase name (`rax`, `rip`, `cr3`, …).
    pub fn get(&self, name: &str) -> Option<u64> {
        if let Some(i) = GPR_NAMES.iter().position(|n| *n == name) {
            return Some(self.gpr[i]);
        }
        Some(match name {
            "rip" => self.rip,
            "rflags" => self.rflags,
            "cr0" => self.cr0,
            "cr3" => self.cr3,
            "cr4" => self.cr4,
            _ => return None,
        })
    }

    /// Every register with its name, in print order.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = GPR_NAMES.iter().copied().zip(self.gpr).collect();
        v.extend([
            ("rip", self.rip),
            ("rflags", self.rflags),
            ("cr0", self.cr0),
            ("cr3", self.cr3),
            ("cr4", self.cr4),
        ]);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_requests_parse_and_are_bounded() {
        assert_eq!(
            "0x400:8".parse::<PeekRequest>(),
            Ok(PeekRequest {
                addr: 0x400,
                len: 8
            })
        );
        assert_eq!(
            "1024:0x10".parse::<PeekRequest>(),
            Ok(PeekRequest {
                addr: 1024,
                len: 16
            })
        );
        for bad in [
            "0x400",
            "x:8",
            "0x400:0",
            "0:4097",
            "0xffffffffffffffff:2",
            ":",
        ] {
            assert!(bad.parse::<PeekRequest>().is_err(), "{bad}");
        }
        let p = Peek::of(0x400, &[42, 0, 0xff]);
        assert_eq!(p.hex, "2a00ff");
        assert_eq!(p.bytes(), [42, 0, 0xff]);
    }

    #[test]
    fn registers_by_name() {
        let mut r = FinalRegs::default();
        r.gpr[0] = 42;
        r.gpr[15] = 15;
        r.cr3 = 0x1000;
        assert_eq!(r.get("rax"), Some(42));
        assert_eq!(r.get("r15"), Some(15));
        assert_eq!(r.get("cr3"), Some(0x1000));
        assert_eq!(r.get("cr2"), None);
        assert_eq!(r.named().len(), 21);
    }
}
