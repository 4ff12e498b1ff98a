//! The disk workloads in every mode. With the inline backend a request is done when the
//! exit that asked for it returns, so the counts are exact functions of N, S and Q.
//!
//! **blk-virtio** (B = ⌈N/Q⌉ batches per phase, a write phase and a read phase): one MMIO
//! read (the device's magic), five MMIO writes to set the queue up, and one doorbell
//! write per batch: 5 + 2B MMIO writes. The driver polls the used ring, which is already
//! complete when the doorbell returns: no interrupt, no further exit. MMIO is a plain
//! memory access, so it exits directly in every mode (no trap, no hypercall): the same
//! counts everywhere, plus each mode's way of ending the run.
//!
//! **blk-emulated** (c = S/512 sectors per request): per request six register writes
//! (drive, count, LBA low/mid/high, command), then per sector one status read and the
//! sector through the data port; a write waits for the drive once more at the end.
//! Under hw-assisted each `out` and `in` is an I/O exit, and the string instructions go
//! through KVM's instruction emulator: `rep insw` is read ahead a page at a time (one exit
//! per 512-byte sector, whose buffer never crosses a page), while `rep outsw` exits once
//! per word (256 per sector). Under trap-and-emulate and binary translation each
//! instruction is one trap (`rep insw`/`rep outsw` emulated whole in one). A paravirtual
//! guest with a disk is granted the ATA ports in its I/O bitmap, as Xen grants a driver
//! domain its device's ports: each access exits directly, as under hw-assisted.
//!
//! Binary translation's counters are exact for N > Q ≥ 3, S ≥ 1024 (virtio) and N ≥ 2,
//! S ≥ 1024 (emulated), where every edge of the driver's loops is taken (a request of
//! one sector never takes the back edge of the per-sector fill and check); other runs
//! carry no oracle in that mode.

use contract::abi::blk::{ATA_COMMAND, ATA_DATA, SECTOR_SIZE};
use contract::abi::hypercall::Hypercall;
use contract::abi::port;
use contract::{CountKey, ExitKind, Mode, Oracle};

use crate::blk::batches;
use crate::workloads::Params;

fn device(o: Oracle, prefix: &str, notify: &str, notifications: u64, p: &Params) -> Oracle {
    let bytes = p.n * p.s;
    let key = |name: &str| CountKey::Device(format!("{prefix}:{name}"));
    o.expect(key(notify), notifications)
        .expect(key("requests"), 2 * p.n)
        .expect(key("bytes_read"), bytes)
        .expect(key("bytes_written"), bytes)
        .expect(key("io_errors"), 0)
}

fn traps(list: &[(&str, u64)], translate: u64) -> Oracle {
    let total: u64 = list.iter().map(|(_, n)| n).sum::<u64>() + translate;
    list.iter().fold(
        Oracle::default().expect(CountKey::Exits(ExitKind::Trap), total),
        |o, (name, n)| o.expect(CountKey::Traps((*name).to_string()), *n),
    )
}

/// Binary translation's counters for one image shape, measured once (they depend only
/// on the code, once every loop edge is taken).
fn translation(o: Oracle, blocks: u64, copied: u64, callout_sites: u64, chains: u64) -> Oracle {
    [
        ("blocks", blocks),
        ("copied", copied),
        ("inline", 0),
        ("callout sites", callout_sites),
        ("branches", blocks - 1),
        ("chains", chains),
        ("lookups", 0),
        ("lookup misses", 0),
        ("invalidations", 0),
        ("flushes", 0),
    ]
    .into_iter()
    .fold(o, |o, (name, n)| {
        o.expect(CountKey::Translation(name.into()), n)
    })
    .expect(CountKey::Traps("translate".into()), chains)
}

/// Translation shape of blk-virtio: (blocks, copied, callout sites, chains), for
/// requests of three sectors or more.
const VIRTIO_TC: (u64, u64, u64, u64) = (34, 299, 2, 43);
/// Translation shape of blk-emulated, for requests of three sectors or more.
const EMULATED_TC: (u64, u64, u64, u64) = (26, 147, 28, 31);

/// The translation shape for requests of `c` sectors: the fill loop is entered at its
/// first sector inside the block before it, so the loop's own block (from the second
/// sector) jumps back to itself only from a third sector on: one chain fewer at c = 2.
fn shape(tc: (u64, u64, u64, u64), c: u64) -> (u64, u64, u64, u64) {
    (tc.0, tc.1, tc.2, tc.3 - u64::from(c == 2))
}

pub(super) fn oracle(mode: Mode, workload: &str, p: &Params) -> Option<Oracle> {
    let n = p.n;
    match workload {
        "blk-virtio" => {
            let b = batches(p);
            let mmio = Oracle::default()
                .expect(CountKey::Exits(ExitKind::MmioRead), 1)
                .expect(CountKey::Exits(ExitKind::MmioWrite), 5 + 2 * b);
            let o = match mode {
                Mode::HwAssisted => mmio
                    .expect(CountKey::Exits(ExitKind::IoOut), 1)
                    .expect(CountKey::PortWrites(port::EXIT), 1),
                Mode::TrapEmulate => merge(mmio, traps(&[("out", 1)], 0)),
                Mode::BinaryTranslation => {
                    if !(n > p.q && p.q >= 3 && p.s >= 2 * SECTOR_SIZE) {
                        return None;
                    }
                    let (bl, co, cs, ch) = shape(VIRTIO_TC, p.s / SECTOR_SIZE);
                    translation(merge(mmio, traps(&[("out", 1)], ch)), bl, co, cs, ch)
                }
                Mode::Paravirt => mmio
                    .expect(CountKey::Exits(ExitKind::Hypercall), 1)
                    .expect(CountKey::Hypercalls(Hypercall::Exit.name().into()), 1),
            };
            // Polled: no completion interrupt (an irqfd backend says otherwise).
            let o = o.expect(CountKey::Device("virtio:interrupts".into()), 0);
            Some(device(o, "virtio", "notifications", 2 * b, p))
        }
        "blk-emulated" => {
            let c = p.s / SECTOR_SIZE;
            let (outs, ins) = (12 * n, 3 * n * c + n);
            let list = [
                ("out", outs + 1),
                ("in", 2 * n * c + n),
                ("rep outsw", n * c),
                ("rep insw", n * c),
            ];
            let ports = Oracle::default()
                .expect(CountKey::Exits(ExitKind::IoIn), ins)
                .expect(CountKey::PortWrites(ATA_DATA), n * c * 256)
                .expect(CountKey::PortReads(ATA_DATA), n * c)
                .expect(CountKey::PortWrites(ATA_COMMAND), 2 * n)
                .expect(CountKey::PortReads(ATA_COMMAND), 2 * n * c + n);
            let o = match mode {
                Mode::HwAssisted => ports
                    .expect(CountKey::Exits(ExitKind::IoOut), outs + 1 + n * c * 256)
                    .expect(CountKey::PortWrites(port::EXIT), 1),
                Mode::TrapEmulate => traps(&list, 0),
                Mode::BinaryTranslation => {
                    if n < 2 || c < 2 {
                        return None;
                    }
                    let (bl, co, cs, ch) = shape(EMULATED_TC, c);
                    translation(traps(&list, ch), bl, co, cs, ch)
                }
                Mode::Paravirt => ports
                    .expect(CountKey::Exits(ExitKind::IoOut), outs + n * c * 256)
                    .expect(CountKey::Exits(ExitKind::Hypercall), 1)
                    .expect(CountKey::Hypercalls(Hypercall::Exit.name().into()), 1),
            };
            Some(device(o, "ata", "commands", 2 * n, p))
        }
        _ => None,
    }
}

fn merge(a: Oracle, b: Oracle) -> Oracle {
    b.counts.into_iter().fold(a, |o, (k, v)| o.expect(k, v))
}
