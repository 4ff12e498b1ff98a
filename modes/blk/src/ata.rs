//! A legacy ATA disk on the primary IDE channel, programmed I/O only: the registers an
//! unmodified driver of the 1990s touches (sector count, LBA, drive, command, status) and
//! the 16-bit data port it moves each sector through with `rep insw` / `rep outsw`.
//! Only LBA28 READ SECTORS, WRITE SECTORS and FLUSH CACHE; the device is never busy (the
//! inline backend does the I/O inside the exit), so one status read finds DRQ or ready.
//!
//! The data port takes any access width: KVM hands a string instruction's data over as
//! bytes (one exit may carry a whole `rep insw` that stays within a page), and the
//! emulator of the deprivileged modes hands it over element by element.

use std::sync::Arc;
use std::time::Instant;

use contract::abi::blk::*;
use contract::metrics::{Latency, LatencySummary};

use crate::image::DiskImage;
use crate::stats::BlockStats;

const SECTOR: usize = SECTOR_SIZE as usize;

/// What a command is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    Idle,
    /// Sectors go to the guest; `left` sectors after the one in the buffer.
    Reading {
        lba: u64,
        left: u64,
    },
    /// Sectors come from the guest into the buffer, then to `lba`.
    Writing {
        lba: u64,
        left: u64,
    },
}

/// The ATA disk's registers and its one-sector buffer.
#[derive(Debug)]
pub struct AtaDisk {
    disk: Arc<DiskImage>,
    count: u8,
    lba: [u8; 3],
    drive: u8,
    status: u8,
    error: u8,
    buf: Vec<u8>,
    pos: usize,
    transfer: Transfer,
    /// When the command being served was written.
    commanded: Option<Instant>,
    /// Each read or write command's time from the command register's write to the
    /// status ready again after its last sector (ns).
    completion: Latency,
    /// What the device did.
    pub stats: BlockStats,
}

/// A port the ATA disk does not answer (so the VMM can say who does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAta;

impl AtaDisk {
    /// A disk on `disk`, idle and ready.
    pub fn new(disk: Arc<DiskImage>) -> Self {
        AtaDisk {
            disk,
            count: 0,
            lba: [0; 3],
            drive: 0xE0,
            status: ATA_SR_DRDY,
            error: 0,
            buf: vec![0; SECTOR],
            pos: 0,
            transfer: Transfer::Idle,
            commanded: None,
            completion: Latency::new(),
            stats: BlockStats::default(),
        }
    }

    /// Each completed read or write's time from its command to the status ready again,
    /// as quantiles.
    pub fn completion_latency(&self) -> LatencySummary {
        self.completion.summary()
    }

    /// The command's transfer is over: the status is ready again.
    fn completed(&mut self) {
        self.transfer = Transfer::Idle;
        self.status = ATA_SR_DRDY;
        if let Some(t) = self.commanded.take() {
            self.completion.record(crate::virtio::ns_since(t));
        }
    }

    /// Whether `port` is one of the disk's.
    pub fn claims(port: u16) -> bool {
        (ATA_DATA..=ATA_COMMAND).contains(&port)
    }

    /// `in` from a port (the data port fills all of `data`).
    pub fn io_in(&mut self, port: u16, data: &mut [u8]) -> Result<(), NotAta> {
        let value = match port {
            ATA_DATA => {
                self.data_in(data);
                return Ok(());
            }
            ATA_ERROR => self.error,
            ATA_SECTOR_COUNT => self.count,
            ATA_LBA_LOW => self.lba[0],
            ATA_LBA_MID => self.lba[1],
            ATA_LBA_HIGH => self.lba[2],
            ATA_DRIVE => self.drive,
            ATA_COMMAND => self.status,
            _ => return Err(NotAta),
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = value;
        }
        Ok(())
    }

    /// `out` to a port (the data port takes all of `data`).
    pub fn io_out(&mut self, port: u16, data: &[u8]) -> Result<(), NotAta> {
        let value = data.first().copied().unwrap_or(0);
        match port {
            ATA_DATA => self.data_out(data),
            ATA_ERROR => {} // features: nothing to set
            ATA_SECTOR_COUNT => self.count = value,
            ATA_LBA_LOW => self.lba[0] = value,
            ATA_LBA_MID => self.lba[1] = value,
            ATA_LBA_HIGH => self.lba[2] = value,
            ATA_DRIVE => self.drive = value,
            ATA_COMMAND => self.command(value),
            _ => return Err(NotAta),
        }
        Ok(())
    }

    fn lba28(&self) -> u64 {
        u64::from(self.lba[0])
            | u64::from(self.lba[1]) << 8
            | u64::from(self.lba[2]) << 16
            | u64::from(self.drive & 0x0F) << 24
    }

    fn fail(&mut self, error: u8) {
        self.commanded = None;
        self.transfer = Transfer::Idle;
        self.error = error;
        self.status = ATA_SR_DRDY | ATA_SR_ERR;
    }

    fn command(&mut self, cmd: u8) {
        self.stats.notifications += 1;
        self.commanded = Some(Instant::now());
        self.error = 0;
        self.pos = 0;
        // Drive 1, or CHS addressing: not this disk's.
        if self.drive & 0x10 != 0 || self.drive & 0x40 == 0 {
            self.stats.unsupported += 1;
            return self.fail(ATA_ER_ABRT);
        }
        let sectors = if self.count == 0 {
            256
        } else {
            u64::from(self.count)
        };
        let lba = self.lba28();
        match cmd {
            ATA_CMD_READ | ATA_CMD_WRITE => {
                self.stats.requests += 1;
                if lba
                    .checked_add(sectors)
                    .is_none_or(|end| end > self.disk.sectors())
                {
                    self.stats.io_errors += 1;
                    return self.fail(ATA_ER_IDNF);
                }
                if cmd == ATA_CMD_READ {
                    self.transfer = Transfer::Reading {
                        lba,
                        left: sectors - 1,
                    };
                    self.load(lba);
                } else {
                    self.transfer = Transfer::Writing {
                        lba,
                        left: sectors - 1,
                    };
                    self.status = ATA_SR_DRDY | ATA_SR_DRQ;
                }
            }
            ATA_CMD_FLUSH => match self.disk.flush() {
                Ok(()) => {
                    self.commanded = None;
                    self.status = ATA_SR_DRDY;
                }
                Err(_) => self.fail(ATA_ER_ABRT),
            },
            _ => {
                self.stats.unsupported += 1;
                self.fail(ATA_ER_ABRT);
            }
        }
    }

    /// Reads sector `lba` into the buffer and raises DRQ.
    fn load(&mut self, lba: u64) {
        match self.disk.read_at(lba * SECTOR_SIZE, &mut self.buf) {
            Ok(()) => {
                self.pos = 0;
                self.status = ATA_SR_DRDY | ATA_SR_DRQ;
            }
            Err(_) => self.fail(ATA_ER_ABRT),
        }
    }

    fn data_in(&mut self, out: &mut [u8]) {
        for b in out.iter_mut() {
            let Transfer::Reading { lba, left } = self.transfer else {
                // No data requested: the bus floats.
                *b = 0xFF;
                continue;
            };
            *b = self.buf[self.pos];
            self.pos += 1;
            if self.pos == SECTOR {
                self.stats.bytes_read += SECTOR_SIZE;
                if left == 0 {
                    self.completed();
                } else {
                    self.transfer = Transfer::Reading {
                        lba: lba + 1,
                        left: left - 1,
                    };
                    self.load(lba + 1);
                }
            }
        }
    }

    fn data_out(&mut self, input: &[u8]) {
        for &b in input {
            let Transfer::Writing { lba, left } = self.transfer else {
                // Data nobody asked for is dropped, as a real disk does.
                continue;
            };
            self.buf[self.pos] = b;
            self.pos += 1;
            if self.pos == SECTOR {
                self.pos = 0;
                // The range was checked when the command came: this write is inside.
                if self.disk.write_at(lba * SECTOR_SIZE, &self.buf).is_err() {
                    self.fail(ATA_ER_ABRT);
                    continue;
                }
                self.stats.bytes_written += SECTOR_SIZE;
                if left == 0 {
                    self.completed();
                } else {
                    self.transfer = Transfer::Writing {
                        lba: lba + 1,
                        left: left - 1,
                    };
                }
            }
        }
    }
}
