//! Counters and latency histograms, kept in constant memory however many exits a run makes.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::record::{ExitKind, PortCounts};

/// Highest latency a histogram tracks exactly (60 s in ns); larger values are clamped.
const MAX_TRACKABLE_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds (HDR, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // 1 ns .. 60 s at 3 significant digits: about 30 KiB, fixed.
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3)
            .expect("constant histogram bounds are valid");
        Self { hist }
    }

    /// Records one observation.
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(1, MAX_TRACKABLE_NS));
    }

    /// Number of observations.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Adds every observation of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// The quantiles reports print.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        LatencySummary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean(),
            buckets: h
                .iter_log(1, 2.0)
                .filter(|v| v.count_since_last_iteration() > 0)
                .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
                .collect(),
        }
    }
}

/// Quantiles of a latency histogram, in ns, plus its log₂ buckets for plotting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Observations.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// (upper bound in ns, count) for each non-empty power-of-two bucket.
    pub buckets: Vec<(u64, u64)>,
}

/// Per-run exit metrics: counts and two latency histograms per exit kind.
#[derive(Debug, Default)]
pub struct ExitMetrics {
    total: u64,
    counts: BTreeMap<ExitKind, u64>,
    ports: BTreeMap<u16, PortCounts>,
    round_trip: BTreeMap<ExitKind, Latency>,
    handler: BTreeMap<ExitKind, Latency>,
}

impl ExitMetrics {
    /// Counts one exit of `kind` that took `round_trip_ns` in KVM_RUN and `handler_ns` in
    /// the VMM's handler.
    pub fn record(&mut self, kind: ExitKind, round_trip_ns: u64, handler_ns: u64) {
        self.total += 1;
        *self.counts.entry(kind).or_default() += 1;
        self.round_trip
            .entry(kind)
            .or_default()
            .record(round_trip_ns);
        self.handler.entry(kind).or_default().record(handler_ns);
    }

    /// Counts one I/O exit on `port`.
    pub fn record_port(&mut self, port: u16, write: bool) {
        let p = self.ports.entry(port).or_default();
        if write {
            p.writes += 1;
        } else {
            p.reads += 1;
        }
    }

    /// Exits of one kind so far.
    pub fn count(&self, kind: ExitKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// All exits so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts by kind.
    pub fn counts(&self) -> &BTreeMap<ExitKind, u64> {
        &self.counts
    }

    /// Counts by port.
    pub fn ports(&self) -> &BTreeMap<u16, PortCounts> {
        &self.ports
    }

    /// Round-trip latency summaries by kind.
    pub fn round_trip_summaries(&self) -> BTreeMap<ExitKind, LatencySummary> {
        self.round_trip
            .iter()
            .map(|(k, h)| (*k, h.summary()))
            .collect()
    }

    /// Handler latency summaries by kind.
    pub fn handler_summaries(&self) -> BTreeMap<ExitKind, LatencySummary> {
        self.handler
            .iter()
            .map(|(k, h)| (*k, h.summary()))
            .collect()
    }
}

/// Named event counters with a latency histogram each (traps by mnemonic, hypercalls by
/// name).
#[derive(Debug, Default)]
pub struct NamedCounters {
    counts: BTreeMap<String, u64>,
    latency: BTreeMap<String, Latency>,
}

impl NamedCounters {
    /// Counts one event named `name` that took `ns`.
    pub fn record(&mut self, name: &str, ns: u64) {
        match self.counts.get_mut(name) {
            Some(c) => *c += 1,
            None => {
                self.counts.insert(name.to_string(), 1);
            }
        }
        match self.latency.get_mut(name) {
            Some(h) => h.record(ns),
            None => {
                let mut h = Latency::new();
                h.record(ns);
                self.latency.insert(name.to_string(), h);
            }
        }
    }

    /// Counts by name.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Latency summaries by name.
    pub fn summaries(&self) -> BTreeMap<String, LatencySummary> {
        self.latency
            .iter()
            .map(|(k, h)| (k.clone(), h.summary()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_exact_for_small_sets() {
        let mut l = Latency::new();
        for ns in [100, 200, 300, 400, 1000] {
            l.record(ns);
        }
        let s = l.summary();
        assert_eq!(s.count, 5);
        assert_eq!(s.min, 100);
        assert_eq!(s.p50, 300);
        assert_eq!(s.max, 1000);
        assert_eq!(s.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
    }

    #[test]
    fn latency_memory_is_constant() {
        let mut l = Latency::new();
        let before = format!("{:?}", l.hist.distinct_values());
        for i in 0..100_000u64 {
            l.record(i * 37 % 5_000_000);
        }
        assert_eq!(format!("{:?}", l.hist.distinct_values()), before);
        assert_eq!(l.len(), 100_000);
    }

    #[test]
    fn exit_metrics_count_by_kind_and_port() {
        let mut m = ExitMetrics::default();
        m.record(ExitKind::IoOut, 5000, 100);
        m.record(ExitKind::IoOut, 6000, 120);
        m.record(ExitKind::Halt, 9000, 10);
        m.record_port(0xE9, true);
        m.record_port(0xE9, true);
        m.record_port(0xF0, false);
        assert_eq!(m.count(ExitKind::IoOut), 2);
        assert_eq!(m.count(ExitKind::MmioRead), 0);
        assert_eq!(m.total(), 3);
        assert_eq!(
            m.ports()[&0xE9],
            PortCounts {
                reads: 0,
                writes: 2
            }
        );
        assert_eq!(
            m.ports()[&0xF0],
            PortCounts {
                reads: 1,
                writes: 0
            }
        );
        assert_eq!(m.round_trip_summaries()[&ExitKind::IoOut].count, 2);
    }

    #[test]
    fn named_counters() {
        let mut n = NamedCounters::default();
        n.record("cli", 10);
        n.record("sti", 10);
        n.record("cli", 30);
        assert_eq!(n.counts()["cli"], 2);
        assert_eq!(n.counts()["sti"], 1);
        assert_eq!(n.summaries()["cli"].max, 30);
    }
}
