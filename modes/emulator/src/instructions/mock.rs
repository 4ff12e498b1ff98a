//! An in-memory platform for the unit tests: 1 MiB of guest RAM from 0 and the monitor's
//! region above it (supervisor-only), recorded port traffic, a scripted timer and fixed
//! CPUID values. No KVM.

use std::ops::Range;

use contract::abi::{layout, port};
use contract::{Ending, Outcome};

use crate::dispatch::{Emulator, Handled, TrapInfo};
use crate::platform::{MemError, Platform, PortResult, Wake};
use crate::vcpu::{GuestRegs, TableReg, VirtualCpu};
use contract::x86::vector::GP;

/// Where test code is placed.
pub const CODE: u64 = 0x2_0000;
/// Initial guest stack top.
pub const STACK: u64 = 0x8_0000;
/// Guest RAM of the mock.
const RAM: u64 = 1 << 20;
/// The part of the monitor's region the mock backs.
const MONITOR_LEN: u64 = layout::MONITOR_END - layout::MONITOR_BASE;

/// Where `[gpa, gpa + len)` lives in the mock's one buffer (RAM, then the monitor's
/// region), if it is backed.
fn backing(gpa: u64, len: usize) -> Option<usize> {
    let end = gpa.checked_add(len as u64)?;
    if end <= RAM {
        Some(gpa as usize)
    } else if gpa >= layout::MONITOR_BASE && end <= layout::MONITOR_END {
        Some((RAM + gpa - layout::MONITOR_BASE) as usize)
    } else {
        None
    }
}

#[derive(Debug)]
pub struct Mock {
    pub mem: Vec<u8>,
    pub supervisor: Vec<Range<u64>>,
    pub read_only: Vec<Range<u64>>,
    pub outs: Vec<(u16, Vec<u8>)>,
    pub in_value: u64,
    pub flushes: u32,
    pub invlpgs: Vec<u64>,
    pub timer_armed: bool,
    pub timer_due: bool,
    pub timer_fired: u32,
}

impl Default for Mock {
    fn default() -> Self {
        Mock {
            mem: vec![0; (RAM + MONITOR_LEN) as usize],
            supervisor: vec![
                layout::MONITOR_BASE..layout::MONITOR_PRIVATE_END,
                layout::SCRATCH_PT..layout::SCRATCH_PT + 0x1000,
            ],
            read_only: Vec::new(),
            outs: Vec::new(),
            in_value: 0x1122_3344,
            flushes: 0,
            invlpgs: Vec::new(),
            timer_armed: false,
            timer_due: false,
            timer_fired: 0,
        }
    }
}

impl Mock {
    fn check(&self, gva: u64, len: usize, write: bool) -> Result<usize, MemError> {
        let at = backing(gva, len).ok_or(MemError::NotMapped { addr: gva })?;
        let end = gva + len as u64;
        if let Some(r) = self
            .supervisor
            .iter()
            .find(|r| r.start < end && gva < r.end)
        {
            return Err(MemError::Supervisor {
                addr: gva.max(r.start),
            });
        }
        if write && self.read_only.iter().any(|r| r.start < end && gva < r.end) {
            return Err(MemError::ReadOnly { addr: gva });
        }
        Ok(at)
    }

    pub fn put(&mut self, gva: u64, data: &[u8]) {
        let a = backing(gva, data.len()).expect("backed by the mock");
        self.mem[a..a + data.len()].copy_from_slice(data);
    }

    pub fn u64_at(&self, gva: u64) -> u64 {
        let a = backing(gva, 8).expect("backed by the mock");
        u64::from_le_bytes(self.mem[a..a + 8].try_into().unwrap())
    }
}

impl Platform for Mock {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let a = self.check(gva, buf.len(), false)?;
        buf.copy_from_slice(&self.mem[a..a + buf.len()]);
        Ok(())
    }
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemError> {
        let a = self.check(gva, data.len(), true)?;
        self.mem[a..a + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let a = backing(gpa, buf.len()).ok_or(MemError::NotRam { addr: gpa })?;
        buf.copy_from_slice(&self.mem[a..a + buf.len()]);
        Ok(())
    }
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let a = backing(gpa, data.len()).ok_or(MemError::NotRam { addr: gpa })?;
        self.mem[a..a + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn ram_size(&self) -> u64 {
        RAM
    }
    fn port_out(&mut self, p: u16, data: &[u8]) -> PortResult {
        self.outs.push((p, data.to_vec()));
        match p {
            port::CONSOLE | port::TIMER => PortResult::Done,
            port::EXIT => PortResult::Stop(Outcome::Completed {
                exit_code: data[0].into(),
                result: 0,
                ending: Ending::ExitPort,
            }),
            _ => PortResult::NoDevice,
        }
    }
    fn port_in(&mut self, p: u16, data: &mut [u8]) -> PortResult {
        if p != port::TIMER {
            return PortResult::NoDevice;
        }
        let v = self.in_value.to_le_bytes();
        let n = data.len();
        data.copy_from_slice(&v[..n]);
        PortResult::Done
    }
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        [leaf, subleaf, 0x1234, 0x5678]
    }
    fn invlpg(&mut self, gva: u64) -> Result<(), String> {
        self.invlpgs.push(gva);
        Ok(())
    }
    fn flush_tlb(&mut self) -> Result<(), String> {
        self.flushes += 1;
        Ok(())
    }
    fn write_pte(&mut self, gpa: u64, value: u64) -> Result<(), String> {
        self.write_phys(gpa, &value.to_le_bytes())
            .map_err(|e| format!("{e:?}"))
    }
    fn timer_due(&self) -> bool {
        self.timer_due
    }
    fn ack_timer(&mut self) {
        self.timer_due = false;
        self.timer_armed = false;
        self.timer_fired += 1;
    }
    fn wait_for_timer(&mut self) -> Wake {
        if self.timer_due || self.timer_armed {
            self.timer_due = true;
            Wake::TimerDue
        } else {
            Wake::NothingArmed
        }
    }
}

/// A virtual CPU as the engine boots it.
pub fn boot_cpu() -> VirtualCpu {
    VirtualCpu::boot(
        0x8005_0033,
        layout::PML4,
        0x620,
        0x500,
        TableReg {
            base: layout::GDT,
            limit: 55,
        },
        TableReg {
            base: layout::IDT,
            limit: 0xFFF,
        },
    )
}

/// A test bench: the mock, an emulator and the guest registers, code at [`CODE`].
#[derive(Debug)]
pub struct Bench {
    pub mock: Mock,
    pub emu: Emulator,
    pub regs: GuestRegs,
}

impl Bench {
    pub fn new(code: &[u8]) -> Self {
        let mut mock = Mock::default();
        mock.put(CODE, code);
        let mut regs = GuestRegs {
            rip: CODE,
            rflags: 0x202,
            ..Default::default()
        };
        regs.set_rsp(STACK);
        Bench {
            mock,
            emu: Emulator::new(boot_cpu()),
            regs,
        }
    }

    /// Traps with `vector` at the current RIP, as the monitor would report it.
    pub fn trap_vector(&mut self, vector: u8, error_code: u64, cr2: u64) -> Handled {
        let t = TrapInfo {
            vector,
            error_code,
            cr2,
        };
        self.emu.handle(&t, &mut self.regs, &mut self.mock)
    }

    /// A #GP at the current RIP.
    pub fn trap(&mut self) -> Handled {
        self.trap_vector(GP, 0, 0)
    }

    /// Installs a guest IDT at `base` with an interrupt gate for each `(vector, handler)`.
    pub fn guest_idt(&mut self, base: u64, gates: &[(u8, u64)]) {
        for &(v, h) in gates {
            let (lo, hi) = machine::setup::interrupt_gate(h, 0x08, 0);
            self.mock.put(base + u64::from(v) * 16, &lo.to_le_bytes());
            self.mock
                .put(base + u64::from(v) * 16 + 8, &hi.to_le_bytes());
        }
        self.emu.cpu.idtr = TableReg {
            base,
            limit: 0x21 * 16 - 1,
        };
        self.emu.cpu.guest_idt = true;
    }
}
