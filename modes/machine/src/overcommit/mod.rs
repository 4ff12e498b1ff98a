//! Memory overcommit with the real mechanisms, applied to a machine's guest RAM through
//! one hook ([`MemoryManager`], built right after the RAM is mapped and before anything
//! touches it):
//!
//! - [`balloon`]: the guest gives pages back through the balloon ports
//!   ([`contract::overcommit::port`]) and the machine returns them to the host with
//!   `madvise(MADV_DONTNEED)` — guest RAM is private anonymous memory, so the pages are
//!   freed and read as zeros afterwards;
//! - [`ksm`]: guest RAM marked `MADV_MERGEABLE`, KSM switched on for a run of several VMs
//!   and its own counters read;
//! - [`swap`]: over a budget of resident pages, pages go to a swap file and come back on
//!   touch through `userfaultfd`.
//!
//! [`resident`] measures what all three change: resident pages of the mapping.
//!
//! ```
//! use machine::overcommit::balloon::{Balloon, Refusal};
//! let mut b = Balloon::new(4096);
//! assert_eq!(b.check_inflate(5000), Err(Refusal::OutsideRam));
//! b.check_inflate(7).unwrap();
//! b.inflated(7);
//! assert_eq!(b.check_inflate(7), Err(Refusal::AlreadyInflated));
//! ```

pub mod balloon;
pub mod ksm;
pub mod probe;
pub mod resident;
pub mod swap;

use std::sync::Mutex;

use contract::abi::PAGE_SIZE;
use contract::overcommit::{port, MemoryOptions, MemoryRecord};
use contract::{Error, Result};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::devices::le_value;
use crate::exit_loop::Action;
use balloon::{Balloon, Refusal};
use swap::Swapper;

/// The memory mechanisms of one machine, over its guest RAM mapping.
#[derive(Debug)]
pub struct MemoryManager {
    /// Host address of guest RAM (page-aligned), as a number: the mapping belongs to the
    /// machine's guest memory, which outlives this.
    base: usize,
    len: usize,
    balloon: Mutex<Balloon>,
    swap: Option<Swapper>,
    mergeable: Option<bool>,
    unavailable: Vec<String>,
    /// How the balloon frees a page: `MADV_DONTNEED` (private RAM) or `MADV_REMOVE`.
    release: libc::c_int,
}

impl MemoryManager {
    /// Applies `opts` to the `ram_size` bytes of guest RAM at guest address 0 of `mem`.
    /// A mechanism the host refuses is recorded as unavailable, never faked; only a
    /// mapping that is not there is an error.
    ///
    /// `shared`: guest RAM is a memfd mapped shared (a driver domain maps it too). The
    /// balloon then frees pages with `MADV_REMOVE` (dropping the mapping alone would leave
    /// them in the file), and page sharing and host swapping, which work on private
    /// anonymous memory, are reported unavailable.
    pub fn new(
        mem: &GuestMemoryMmap,
        ram_size: u64,
        opts: &MemoryOptions,
        shared: bool,
    ) -> Result<Self> {
        let base = mem
            .get_host_address(GuestAddress(0))
            .map_err(|e| Error::GuestMemoryAlloc(e.to_string()))?;
        let len = ram_size as usize;
        let mut unavailable = Vec::new();
        const SHARED: &str = "guest RAM is shared with a driver domain";
        if shared && opts.mergeable {
            unavailable.push(format!(
                "page sharing: {SHARED} (KSM merges private anonymous pages only)"
            ));
        }
        if shared && opts.swap_budget_pages.is_some() {
            unavailable.push(format!(
                "host swapping: {SHARED} (the swapper works on private anonymous memory)"
            ));
        }
        let mergeable = (opts.mergeable && !shared).then(|| match ksm::mark_mergeable(base, len) {
            Ok(()) => true,
            Err(e) => {
                unavailable.push(format!("page sharing: MADV_MERGEABLE refused ({e})"));
                false
            }
        });
        let swap = match opts.swap_budget_pages.filter(|_| !shared) {
            None => None,
            Some(budget) => match swap::probe()
                .map_err(swap::SwapError::Unavailable)
                .and_then(|()| Swapper::start(base, len, budget))
            {
                Ok(s) => {
                    // Swapping stays correct when KVM's own writes bypass userfaultfd
                    // (only pages the handler filled are evicted), but it cannot see the
                    // guest's touches: the record says so.
                    if let Err(e) = probe::kvm_faults_through_userfaultfd_outside_probe() {
                        unavailable.push(format!("host swapping: {e}"));
                    }
                    Some(s)
                }
                Err(e) => {
                    unavailable.push(format!("host swapping: {e}"));
                    None
                }
            },
        };
        Ok(MemoryManager {
            base: base as usize,
            len,
            balloon: Mutex::new(Balloon::new(ram_size / PAGE_SIZE)),
            swap,
            mergeable,
            unavailable,
            release: if shared {
                libc::MADV_REMOVE
            } else {
                libc::MADV_DONTNEED
            },
        })
    }

    /// Whether `port` is one of the balloon's.
    pub fn claims(port: u16) -> bool {
        port == port::INFLATE || port == port::DEFLATE
    }

    /// Resident guest RAM pages now (`None` if `mincore` fails).
    pub fn resident(&self) -> Option<u64> {
        resident::resident_pages(self.base as *const u8, self.len).ok()
    }

    /// An `out` to a balloon port: the PFN is in the data. Refused requests are counted;
    /// the guest goes on either way.
    pub fn io_out(&self, p: u16, data: &[u8]) -> Action {
        let pfn = le_value(data);
        let mut b = self.balloon.lock().unwrap_or_else(|p| p.into_inner());
        let r = if p == port::INFLATE {
            self.inflate(&mut b, pfn)
        } else {
            b.deflate(pfn)
        };
        if let Err(why) = r {
            b.refused(why);
        }
        Action::Continue
    }

    fn inflate(&self, b: &mut Balloon, pfn: u64) -> std::result::Result<(), Refusal> {
        b.check_inflate(pfn)?;
        if b.is_empty() && b.stats().resident_before.is_none() {
            b.stats_mut().resident_before = self.resident();
        }
        if let Some(s) = &self.swap {
            // Before the drop: the handler must never read a page that is gone.
            s.forget(pfn);
        }
        let host = self.base + (pfn * PAGE_SIZE) as usize;
        // SAFETY: `pfn` is below the RAM's page count (checked), so the page lies inside
        // the guest RAM mapping: private anonymous memory (MADV_DONTNEED) or a shared
        // memfd (MADV_REMOVE punches the page out of the file). Either way the page is
        // freed and the guest reads zeros there afterwards. No reference into guest
        // memory is held across an exit.
        let r =
            unsafe { libc::madvise(host as *mut libc::c_void, PAGE_SIZE as usize, self.release) };
        if r != 0 {
            tracing::warn!(
                "balloon: madvise({}) on page {pfn:#x}: {}",
                self.release,
                std::io::Error::last_os_error()
            );
        }
        let peak = b.stats().peak;
        b.inflated(pfn);
        if b.size() > peak {
            b.stats_mut().resident_at_peak = self.resident();
        }
        Ok(())
    }

    /// What the mechanisms did, with the resident pages now.
    pub fn record(&self) -> MemoryRecord {
        let b = self.balloon.lock().unwrap_or_else(|p| p.into_inner());
        MemoryRecord {
            ram_pages: (self.len as u64) / PAGE_SIZE,
            resident_end: self.resident().unwrap_or(0),
            balloon: b.stats().clone(),
            mergeable: self.mergeable,
            swap: self.swap.as_ref().map(Swapper::stats),
            unavailable: self.unavailable.clone(),
        }
    }
}
