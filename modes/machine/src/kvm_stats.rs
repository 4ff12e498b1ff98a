//! KVM's per-vCPU binary statistics (`KVM_GET_STATS_FD`), which kvm-ioctls does not wrap.
//!
//! The header and descriptors are read once; each snapshot is one `pread` of the data
//! block. A run records the delta of every cumulative statistic.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{
    kvm_stats_header, KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_MASK, KVM_STATS_TYPE_PEAK,
};
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

use contract::{Error, Result};

ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

/// Size of the fixed part of a `kvm_stats_desc` (the name follows it).
const DESC_FIXED_SIZE: usize = 16;

/// How a statistic behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// Only grows: the delta over a run is meaningful.
    Cumulative,
    /// The largest value seen.
    Peak,
    /// A current value or a histogram.
    Other,
}

/// One statistic's descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatDesc {
    /// Name as KVM gives it (`exits`, `io_exits`, `insn_emulation`, …).
    pub name: String,
    /// How it behaves.
    pub kind: StatKind,
    /// Offset of its first u64 in the data block, in bytes.
    pub offset: usize,
    /// Number of u64 values (1 except for histograms).
    pub size: usize,
}

/// Reads one vCPU's binary statistics.
#[derive(Debug)]
pub struct VcpuStats {
    file: File,
    data_offset: u64,
    data_len: usize,
    descs: Vec<StatDesc>,
}

/// Values of the single-valued statistics at one moment, by name.
pub type StatsSnapshot = BTreeMap<String, u64>;

impl VcpuStats {
    /// Opens the statistics of the vCPU behind `vcpu_fd`.
    pub fn open(vcpu_fd: &impl AsRawFd) -> Result<Self> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor or
        // -1; `vcpu_fd` is a valid open vCPU descriptor for the duration of the call.
        let fd = unsafe { ioctl(vcpu_fd, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(Error::KvmStats(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel, is valid and owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut raw = [0u8; std::mem::size_of::<kvm_stats_header>()];
        file.read_exact_at(&mut raw, 0).map_err(Error::KvmStats)?;
        let word = |i: usize| u32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().unwrap());
        let (name_size, num_desc, desc_offset, data_offset) = (
            word(1) as usize,
            word(2) as usize,
            word(4) as u64,
            word(5) as u64,
        );
        let desc_size = DESC_FIXED_SIZE + name_size;
        let mut block = vec![0u8; desc_size * num_desc];
        file.read_exact_at(&mut block, desc_offset)
            .map_err(Error::KvmStats)?;
        let descs = parse_descriptors(&block, num_desc, name_size);
        let data_len = descs
            .iter()
            .map(|d| d.offset + d.size * 8)
            .max()
            .unwrap_or(0);
        Ok(Self {
            file,
            data_offset,
            data_len,
            descs,
        })
    }

    /// The descriptors, in KVM's order.
    pub fn descriptors(&self) -> &[StatDesc] {
        &self.descs
    }

    /// Reads every single-valued statistic now.
    pub fn snapshot(&self) -> Result<StatsSnapshot> {
        let mut data = vec![0u8; self.data_len];
        self.file
            .read_exact_at(&mut data, self.data_offset)
            .map_err(Error::KvmStats)?;
        Ok(self
            .descs
            .iter()
            .filter(|d| d.size == 1 && d.kind != StatKind::Other)
            .map(|d| {
                let v = u64::from_le_bytes(data[d.offset..d.offset + 8].try_into().unwrap());
                (d.name.clone(), v)
            })
            .collect())
    }

    /// The growth of every cumulative statistic from `before` to `after`.
    pub fn delta(&self, before: &StatsSnapshot, after: &StatsSnapshot) -> BTreeMap<String, u64> {
        self.descs
            .iter()
            .filter(|d| d.kind == StatKind::Cumulative && d.size == 1)
            .filter_map(|d| {
                let (a, b) = (after.get(&d.name)?, before.get(&d.name)?);
                Some((d.name.clone(), a.saturating_sub(*b)))
            })
            .collect()
    }
}

/// Parses `num_desc` descriptors of `16 + name_size` bytes each.
fn parse_descriptors(block: &[u8], num_desc: usize, name_size: usize) -> Vec<StatDesc> {
    let desc_size = DESC_FIXED_SIZE + name_size;
    (0..num_desc)
        .filter_map(|i| {
            let d = block.get(i * desc_size..(i + 1) * desc_size)?;
            let flags = u32::from_le_bytes(d[0..4].try_into().ok()?);
            let size = u16::from_le_bytes(d[6..8].try_into().ok()?) as usize;
            let offset = u32::from_le_bytes(d[8..12].try_into().ok()?) as usize;
            let name_bytes = &d[DESC_FIXED_SIZE..];
            let end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = String::from_utf8_lossy(&name_bytes[..end]).into_owned();
            let kind = match flags & KVM_STATS_TYPE_MASK {
                KVM_STATS_TYPE_CUMULATIVE => StatKind::Cumulative,
                KVM_STATS_TYPE_PEAK => StatKind::Peak,
                _ => StatKind::Other,
            };
            Some(StatDesc {
                name,
                kind,
                offset,
                size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(flags: u32, size: u16, offset: u32, name: &str, name_size: usize) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&0i16.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&offset.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        d.extend_from_slice(&n);
        d
    }

    #[test]
    fn descriptors_parse() {
        let mut block = desc(KVM_STATS_TYPE_CUMULATIVE, 1, 0, "exits", 48);
        block.extend(desc(KVM_STATS_TYPE_PEAK, 1, 8, "halt_peak", 48));
        block.extend(desc(3, 32, 16, "halt_hist", 48));
        let d = parse_descriptors(&block, 3, 48);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0],
            StatDesc {
                name: "exits".into(),
                kind: StatKind::Cumulative,
                offset: 0,
                size: 1
            }
        );
        assert_eq!(d[1].kind, StatKind::Peak);
        assert_eq!(d[2].kind, StatKind::Other);
        assert_eq!(d[2].size, 32);
        // A truncated block yields only the complete descriptors.
        assert_eq!(parse_descriptors(&block[..70], 3, 48).len(), 1);
    }
}
