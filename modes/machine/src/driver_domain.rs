//! The `driver-domain` backend: the virtio queue is served by a separate process, as Xen's
//! Dom0 or a driver domain serves its guests' split drivers. The process is forked before
//! the guest runs, so it maps the same memfd-backed guest RAM ([`crate::shared_ram`]) and
//! holds the same disk image; it is woken by the doorbell's eventfd (a KVM ioeventfd, so
//! the guest's write never reaches the VMM) and learns the queue's addresses through a
//! pipe when the driver sets the queue ready. When the run ends the VMM closes the pipe;
//! the process sends back what it did and its context switches (getrusage) and exits. A
//! process that dies instead is found by `waitpid`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};

use contract::abi::blk::{
    QUEUE_AVAIL, QUEUE_DESC, QUEUE_NOTIFY, QUEUE_READY, QUEUE_SIZE, QUEUE_USED, VIRTIO_BASE,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

/// What the driver domain reported when it ended, or how it died.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainReport {
    /// What its virtio device did.
    pub stats: blk::BlockStats,
    /// Voluntary context switches of the process (it waited for a doorbell).
    pub voluntary_switches: u64,
    /// Involuntary context switches (the host took its CPU).
    pub involuntary_switches: u64,
    /// How long it took to serve each request (quantiles; no buckets cross the pipe).
    pub service: contract::LatencySummary,
    /// Each request's time from its doorbell to the used ring (quantiles).
    pub completion: contract::LatencySummary,
    /// Each doorbell's time to its batch's last completion (quantiles).
    pub batch: contract::LatencySummary,
    /// Why it stopped serving the queue, if it refused a chain.
    pub broken: Option<String>,
    /// How it died, if it did not end when asked.
    pub died: Option<String>,
}

/// The driver domain's process, seen from the VMM.
#[derive(Debug)]
pub struct DriverDomain {
    pid: libc::pid_t,
    config: Option<File>,
    results: File,
    _wake: EventFd,
    report: Option<DomainReport>,
}

fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the read end was just created by pipe2 and is owned by nothing else.
    let read = unsafe { File::from_raw_fd(fds[0]) };
    // SAFETY: the same for the write end.
    let write = unsafe { File::from_raw_fd(fds[1]) };
    Ok((read, write))
}

impl DriverDomain {
    /// Registers the doorbell as an ioeventfd and forks the process that serves `virtio`.
    pub fn start(vm: &VmFd, virtio: &blk::VirtioBlk) -> std::io::Result<Self> {
        let wake = EventFd::new(0)?;
        vm.register_ioevent(
            &wake,
            &IoEventAddress::Mmio(VIRTIO_BASE + QUEUE_NOTIFY),
            NoDatamatch,
        )
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        let (config_r, config_w) = pipe()?;
        let (results_r, results_w) = pipe()?;
        let device = virtio.clone();
        // SAFETY: fork has no memory-safety preconditions of its own; the child only
        // uses its copy of the device (whose lock no other thread holds: the guest has
        // not run yet), the shared guest RAM, the image and the descriptors it was given,
        // and leaves with _exit without running the parent's destructors.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            drop(config_w);
            drop(results_r);
            serve(device, &wake, config_r, results_w);
        }
        drop(config_r);
        drop(results_w);
        Ok(DriverDomain {
            pid,
            config: Some(config_w),
            results: results_r,
            _wake: wake,
            report: None,
        })
    }

    /// The process's id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Hands the queue's setup to the process (the driver just set it ready).
    pub fn configure(&mut self, queue: [u64; 4]) {
        if let Some(c) = self.config.as_mut() {
            let bytes: Vec<u8> = queue.iter().flat_map(|v| v.to_le_bytes()).collect();
            // A process that is gone is found by `finish`.
            let _ = c.write_all(&bytes);
        }
    }

    /// Asks the process to end, collects its report and reaps it (idempotent).
    pub fn finish(&mut self) -> DomainReport {
        if let Some(r) = &self.report {
            return r.clone();
        }
        drop(self.config.take());
        let mut buf = Vec::new();
        let _ = self.results.read_to_end(&mut buf);
        let mut status = 0;
        // SAFETY: `pid` is this process's own child; `status` is a valid int.
        let waited = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        let mut report = decode(&buf).unwrap_or_default();
        if waited == self.pid && libc::WIFSIGNALED(status) {
            report.died = Some(format!("killed by signal {}", libc::WTERMSIG(status)));
        } else if buf.len() < REPORT_BYTES {
            report.died = Some("ended without a report".into());
        }
        self.report = Some(report.clone());
        report
    }
}

impl Drop for DriverDomain {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Words of one latency summary in the report (count, min, p50, p90, p99, max, mean).
const SUMMARY_WORDS: usize = 7;

/// The fixed part of the report: 8 words of counters, then three latency summaries
/// (service, completion, batch), little-endian.
const REPORT_BYTES: usize = (8 + 3 * SUMMARY_WORDS) * 8;

fn summary_words(l: &contract::LatencySummary) -> [u64; SUMMARY_WORDS] {
    [l.count, l.min, l.p50, l.p90, l.p99, l.max, l.mean.to_bits()]
}

fn decode(buf: &[u8]) -> Option<DomainReport> {
    let word = |i: usize| {
        buf.get(8 * i..8 * i + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let stats = blk::BlockStats {
        notifications: word(0)?,
        requests: word(1)?,
        bytes_read: word(2)?,
        bytes_written: word(3)?,
        io_errors: word(4)?,
        unsupported: word(5)?,
        // The domain raises no interrupt: its guest polls.
        interrupts: 0,
    };
    let summary = |at: usize| {
        Some(contract::LatencySummary {
            count: word(at)?,
            min: word(at + 1)?,
            p50: word(at + 2)?,
            p90: word(at + 3)?,
            p99: word(at + 4)?,
            max: word(at + 5)?,
            mean: f64::from_bits(word(at + 6)?),
            buckets: Vec::new(),
        })
    };
    let service = summary(8)?;
    let completion = summary(8 + SUMMARY_WORDS)?;
    let batch = summary(8 + 2 * SUMMARY_WORDS)?;
    let broken = buf
        .get(REPORT_BYTES..)
        .filter(|b| !b.is_empty())
        .map(|b| String::from_utf8_lossy(b).into_owned());
    Some(DomainReport {
        stats,
        voluntary_switches: word(6)?,
        involuntary_switches: word(7)?,
        service,
        completion,
        batch,
        broken,
        died: None,
    })
}

/// The child: serve the queue until the VMM closes the configuration pipe, then report
/// and leave.
fn serve(mut device: blk::VirtioBlk, wake: &EventFd, mut config: File, mut results: File) -> ! {
    // SAFETY: PR_SET_NAME reads a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"blk-domain".as_ptr()) };
    let server = device.server();
    let mut refused: Option<String> = None;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: config.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structures.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        // The queue's setup first: the VMM wrote it before the guest could ring.
        if fds[1].revents != 0 {
            let mut q = [0u8; 32];
            if config.read_exact(&mut q).is_err() {
                break; // the VMM closed the pipe: the run is over
            }
            let v =
                |i: usize| u64::from_le_bytes(q[8 * i..8 * i + 8].try_into().unwrap_or_default());
            let setup = [
                (QUEUE_SIZE, v(0)),
                (QUEUE_DESC, v(1)),
                (QUEUE_AVAIL, v(2)),
                (QUEUE_USED, v(3)),
                (QUEUE_READY, 1),
            ];
            for (reg, value) in setup {
                if let Err(e) = device.write(VIRTIO_BASE + reg, &value.to_le_bytes()) {
                    refused = Some(e.to_string());
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            if let Ok(n) = wake.read() {
                server.notified(n);
            }
        }
    }
    let s = device.stats();
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for RUSAGE_SELF.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let words = [
        s.notifications,
        s.requests,
        s.bytes_read,
        s.bytes_written,
        s.io_errors,
        s.unsupported,
        usage.ru_nvcsw as u64,
        usage.ru_nivcsw as u64,
    ];
    let latencies = [
        device.service_latency(),
        device.completion_latency(),
        device.batch_latency(),
    ];
    let mut out: Vec<u8> = words
        .into_iter()
        .chain(latencies.iter().flat_map(summary_words))
        .flat_map(|w| w.to_le_bytes())
        .collect();
    if let Some(e) = device.broken().map(|e| e.to_string()).or(refused) {
        out.extend_from_slice(e.as_bytes());
    }
    let _ = results.write_all(&out);
    drop(results);
    // SAFETY: _exit ends the child at once, without the parent's destructors or atexit.
    unsafe { libc::_exit(0) }
}
