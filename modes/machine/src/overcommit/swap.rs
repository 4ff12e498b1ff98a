//! Host swapping with `userfaultfd`: guest RAM is registered in MISSING mode, so every
//! touch of a page that is not resident stops the toucher and reaches a handler thread.
//! The handler fills the page (`UFFDIO_COPY`: its saved contents from the swap file, or
//! zeros on a first touch), and while more pages than the budget are resident it evicts
//! the oldest: written to the swap file, dropped with `MADV_DONTNEED`, missing again.
//!
//! Eviction happens only in the handler, while the faulting thread waits for it: the page
//! is filled without waking it (`UFFDIO_COPY_MODE_DONTWAKE`), the victims are saved and
//! dropped, and only then is it woken (`UFFDIO_WAKE`). A machine has one vCPU and its
//! thread is the only one that touches guest RAM (KVM on its behalf, or the VMM between
//! exits), so no page is written while it is saved.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use contract::abi::PAGE_SIZE;
use contract::metrics::Latency;
use contract::overcommit::SwapStats;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::{ioctl_ior_nr, ioctl_iowr_nr};

const PAGE: usize = PAGE_SIZE as usize;
const UFFD_API: u64 = 0xAA;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// Fill the page but leave the faulting thread asleep (woken by `UFFDIO_WAKE`).
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `USERFAULTFD_IOC_NEW` on `/dev/userfaultfd` (`_IO(0xAA, 0x00)`).
const USERFAULTFD_IOC_NEW: libc::c_ulong = 0xAA00;

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `struct uffd_msg`: the event, then (for a page fault) flags and address.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct UffdMsg {
    event: u8,
    _reserved: [u8; 7],
    flags: u64,
    address: u64,
    _feat: u64,
}

ioctl_iowr_nr!(UFFDIO_API, 0xAA, 0x3F, UffdioApi);
ioctl_iowr_nr!(UFFDIO_REGISTER, 0xAA, 0x00, UffdioRegister);
ioctl_ior_nr!(UFFDIO_UNREGISTER, 0xAA, 0x01, UffdioRange);
ioctl_ior_nr!(UFFDIO_WAKE, 0xAA, 0x02, UffdioRange);
ioctl_iowr_nr!(UFFDIO_COPY, 0xAA, 0x03, UffdioCopy);

/// Why host swapping cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// No userfaultfd (the syscall and `/dev/userfaultfd` both refused).
    #[error("userfaultfd unavailable: {0}")]
    Unavailable(String),
    /// A step of the setup failed.
    #[error("{what}: {source}")]
    Setup {
        /// The step.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> SwapError {
    move |source| SwapError::Setup { what, source }
}

/// Opens a userfaultfd (the syscall, then `/dev/userfaultfd`) and does the API
/// handshake.
fn open_uffd() -> Result<OwnedFd, SwapError> {
    // SAFETY: the syscall takes flags only and returns a new descriptor or -1.
    let fd =
        unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) } as i32;
    let fd = if fd >= 0 {
        fd
    } else {
        let first = io::Error::last_os_error();
        let dev = File::open("/dev/userfaultfd").map_err(|e| {
            SwapError::Unavailable(format!("syscall: {first}; /dev/userfaultfd: {e}"))
        })?;
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value and returns a descriptor.
        let fd = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                USERFAULTFD_IOC_NEW,
                libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(SwapError::Unavailable(format!(
                "syscall: {first}; USERFAULTFD_IOC_NEW: {}",
                io::Error::last_os_error()
            )));
        }
        fd
    };
    // SAFETY: `fd` is a new descriptor this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    // SAFETY: UFFDIO_API reads and writes a `struct uffdio_api`, which `api` is.
    let r = unsafe { ioctl_with_mut_ref(&fd, UFFDIO_API(), &mut api) };
    if r < 0 {
        return Err(setup("UFFDIO_API")(io::Error::last_os_error()));
    }
    Ok(fd)
}

/// The ways to a userfaultfd on this host, as found: the syscall, `/dev/userfaultfd`
/// and the sysctl that decides the syscall for unprivileged processes. What the doctor
/// prints beside [`probe`]'s verdict, so a host without swapping says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UffdAccess {
    /// `userfaultfd(2)` from this process: `Ok` or the error.
    pub syscall: Result<(), String>,
    /// `/dev/userfaultfd`: its mode and owner (`None`: absent), and whether this process
    /// could open it.
    pub device: Option<(u32, u32, u32)>,
    /// Opening `/dev/userfaultfd` read-write from this process: `Ok` or the error.
    pub device_open: Result<(), String>,
    /// `vm.unprivileged_userfaultfd` (`None`: unreadable, an older kernel).
    pub unprivileged: Option<u32>,
    /// Whether this process runs as root (uid 0).
    pub root: bool,
}

impl UffdAccess {
    /// Looks at this host.
    pub fn find() -> Self {
        // SAFETY: the syscall takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) }
            as i32;
        let syscall = if fd >= 0 {
            // SAFETY: `fd` is the new descriptor, closed once here.
            unsafe { libc::close(fd) };
            Ok(())
        } else {
            Err(io::Error::last_os_error().to_string())
        };
        let device = std::fs::metadata("/dev/userfaultfd").ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.mode() & 0o7777, m.uid(), m.gid())
        });
        let device_open = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")
            .map(drop)
            .map_err(|e| e.to_string());
        let unprivileged = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
            .ok()
            .and_then(|v| v.trim().parse().ok());
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        UffdAccess {
            syscall,
            device,
            device_open,
            unprivileged,
            root,
        }
    }

    /// One line: each way and how it came out.
    pub fn describe(&self) -> String {
        let syscall = match &self.syscall {
            Ok(()) => "the syscall works".to_string(),
            Err(e) => format!("the syscall fails ({e})"),
        };
        let device = match (&self.device, &self.device_open) {
            (None, _) => "/dev/userfaultfd absent".to_string(),
            (Some((mode, uid, gid)), open) => format!(
                "/dev/userfaultfd mode {mode:o} uid {uid} gid {gid}, {}",
                match open {
                    Ok(()) => "opens".to_string(),
                    Err(e) => format!("does not open ({e})"),
                }
            ),
        };
        let sysctl = match self.unprivileged {
            Some(v) => format!("vm.unprivileged_userfaultfd = {v}"),
            None => "vm.unprivileged_userfaultfd unreadable".to_string(),
        };
        let who = if self.root { "root" } else { "not root" };
        format!("{syscall}; {device}; {sysctl}; running as {who}")
    }
}

/// Whether userfaultfd works here: a page of a scratch mapping registered in MISSING
/// mode, touched by another thread, filled by `UFFDIO_COPY`, read back. Done once.
pub fn probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let len = 2 * PAGE;
            let region = Scratch::new(len).map_err(|e| format!("mmap: {e}"))?;
            let swap = Swapper::start(region.ptr, len, 1).map_err(|e| e.to_string())?;
            let addr = region.ptr as usize;
            let toucher = std::thread::spawn(move || {
                // SAFETY: the second page of the scratch mapping, alive until joined.
                unsafe { std::ptr::read_volatile((addr + PAGE) as *const u8) }
            });
            let read = toucher.join().map_err(|_| "the probe's toucher panicked")?;
            let s = swap.stats();
            drop(swap);
            if read == 0 && s.zero_fills == 1 {
                Ok(())
            } else {
                Err(format!(
                    "a touch of a registered page was not seen (read {read}, {} fills)",
                    s.zero_fills
                ))
            }
        })
        .clone()
}

/// A private anonymous mapping, unmapped on drop (the probe's memory).
struct Scratch {
    ptr: *mut u8,
    len: usize,
}

impl Scratch {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping, owned by the returned value.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Scratch {
            ptr: p as *mut u8,
            len,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// The pages' state, shared by the handler thread and the machine.
#[derive(Debug)]
struct State {
    /// Resident pages, oldest first (entries of pages dropped since are skipped).
    queue: std::collections::VecDeque<u64>,
    resident: Vec<bool>,
    in_file: Vec<bool>,
    resident_now: u64,
    stats: SwapStats,
    page_in: Latency,
    page_out: Latency,
}

/// What the handler thread and the machine share.
#[derive(Debug)]
struct Shared {
    base: usize,
    pages: u64,
    budget: u64,
    file: File,
    state: Mutex<State>,
}

/// Host swapping for one mapping: the userfaultfd, the swap file and the handler thread.
/// Dropping it stops the thread and closes the userfaultfd (the range is then ordinary
/// memory again); the mapping must outlive it.
#[derive(Debug)]
pub struct Swapper {
    shared: Arc<Shared>,
    stop: EventFd,
    uffd: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

// SAFETY: the raw mapping address is only used as a number by the handler thread (for
// ioctls, pread/pwrite on pages it owns at that moment); every mutable state is behind
// the mutex.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Swapper {
    /// Registers `len` bytes at `base` (page-aligned, private anonymous, not touched yet)
    /// and starts the handler; at most `budget_pages` of them stay resident.
    pub fn start(base: *mut u8, len: usize, budget_pages: u64) -> Result<Self, SwapError> {
        if budget_pages == 0 {
            return Err(SwapError::Setup {
                what: "swap budget",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the budget must be at least one page",
                ),
            });
        }
        let uffd = open_uffd()?;
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: base as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `struct uffdio_register`.
        let r = unsafe { ioctl_with_mut_ref(&uffd, UFFDIO_REGISTER(), &mut reg) };
        if r < 0 {
            return Err(setup("UFFDIO_REGISTER")(io::Error::last_os_error()));
        }
        let file = swap_file().map_err(setup("creating the swap file"))?;
        let pages = (len / PAGE) as u64;
        file.set_len(len as u64)
            .map_err(setup("sizing the swap file"))?;
        let shared = Arc::new(Shared {
            base: base as usize,
            pages,
            budget: budget_pages,
            file,
            state: Mutex::new(State {
                queue: Default::default(),
                resident: vec![false; pages as usize],
                in_file: vec![false; pages as usize],
                resident_now: 0,
                stats: SwapStats {
                    budget_pages,
                    ..Default::default()
                },
                page_in: Latency::new(),
                page_out: Latency::new(),
            }),
        });
        let stop = EventFd::new(libc::EFD_CLOEXEC).map_err(setup("eventfd"))?;
        let stop_fd = stop.try_clone().map_err(setup("eventfd"))?;
        let uffd = Arc::new(uffd);
        let thread = {
            let (shared, uffd) = (shared.clone(), uffd.clone());
            std::thread::Builder::new()
                .name("virtlab-swap".into())
                .spawn(move || handler(&shared, &uffd, &stop_fd))
                .map_err(setup("starting the swap thread"))?
        };
        Ok(Swapper {
            shared,
            stop,
            uffd,
            thread: Some(thread),
        })
    }

    /// What it did so far.
    pub fn stats(&self) -> SwapStats {
        let st = self.shared.lock();
        let mut s = st.stats.clone();
        s.page_in_ns = st.page_in.summary();
        s.page_out_ns = st.page_out.summary();
        s
    }

    /// Pages resident now (as filled by the handler, minus those evicted or dropped).
    pub fn resident(&self) -> u64 {
        self.shared.lock().resident_now
    }

    /// Forgets page `pfn` before the machine drops it (the balloon): not resident, its
    /// saved contents gone, so its next touch is a first touch. Returns whether it was
    /// resident.
    pub fn forget(&self, pfn: u64) -> bool {
        let mut st = self.shared.lock();
        let Some(i) = usize::try_from(pfn).ok().filter(|&i| i < st.resident.len()) else {
            return false;
        };
        st.in_file[i] = false;
        let was = std::mem::replace(&mut st.resident[i], false);
        if was {
            st.resident_now -= 1;
        }
        was
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut range = UffdioRange {
            start: self.shared.base as u64,
            len: self.shared.pages * PAGE as u64,
        };
        // SAFETY: UFFDIO_UNREGISTER reads a `struct uffdio_range`; the range is the one
        // registered (closing the descriptor would unregister it as well).
        unsafe { ioctl_with_mut_ref(&*self.uffd, UFFDIO_UNREGISTER(), &mut range) };
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An unnamed file for the swapped pages: created in the temporary directory and unlinked
/// at once.
fn swap_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("virtlab-swap-{}-{n}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// The handler thread: waits for faults (or the stop event) and serves them.
fn handler(shared: &Shared, uffd: &OwnedFd, stop: &EventFd) {
    let mut page = vec![0u8; PAGE];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: uffd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is an array of two valid pollfd structures.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("swap handler: poll: {}", io::Error::last_os_error());
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let mut msg = UffdMsg::default();
        // SAFETY: reads at most one `struct uffd_msg` (32 bytes) into `msg`.
        let n = unsafe {
            libc::read(
                uffd.as_raw_fd(),
                &mut msg as *mut UffdMsg as *mut libc::c_void,
                std::mem::size_of::<UffdMsg>(),
            )
        };
        if n != std::mem::size_of::<UffdMsg>() as isize || msg.event != UFFD_EVENT_PAGEFAULT {
            continue;
        }
        let t0 = Instant::now();
        let addr = msg.address & !(PAGE as u64 - 1);
        let pfn = (addr - shared.base as u64) / PAGE as u64;
        if let Err(e) = serve(shared, uffd, pfn, &mut page, t0) {
            tracing::error!("swap handler: page {pfn:#x}: {e}");
        }
    }
}

/// Fills page `pfn`, evicts down to the budget, then wakes the thread that faulted.
fn serve(
    shared: &Shared,
    uffd: &OwnedFd,
    pfn: u64,
    page: &mut [u8],
    t0: Instant,
) -> io::Result<()> {
    let r = fill_and_evict(shared, uffd, pfn, page, t0);
    // On every path, the thread that faulted is woken (after the evictions). Were the
    // page not filled, it faults again, and the run's watchdog ends it if that goes on.
    wake(uffd, shared.base as u64 + pfn * PAGE as u64);
    r
}

/// Fills page `pfn` without waking the thread that faulted on it, then evicts down to the
/// budget.
fn fill_and_evict(
    shared: &Shared,
    uffd: &OwnedFd,
    pfn: u64,
    page: &mut [u8],
    t0: Instant,
) -> io::Result<()> {
    let mut st = shared.lock();
    let i = pfn as usize;
    if i >= st.resident.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "outside the range",
        ));
    }
    let from_file = st.in_file[i];
    if from_file {
        shared.file.read_exact_at(page, pfn * PAGE as u64)?;
    } else {
        page.fill(0);
    }
    let dst = shared.base as u64 + pfn * PAGE as u64;
    let mut copy = UffdioCopy {
        dst,
        src: page.as_ptr() as u64,
        len: PAGE as u64,
        mode: UFFDIO_COPY_MODE_DONTWAKE,
        copy: 0,
    };
    // SAFETY: UFFDIO_COPY reads and writes a `struct uffdio_copy`; `src` is `page`, one
    // page long, and `dst` one page of the registered range.
    let r = unsafe { ioctl_with_mut_ref(uffd, UFFDIO_COPY(), &mut copy) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Filled meanwhile: nothing to do but wake whoever waits for it.
        return if e.raw_os_error() == Some(libc::EEXIST) {
            Ok(())
        } else {
            Err(e)
        };
    }
    if from_file {
        st.stats.page_ins += 1;
        st.page_in.record(t0.elapsed().as_nanos() as u64);
    } else {
        st.stats.zero_fills += 1;
    }
    evict(shared, &mut st, pfn)
}

/// Wakes the threads waiting on the page at `dst`.
fn wake(uffd: &OwnedFd, dst: u64) {
    let mut range = UffdioRange {
        start: dst,
        len: PAGE as u64,
    };
    // SAFETY: UFFDIO_WAKE reads a `struct uffdio_range` inside the registered range.
    let r = unsafe { ioctl_with_mut_ref(uffd, UFFDIO_WAKE(), &mut range) };
    if r < 0 {
        tracing::error!("swap handler: UFFDIO_WAKE: {}", io::Error::last_os_error());
    }
}

/// Accounts page `pfn` as filled and evicts the oldest pages down to the budget, while
/// the thread that faulted on `pfn` still sleeps.
fn evict(shared: &Shared, st: &mut State, pfn: u64) -> io::Result<()> {
    let i = pfn as usize;
    if !st.resident[i] {
        st.resident[i] = true;
        st.resident_now += 1;
        st.queue.push_back(pfn);
    }
    // Every entry is looked at once at most: the loop ends even if only stale entries
    // and the page just filled remain.
    let mut looks = st.queue.len();
    while st.resident_now > shared.budget && looks > 0 {
        looks -= 1;
        let Some(victim) = st.queue.pop_front() else {
            break;
        };
        let v = victim as usize;
        if victim == pfn {
            st.queue.push_back(victim);
            continue;
        }
        if !st.resident[v] {
            continue;
        }
        let t = Instant::now();
        let host = (shared.base + v * PAGE) as *mut u8;
        // SAFETY: the victim page is resident (the handler filled it and nothing dropped
        // it since: the machine forgets a page here before it drops it), so reading it
        // does not fault; the vCPU thread sleeps in the fault this handler serves (the
        // copy did not wake it), so nothing writes it meanwhile.
        let contents = unsafe { std::slice::from_raw_parts(host as *const u8, PAGE) };
        shared.file.write_all_at(contents, victim * PAGE as u64)?;
        // SAFETY: drops one page of the registered private mapping: it reads as missing
        // again, and its next touch comes back here.
        let r = unsafe { libc::madvise(host as *mut libc::c_void, PAGE, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        st.resident[v] = false;
        st.in_file[v] = true;
        st.resident_now -= 1;
        st.stats.page_outs += 1;
        st.page_out.record(t.elapsed().as_nanos() as u64);
    }
    st.stats.max_resident = st.stats.max_resident.max(st.resident_now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this process can open a userfaultfd at all, asked of the kernel directly
    /// (the syscall, then `/dev/userfaultfd`), not through the swapper.
    fn kernel_hands_out_a_userfaultfd() -> bool {
        // SAFETY: the syscall takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
        if fd >= 0 {
            // SAFETY: `fd` is the new descriptor, closed once here.
            unsafe { libc::close(fd) };
            return true;
        }
        let Ok(dev) = File::open("/dev/userfaultfd") else {
            return false;
        };
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags by value and returns a descriptor.
        let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: `fd` is the new descriptor, closed once here.
            unsafe { libc::close(fd) };
        }
        fd >= 0
    }

    #[test]
    fn the_ways_to_a_userfaultfd_are_described_as_found() {
        let refused = UffdAccess {
            syscall: Err("Operation not permitted (os error 1)".into()),
            device: Some((0o600, 0, 0)),
            device_open: Err("Permission denied (os error 13)".into()),
            unprivileged: Some(0),
            root: false,
        };
        assert_eq!(
            refused.describe(),
            "the syscall fails (Operation not permitted (os error 1)); /dev/userfaultfd mode \
             600 uid 0 gid 0, does not open (Permission denied (os error 13)); \
             vm.unprivileged_userfaultfd = 0; running as not root"
        );
        let old = UffdAccess {
            syscall: Ok(()),
            device: None,
            device_open: Err("No such file or directory (os error 2)".into()),
            unprivileged: None,
            root: true,
        };
        assert_eq!(
            old.describe(),
            "the syscall works; /dev/userfaultfd absent; vm.unprivileged_userfaultfd \
             unreadable; running as root"
        );
        // This host: the syscall works exactly when the probe gets past opening one.
        let here = UffdAccess::find();
        if here.syscall.is_ok() || here.device_open.is_ok() {
            assert!(!matches!(probe(), Err(e) if e.contains("userfaultfd unavailable")));
        } else {
            assert!(matches!(probe(), Err(e) if e.contains("userfaultfd unavailable")));
        }
    }

    #[test]
    fn probe_says_what_this_host_does() {
        // Neither the syscall (root, or `vm.unprivileged_userfaultfd` = 1) nor the device
        // hands out a userfaultfd: the probe says it is unavailable. One is handed out:
        // the probe either works or says a touch was not seen, never "unavailable".
        match (kernel_hands_out_a_userfaultfd(), probe()) {
            (false, Ok(())) => panic!("the kernel refuses a userfaultfd, the probe says Ok"),
            (false, Err(e)) => assert!(e.contains("userfaultfd unavailable"), "{e}"),
            (true, Ok(())) => {}
            (true, Err(e)) => assert!(e.contains("was not seen"), "{e}"),
        }
    }

    #[test]
    fn pages_survive_eviction_and_come_back() {
        if probe().is_err() {
            return; // no userfaultfd here: the probe said so
        }
        let pages = 32usize;
        let region = Scratch::new(pages * PAGE).unwrap();
        let swap = Swapper::start(region.ptr, pages * PAGE, 4).unwrap();
        let base = region.ptr as usize;
        // Another thread touches, as the vCPU does: it waits in each fault.
        let sum = std::thread::spawn(move || {
            for i in 0..pages {
                // SAFETY: inside the registered mapping, alive until joined.
                unsafe {
                    ((base + i * PAGE + 8) as *mut u64).write_volatile(0xA5A5_0000 + i as u64)
                };
            }
            let mut ok = 0;
            for i in 0..pages {
                // SAFETY: as above.
                let v = unsafe { ((base + i * PAGE + 8) as *const u64).read_volatile() };
                ok += u64::from(v == 0xA5A5_0000 + i as u64);
            }
            ok
        })
        .join()
        .unwrap();
        assert_eq!(sum, pages as u64, "every page read back what was written");
        let s = swap.stats();
        assert_eq!(s.zero_fills, pages as u64);
        // FIFO with a budget of 4: the first pass evicts all but the last 4; the second
        // pass evicts those 4 while bringing pages 0 to 3 back, so every page comes back
        // from the file and evicts one.
        assert_eq!(s.page_ins, pages as u64);
        assert_eq!(s.page_outs, (pages as u64 - 4) + pages as u64);
        assert_eq!(s.max_resident, 4);
        assert_eq!(swap.resident(), 4);
        assert_eq!(s.page_in_ns.count, s.page_ins);
        assert!(!swap.forget(pages as u64), "outside the range");
        drop(swap);
    }
}
