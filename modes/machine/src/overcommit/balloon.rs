//! The balloon device's bookkeeping: which pages of guest RAM the guest has given back,
//! and what it asked that was refused. The machine drops the pages
//! ([`super::MemoryManager`]); this state machine decides which requests are valid.

use std::collections::BTreeSet;

use contract::overcommit::BalloonStats;

/// Why a balloon request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The PFN is not a page of this VM's RAM (the monitor's region, another VM's
    /// memory, the host's: nothing outside RAM is the guest's to give).
    #[error("outside RAM")]
    OutsideRam,
    /// Inflating a page already in the balloon.
    #[error("already inflated")]
    AlreadyInflated,
    /// Deflating a page not in the balloon.
    #[error("not inflated")]
    NotInflated,
}

/// The pages in the balloon.
#[derive(Debug, Default)]
pub struct Balloon {
    ram_pages: u64,
    pages: BTreeSet<u64>,
    stats: BalloonStats,
}

impl Balloon {
    /// A balloon for a guest of `ram_pages` pages.
    pub fn new(ram_pages: u64) -> Self {
        Balloon {
            ram_pages,
            ..Default::default()
        }
    }

    /// Whether `pfn` may go into the balloon now.
    pub fn check_inflate(&self, pfn: u64) -> Result<(), Refusal> {
        if pfn >= self.ram_pages {
            Err(Refusal::OutsideRam)
        } else if self.pages.contains(&pfn) {
            Err(Refusal::AlreadyInflated)
        } else {
            Ok(())
        }
    }

    /// Puts `pfn` in the balloon (after [`Balloon::check_inflate`] and the drop).
    pub fn inflated(&mut self, pfn: u64) {
        if self.pages.insert(pfn) {
            self.stats.inflated += 1;
            self.stats.size = self.pages.len() as u64;
            self.stats.peak = self.stats.peak.max(self.stats.size);
        }
    }

    /// Takes `pfn` out of the balloon.
    pub fn deflate(&mut self, pfn: u64) -> Result<(), Refusal> {
        if pfn >= self.ram_pages {
            return Err(Refusal::OutsideRam);
        }
        if !self.pages.remove(&pfn) {
            return Err(Refusal::NotInflated);
        }
        self.stats.deflated += 1;
        self.stats.size = self.pages.len() as u64;
        Ok(())
    }

    /// Counts a refused request.
    pub fn refused(&mut self, why: Refusal) {
        *self.stats.refused.entry(why.to_string()).or_default() += 1;
    }

    /// Whether the balloon is empty.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Pages in the balloon now.
    pub fn size(&self) -> u64 {
        self.pages.len() as u64
    }

    /// What it did so far (the resident samples are the machine's to fill in).
    pub fn stats(&self) -> &BalloonStats {
        &self.stats
    }

    /// The statistics, for the machine to add its resident samples.
    pub fn stats_mut(&mut self) -> &mut BalloonStats {
        &mut self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflate_deflate_and_refusals() {
        let mut b = Balloon::new(16);
        for pfn in [3, 4, 5] {
            b.check_inflate(pfn).unwrap();
            b.inflated(pfn);
        }
        assert_eq!(b.check_inflate(4), Err(Refusal::AlreadyInflated));
        assert_eq!(b.check_inflate(16), Err(Refusal::OutsideRam));
        assert_eq!(
            b.check_inflate(u64::from(u32::MAX)),
            Err(Refusal::OutsideRam)
        );
        assert_eq!(b.deflate(7), Err(Refusal::NotInflated));
        assert_eq!(b.deflate(99), Err(Refusal::OutsideRam));
        b.deflate(4).unwrap();
        assert_eq!(b.deflate(4), Err(Refusal::NotInflated));
        b.refused(Refusal::OutsideRam);
        b.refused(Refusal::OutsideRam);
        b.refused(Refusal::NotInflated);
        let s = b.stats();
        assert_eq!((s.inflated, s.deflated, s.size, s.peak), (3, 1, 2, 3));
        assert_eq!(s.refused["outside RAM"], 2);
        assert_eq!(s.refused["not inflated"], 1);
        assert_eq!(s.refused_total(), 3);
    }
}
