//! The fuzzed hypervisor on its guest memory, and the guest's side of that memory: what
//! it may write, and snapshots of what it may not.

use contract::abi::{layout, PAGE_SIZE};
use contract::Limits;
use machine::setup::{pte, write_page_tables};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::RAM;
use crate::hypercalls::{CpuidLeaf, CpuidTable, Hypervisor};

/// A hypervisor on fresh guest memory with the machine's page tables, as the engine
/// sets it up.
pub(super) fn setup() -> (Hypervisor, GuestMemoryMmap) {
    let mem = machine::guest_memory(RAM).expect("guest memory");
    write_page_tables(&mem, RAM).expect("page tables");
    let leaf = CpuidLeaf {
        function: 0,
        index: 0,
        indexed: false,
        regs: [0xD, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
    };
    let mut hv = Hypervisor::new(RAM, &Limits::default(), CpuidTable(vec![leaf]));
    hv.setup(&mem).expect("setup");
    ::monitor::install(&mem).expect("monitor");
    (hv, mem)
}

/// Writes `bytes` at `at` as the guest can: only RAM outside pinned page tables.
pub(super) fn guest_write(hv: &Hypervisor, mem: &GuestMemoryMmap, at: u64, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        let Some(a) = at.checked_add(done as u64) else {
            return;
        };
        // The rest of this page, at most.
        let n = ((PAGE_SIZE - a % PAGE_SIZE) as usize).min(bytes.len() - done);
        let page = a & !(PAGE_SIZE - 1);
        // Direct paging's tables are supervisor-only in the VMM's map: the guest cannot
        // write them either.
        if a < RAM && !hv.types.is_pinned(page) && hv.direct.level_of(page).is_none() {
            let end = (done + n).min(done + (RAM - a) as usize);
            let _ = mem.write_slice(&bytes[done..end], GuestAddress(a));
        }
        done += n;
    }
}

pub(super) fn guest_write_u64s(hv: &Hypervisor, mem: &GuestMemoryMmap, at: u64, words: &[u64]) {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    guest_write(hv, mem, at, &bytes);
}

pub(super) fn read_u64(mem: &GuestMemoryMmap, at: u64) -> u64 {
    mem.read_obj(GuestAddress(at)).expect("backed")
}

/// The whole monitor's region in use, and every pinned page, before a call.
pub(super) struct Snapshot {
    pub(super) monitor: Vec<u8>,
    pub(super) pinned: Vec<(u64, Vec<u8>)>,
}

pub(super) fn snapshot(hv: &Hypervisor, mem: &GuestMemoryMmap) -> Snapshot {
    let page = |at: u64, len: u64| {
        let mut buf = vec![0u8; len as usize];
        mem.read_slice(&mut buf, GuestAddress(at)).expect("backed");
        buf
    };
    Snapshot {
        monitor: page(
            layout::MONITOR_BASE,
            layout::MONITOR_END - layout::MONITOR_BASE,
        ),
        pinned: hv
            .types
            .pinned
            .iter()
            .map(|&p| (p, page(p, PAGE_SIZE)))
            .collect(),
    }
}

/// The 512 entries of the page table at `at`.
pub(super) fn table(mem: &GuestMemoryMmap, at: u64) -> Vec<u64> {
    let mut raw = vec![0u8; PAGE_SIZE as usize];
    mem.read_slice(&mut raw, GuestAddress(at)).expect("backed");
    raw.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Whether every present entry of the root at `root` repeats the VMM's (up to A/D).
pub(super) fn maps_nothing_new(mem: &GuestMemoryMmap, root: u64) -> bool {
    let vmm = table(mem, layout::PML4);
    table(mem, root)
        .iter()
        .zip(&vmm)
        .all(|(e, v)| e & pte::P == 0 || (e | 0x60) == (v | 0x60))
}
