//! Memory overcommit, as data: the balloon device's guest ABI, what a run asks of the
//! machine's memory (page sharing, a swap budget), and what the machine measured
//! (balloon, host swapping, resident pages).
//!
//! The balloon device is two ports every machine has, open to CPL 3 in the TSS I/O
//! bitmap (with the three after each, as a 4-byte `out` needs) so that every mode reaches them the same way: `out` of a page frame number
//! (PFN, 32 bits in EAX) to [`port::INFLATE`] gives that page of guest RAM back to the
//! host, to [`port::DEFLATE`] takes it back (it then reads as zeros). A request for a
//! page outside the VM's RAM, or one already in (or not in) the balloon, is refused and
//! counted; the guest goes on.
//!
//! ```
//! use contract::overcommit::{port, MemoryOptions};
//! assert_eq!((port::INFLATE, port::DEFLATE), (0xE0, 0xE4));
//! assert!(!MemoryOptions::default().any());
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::LatencySummary;

/// The balloon device's ports.
pub mod port {
    /// `out` a PFN (EAX): give that page back to the host.
    pub const INFLATE: u16 = 0xE0;
    /// `out` a PFN (EAX): take a page back from the balloon (it reads as zeros).
    pub const DEFLATE: u16 = 0xE4;
    /// Ports opened to CPL 3: a 4-byte `out` needs all four of its ports open in the
    /// TSS I/O bitmap.
    pub const OPEN: std::ops::Range<u16> = INFLATE..DEFLATE + 4;
}

/// What a run asks of the machine's memory besides the balloon (which is always there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryOptions {
    /// Mark guest RAM `MADV_MERGEABLE` so Linux KSM may share identical pages (KSM itself
    /// is switched on for the whole host by the run of several VMs).
    #[serde(default)]
    pub mergeable: bool,
    /// Host swapping: at most this many guest RAM pages resident; the VMM evicts the
    /// oldest to a swap file and brings them back on touch through `userfaultfd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_budget_pages: Option<u64>,
}

impl MemoryOptions {
    /// Whether any mechanism besides the balloon is asked for.
    pub fn any(&self) -> bool {
        self.mergeable || self.swap_budget_pages.is_some()
    }
}

/// What the balloon did in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonStats {
    /// Pages given back to the host (inflate requests carried out).
    pub inflated: u64,
    /// Pages taken back (deflate requests carried out).
    pub deflated: u64,
    /// Pages in the balloon when the run ended.
    pub size: u64,
    /// The most pages the balloon held at once.
    pub peak: u64,
    /// Requests refused, by reason (`outside RAM`, `already inflated`, `not inflated`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
    /// Resident guest RAM pages (`mincore`) just before the first inflation.
    pub resident_before: Option<u64>,
    /// Resident guest RAM pages when the balloon was at its peak.
    pub resident_at_peak: Option<u64>,
}

impl BalloonStats {
    /// Requests refused, all reasons together.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// How much resident memory fell while the balloon inflated, in pages.
    pub fn resident_drop(&self) -> Option<u64> {
        Some(self.resident_before?.saturating_sub(self.resident_at_peak?))
    }
}

/// What host swapping did in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwapStats {
    /// The budget of resident pages.
    pub budget_pages: u64,
    /// Pages brought back from the swap file (`UFFDIO_COPY` of their saved contents).
    pub page_ins: u64,
    /// Pages written to the swap file and dropped (`MADV_DONTNEED`).
    pub page_outs: u64,
    /// First touches of pages never written before (filled with zeros).
    pub zero_fills: u64,
    /// The most guest RAM pages resident at once (never above the budget).
    pub max_resident: u64,
    /// Time to bring one page back, from the fault read to the copy done, in ns.
    pub page_in_ns: LatencySummary,
    /// Time to evict one page (write, drop), in ns.
    pub page_out_ns: LatencySummary,
}

/// The memory of one run, as the machine measured it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// Guest RAM in pages.
    pub ram_pages: u64,
    /// Resident guest RAM pages (`mincore`) when the run ended.
    pub resident_end: u64,
    /// The balloon.
    pub balloon: BalloonStats,
    /// Whether guest RAM was marked `MADV_MERGEABLE` (`None`: not asked for; `Some(false)`:
    /// asked for, refused by the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mergeable: Option<bool>,
    /// Host swapping, when asked for and available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStats>,
    /// Why a mechanism asked for is not in effect on this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// The memory of a run of several VMs, host-wide.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMemory {
    /// Whether KSM was asked for, and whether it ran (`None`: not asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm: Option<bool>,
    /// The most pages KSM shared at once during the run (`pages_shared`, from KSM's
    /// counters) and the sites sharing them then (`pages_sharing`: the pages saved).
    #[serde(default)]
    pub ksm_peak: (u64, u64),
    /// Each VM's budget of resident pages (host swapping), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_pages_per_vm: Option<u64>,
    /// Resident memory over time.
    pub samples: Vec<MemorySample>,
    /// Mechanisms asked for that the host did not allow, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// One sample of the host's memory during a run of several VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Since the start of the run, in ms.
    pub t_ms: u64,
    /// The process's resident anonymous memory (`RssAnon`), in KiB: every guest's RAM.
    pub rss_anon_kib: u64,
    /// KSM's `pages_shared` then.
    pub pages_shared: u64,
    /// KSM's `pages_sharing` then.
    pub pages_sharing: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_drop_needs_both_samples() {
        let mut b = BalloonStats::default();
        assert_eq!(b.resident_drop(), None);
        b.resident_before = Some(300);
        b.resident_at_peak = Some(200);
        assert_eq!(b.resident_drop(), Some(100));
        b.refused.insert("outside RAM".into(), 3);
        b.refused.insert("already inflated".into(), 2);
        assert_eq!(b.refused_total(), 5);
    }

    #[test]
    fn options_round_trip() {
        let o = MemoryOptions {
            mergeable: true,
            swap_budget_pages: Some(64),
        };
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<MemoryOptions>(&s).unwrap(), o);
        assert_eq!(
            serde_json::from_str::<MemoryOptions>("{}").unwrap(),
            MemoryOptions::default()
        );
    }
}
