//! The watchdog: after the wall-clock limit it kicks the vCPU thread out of KVM_RUN with
//! one signal. The signal's handler also sets `immediate_exit` in the vCPU's `kvm_run`
//! (firecracker's kick), so a kick that lands just before KVM_RUN is entered is not lost:
//! KVM returns at once instead of running the guest. One kick is always enough.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Instant;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use contract::{Error, Result};

/// The signal used to kick a vCPU thread.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

thread_local! {
    /// The `kvm_run` of the vCPU this thread is running, while it runs one.
    static ARMED: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // KVM_RUN returns EINTR if the signal came while the guest ran; if it came just before,
    // immediate_exit makes the next KVM_RUN return at once.
    let run = ARMED.with(Cell::get);
    if !run.is_null() {
        // SAFETY: `run` is the mapped `kvm_run` of the vCPU this thread is running: `arm`
        // set it from a live vCPU and the guard clears it before that vCPU can go away.
        let field = unsafe { std::ptr::addr_of_mut!((*run).immediate_exit) };
        // SAFETY: `field` points into that live mapping; a byte-sized volatile store is
        // what KVM itself reads at its next KVM_RUN.
        unsafe { std::ptr::write_volatile(field, 1) };
    }
}

/// Makes kicks on this thread set `immediate_exit` in `run` until the guard is dropped.
#[derive(Debug)]
pub struct Armed(());

/// Arms the kick for the vCPU whose `kvm_run` this is (cleared first).
pub fn arm(run: &mut kvm_run) -> Armed {
    run.immediate_exit = 0;
    ARMED.with(|a| a.set(run));
    Armed(())
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.with(|a| a.set(std::ptr::null_mut()));
    }
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

/// Spends a kick that has not made `KVM_RUN` return yet: clears `immediate_exit` in the
/// `kvm_run` this thread has armed, if any. A scheduler calls it when the vCPU it kicked
/// has stopped and holds its CPU again; the exit loop checks its limits afterwards, so a
/// watchdog kick spent here is still seen (the watchdog sets its flag before it kicks).
pub(crate) fn clear_kick() {
    let run = ARMED.with(Cell::get);
    if !run.is_null() {
        // SAFETY: as in `on_kick`: `run` is the live, mapped `kvm_run` of the vCPU this
        // thread is running, armed by `arm` and cleared before that vCPU goes away.
        let field = unsafe { std::ptr::addr_of_mut!((*run).immediate_exit) };
        // SAFETY: `field` points into that live mapping; a byte-sized volatile store.
        unsafe { std::ptr::write_volatile(field, 0) };
    }
}

/// Sends the kick signal to `thread`.
pub(crate) fn kick(thread: ThreadHandle) {
    // SAFETY: the target thread is alive: the watchdog's target is the vCPU thread, which
    // outlives the watchdog thread (a scoped thread joined before the vCPU thread leaves
    // the run); a scheduler's target is a thread between its gate's `attach` and
    // `detach`, and it kicks under the lock those take. The signal has a handler
    // installed, so it cannot terminate the process.
    unsafe {
        libc::pthread_kill(thread.0, kick_signal());
    }
}

/// Body of the watchdog thread: waits until `deadline` or until `done` says the run is
/// over; past the deadline sets `fired`, kicks `vcpu` once and waits for the run to end.
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
    kick(vcpu);
    let _ = done.recv();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_sets_immediate_exit_only_while_armed() {
        install_kick_handler().unwrap();
        let mut run = kvm_run::default();
        {
            let _armed = arm(&mut run);
            kick(ThreadHandle::current());
        }
        // A signal sent to the calling thread is handled before pthread_kill returns.
        assert_eq!(run.immediate_exit, 1, "the kick reached the armed kvm_run");
        let mut fresh = kvm_run::default();
        let armed = arm(&mut fresh);
        drop(armed);
        kick(ThreadHandle::current());
        assert_eq!(
            fresh.immediate_exit, 0,
            "no longer armed: the kick is only a signal"
        );
        // Arming clears what an earlier kick left.
        let _again = arm(&mut run);
        assert_eq!(run.immediate_exit, 0);
    }

    #[test]
    fn a_kick_not_yet_seen_can_be_spent() {
        install_kick_handler().unwrap();
        let mut run = kvm_run::default();
        let armed = arm(&mut run);
        kick(ThreadHandle::current());
        clear_kick();
        drop(armed);
        assert_eq!(run.immediate_exit, 0);
        clear_kick(); // not armed: nothing to do
    }
}
