//! The monitor's CPL 0 routine: how a deprivileged engine makes a privileged page-table
//! effect happen *inside* the guest, so that KVM sees it.
//!
//! Why not write the PTE from the VMM's side of guest memory? Because KVM may shadow the
//! guest's page tables (it does on backends without EPT/NPT): it learns about PTE changes
//! by write-protecting the page-table pages against *guest* writes. A store through the
//! VMM's mapping bypasses that, and the shadow keeps the old translation even across a
//! TLB flush. So the monitor does what Xen's ring-0 hypervisor did: the validated stores,
//! the `invlpg`s and the CR3 reload run at CPL 0, in the guest's address space.
//!
//! One routine serves both engines. The VMM fills its mailbox with a [`Request`] — N
//! `{ptr, val}` stores, then M addresses to `invlpg`, then an optional CR3 reload — and
//! enters it at CPL 0 on a stack that holds the fault stub's frame: two words the routine
//! drops (vector, error code), then the CPU's interrupt frame it returns through with
//! `add rsp, 16; iretq`. The routine has one entry point per common shape of request (one
//! store, one store and a CR3 reload, one `invlpg`, a CR3 reload: straight-line code) and a
//! general loop for the rest ([`Path`]); all read the same mailbox. [`prepare`] fills the
//! mailbox and says how to enter:
//!
//! * [`Resume::StubFrame`] (trap-and-emulate): the vCPU is in the fault stub, at its
//!   `out`, on the frame the CPU and the stub pushed; the VMM edits that frame as it likes
//!   and points RIP at the routine instead of the rest of the stub.
//! * [`Resume::Guest`] (paravirt, from a hypercall exit): the vCPU is in the guest at CPL
//!   3; [`prepare`] writes the same frame where the stub's would be, returning to the
//!   given guest context, and the VMM switches the vCPU to CPL 0 (kernel CS and SS) with
//!   the RIP, RSP and RFLAGS of the [`Entry`].
//!
//! Mailbox, at [`MAILBOX`] (the bottom of the monitor stack), 8-byte little-endian words:
//!
//! ```text
//! +0x00  N, the number of stores          +0x10  1 = reload CR3 at the end, else 0
//! +0x08  M, the number of invlpg          +0x18  the CR3 to load at the end (0: its own)
//! +0x20  N × {ptr, val}, then M × address
//! ```

use contract::abi::{layout, PAGE_SIZE};
use contract::x86::rflags;
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::frame::{self, Frame};

/// Where the routine's code lives: the page above the monitor stack.
pub const ROUTINE: u64 = layout::MONITOR_ROUTINE;
/// The routine's mailbox: the bottom of the monitor stack, which the stubs' frames (one
/// at a time, at its top) never reach.
pub const MAILBOX: u64 = layout::MONITOR_STACK_BOTTOM;
/// Offset in the mailbox of N, the number of stores.
pub const STORES: u64 = 0x00;
/// Offset in the mailbox of M, the number of addresses to `invlpg`.
pub const INVLPGS: u64 = 0x08;
/// Offset in the mailbox of the CR3-reload flag.
pub const RELOAD_CR3: u64 = 0x10;
/// Offset in the mailbox of the CR3 to load (0: reload the current one): how a shadow
/// MMU switches the real CR3 to another shadow root once the stores have built it.
pub const NEW_CR3: u64 = 0x18;
/// Offset in the mailbox of the entries: N `{ptr, val}` pairs, then M addresses.
pub const ENTRIES: u64 = 0x20;
/// Most stores one request carries: a whole `mmu_update` batch.
pub const MAX_STORES: usize = contract::abi::hypercall::MAX_BATCH as usize;
/// Most addresses one request invalidates.
pub const MAX_INVLPGS: usize = 64;
/// End (exclusive) of the mailbox when it is full.
pub const MAILBOX_END: u64 = MAILBOX + ENTRIES + MAX_STORES as u64 * 16 + MAX_INVLPGS as u64 * 8;
/// What the stub pushes above the CPU's frame, and the routine drops: vector, error code.
pub const STUB_WORDS: u64 = 16;
/// Where [`prepare`] builds the frame for [`Resume::Guest`]: where the CPU and the stub
/// put theirs for an event at CPL 3 (TSS.RSP0 is the top of the monitor stack).
pub const GUEST_FRAME: u64 = layout::MONITOR_STACK_TOP - frame::SIZE - STUB_WORDS;
/// Stack the routine may use below its frame: it pushes four registers at most.
const STACK_NEEDED: u64 = 4 * 8;

// The mailbox stays in the monitor stack, well below the frames at its top; the routine's
// code gets its page to itself, inside the supervisor-only part of the region.
const _: () = assert!(MAILBOX_END + 0x1000 <= GUEST_FRAME - STACK_NEEDED);
const _: () = assert!(layout::MONITOR_STACK_TOP <= ROUTINE);
const _: () = assert!(ROUTINE + PAGE_SIZE <= layout::MONITOR_PRIVATE_END);

/// What the routine does, in this order: the stores, the `invlpg`s, the CR3 reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `mov [ptr], val`, validated by the VMM beforehand, in order.
    pub stores: Vec<(u64, u64)>,
    /// Addresses to `invlpg` after the stores.
    pub invlpg: Vec<u64>,
    /// Reload CR3 with its own value at the end (flushes the non-global TLB).
    pub reload_cr3: bool,
    /// Load CR3 with this value at the end instead (a shadow root), after the stores.
    pub load_cr3: Option<u64>,
}

impl Request {
    /// Whether the request asks for nothing (the routine need not run).
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
            && self.invlpg.is_empty()
            && !self.reload_cr3
            && self.load_cr3.is_none()
    }

    /// The mailbox's bytes for this request, from [`MAILBOX`]; `Err` beyond its capacity.
    pub fn mailbox(&self) -> Result<Vec<u8>, String> {
        if self.stores.len() > MAX_STORES {
            return Err(format!(
                "{} PTE stores exceed the monitor's mailbox ({MAX_STORES})",
                self.stores.len()
            ));
        }
        if self.invlpg.len() > MAX_INVLPGS {
            return Err(format!(
                "{} invlpg addresses exceed the monitor's mailbox ({MAX_INVLPGS})",
                self.invlpg.len()
            ));
        }
        let header = [
            self.stores.len() as u64,
            self.invlpg.len() as u64,
            u64::from(self.reload_cr3 || self.load_cr3.is_some()),
            self.load_cr3.unwrap_or(0),
        ];
        let words = header
            .into_iter()
            .chain(self.stores.iter().flat_map(|&(ptr, val)| [ptr, val]))
            .chain(self.invlpg.iter().copied());
        Ok(words.flat_map(u64::to_le_bytes).collect())
    }
}

/// Where the routine returns to, which decides how the VMM enters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Through the fault stub's frame at `stub_rsp` (the stub's RSP at its `out`: vector,
    /// error code, then the CPU's frame), which the VMM may have edited. The vCPU is at
    /// CPL 0 already; only RIP changes.
    StubFrame {
        /// The stub's RSP.
        stub_rsp: u64,
    },
    /// To this guest context at CPL 3, through a frame [`prepare`] builds at
    /// [`GUEST_FRAME`].
    Guest(Frame),
}

/// How the VMM enters the routine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// RIP: the routine's entry point for the request ([`Path::of`]).
    pub rip: u64,
    /// RSP: the routine's frame (vector and error code words, then the interrupt frame).
    pub rsp: u64,
    /// RFLAGS to enter with, when they change: from a guest context, the guest's without
    /// TF (the routine's `iretq` restores the guest's own).
    pub rflags: Option<u64>,
    /// Whether the VMM must switch the vCPU to CPL 0 (kernel CS and SS) to enter.
    pub switch_to_cpl0: bool,
}

/// Room for each of the routine's entry points: the short paths take one slot each, the
/// general one the rest of the page.
pub const SLOT: u64 = 0x40;

/// Where the deprivileged engines point the real IA32_LSTAR: a byte of `int3` padding in
/// the routine's page (supervisor-only). A backend that leaves SYSCALL at CPL 3 (as
/// `kvm_pvm` does) faults fetching it, which the VMM recognises as the guest's SYSCALL;
/// one that enters CPL 0 there executes `int3`, a fault inside the monitor that ends the
/// run classified. Neither runs guest code at CPL 0.
pub const SYSCALL_LANDING: u64 = ROUTINE + SLOT - 1;

/// The routine's entry points, one per shape of request: a short path for each effect a
/// single trap or hypercall usually asks for, and the general loop for the rest. Each
/// reads the same mailbox; the shorter the path, the fewer instructions a backend that
/// emulates CPL 0 code (`kvm_pvm`) has to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// One store, nothing else.
    Store,
    /// One store, then a CR3 reload.
    StoreReloadCr3,
    /// One `invlpg`, nothing else.
    Invlpg,
    /// A CR3 reload, nothing else.
    ReloadCr3,
    /// Any request: the stores, the `invlpg`s and the CR3 reload the mailbox lists.
    General,
}

impl Path {
    /// Every entry point, in the order of their slots.
    pub const ALL: [Path; 5] = [
        Path::Store,
        Path::StoreReloadCr3,
        Path::Invlpg,
        Path::ReloadCr3,
        Path::General,
    ];

    /// The entry point's address.
    pub const fn addr(self) -> u64 {
        ROUTINE + self as u64 * SLOT
    }

    /// The path that carries out `request`.
    pub fn of(request: &Request) -> Path {
        if request.load_cr3.is_some() {
            return Path::General;
        }
        match (
            request.stores.len(),
            request.invlpg.len(),
            request.reload_cr3,
        ) {
            (1, 0, false) => Path::Store,
            (1, 0, true) => Path::StoreReloadCr3,
            (0, 1, false) => Path::Invlpg,
            (0, 0, true) => Path::ReloadCr3,
            _ => Path::General,
        }
    }

    /// Room for the path's code.
    const fn room(self) -> u64 {
        match self {
            Path::General => PAGE_SIZE - Path::General as u64 * SLOT,
            _ => SLOT,
        }
    }

    /// The path's machine code, assembled for its address. Every path ends like the
    /// fault stub: `add rsp, 16; iretq`.
    fn assemble(self) -> Result<Vec<u8>, IcedError> {
        let first = qword_ptr(MAILBOX + ENTRIES);
        let second = qword_ptr(MAILBOX + ENTRIES + 8);
        let mut a = CodeAssembler::new(64)?;
        match self {
            Path::Store | Path::StoreReloadCr3 => {
                a.push(rax)?;
                a.push(rdx)?;
                a.mov(rax, first)?;
                a.mov(rdx, second)?;
                a.mov(qword_ptr(rax), rdx)?;
                if self == Path::StoreReloadCr3 {
                    a.mov(rax, cr3)?;
                    a.mov(cr3, rax)?;
                }
                a.pop(rdx)?;
                a.pop(rax)?;
            }
            Path::Invlpg => {
                a.push(rax)?;
                a.mov(rax, first)?;
                a.invlpg(byte_ptr(rax))?;
                a.pop(rax)?;
            }
            Path::ReloadCr3 => {
                a.push(rax)?;
                a.mov(rax, cr3)?;
                a.mov(cr3, rax)?;
                a.pop(rax)?;
            }
            Path::General => general(&mut a)?,
        }
        a.add(rsp, STUB_WORDS as i32)?;
        a.iretq()?;
        a.assemble(self.addr())
    }
}

/// The general path, up to its tail: RDX walks the entries, RCX counts.
fn general(a: &mut CodeAssembler) -> Result<(), IcedError> {
    const SAVED: [AsmRegister64; 4] = [rax, rcx, rdx, rsi];
    let mut store = a.create_label();
    let mut invlpgs = a.create_label();
    let mut invalidate = a.create_label();
    let mut reload = a.create_label();
    let mut out = a.create_label();
    for r in SAVED {
        a.push(r)?;
    }
    a.mov(edx, (MAILBOX + ENTRIES) as u32)?;
    a.mov(rcx, qword_ptr(MAILBOX + STORES))?;
    a.jrcxz(invlpgs)?;
    a.set_label(&mut store)?;
    a.mov(rax, qword_ptr(rdx))?;
    a.mov(rsi, qword_ptr(rdx + 8))?;
    a.mov(qword_ptr(rax), rsi)?;
    a.add(rdx, 16)?;
    a.loop_(store)?;
    a.set_label(&mut invlpgs)?;
    a.mov(rcx, qword_ptr(MAILBOX + INVLPGS))?;
    a.jrcxz(reload)?;
    a.set_label(&mut invalidate)?;
    a.mov(rax, qword_ptr(rdx))?;
    a.invlpg(byte_ptr(rax))?;
    a.add(rdx, 8)?;
    a.loop_(invalidate)?;
    a.set_label(&mut reload)?;
    let mut load = a.create_label();
    a.cmp(qword_ptr(MAILBOX + RELOAD_CR3), 0)?;
    a.je(out)?;
    a.mov(rax, qword_ptr(MAILBOX + NEW_CR3))?;
    a.test(rax, rax)?;
    a.jnz(load)?;
    a.mov(rax, cr3)?;
    a.set_label(&mut load)?;
    a.mov(cr3, rax)?;
    a.set_label(&mut out)?;
    for r in SAVED.into_iter().rev() {
        a.pop(r)?;
    }
    Ok(())
}

/// What to install in the monitor's region: `(guest-physical address, machine code)` —
/// one blob, every entry point in its slot of the routine's page (the gaps are `int3`).
pub fn code() -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut blob = Vec::new();
    for path in Path::ALL {
        let code = path
            .assemble()
            .map_err(|e| format!("assembling the monitor routine ({path:?}): {e}"))?;
        if code.len() as u64 > path.room() {
            return Err(format!(
                "the monitor routine's {path:?} path is {} bytes, more than its {} bytes",
                code.len(),
                path.room()
            ));
        }
        blob.resize((path.addr() - ROUTINE) as usize, 0xCC);
        blob.extend(code);
    }
    Ok(vec![(ROUTINE, blob)])
}

/// Fills the mailbox with `request` and, for [`Resume::Guest`], writes the routine's frame;
/// returns how the VMM enters the routine. The routine must be installed
/// ([`crate::install`]).
pub fn prepare(mem: &GuestMemoryMmap, request: &Request, resume: Resume) -> Result<Entry, String> {
    let mailbox = request.mailbox()?;
    mem.write_slice(&mailbox, GuestAddress(MAILBOX))
        .map_err(|e| format!("writing the monitor's mailbox: {e}"))?;
    Ok(match resume {
        Resume::StubFrame { stub_rsp } => Entry {
            rip: Path::of(request).addr(),
            rsp: stub_rsp,
            rflags: None,
            switch_to_cpl0: false,
        },
        Resume::Guest(guest) => {
            let mut bytes = vec![0u8; STUB_WORDS as usize];
            bytes.extend(guest.to_bytes(None));
            mem.write_slice(&bytes, GuestAddress(GUEST_FRAME))
                .map_err(|e| format!("writing the monitor routine's frame: {e}"))?;
            Entry {
                rip: Path::of(request).addr(),
                rsp: GUEST_FRAME,
                // The routine runs without the guest's trap flag; its `iretq` restores it.
                rflags: Some(guest.rflags & !rflags::TF),
                switch_to_cpl0: true,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(
            GuestAddress(layout::MONITOR_BASE),
            layout::MONITOR_SIZE as usize,
        )])
        .unwrap()
    }

    fn word(mem: &GuestMemoryMmap, at: u64) -> u64 {
        mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// The instructions of `path` as installed, up to its `iretq`.
    fn listing(path: Path) -> Vec<String> {
        let (at, blob) = code().unwrap().remove(0);
        let from = (path.addr() - at) as usize;
        let mut out = Vec::new();
        for insn in Decoder::with_ip(64, &blob[from..], path.addr(), DecoderOptions::NONE) {
            out.push(crate::text_of(&insn));
            if out.last().map(String::as_str) == Some("iretq") {
                break;
            }
        }
        out
    }

    #[test]
    fn the_short_paths_are_these_listings() {
        let tail = ["add rsp,10h", "iretq"];
        let store = [
            "push rax",
            "push rdx",
            "mov rax,[4000C020h]",
            "mov rdx,[4000C028h]",
            "mov [rax],rdx",
        ];
        assert_eq!(
            listing(Path::Store),
            [&store[..], &["pop rdx", "pop rax"], &tail].concat()
        );
        assert_eq!(
            listing(Path::StoreReloadCr3),
            [
                &store[..],
                &["mov rax,cr3", "mov cr3,rax", "pop rdx", "pop rax"],
                &tail
            ]
            .concat()
        );
        assert_eq!(
            listing(Path::Invlpg),
            [
                &["push rax", "mov rax,[4000C020h]", "invlpg [rax]", "pop rax"][..],
                &tail
            ]
            .concat()
        );
        assert_eq!(
            listing(Path::ReloadCr3),
            [
                &["push rax", "mov rax,cr3", "mov cr3,rax", "pop rax"][..],
                &tail
            ]
            .concat()
        );
    }

    #[test]
    fn the_general_path_is_this_listing() {
        let at = |off: u64| format!("{:016X}h", Path::General.addr() + off);
        let listing_ = [
            "push rax".to_string(),
            "push rcx".into(),
            "push rdx".into(),
            "push rsi".into(),
            "mov edx,4000C020h".into(),
            "mov rcx,[4000C000h]".into(),
            format!("jrcxz {}", at(0x23)),
            "mov rax,[rdx]".into(),
            "mov rsi,[rdx+8]".into(),
            "mov [rax],rsi".into(),
            "add rdx,10h".into(),
            format!("loop {}", at(0x13)),
            "mov rcx,[4000C008h]".into(),
            format!("jrcxz {}", at(0x39)),
            "mov rax,[rdx]".into(),
            "invlpg [rax]".into(),
            "add rdx,8".into(),
            format!("loop {}", at(0x2D)),
            "cmp qword ptr [4000C010h],0".into(),
            format!("je short {}", at(0x59)),
            "mov rax,[4000C018h]".into(),
            "test rax,rax".into(),
            format!("jne short {}", at(0x56)),
            "mov rax,cr3".into(),
            "mov cr3,rax".into(),
            "pop rsi".into(),
            "pop rdx".into(),
            "pop rcx".into(),
            "pop rax".into(),
            "add rsp,10h".into(),
            "iretq".into(),
        ];
        assert_eq!(listing(Path::General), listing_);
    }

    #[test]
    fn the_syscall_landing_is_int3_padding() {
        let blobs = code().unwrap();
        let (at, blob) = &blobs[0];
        assert_eq!(blob[(SYSCALL_LANDING - at) as usize], 0xCC);
        assert!(
            listing(Path::Store).len() < 16,
            "the Store path ends well before it"
        );
    }

    #[test]
    fn one_blob_in_the_routines_page_with_each_path_in_its_slot() {
        let blobs = code().unwrap();
        assert_eq!(blobs.len(), 1);
        let (at, blob) = &blobs[0];
        assert_eq!(*at, layout::MONITOR_ROUTINE);
        assert!(at + blob.len() as u64 <= layout::MONITOR_PRIVATE_END);
        assert!(blob.len() as u64 <= PAGE_SIZE);
        assert!(!layout::is_shared_page(*at) && layout::is_monitor(*at));
        let addrs: Vec<u64> = Path::ALL.iter().map(|p| p.addr() - at).collect();
        assert_eq!(addrs, [0x00, 0x40, 0x80, 0xC0, 0x100]);
        // Every path ends like the fault stub, and the gaps between them are int3.
        for p in Path::ALL {
            let from = (p.addr() - at) as usize;
            let n = listing(p).len();
            let len: usize = Decoder::with_ip(64, &blob[from..], p.addr(), DecoderOptions::NONE)
                .into_iter()
                .take(n)
                .map(|i| i.len())
                .sum();
            assert_eq!(
                &blob[from + len - 6..from + len],
                &[0x48, 0x83, 0xC4, 0x10, 0x48, 0xCF],
                "{p:?}"
            );
            let next = from + p.room() as usize;
            assert!(blob[from + len..next.min(blob.len())]
                .iter()
                .all(|&b| b == 0xCC));
        }
    }

    #[test]
    fn each_request_takes_the_shortest_path_that_does_it() {
        let r = |stores: usize, invlpg: usize, reload_cr3: bool| Request {
            stores: vec![(layout::SCRATCH_PT, 0); stores],
            invlpg: vec![layout::SCRATCH_VA; invlpg],
            reload_cr3,
            load_cr3: None,
        };
        assert_eq!(Path::of(&r(1, 0, false)), Path::Store);
        assert_eq!(Path::of(&r(1, 0, true)), Path::StoreReloadCr3);
        assert_eq!(Path::of(&r(0, 1, false)), Path::Invlpg);
        assert_eq!(Path::of(&r(0, 0, true)), Path::ReloadCr3);
        for (s, i, c) in [
            (2, 0, false),
            (2, 0, true),
            (1, 1, false),
            (0, 2, false),
            (0, 1, true),
            (0, 0, false),
        ] {
            assert_eq!(Path::of(&r(s, i, c)), Path::General, "{s} {i} {c}");
        }
    }

    #[test]
    fn the_mailbox_is_the_header_then_the_stores_then_the_addresses() {
        let r = Request {
            stores: vec![
                (layout::SCRATCH_PT, 0x1000 | 7),
                (layout::SCRATCH_PT + 8, 0),
            ],
            invlpg: vec![layout::SCRATCH_VA],
            reload_cr3: true,
            load_cr3: None,
        };
        let words: Vec<u64> = r
            .mailbox()
            .unwrap()
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            words,
            [
                2,
                1,
                1,
                0,
                layout::SCRATCH_PT,
                0x1007,
                layout::SCRATCH_PT + 8,
                0,
                layout::SCRATCH_VA
            ]
        );
        assert_eq!(Request::default().mailbox().unwrap(), vec![0u8; 32]);
    }

    #[test]
    fn a_full_batch_fits_and_more_is_refused() {
        let full = Request {
            stores: vec![(layout::SCRATCH_PT, 0); MAX_STORES],
            invlpg: vec![0; MAX_INVLPGS],
            reload_cr3: false,
            load_cr3: None,
        };
        assert_eq!(MAILBOX + full.mailbox().unwrap().len() as u64, MAILBOX_END);
        let mem = memory();
        assert!(prepare(&mem, &full, Resume::StubFrame { stub_rsp: 0 }).is_ok());
        let mut over = full.clone();
        over.stores.push((layout::SCRATCH_PT, 0));
        assert!(prepare(&mem, &over, Resume::StubFrame { stub_rsp: 0 }).is_err());
        let mut over = full;
        over.invlpg.push(0);
        assert!(over.mailbox().is_err());
    }

    #[test]
    fn is_empty_means_nothing_to_do() {
        assert!(Request::default().is_empty());
        for r in [
            Request {
                stores: vec![(0, 0)],
                ..Request::default()
            },
            Request {
                invlpg: vec![0],
                ..Request::default()
            },
            Request {
                reload_cr3: true,
                load_cr3: None,
                ..Request::default()
            },
        ] {
            assert!(!r.is_empty(), "{r:?}");
        }
    }

    #[test]
    fn from_the_stub_only_rip_changes() {
        let mem = memory();
        let stub_rsp = layout::MONITOR_STACK_TOP - 56;
        let r = Request {
            stores: vec![(layout::SCRATCH_PT, 0x2007)],
            ..Request::default()
        };
        let e = prepare(&mem, &r, Resume::StubFrame { stub_rsp }).unwrap();
        assert_eq!(
            e,
            Entry {
                rip: layout::MONITOR_ROUTINE, // the one-store path
                rsp: stub_rsp,
                rflags: None,
                switch_to_cpl0: false,
            }
        );
        assert_eq!(word(&mem, MAILBOX + STORES), 1);
        assert_eq!(word(&mem, MAILBOX + INVLPGS), 0);
        assert_eq!(word(&mem, MAILBOX + RELOAD_CR3), 0);
        assert_eq!(word(&mem, MAILBOX + ENTRIES), layout::SCRATCH_PT);
        assert_eq!(word(&mem, MAILBOX + ENTRIES + 8), 0x2007);
        assert_eq!(
            word(&mem, stub_rsp),
            0,
            "the stub's frame is the VMM's to edit"
        );
    }

    #[test]
    fn from_a_guest_context_the_frame_returns_to_it_at_cpl_3() {
        let mem = memory();
        let guest = Frame {
            rip: 0x10_0042,
            cs: 0x23,
            rflags: 0x202 | rflags::TF,
            rsp: 0xF_FF00,
            ss: 0x1B,
        };
        let r = Request {
            reload_cr3: true,
            load_cr3: None,
            ..Request::default()
        };
        let e = prepare(&mem, &r, Resume::Guest(guest)).unwrap();
        assert_eq!(
            e,
            Entry {
                rip: layout::MONITOR_ROUTINE + 0xC0, // the CR3-reload path
                rsp: layout::MONITOR_STACK_TOP - 56,
                rflags: Some(0x202),
                switch_to_cpl0: true,
            }
        );
        let frame: Vec<u64> = (0..7).map(|i| word(&mem, e.rsp + i * 8)).collect();
        assert_eq!(frame, [0, 0, 0x10_0042, 0x23, 0x302, 0xF_FF00, 0x1B]);
        assert_eq!(word(&mem, MAILBOX + RELOAD_CR3), 1);
        assert_eq!(word(&mem, MAILBOX + STORES), 0);
    }

    #[test]
    fn without_the_monitors_region_nothing_is_prepared() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(prepare(&mem, &Request::default(), Resume::StubFrame { stub_rsp: 0 }).is_err());
    }
}
