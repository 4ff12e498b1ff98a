//! virtio-blk over one split virtqueue, the device side built on rust-vmm's
//! `virtio-queue` over `vm-memory`. The transport is a small MMIO register page (see
//! [`contract::abi::blk`]): the driver writes the queue's size and addresses, sets it
//! ready, and rings the doorbell ([`QUEUE_NOTIFY`]) once per batch of requests. Completion
//! is the used ring; the driver polls it (no interrupt), so with the inline backend a
//! batch is complete when the doorbell's exit returns.
//!
//! The device reads and writes guest memory through a view of guest RAM only: a
//! descriptor that names the monitor's region, or anything past RAM, is refused like one
//! that names no memory at all.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use contract::metrics::{Latency, LatencySummary};

use contract::abi::blk::*;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::image::{DiskImage, ImageError};
use crate::stats::BlockStats;

/// Largest data length of one request (all its data descriptors together).
pub const MAX_REQUEST_BYTES: u64 = 4 << 20;

/// Why the device refused what the driver did. Each ends the run: a real device sets
/// `DEVICE_NEEDS_RESET` and stops, as QEMU's `virtio_error` does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtioError {
    /// An access to a register that does not exist, or of the wrong size or direction.
    #[error("virtio-blk: no {dir} register at offset {offset:#x} ({len}-byte access)")]
    BadRegister {
        /// Offset in the register page.
        offset: u64,
        /// Access size.
        len: usize,
        /// "read" or "write".
        dir: &'static str,
    },
    /// The queue setup was refused (size, alignment, addresses outside guest RAM).
    #[error("virtio-blk: the queue cannot be used: {0}")]
    BadQueue(String),
    /// The doorbell rang before the queue was ready.
    #[error("virtio-blk: notified before the queue was set up and ready")]
    NotReady,
    /// The available ring's index runs further ahead than the queue has entries.
    #[error("virtio-blk: the available ring's index runs ahead of the queue ({0})")]
    BadAvailIndex(String),
    /// A descriptor chain the device cannot serve.
    #[error("virtio-blk: request at descriptor {head}: {why}")]
    BadChain {
        /// Head index of the chain.
        head: u16,
        /// What is wrong with it.
        why: ChainFault,
    },
}

/// What is wrong with a descriptor chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    /// The chain never ends within the queue's descriptors: it loops.
    #[error("the chain does not end within the queue's {0} descriptors (a loop, or a next index outside the table)")]
    Loops(u16),
    /// Fewer than a header and a status descriptor.
    #[error("{0} descriptor(s): a request needs a header, data and a status byte")]
    TooShort(usize),
    /// The header is device-writable or shorter than 16 bytes.
    #[error("the header descriptor must be device-readable and at least 16 bytes")]
    BadHeader,
    /// The status descriptor is not device-writable or is empty.
    #[error("the last descriptor must be a device-writable status byte")]
    BadStatus,
    /// A read request's data buffer is read-only to the device.
    #[error("a read request's data buffer at {addr:#x} is read-only to the device")]
    WriteToReadOnly {
        /// Guest-physical address of the buffer.
        addr: u64,
    },
    /// A write request's data buffer is device-writable (the driver's direction is wrong).
    #[error("a write request's data buffer at {addr:#x} is marked device-writable")]
    ReadFromWriteOnly {
        /// Guest-physical address of the buffer.
        addr: u64,
    },
    /// A descriptor names memory outside guest RAM.
    #[error("{len} bytes at {addr:#x} are not guest RAM")]
    OutsideRam {
        /// Guest-physical address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// The data is longer than the device takes, or not whole sectors.
    #[error("{0} bytes of data: more than {MAX_REQUEST_BYTES} or not whole sectors")]
    BadLength(u64),
    /// The host's disk image failed (not the guest's doing).
    #[error("the disk image failed: {0}")]
    Image(String),
}

/// The virtio-blk device: its registers, its queue and the disk, shared between the
/// vCPU thread (which takes the register accesses) and, with a backend that serves the
/// queue elsewhere, the thread that does (see [`VirtioBlk::server`]).
#[derive(Debug, Clone)]
pub struct VirtioBlk {
    core: Arc<Mutex<Core>>,
}

/// The device's state.
#[derive(Debug)]
struct Core {
    disk: Arc<DiskImage>,
    ram: GuestMemoryMmap,
    queue: Queue,
    desc: u64,
    avail: u64,
    used: u64,
    stats: BlockStats,
    /// Time to serve each request, from taking its chain off the available ring to
    /// putting it on the used ring (ns).
    service: Latency,
    /// Each request's time from the doorbell that made it the device's (the exit, or
    /// the backend's wake-up) to its place on the used ring: its wait behind the
    /// requests before it in the batch, and its own service (ns).
    completion: Latency,
    /// Each doorbell's time to the last request of its batch on the used ring (ns).
    batch: Latency,
    /// Why a backend thread stopped serving the queue (the device is broken).
    broken: Option<VirtioError>,
}

/// A handle that serves the queue from another thread: what an ioeventfd's backend
/// thread calls each time the doorbell's eventfd fires.
#[derive(Debug, Clone)]
pub struct QueueServer {
    core: Arc<Mutex<Core>>,
}

impl QueueServer {
    /// `signals` doorbells arrived (an eventfd's counter): serves every available request
    /// and returns how many it put on the used ring. After a refused chain the device is
    /// broken and serves nothing more; the error is kept for [`VirtioBlk::broken`].
    pub fn notified(&self, signals: u64) -> u64 {
        let mut core = lock(&self.core);
        core.stats.notifications += signals;
        if core.broken.is_some() {
            return 0;
        }
        let before = core.stats.requests;
        if let Err(e) = core.serve() {
            core.broken = Some(e);
        }
        core.stats.requests - before
    }

    /// Counts a completion interrupt the backend raised (`virtio:interrupts`).
    pub fn interrupted(&self) {
        lock(&self.core).stats.interrupts += 1;
    }
}

/// The core's lock; a thread that panicked while holding it left counters, not a
/// half-done guest write, so the state is still usable.
fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Nanoseconds since `t`.
pub(crate) fn ns_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn reg_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

impl VirtioBlk {
    /// A device on `disk`, reaching guest memory through `ram` (a view of guest RAM only).
    pub fn new(disk: Arc<DiskImage>, ram: GuestMemoryMmap) -> Self {
        let core = Core {
            disk,
            ram,
            // 256 is a power of two and nonzero: `Queue::new` cannot refuse it.
            queue: Queue::new(QUEUE_SIZE_MAX_VALUE).unwrap_or_else(|_| unreachable!()),
            desc: 0,
            avail: 0,
            used: 0,
            stats: BlockStats::default(),
            service: Latency::new(),
            completion: Latency::new(),
            batch: Latency::new(),
            broken: None,
        };
        VirtioBlk {
            core: Arc::new(Mutex::new(core)),
        }
    }

    /// What the device did so far.
    pub fn stats(&self) -> BlockStats {
        lock(&self.core).stats
    }

    /// How long each request took to serve (chain taken to used ring), as quantiles.
    pub fn service_latency(&self) -> LatencySummary {
        lock(&self.core).service.summary()
    }

    /// Each request's time from its doorbell to the used ring, as quantiles.
    pub fn completion_latency(&self) -> LatencySummary {
        lock(&self.core).completion.summary()
    }

    /// Each doorbell's time to its batch's last completion, as quantiles.
    pub fn batch_latency(&self) -> LatencySummary {
        lock(&self.core).batch.summary()
    }

    /// Why a backend thread stopped serving the queue, if it did.
    pub fn broken(&self) -> Option<VirtioError> {
        lock(&self.core).broken.clone()
    }

    /// The queue as the driver set it up: size and the addresses of the descriptor table,
    /// the available ring and the used ring (what another process needs to serve it).
    pub fn queue_config(&self) -> [u64; 4] {
        let c = lock(&self.core);
        [u64::from(c.queue.size()), c.desc, c.avail, c.used]
    }

    /// A handle for a thread that serves the queue when the doorbell rings elsewhere.
    pub fn server(&self) -> QueueServer {
        QueueServer {
            core: self.core.clone(),
        }
    }

    /// A register read.
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> Result<(), VirtioError> {
        lock(&self.core).read(addr, data)
    }

    /// A register write; the doorbell serves every request the driver has made available.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), VirtioError> {
        lock(&self.core).write(addr, data)
    }

    /// Whether `addr` is in the register page.
    pub fn claims(addr: u64) -> bool {
        (VIRTIO_BASE..VIRTIO_BASE + VIRTIO_SIZE).contains(&addr)
    }

    fn offset(addr: u64, len: usize, dir: &'static str) -> Result<u64, VirtioError> {
        let offset = addr.wrapping_sub(VIRTIO_BASE);
        if !Self::claims(addr) || !(len == 4 || len == 8) || offset % 8 != 0 {
            return Err(VirtioError::BadRegister { offset, len, dir });
        }
        Ok(offset)
    }
}

impl Core {
    fn read(&mut self, addr: u64, data: &mut [u8]) -> Result<(), VirtioError> {
        let offset = VirtioBlk::offset(addr, data.len(), "read")?;
        let value = match offset {
            MAGIC => VIRTIO_MAGIC,
            CAPACITY => self.disk.sectors(),
            QUEUE_SIZE_MAX => u64::from(QUEUE_SIZE_MAX_VALUE),
            QUEUE_READY => u64::from(self.queue.ready()),
            _ => {
                return Err(VirtioError::BadRegister {
                    offset,
                    len: data.len(),
                    dir: "read",
                })
            }
        };
        let n = data.len();
        data.copy_from_slice(&value.to_le_bytes()[..n]);
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), VirtioError> {
        let offset = VirtioBlk::offset(addr, data.len(), "write")?;
        let value = reg_value(data);
        let setup = |q: &Queue| {
            if q.ready() {
                Err(VirtioError::BadQueue(
                    "the queue is already ready: its setup cannot change".into(),
                ))
            } else {
                Ok(())
            }
        };
        match offset {
            QUEUE_SIZE => {
                setup(&self.queue)?;
                let size = u16::try_from(value)
                    .map_err(|_| VirtioError::BadQueue(format!("size {value}")))?;
                self.queue
                    .try_set_size(size)
                    .map_err(|e| VirtioError::BadQueue(format!("size {value}: {e}")))?;
            }
            QUEUE_DESC => {
                setup(&self.queue)?;
                self.desc = value;
            }
            QUEUE_AVAIL => {
                setup(&self.queue)?;
                self.avail = value;
            }
            QUEUE_USED => {
                setup(&self.queue)?;
                self.used = value;
            }
            QUEUE_READY => self.set_ready(value == 1)?,
            QUEUE_NOTIFY => {
                self.stats.notifications += 1;
                self.serve()?;
            }
            _ => {
                return Err(VirtioError::BadRegister {
                    offset,
                    len: data.len(),
                    dir: "write",
                })
            }
        }
        Ok(())
    }

    fn set_ready(&mut self, ready: bool) -> Result<(), VirtioError> {
        if !ready {
            self.queue.set_ready(false);
            return Ok(());
        }
        let q = &mut self.queue;
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .and_then(|()| q.try_set_avail_ring_address(GuestAddress(self.avail)))
            .and_then(|()| q.try_set_used_ring_address(GuestAddress(self.used)))
            .map_err(|e| VirtioError::BadQueue(e.to_string()))?;
        q.set_ready(true);
        if !q.is_valid(&self.ram) {
            q.set_ready(false);
            return Err(VirtioError::BadQueue(format!(
                "the rings at {:#x}, {:#x}, {:#x} (size {}) are not all in guest RAM",
                self.desc,
                self.avail,
                self.used,
                q.size()
            )));
        }
        Ok(())
    }

    /// Serves every available request, in order, and puts each on the used ring.
    ///
    /// A batch is what the available ring held when the doorbell was seen (this call);
    /// requests the driver made available while it was being served (a backend thread
    /// serves while the guest runs) are the next batch, timed from when the device
    /// found them. A driver that publishes a batch at once, as the workloads' does, gets
    /// one batch per doorbell.
    fn serve(&mut self) -> Result<(), VirtioError> {
        if !self.queue.ready() {
            return Err(VirtioError::NotReady);
        }
        let mut rung = Instant::now();
        loop {
            let avail = self
                .queue
                .avail_idx(&self.ram, Ordering::Acquire)
                .map_err(|e| VirtioError::BadAvailIndex(e.to_string()))?;
            let pending = avail.0.wrapping_sub(self.queue.next_avail());
            if pending == 0 {
                break;
            }
            for _ in 0..pending {
                let chain = {
                    let mut iter = self
                        .queue
                        .iter(&self.ram)
                        .map_err(|e| VirtioError::BadAvailIndex(e.to_string()))?;
                    iter.next()
                };
                let Some(chain) = chain else { break };
                let started = Instant::now();
                let head = chain.head_index();
                let descs: Vec<Descriptor> = chain.collect();
                let written = self
                    .request(&descs)
                    .map_err(|why| VirtioError::BadChain { head, why })?;
                self.queue
                    .add_used(&self.ram, head, written)
                    .map_err(|e| VirtioError::BadQueue(e.to_string()))?;
                self.service.record(ns_since(started));
                self.completion.record(ns_since(rung));
            }
            self.batch.record(ns_since(rung));
            rung = Instant::now();
        }
        Ok(())
    }

    /// One request; returns the bytes written into the guest's buffers (status included).
    fn request(&mut self, descs: &[Descriptor]) -> Result<u32, ChainFault> {
        if descs.last().is_some_and(|d| d.has_next()) {
            return Err(ChainFault::Loops(self.queue.size()));
        }
        if descs.len() < 2 {
            return Err(ChainFault::TooShort(descs.len()));
        }
        for d in descs {
            if !self.ram.check_range(d.addr(), d.len() as usize) {
                return Err(ChainFault::OutsideRam {
                    addr: d.addr().0,
                    len: d.len(),
                });
            }
        }
        let (header, rest) = descs.split_first().unwrap_or_else(|| unreachable!());
        let (status, data) = rest.split_last().unwrap_or_else(|| unreachable!());
        if header.is_write_only() || header.len() < 16 {
            return Err(ChainFault::BadHeader);
        }
        if !status.is_write_only() || status.len() < 1 {
            return Err(ChainFault::BadStatus);
        }
        let mut h = [0u8; 16];
        self.ram
            .read_slice(&mut h, header.addr())
            .map_err(|_| ChainFault::BadHeader)?;
        let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let sector = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let bytes: u64 = data.iter().map(|d| u64::from(d.len())).sum();
        self.stats.requests += 1;
        let (code, written) = match kind {
            T_IN | T_OUT => {
                for d in data {
                    match (kind, d.is_write_only()) {
                        (T_IN, false) => {
                            return Err(ChainFault::WriteToReadOnly { addr: d.addr().0 })
                        }
                        (T_OUT, true) => {
                            return Err(ChainFault::ReadFromWriteOnly { addr: d.addr().0 })
                        }
                        _ => {}
                    }
                }
                if bytes > MAX_REQUEST_BYTES || bytes % SECTOR_SIZE != 0 {
                    return Err(ChainFault::BadLength(bytes));
                }
                self.transfer(kind, sector, data, bytes)?
            }
            T_FLUSH => match self.disk.flush() {
                Ok(()) => (S_OK, 0),
                Err(e) => return Err(ChainFault::Image(e.to_string())),
            },
            _ => {
                self.stats.unsupported += 1;
                (S_UNSUPP, 0)
            }
        };
        self.ram
            .write_obj(code, status.addr())
            .map_err(|_| ChainFault::BadStatus)?;
        Ok(written + 1)
    }

    /// Moves the data of a read or write; a range past the end of the disk is an I/O
    /// error reported in the status byte (nothing is moved).
    fn transfer(
        &mut self,
        kind: u32,
        sector: u64,
        data: &[Descriptor],
        bytes: u64,
    ) -> Result<(u8, u32), ChainFault> {
        let Some(mut offset) = sector.checked_mul(SECTOR_SIZE) else {
            self.stats.io_errors += 1;
            return Ok((S_IOERR, 0));
        };
        if self.disk.check(offset, bytes).is_err() {
            self.stats.io_errors += 1;
            return Ok((S_IOERR, 0));
        }
        let image = |e: ImageError| ChainFault::Image(e.to_string());
        let outside = |d: &Descriptor| ChainFault::OutsideRam {
            addr: d.addr().0,
            len: d.len(),
        };
        let mut buf = Vec::new();
        for d in data {
            buf.resize(d.len() as usize, 0);
            if kind == T_IN {
                self.disk.read_at(offset, &mut buf).map_err(image)?;
                self.ram
                    .write_slice(&buf, d.addr())
                    .map_err(|_| outside(d))?;
            } else {
                self.ram
                    .read_slice(&mut buf, d.addr())
                    .map_err(|_| outside(d))?;
                self.disk.write_at(offset, &buf).map_err(image)?;
            }
            offset += u64::from(d.len());
        }
        if kind == T_IN {
            self.stats.bytes_read += bytes;
            Ok((S_OK, bytes as u32))
        } else {
            self.stats.bytes_written += bytes;
            Ok((S_OK, 0))
        }
    }
}
