//! The devices against hostile drivers, with guest memory but no KVM: every refusal is a
//! named error, and the image is never written outside its bounds or by a refused request.

use contract::abi::blk::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{BlockDevices, ChainFault, DiskImage, VirtioError};

const RAM: u64 = 16 << 20;
/// A region above RAM, as the monitor's is in a real machine.
const MONITOR: u64 = 0x4000_0000;
const DESC: u64 = 0x20_0000;
const AVAIL: u64 = 0x20_1000;
const USED: u64 = 0x20_2000;
const HDR: u64 = 0x20_3000;
const STATUS: u64 = 0x20_3800;
const BUF: u64 = 0x30_0000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

struct Rig {
    mem: GuestMemoryMmap,
    dev: BlockDevices,
    path: std::path::PathBuf,
    avail: u16,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rig(tag: &str, sectors: u64) -> Rig {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), RAM as usize),
        (GuestAddress(MONITOR), 0x20_0000),
    ])
    .unwrap();
    let path = std::env::temp_dir().join(format!("blk-unit-{tag}-{}.img", std::process::id()));
    let disk = DiskImage::create(&path, sectors * SECTOR_SIZE).unwrap();
    let dev = BlockDevices::new(disk, &mem).unwrap();
    Rig {
        mem,
        dev,
        path,
        avail: 0,
    }
}

impl Rig {
    fn reg(&mut self, offset: u64, value: u64) -> Result<(), VirtioError> {
        self.dev
            .virtio
            .write(VIRTIO_BASE + offset, &value.to_le_bytes())
    }

    fn setup(&mut self) {
        self.reg(QUEUE_SIZE, 16).unwrap();
        self.reg(QUEUE_DESC, DESC).unwrap();
        self.reg(QUEUE_AVAIL, AVAIL).unwrap();
        self.reg(QUEUE_USED, USED).unwrap();
        self.reg(QUEUE_READY, 1).unwrap();
    }

    fn desc(&self, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&d, GuestAddress(DESC + 16 * i))
            .unwrap();
    }

    fn header(&self, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// A well-formed request at descriptors 0, 1, 2.
    fn request(&self, kind: u32, sector: u64, len: u32) {
        self.header(kind, sector);
        let data_flags = if kind == T_IN { NEXT | WRITE } else { NEXT };
        self.desc(0, HDR, 16, NEXT, 1);
        self.desc(1, BUF, len, data_flags, 2);
        self.desc(2, STATUS, 1, WRITE, 0);
    }

    /// Makes the chain at `head` available and rings the doorbell.
    fn submit(&mut self, head: u16) -> Result<(), VirtioError> {
        let slot = u64::from(self.avail % 16);
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail = self.avail.wrapping_add(1);
        self.mem
            .write_obj(self.avail, GuestAddress(AVAIL + 2))
            .unwrap();
        self.reg(QUEUE_NOTIFY, 0)
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

fn bad_chain(r: Result<(), VirtioError>) -> ChainFault {
    match r {
        Err(VirtioError::BadChain { why, .. }) => why,
        other => panic!("not a refused chain: {other:?}"),
    }
}

#[test]
fn a_request_is_written_read_back_and_put_on_the_used_ring() {
    let mut r = rig("good", 8);
    r.setup();
    r.mem.write_slice(&[0x5A; 1024], GuestAddress(BUF)).unwrap();
    r.request(T_OUT, 2, 1024);
    r.submit(0).unwrap();
    assert_eq!(r.status(), S_OK);
    assert_eq!(&r.image()[1024..2048], &[0x5A; 1024][..]);
    r.mem.write_slice(&[0; 1024], GuestAddress(BUF)).unwrap();
    r.request(T_IN, 2, 1024);
    r.submit(0).unwrap();
    let mut back = [0u8; 1024];
    r.mem.read_slice(&mut back, GuestAddress(BUF)).unwrap();
    assert_eq!(back, [0x5A; 1024]);
    let used: u16 = r.mem.read_obj(GuestAddress(USED + 2)).unwrap();
    assert_eq!(used, 2);
    // The read's used length: the data and the status byte.
    let len: u32 = r.mem.read_obj(GuestAddress(USED + 4 + 8 + 4)).unwrap();
    assert_eq!(len, 1025);
    let s = r.dev.virtio.stats();
    assert_eq!((s.notifications, s.requests), (2, 2));
    assert_eq!((s.bytes_written, s.bytes_read), (1024, 1024));
}

#[test]
fn a_request_past_the_end_of_the_disk_is_an_io_error_and_writes_nothing() {
    let mut r = rig("past-end", 4);
    r.setup();
    r.mem.write_slice(&[1; 1024], GuestAddress(BUF)).unwrap();
    // Sectors 3 and 4 of a 4-sector disk: the second is past the end.
    r.request(T_OUT, 3, 1024);
    r.submit(0).unwrap();
    assert_eq!(r.status(), S_IOERR);
    // A sector number whose byte offset overflows.
    r.request(T_OUT, u64::MAX / 256, 512);
    r.submit(0).unwrap();
    assert_eq!(r.status(), S_IOERR);
    assert_eq!(r.image(), vec![0u8; 2048]);
    assert_eq!(r.dev.virtio.stats().io_errors, 2);
    assert_eq!(r.dev.virtio.stats().bytes_written, 0);
}

#[test]
fn a_looping_chain_is_refused() {
    let mut r = rig("loop", 8);
    r.setup();
    r.header(T_OUT, 0);
    r.desc(0, HDR, 16, NEXT, 1);
    r.desc(1, BUF, 512, NEXT, 0);
    assert!(matches!(bad_chain(r.submit(0)), ChainFault::Loops(16)));
    assert_eq!(r.image(), vec![0u8; 4096]);
}

#[test]
fn buffers_outside_guest_ram_are_refused_the_monitor_region_included() {
    for (addr, len) in [
        (RAM - 256, 512),      // runs off the end of RAM
        (MONITOR, 512),        // guest memory, but not RAM: the monitor's
        (u64::MAX - 100, 512), // wraps around
    ] {
        let mut r = rig("outside", 8);
        r.setup();
        r.request(T_IN, 0, 512);
        r.desc(1, addr, len, NEXT | WRITE, 2);
        assert!(
            matches!(bad_chain(r.submit(0)), ChainFault::OutsideRam { .. }),
            "{addr:#x}"
        );
    }
    // The status byte itself in the monitor's region.
    let mut r = rig("outside-status", 8);
    r.setup();
    r.request(T_IN, 0, 512);
    r.desc(2, MONITOR + 0x1000, 1, WRITE, 0);
    assert!(matches!(
        bad_chain(r.submit(0)),
        ChainFault::OutsideRam { .. }
    ));
    let mut monitor = [0u8; 1];
    r.mem
        .read_slice(&mut monitor, GuestAddress(MONITOR + 0x1000))
        .unwrap();
    assert_eq!(monitor, [0]);
}

#[test]
fn huge_lengths_and_partial_sectors_are_refused() {
    let mut r = rig("huge", 8);
    r.setup();
    r.request(T_OUT, 0, 8 << 20);
    assert!(matches!(
        bad_chain(r.submit(0)),
        ChainFault::BadLength(n) if n == 8 << 20
    ));
    let mut r = rig("partial", 8);
    r.setup();
    r.request(T_OUT, 0, 100);
    assert!(matches!(bad_chain(r.submit(0)), ChainFault::BadLength(100)));
    assert_eq!(r.image(), vec![0u8; 4096]);
}

#[test]
fn directions_are_checked_a_read_never_lands_in_a_read_only_buffer() {
    let mut r = rig("read-only", 8);
    r.setup();
    r.request(T_IN, 0, 512);
    r.desc(1, BUF, 512, NEXT, 2); // device-readable: the driver's buffer is read-only
    assert!(matches!(
        bad_chain(r.submit(0)),
        ChainFault::WriteToReadOnly { addr: BUF }
    ));
    let mut r = rig("write-only", 8);
    r.setup();
    r.request(T_OUT, 0, 512);
    r.desc(1, BUF, 512, NEXT | WRITE, 2);
    assert!(matches!(
        bad_chain(r.submit(0)),
        ChainFault::ReadFromWriteOnly { addr: BUF }
    ));
    let mut r = rig("header", 8);
    r.setup();
    r.request(T_OUT, 0, 512);
    r.desc(0, HDR, 16, NEXT | WRITE, 1);
    assert_eq!(bad_chain(r.submit(0)), ChainFault::BadHeader);
    let mut r = rig("status", 8);
    r.setup();
    r.request(T_OUT, 0, 512);
    r.desc(2, STATUS, 1, 0, 0);
    assert_eq!(bad_chain(r.submit(0)), ChainFault::BadStatus);
    let mut r = rig("short", 8);
    r.setup();
    r.desc(0, HDR, 16, 0, 0);
    assert_eq!(bad_chain(r.submit(0)), ChainFault::TooShort(1));
}

#[test]
fn the_queue_setup_and_the_doorbell_are_checked() {
    let mut r = rig("setup", 8);
    assert_eq!(r.reg(QUEUE_NOTIFY, 0), Err(VirtioError::NotReady));
    assert!(matches!(
        r.reg(QUEUE_SIZE, 3),
        Err(VirtioError::BadQueue(_))
    ));
    r.reg(QUEUE_SIZE, 16).unwrap();
    // Rings in the monitor's region are not in guest RAM.
    r.reg(QUEUE_DESC, MONITOR).unwrap();
    r.reg(QUEUE_AVAIL, AVAIL).unwrap();
    r.reg(QUEUE_USED, USED).unwrap();
    assert!(matches!(
        r.reg(QUEUE_READY, 1),
        Err(VirtioError::BadQueue(_))
    ));
    r.reg(QUEUE_DESC, DESC).unwrap();
    r.reg(QUEUE_READY, 1).unwrap();
    assert!(matches!(
        r.reg(QUEUE_DESC, 0),
        Err(VirtioError::BadQueue(_))
    ));
    // An available index far ahead of the queue.
    r.mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
    assert!(matches!(
        r.reg(QUEUE_NOTIFY, 0),
        Err(VirtioError::BadAvailIndex(_))
    ));
    // Registers that do not exist, or the wrong size.
    assert!(r.reg(0x48, 0).is_err());
    assert!(r
        .dev
        .virtio
        .write(VIRTIO_BASE + QUEUE_NOTIFY, &[0u8; 2])
        .is_err());
    let mut v = [0u8; 8];
    r.dev.virtio.read(VIRTIO_BASE + MAGIC, &mut v).unwrap();
    assert_eq!(u64::from_le_bytes(v), VIRTIO_MAGIC);
    r.dev.virtio.read(VIRTIO_BASE + CAPACITY, &mut v).unwrap();
    assert_eq!(u64::from_le_bytes(v), 8);
    assert!(r
        .dev
        .virtio
        .read(VIRTIO_BASE + QUEUE_NOTIFY, &mut v)
        .is_err());
}

#[test]
fn a_doorbell_flood_with_nothing_available_moves_nothing() {
    let mut r = rig("flood", 8);
    r.setup();
    for _ in 0..1000 {
        r.reg(QUEUE_NOTIFY, 0).unwrap();
    }
    let s = r.dev.virtio.stats();
    assert_eq!((s.notifications, s.requests), (1000, 0));
    // A doorbell with nothing to serve is no batch and no completion.
    assert_eq!(r.dev.virtio.batch_latency().count, 0);
    assert_eq!(r.dev.virtio.completion_latency().count, 0);
}

#[test]
fn each_doorbell_is_one_batch_and_each_request_one_completion() {
    let mut r = rig("timing", 8);
    r.setup();
    // Three requests behind one doorbell (chains at 0, 3, 6), then one behind another.
    for (i, sector) in [(0u64, 0u64), (3, 1), (6, 2)] {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&T_OUT.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        r.mem.write_slice(&h, GuestAddress(HDR + 16 * i)).unwrap();
        r.desc(i, HDR + 16 * i, 16, NEXT, i as u16 + 1);
        r.desc(i + 1, BUF, 512, NEXT, i as u16 + 2);
        r.desc(i + 2, STATUS + i, 1, WRITE, 0);
    }
    for (slot, head) in [0u16, 3, 6].into_iter().enumerate() {
        r.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot as u64))
            .unwrap();
    }
    r.avail = 3;
    r.mem.write_obj(3u16, GuestAddress(AVAIL + 2)).unwrap();
    r.reg(QUEUE_NOTIFY, 0).unwrap();
    r.request(T_IN, 1, 512);
    r.submit(0).unwrap();
    let v = &r.dev.virtio;
    assert_eq!(v.stats().requests, 4);
    assert_eq!(v.service_latency().count, 4);
    assert_eq!(v.completion_latency().count, 4);
    assert_eq!(v.batch_latency().count, 2);
    // A batch ends with its last request: its time is at least that request's.
    assert!(v.batch_latency().max >= v.completion_latency().min);
    assert_eq!(r.status(), S_OK);
}

#[test]
fn each_ata_command_that_completes_is_timed_from_command_to_ready() {
    let mut r = rig("ata-timing", 4);
    assert_eq!(ata(&mut r, 0, 2, ATA_CMD_WRITE), ATA_SR_DRDY | ATA_SR_DRQ);
    // Not ready yet: one sector of two moved.
    r.dev.ata.io_out(ATA_DATA, &[1u8; 512]).unwrap();
    assert_eq!(r.dev.ata.completion_latency().count, 0);
    r.dev.ata.io_out(ATA_DATA, &[2u8; 512]).unwrap();
    assert_eq!(r.dev.ata.completion_latency().count, 1);
    assert_eq!(ata(&mut r, 1, 1, ATA_CMD_READ), ATA_SR_DRDY | ATA_SR_DRQ);
    let mut back = [0u8; 512];
    r.dev.ata.io_in(ATA_DATA, &mut back).unwrap();
    assert_eq!(back, [2u8; 512]);
    assert_eq!(r.dev.ata.completion_latency().count, 2);
    // A refused command (past the end) and a flush are not requests that complete.
    assert_eq!(ata(&mut r, 3, 2, ATA_CMD_READ), ATA_SR_DRDY | ATA_SR_ERR);
    assert_eq!(ata(&mut r, 0, 1, ATA_CMD_FLUSH), ATA_SR_DRDY);
    assert_eq!(r.dev.ata.completion_latency().count, 2);
}

fn ata(r: &mut Rig, lba: u64, count: u8, cmd: u8) -> u8 {
    let a = &mut r.dev.ata;
    for (port, v) in [
        (ATA_DRIVE, 0xE0 | ((lba >> 24) as u8 & 0x0F)),
        (ATA_SECTOR_COUNT, count),
        (ATA_LBA_LOW, lba as u8),
        (ATA_LBA_MID, (lba >> 8) as u8),
        (ATA_LBA_HIGH, (lba >> 16) as u8),
        (ATA_COMMAND, cmd),
    ] {
        a.io_out(port, &[v]).unwrap();
    }
    let mut s = [0u8];
    a.io_in(ATA_COMMAND, &mut s).unwrap();
    s[0]
}

#[test]
fn the_ata_disk_moves_sectors_and_refuses_what_lies_past_its_end() {
    let mut r = rig("ata", 4);
    assert_eq!(ata(&mut r, 1, 2, ATA_CMD_WRITE), ATA_SR_DRDY | ATA_SR_DRQ);
    // Any access width: the data arrives as bytes.
    r.dev.ata.io_out(ATA_DATA, &[7u8; 1000]).unwrap();
    r.dev.ata.io_out(ATA_DATA, &[7u8; 24]).unwrap();
    let mut s = [0u8];
    r.dev.ata.io_in(ATA_COMMAND, &mut s).unwrap();
    assert_eq!(s[0], ATA_SR_DRDY);
    // More data than was asked for is dropped.
    r.dev.ata.io_out(ATA_DATA, &[9u8; 512]).unwrap();
    let img = r.image();
    assert_eq!(&img[512..1536], &[7u8; 1024][..]);
    assert_eq!(&img[1536..], &[0u8; 512][..]);
    assert_eq!(ata(&mut r, 1, 1, ATA_CMD_READ), ATA_SR_DRDY | ATA_SR_DRQ);
    let mut back = [0u8; 512];
    r.dev.ata.io_in(ATA_DATA, &mut back).unwrap();
    assert_eq!(back, [7u8; 512]);
    // Past the end: sectors 3 and 4 of 4, LBA28's top, and a count of 0 (256 sectors).
    for (lba, count) in [(3, 2), (0x0FFF_FFFF, 1), (0, 0)] {
        let status = ata(&mut r, lba, count, ATA_CMD_WRITE);
        assert_eq!(status, ATA_SR_DRDY | ATA_SR_ERR, "{lba}");
        let mut e = [0u8];
        r.dev.ata.io_in(ATA_ERROR, &mut e).unwrap();
        assert_eq!(e[0], ATA_ER_IDNF);
        r.dev.ata.io_out(ATA_DATA, &[0xEE; 512]).unwrap();
    }
    assert_eq!(r.image().len(), 2048);
    assert!(!r.image().contains(&0xEE));
    // Unknown commands, drive 1 and CHS addressing are aborted.
    assert_eq!(ata(&mut r, 0, 1, 0x99), ATA_SR_DRDY | ATA_SR_ERR);
    r.dev.ata.io_out(ATA_DRIVE, &[0xF0]).unwrap();
    r.dev.ata.io_out(ATA_COMMAND, &[ATA_CMD_READ]).unwrap();
    r.dev.ata.io_in(ATA_COMMAND, &mut s).unwrap();
    assert_eq!(s[0], ATA_SR_DRDY | ATA_SR_ERR);
    assert_eq!(r.dev.ata.stats.io_errors, 3);
}
