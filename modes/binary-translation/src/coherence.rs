//! The translation cache across address spaces.
//!
//! Blocks are keyed by guest-*virtual* RIP, and a guest CR3 load changes what a virtual
//! address means. Each guest page translated code was read from is remembered with the
//! frame it mapped to then; when the guest switches to another root, every such page is
//! walked again in the new tables, and the blocks of a page that now maps another frame
//! (or nothing) are thrown away. A guest kernel mapped alike in every address space (the
//! usual case) keeps all its translations across context switches; the check costs one
//! walk per translated page and switch, counted as `cr3 switches` and `cr3 invalidations`.

use std::collections::HashMap;

use emulator::paging::translate as walk;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::cache::Cache;

/// The frames of the translated pages, and what the switches cost.
#[derive(Debug, Default)]
pub(crate) struct Coherence {
    /// Guest page → the frame it mapped to when code was translated from it.
    frames: HashMap<u64, u64>,
    /// The root the frames were read (or last checked) under.
    root: u64,
    /// Root changes checked against the translated pages.
    pub switches: u64,
    /// Blocks thrown away because their page maps another frame under the new root.
    pub invalidations: u64,
}

/// The frame `page` maps to under `root`, if any.
fn frame_of(mem: &GuestMemoryMmap, root: u64, page: u64) -> Option<u64> {
    walk(root, page, |gpa| {
        mem.read_obj::<u64>(GuestAddress(gpa)).ok()
    })
    .ok()
    .map(|t| t.gpa & !0xFFF)
}

impl Coherence {
    /// Remembers the frames of freshly translated `pages`, read under `root`.
    pub fn translated(&mut self, mem: &GuestMemoryMmap, root: u64, pages: &[u64]) {
        self.root = root;
        for &page in pages {
            if let Some(frame) = frame_of(mem, root, page) {
                self.frames.insert(page, frame);
            }
        }
    }

    /// The walks now start at `root`: when it is another root, drops the translations of
    /// every page that maps another frame there.
    pub fn switched(
        &mut self,
        mem: &GuestMemoryMmap,
        cache: &mut Cache,
        root: u64,
    ) -> Result<(), String> {
        if root == self.root {
            return Ok(());
        }
        self.root = root;
        let pages: Vec<u64> = cache.pages().collect();
        if pages.is_empty() {
            return Ok(());
        }
        self.switches += 1;
        for page in pages {
            let now = frame_of(mem, root, page);
            if now.is_none() || now != self.frames.get(&page).copied() {
                let n = cache.invalidate_page(mem, page)?;
                // Not a write to guest code: counted here, not among the cache's own.
                cache.counters.invalidations -= n;
                self.invalidations += n;
                self.frames.remove(&page);
            }
        }
        Ok(())
    }
}
