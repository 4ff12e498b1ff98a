//! Ctrl-C: the first one asks the invocation to stop after the run in progress and keep
//! what finished; a second one ends the process at once (the handler is installed with
//! `SA_RESETHAND`, so SIGINT's default action is back after the first).
//!
//! Guests run on a thread that blocks SIGINT ([`block_in_this_thread`]), so the signal
//! never interrupts a `KVM_RUN` and never shows up in a run's exit counts; the main thread
//! takes it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

const NOTICE: &[u8] =
    b"\nvirtlab: stopping after the run in progress (Ctrl-C again to stop at once)\n";

extern "C" fn on_sigint(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    // SAFETY: write(2) is async-signal-safe; the buffer is a static of the given length.
    unsafe { libc::write(libc::STDERR_FILENO, NOTICE.as_ptr().cast(), NOTICE.len()) };
}

/// Installs the SIGINT handler.
pub fn install() -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value: no flags and an empty mask.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // No SA_RESTART: a blocking wait (for another run's lock) returns EINTR and can stop.
    action.sa_flags = libc::SA_RESETHAND;
    // SAFETY: `action` is initialised and outlives the call; the old action is not asked for.
    let rc = unsafe { libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Blocks SIGINT in the calling thread (and the threads it starts).
pub fn block_in_this_thread() -> io::Result<()> {
    // SAFETY: an all-zero `sigset_t` is a valid value for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is an initialised sigset_t and SIGINT a valid signal number.
    unsafe { libc::sigaddset(&mut set, libc::SIGINT) };
    // SAFETY: `set` is initialised; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
