//! The watchdog: after the wall-clock limit it kicks the vCPU thread out of KVM_RUN with a
//! signal, again every few milliseconds until the run loop notices, so a kick that lands
//! just before KVM_RUN is entered is not lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::error::{Error, Result};

/// How often the watchdog repeats its kick until the vCPU thread stops.
const REKICK: Duration = Duration::from_millis(5);

/// The signal used to kick a vCPU thread.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only job is to make KVM_RUN return EINTR.
}

/// Installs the no-op handler for the kick signal, once per process.
pub fn install_kick_handler() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| register_signal_handler(kick_signal(), on_kick).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Watchdog(format!("cannot install the kick handler: {e}")))
}

/// The calling thread, as a target for `kick`.
#[derive(Debug, Clone, Copy)]
pub struct ThreadHandle(libc::pthread_t);

impl ThreadHandle {
    /// The current thread.
    pub fn current() -> Self {
        // SAFETY: pthread_self has no preconditions and cannot fail.
        ThreadHandle(unsafe { libc::pthread_self() })
    }
}

/// Sends the kick signal to `thread`.
fn kick(thread: ThreadHandle) {
    // SAFETY: the target thread is the vCPU thread, which outlives the watchdog thread
    // (the watchdog is a scoped thread joined before the vCPU thread leaves the run), and
    // the signal has a handler installed, so it cannot terminate the process.
    unsafe {
        libc::pthread_kill(thread.0, kick_signal());
    }
}

/// Body of the watchdog thread: waits until `deadline` or until `done` says the run is
/// over; past the deadline sets `fired` and kicks `vcpu` until the run is over.
pub fn watch(vcpu: ThreadHandle, deadline: Instant, fired: &AtomicBool, done: Receiver<()>) {
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    fired.store(true, Ordering::SeqCst);
    loop {
        kick(vcpu);
        match done.recv_timeout(REKICK) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
