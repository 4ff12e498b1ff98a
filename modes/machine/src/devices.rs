//! The devices every mode provides: debug console, exit port, one-shot timer and the MMIO
//! device page. They are plain state machines with no KVM in them, so they are tested
//! directly.

use std::time::{Duration, Instant};

use contract::abi::{self, layout, mmio, port};
use contract::engine::Limits;
use contract::record::{Ending, FaultKind, Limit, Outcome};

use crate::exit_loop::{fault, Action};
use crate::vcpu::Vcpu;

/// The debug console on port 0xE9.
#[derive(Debug, Default)]
pub struct Console {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Console {
    /// A console that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Console {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    /// Appends guest output; returns false once the limit is passed.
    pub fn write(&mut self, data: &[u8]) -> bool {
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() > room {
            self.overflowed = true;
        }
        !self.overflowed
    }

    /// Bytes kept so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What the guest wrote, as bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// What the guest wrote, as lossy UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Whether the guest wrote more than the limit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// A one-shot timer: armed with a delay, it becomes due at its deadline and raises
/// [`contract::abi::TIMER_VECTOR`] at the next moment the guest can take an interrupt.
#[derive(Debug, Default)]
pub struct Timer {
    deadline: Option<Instant>,
    fired: u64,
}

impl Timer {
    /// Arms the timer `micros` from now (re-arming replaces the old deadline).
    pub fn arm(&mut self, micros: u32) {
        self.deadline = Some(Instant::now() + Duration::from_micros(u64::from(micros)));
    }

    /// Whether the timer is armed.
    pub fn armed(&self) -> bool {
        self.deadline.is_some()
    }

    /// The deadline, if armed.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the timer is armed and its deadline has passed.
    pub fn due(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    /// Marks the interrupt as delivered (disarms the timer).
    pub fn fire(&mut self) {
        self.deadline = None;
        self.fired += 1;
    }

    /// How many times the timer has fired.
    pub fn fired(&self) -> u64 {
        self.fired
    }
}

/// The MMIO device page: a ticket counter, a scratch register and an identifier.
#[derive(Debug, Default)]
pub struct MmioDevice {
    ticket: u64,
    scratch: u64,
}

/// An access the MMIO device does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no device register at {addr:#x} ({len}-byte access)")]
pub struct BadMmio {
    /// Guest-physical address.
    pub addr: u64,
    /// Access size.
    pub len: usize,
}

impl MmioDevice {
    /// Whether `addr` falls in the device page.
    pub fn claims(addr: u64) -> bool {
        (layout::MMIO_BASE..layout::MMIO_BASE + layout::MMIO_SIZE).contains(&addr)
    }

    fn register(addr: u64, len: usize) -> Result<u64, BadMmio> {
        let off = addr.wrapping_sub(layout::MMIO_BASE);
        if !Self::claims(addr) || len != 8 || off % 8 != 0 || off > mmio::ID {
            return Err(BadMmio { addr, len });
        }
        Ok(off)
    }

    /// Handles a read of `data.len()` bytes at `addr`.
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> Result<(), BadMmio> {
        let value = match Self::register(addr, data.len())? {
            mmio::TICKET => {
                self.ticket += 1;
                self.ticket
            }
            mmio::SCRATCH => self.scratch,
            _ => mmio::DEVICE_ID,
        };
        data.copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    /// Handles a write at `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BadMmio> {
        if Self::register(addr, data.len())? == mmio::SCRATCH {
            self.scratch = u64::from_le_bytes(data.try_into().map_err(|_| BadMmio {
                addr,
                len: data.len(),
            })?);
        }
        Ok(())
    }
}

/// Decodes up to 8 little-endian bytes of I/O data.
pub fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

/// What the virtio-blk device's answer means for the run: a refused register access or
/// descriptor chain ends it as a bad device access that says what was wrong.
fn virtio_action(r: Result<(), blk::VirtioError>) -> Action {
    match r {
        Ok(()) => Action::Continue,
        Err(e) => fault(FaultKind::BadDeviceAccess, None, e.to_string()),
    }
}

/// The standard devices and their port/MMIO semantics, shared by every engine's handler.
#[derive(Debug)]
pub struct Devices {
    /// Debug console.
    pub console: Console,
    /// One-shot timer.
    pub timer: Timer,
    /// MMIO device page.
    pub mmio: MmioDevice,
    /// Interrupts injected so far.
    pub injections: u64,
    /// The disk's device models (ATA ports, the virtio-blk page), when the run has a disk.
    pub block: Option<blk::BlockDevices>,
    /// The thread that serves the virtio queue when the doorbell is an ioeventfd.
    pub block_backend: Option<crate::disk::NotifyThread>,
    /// The process that serves the virtio queue under the `driver-domain` backend.
    pub block_domain: Option<crate::driver_domain::DriverDomain>,
    /// The machine has KVM's in-kernel interrupt controller (a run whose disk completes
    /// by irqfd): the VMM cannot inject the timer's interrupt, so arming it is refused.
    pub in_kernel_irqchip: bool,
}

impl Devices {
    /// Devices for a run with these limits.
    pub fn new(limits: &Limits) -> Self {
        Devices {
            console: Console::new(limits.max_console_bytes),
            timer: Timer::default(),
            mmio: MmioDevice::default(),
            injections: 0,
            block: None,
            block_backend: None,
            block_domain: None,
            in_kernel_irqchip: false,
        }
    }

    /// Handles an `out` to a standard port; `None` if the port is not one of them.
    pub fn io_out(&mut self, vcpu: &mut Vcpu<'_>, port: u16, data: &[u8]) -> Option<Action> {
        Some(match port {
            port::CONSOLE => {
                if self.console.write(data) {
                    Action::Continue
                } else {
                    Action::Stop(Outcome::TimedOut {
                        limit: Limit::ConsoleBytes,
                        rip: None,
                    })
                }
            }
            port::EXIT => self.exit(vcpu, le_value(data) as u32),
            port::TIMER if self.in_kernel_irqchip => fault(
                FaultKind::BadDeviceAccess,
                None,
                "the timer was armed on a machine whose local APIC is in the kernel (the disk \
                 completes by irqfd): the VMM cannot inject its interrupt",
            ),
            port::TIMER => {
                self.timer.arm(le_value(data) as u32);
                Action::Continue
            }
            p if blk::AtaDisk::claims(p) => {
                self.block.as_mut()?.ata.io_out(p, data).ok()?;
                Action::Continue
            }
            // The balloon, when an engine emulates the `out` (its exit goes to the
            // machine directly).
            p if crate::overcommit::MemoryManager::claims(p) => vcpu.memory()?.io_out(p, data),
            _ => return None,
        })
    }

    /// Ends the run with `exit_code`; the result is RBX.
    pub fn exit(&mut self, vcpu: &mut Vcpu<'_>, exit_code: u32) -> Action {
        match vcpu.regs() {
            Ok(r) => Action::Stop(Outcome::Completed {
                exit_code,
                result: r.rbx,
                ending: Ending::ExitPort,
            }),
            Err(e) => Action::Fail(format!("reading RBX at exit: {e}")),
        }
    }

    /// Handles an `in` from a standard port; `None` if the port is not one of them.
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) -> Option<Action> {
        match port {
            port::TIMER => {
                let v = self.timer.fired().to_le_bytes();
                let n = data.len().min(8);
                data[..n].copy_from_slice(&v[..n]);
                Some(Action::Continue)
            }
            p if blk::AtaDisk::claims(p) => {
                self.block.as_mut()?.ata.io_in(p, data).ok()?;
                Some(Action::Continue)
            }
            _ => None,
        }
    }

    /// Handles an MMIO read.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Action {
        if let Some(b) = self.virtio(addr) {
            return virtio_action(b.virtio.read(addr, data));
        }
        match self.mmio.read(addr, data) {
            Ok(()) => Action::Continue,
            Err(e) => fault(FaultKind::BadDeviceAccess, None, e.to_string()),
        }
    }

    /// Handles an MMIO write.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> Action {
        if let Some(b) = self.virtio(addr) {
            let r = b.virtio.write(addr, data);
            let ready = r.is_ok() && addr == abi::blk::VIRTIO_BASE + abi::blk::QUEUE_READY;
            let queue = b.virtio.queue_config();
            if let (true, Some(d)) = (ready, self.block_domain.as_mut()) {
                d.configure(queue);
            }
            return virtio_action(r);
        }
        match self.mmio.write(addr, data) {
            Ok(()) => Action::Continue,
            Err(e) => fault(FaultKind::BadDeviceAccess, None, e.to_string()),
        }
    }

    /// The disk's devices, if the run has a disk and `addr` is in the virtio-blk page.
    fn virtio(&mut self, addr: u64) -> Option<&mut blk::BlockDevices> {
        self.block.as_mut().filter(|_| blk::VirtioBlk::claims(addr))
    }

    /// Injects the timer's vector if it is due and the guest can take it.
    pub fn deliver_timer(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        if self.timer.armed() && self.timer.due(Instant::now()) && vcpu.can_inject() {
            if let Err(e) = vcpu.inject(abi::TIMER_VECTOR) {
                return Action::Fail(format!("injecting the timer interrupt: {e}"));
            }
            self.timer.fire();
            self.injections += 1;
        }
        Action::Continue
    }

    /// `hlt`: wait for the timer if it is armed and interrupts are enabled; otherwise
    /// nothing can wake the guest (`cli; hlt` is how a program stops the CPU), so it is
    /// done.
    pub fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        let interrupts_on = vcpu.interrupts_enabled();
        match self.timer.deadline().filter(|_| interrupts_on) {
            Some(d) => {
                vcpu.wait_until(d);
                Action::Continue
            }
            None => match vcpu.regs() {
                Ok(r) => Action::Stop(Outcome::Completed {
                    exit_code: 0,
                    result: r.rbx,
                    ending: Ending::Halted,
                }),
                Err(e) => Action::Fail(format!("reading RBX at hlt: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_keeps_up_to_its_limit() {
        let mut c = Console::new(4);
        assert!(c.write(b"Hel"));
        assert!(!c.write(b"lo"));
        assert_eq!(c.text(), "Hell");
        assert!(c.overflowed());
    }

    #[test]
    fn timer_arms_fires_and_counts() {
        let mut t = Timer::default();
        let now = Instant::now();
        assert!(!t.due(now));
        t.arm(0);
        assert!(t.due(Instant::now()));
        t.fire();
        assert!(!t.armed());
        assert_eq!(t.fired(), 1);
        t.arm(60_000_000);
        assert!(!t.due(Instant::now()));
    }

    #[test]
    fn mmio_registers() {
        let mut d = MmioDevice::default();
        let mut buf = [0u8; 8];
        for want in 1..=3u64 {
            d.read(layout::MMIO_BASE + mmio::TICKET, &mut buf).unwrap();
            assert_eq!(u64::from_le_bytes(buf), want);
        }
        d.write(layout::MMIO_BASE + mmio::SCRATCH, &42u64.to_le_bytes())
            .unwrap();
        d.read(layout::MMIO_BASE + mmio::SCRATCH, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 42);
        d.read(layout::MMIO_BASE + mmio::ID, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), mmio::DEVICE_ID);
    }

    #[test]
    fn mmio_rejects_bad_accesses() {
        let mut d = MmioDevice::default();
        let mut four = [0u8; 4];
        let mut eight = [0u8; 8];
        assert!(d.read(layout::MMIO_BASE, &mut four).is_err());
        assert!(d.read(layout::MMIO_BASE + 4, &mut eight).is_err());
        assert!(d.read(layout::MMIO_BASE + 0x18, &mut eight).is_err());
        assert!(d
            .read(layout::MMIO_BASE + layout::MMIO_SIZE, &mut eight)
            .is_err());
        assert!(d.write(0, &eight).is_err());
    }

    #[test]
    fn le_value_pads() {
        assert_eq!(le_value(&[0x34, 0x12]), 0x1234);
        assert_eq!(le_value(&[]), 0);
    }
}
