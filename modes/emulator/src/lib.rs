//! The instruction emulator of the deprivileged full-virtualization engines
//! (trap-and-emulate, binary translation): the guest's privileged state as a
//! [`vcpu::VirtualCpu`], the privileged x86 instructions emulated against it
//! ([`instructions`]), the guest's exceptions and the timer reflected through its
//! *virtual* IDT ([`interrupts`]), and the dispatcher that turns one trap or callout into
//! one emulation step ([`Emulator::handle`]).
//!
//! Everything reaches the machine through the [`platform::Platform`] trait, so the core is
//! tested on an in-memory platform without KVM; [`live::KvmPlatform`] is the platform over
//! a running `machine::Vcpu`. What differs between the engines — how the guest gets to the
//! VMM (a fault stub, a translated callout) and how it resumes — stays in each engine.
//!
//! ```
//! use emulator::platform::{MemError, Platform, PortResult, Wake};
//! use emulator::vcpu::{GuestRegs, TableReg, VirtualCpu};
//! use emulator::{Emulator, TrapInfo};
//!
//! /// 64 KiB of RAM from 0, identity-mapped, and nothing else.
//! struct Ram(Vec<u8>);
//! impl Platform for Ram {
//!     fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemError> {
//!         let a = gva as usize;
//!         let src = self.0.get(a..a + buf.len()).ok_or(MemError::NotRam { addr: gva })?;
//!         buf.copy_from_slice(src);
//!         Ok(())
//!     }
//!     fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemError> {
//!         let a = gva as usize;
//!         let dst = self.0.get_mut(a..a + data.len()).ok_or(MemError::NotRam { addr: gva })?;
//!         dst.copy_from_slice(data);
//!         Ok(())
//!     }
//!     fn read_phys(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> { self.read(gpa, buf) }
//!     fn write_phys(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> { self.write(gpa, data) }
//!     fn ram_size(&self) -> u64 { self.0.len() as u64 }
//!     fn port_out(&mut self, _: u16, _: &[u8]) -> PortResult { PortResult::NoDevice }
//!     fn port_in(&mut self, _: u16, _: &mut [u8]) -> PortResult { PortResult::NoDevice }
//!     fn cpuid(&self, _: u32, _: u32) -> [u32; 4] { [0; 4] }
//!     fn invlpg(&mut self, _: u64) -> Result<(), String> { Ok(()) }
//!     fn flush_tlb(&mut self) -> Result<(), String> { Ok(()) }
//!     fn write_pte(&mut self, _: u64, _: u64) -> Result<(), String> { Ok(()) }
//!     fn timer_due(&self) -> bool { false }
//!     fn ack_timer(&mut self) {}
//!     fn wait_for_timer(&mut self) -> Wake { Wake::NothingArmed }
//! }
//!
//! let mut ram = Ram(vec![0; 0x1_0000]);
//! ram.0[0x1000] = 0xFA; // cli
//! let cpu = VirtualCpu::boot(0, 0, 0, 0, TableReg::default(), TableReg::default());
//! let mut emu = Emulator::new(cpu);
//! emu.cpu.vif = true;
//! let mut regs = GuestRegs { rip: 0x1000, rflags: 0x202, ..GuestRegs::default() };
//! let trap = TrapInfo { vector: 13, error_code: 0, cr2: 0 };
//! let handled = emu.handle(&trap, &mut regs, &mut ram);
//! assert_eq!((handled.name.as_str(), handled.stop), ("cli", None));
//! assert!(!emu.cpu.vif);
//! assert_eq!(regs.rip, 0x1001);
//! ```

pub mod classify;
pub mod dispatch;
#[cfg(test)]
mod fuzz;
pub mod instructions;
pub mod interrupts;
pub mod live;
pub mod paging;
pub mod platform;
pub mod shadow;
pub mod vcpu;

pub use dispatch::{decode_at, mnemonic_name, monitor_region, Emulator, Handled, TrapInfo};
