//! Content-based page sharing with Linux KSM: guest RAM marked `MADV_MERGEABLE`, the
//! kernel's same-page merging switched on for the time of a run (its previous settings
//! restored afterwards, however the run ends), and KSM's own counters.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where Linux exposes KSM.
pub const SYSFS: &str = "/sys/kernel/mm/ksm";

/// Marks `len` bytes at `addr` (page-aligned, this process's private anonymous memory)
/// as candidates for merging.
pub fn mark_mergeable(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: MADV_MERGEABLE changes no content: KSM only merges pages whose bytes are
    // equal, copy-on-write, so the mapping reads the same before and after.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_MERGEABLE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// KSM's counters (host-wide: every process's mergeable memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsmCounters {
    /// Shared pages in use (each stands for several identical ones).
    pub pages_shared: u64,
    /// Sites sharing them: the pages saved.
    pub pages_sharing: u64,
    /// Pages scanned, unique, not yet merged.
    pub pages_unshared: u64,
    /// Full scans of every mergeable area so far.
    pub full_scans: u64,
}

impl KsmCounters {
    /// Reads the counters under `root` (normally [`SYSFS`]).
    pub fn read_at(root: &Path) -> io::Result<Self> {
        let get = |name: &str| read_u64(&root.join(name));
        Ok(KsmCounters {
            pages_shared: get("pages_shared")?,
            pages_sharing: get("pages_sharing")?,
            pages_unshared: get("pages_unshared")?,
            full_scans: get("full_scans")?,
        })
    }

    /// Reads the host's counters.
    pub fn read() -> io::Result<Self> {
        Self::read_at(Path::new(SYSFS))
    }
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let s = fs::read_to_string(path)?;
    s.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {s:?}: {e}", path.display()),
        )
    })
}

/// KSM switched on with the given scan rate; when the last session on the same root
/// drops, in this process or any other, every setting the first one changed is put back,
/// in reverse order. Sessions nest across processes: two runs of several VMs at once
/// share KSM, and the second to end restores what the host had before the first began.
///
/// The sessions open on a root are kept in a state file ([`state_path`]) under an
/// advisory `flock`: one line per holder (`pid N`) and one per saved setting
/// (`saved NAME VALUE`). A holder that died without ending its session is dropped from
/// the list by the next session that starts or ends; the settings saved for it are the
/// host's, and are put back when the last live session ends.
#[derive(Debug)]
pub struct KsmSession {
    root: PathBuf,
}

/// The state file of the sessions on `root`: `/tmp/virtlab-ksm-session` for the host's
/// [`SYSFS`], `ROOT/.virtlab-session` for any other root (a test's fake one).
pub fn state_path(root: &Path) -> PathBuf {
    if root == Path::new(SYSFS) {
        PathBuf::from("/tmp/virtlab-ksm-session")
    } else {
        root.join(".virtlab-session")
    }
}

/// The state file, open and locked (the lock goes with the descriptor).
struct Locked(fs::File);

impl Locked {
    fn open(root: &Path) -> io::Result<Self> {
        let path = state_path(root);
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns; it blocks until the lock is
        // ours and takes no memory.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("flock {}: {e}", path.display()),
            ));
        }
        Ok(Locked(f))
    }

    /// The live holders and the saved settings.
    fn read(&mut self) -> io::Result<State> {
        let mut text = String::new();
        self.0.seek(SeekFrom::Start(0))?;
        self.0.read_to_string(&mut text)?;
        Ok(State::parse(&text))
    }

    fn write(&mut self, state: &State) -> io::Result<()> {
        self.0.set_len(0)?;
        self.0.seek(SeekFrom::Start(0))?;
        self.0.write_all(state.render().as_bytes())?;
        self.0.sync_data()
    }
}

/// What the state file holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct State {
    /// One entry per open session (a process may hold several).
    pids: Vec<u32>,
    /// The settings the first session changed, and their values before, in order.
    saved: Vec<(String, String)>,
}

impl State {
    fn parse(text: &str) -> Self {
        let mut st = State::default();
        for line in text.lines() {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("pid"), Some(p), None) => {
                    if let Ok(p) = p.parse::<u32>() {
                        if alive(p) {
                            st.pids.push(p);
                        }
                    }
                }
                (Some("saved"), Some(name), Some(value)) => {
                    st.saved.push((name.to_string(), value.to_string()))
                }
                _ => {}
            }
        }
        st
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.pids {
            out.push_str(&format!("pid {p}\n"));
        }
        for (name, value) in &self.saved {
            out.push_str(&format!("saved {name} {value}\n"));
        }
        out
    }
}

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn restore(root: &Path, saved: &mut Vec<(String, String)>) {
    while let Some((name, old)) = saved.pop() {
        let path = root.join(&name);
        if let Err(e) = fs::write(&path, &old) {
            tracing::warn!("cannot restore {} to {old}: {e}", path.display());
        }
    }
}

impl KsmSession {
    /// Switches KSM on under `root` scanning `pages_to_scan` pages every `sleep_ms` (or
    /// joins the session already open there, by this process or another). On error the
    /// settings already changed are restored, and the error says which write the host
    /// refused, or that the state file could not be used.
    pub fn start_at(root: &Path, pages_to_scan: u64, sleep_ms: u64) -> io::Result<Self> {
        let mut lock = Locked::open(root)?;
        let mut st = lock.read()?;
        let me = std::process::id();
        if !st.pids.is_empty() {
            st.pids.push(me);
            lock.write(&st)?;
            return Ok(KsmSession {
                root: root.to_path_buf(),
            });
        }
        // Settings saved for a holder that died are the host's: keep them, and do not
        // take the dead session's values for the host's.
        let stale = !st.saved.is_empty();
        let mut saved = std::mem::take(&mut st.saved);
        let mut changed = Vec::new();
        for (name, value) in [
            ("pages_to_scan", pages_to_scan.to_string()),
            ("sleep_millisecs", sleep_ms.to_string()),
            ("run", "1".to_string()),
        ] {
            let path = root.join(name);
            let step = fs::read_to_string(&path).and_then(|old| {
                fs::write(&path, &value)?;
                Ok(old)
            });
            match step {
                Ok(old) => changed.push((name.to_string(), old.trim().to_string())),
                Err(e) => {
                    restore(root, if stale { &mut saved } else { &mut changed });
                    let _ = lock.write(&State::default());
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                }
            }
        }
        if !stale {
            saved = changed;
        }
        lock.write(&State {
            pids: vec![me],
            saved,
        })?;
        Ok(KsmSession {
            root: root.to_path_buf(),
        })
    }

    /// [`KsmSession::start_at`] on the host.
    pub fn start(pages_to_scan: u64, sleep_ms: u64) -> io::Result<Self> {
        Self::start_at(Path::new(SYSFS), pages_to_scan, sleep_ms)
    }

    /// The counters now.
    pub fn counters(&self) -> io::Result<KsmCounters> {
        KsmCounters::read_at(&self.root)
    }

    fn end(&self) -> io::Result<()> {
        let mut lock = Locked::open(&self.root)?;
        let mut st = lock.read()?;
        let me = std::process::id();
        if let Some(i) = st.pids.iter().position(|&p| p == me) {
            st.pids.remove(i);
        }
        if st.pids.is_empty() {
            restore(&self.root, &mut st.saved);
        }
        lock.write(&st)
    }
}

impl Drop for KsmSession {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::warn!("cannot end the KSM session on {}: {e}", self.root.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("virtlab-ksm-{tag}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for (n, v) in [
            ("run", "0\n"),
            ("pages_to_scan", "100\n"),
            ("sleep_millisecs", "20\n"),
            ("pages_shared", "5\n"),
            ("pages_sharing", "12\n"),
            ("pages_unshared", "3\n"),
            ("full_scans", "7\n"),
        ] {
            fs::write(dir.join(n), v).unwrap();
        }
        dir
    }

    fn value(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn session_sets_and_restores() {
        let dir = fake_sysfs("ok");
        {
            let s = KsmSession::start_at(&dir, 5000, 10).unwrap();
            assert_eq!(value(&dir, "run"), "1");
            assert_eq!(value(&dir, "pages_to_scan"), "5000");
            assert_eq!(value(&dir, "sleep_millisecs"), "10");
            let c = s.counters().unwrap();
            assert_eq!((c.pages_shared, c.pages_sharing, c.full_scans), (5, 12, 7));
        }
        assert_eq!(value(&dir, "run"), "0");
        assert_eq!(value(&dir, "pages_to_scan"), "100");
        assert_eq!(value(&dir, "sleep_millisecs"), "20");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nested_sessions_restore_when_the_last_ends() {
        let dir = fake_sysfs("nested");
        let first = KsmSession::start_at(&dir, 5000, 10).unwrap();
        let second = KsmSession::start_at(&dir, 6000, 5).unwrap();
        assert_eq!(
            value(&dir, "pages_to_scan"),
            "5000",
            "the second joins the first"
        );
        drop(first);
        assert_eq!(value(&dir, "run"), "1", "still in use");
        drop(second);
        assert_eq!(value(&dir, "run"), "0");
        assert_eq!(value(&dir, "pages_to_scan"), "100");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_session_of_another_process_is_joined_and_outlives_ours() {
        let dir = fake_sysfs("other");
        // Another live process (our parent) opened a session first: it saved the host's
        // settings and switched KSM on.
        let parent = std::os::unix::process::parent_id();
        fs::write(
            dir.join(".virtlab-session"),
            format!(
                "pid {parent}\nsaved pages_to_scan 100\nsaved sleep_millisecs 20\nsaved run 0\n"
            ),
        )
        .unwrap();
        fs::write(dir.join("run"), "1\n").unwrap();
        fs::write(dir.join("pages_to_scan"), "4000\n").unwrap();
        drop(KsmSession::start_at(&dir, 5000, 10).unwrap());
        assert_eq!(
            value(&dir, "run"),
            "1",
            "the other process's session is still on"
        );
        assert_eq!(value(&dir, "pages_to_scan"), "4000", "joined, not changed");
        let st = State::parse(&fs::read_to_string(dir.join(".virtlab-session")).unwrap());
        assert_eq!(st.pids, vec![parent]);
        assert_eq!(st.saved.len(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dead_holders_saved_settings_are_put_back() {
        let dir = fake_sysfs("dead");
        // A holder that died with KSM on: no such process, its saved settings the host's.
        let dead = u32::try_from(libc::pid_t::MAX).unwrap();
        fs::write(
            dir.join(".virtlab-session"),
            format!("pid {dead}\nsaved pages_to_scan 100\nsaved sleep_millisecs 20\nsaved run 0\n"),
        )
        .unwrap();
        fs::write(dir.join("run"), "1\n").unwrap();
        fs::write(dir.join("pages_to_scan"), "4000\n").unwrap();
        {
            let _s = KsmSession::start_at(&dir, 5000, 10).unwrap();
            assert_eq!(value(&dir, "pages_to_scan"), "5000");
        }
        assert_eq!(value(&dir, "run"), "0");
        assert_eq!(value(&dir, "pages_to_scan"), "100");
        assert_eq!(value(&dir, "sleep_millisecs"), "20");
        assert_eq!(
            fs::read_to_string(dir.join(".virtlab-session")).unwrap(),
            ""
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_write_restores_what_was_changed() {
        let dir = fake_sysfs("refused");
        // `run` is missing: the third write fails after two succeeded.
        fs::remove_file(dir.join("run")).unwrap();
        let e = KsmSession::start_at(&dir, 5000, 10).unwrap_err();
        assert!(e.to_string().contains("run"), "{e}");
        assert_eq!(value(&dir, "pages_to_scan"), "100");
        assert_eq!(value(&dir, "sleep_millisecs"), "20");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_counters_are_an_error() {
        let dir = fake_sysfs("garbage");
        fs::write(dir.join("pages_shared"), "lots\n").unwrap();
        assert!(KsmCounters::read_at(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
