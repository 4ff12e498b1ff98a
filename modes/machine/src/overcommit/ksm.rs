//! Content-based page sharing with Linux KSM: guest RAM marked `MADV_MERGEABLE`, the
//! kernel's same-page merging switched on for the time of a run (its previous settings
//! restored afterwards, however the run ends), and KSM's own counters.

use std::fs;
use std::io;
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

/// KSM switched on with the given scan rate; when the last session of this process on
/// the same root drops, every setting the first one changed is put back, in reverse
/// order. Sessions nest: two runs of several VMs at once share KSM, and the second to end
/// restores what the host had before the first began.
#[derive(Debug)]
pub struct KsmSession {
    root: PathBuf,
}

/// Open sessions per root, and what the first of them changed.
type Sessions = std::collections::HashMap<PathBuf, (usize, Vec<(&'static str, String)>)>;

fn sessions() -> std::sync::MutexGuard<'static, Sessions> {
    static SESSIONS: std::sync::OnceLock<std::sync::Mutex<Sessions>> = std::sync::OnceLock::new();
    SESSIONS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn restore(root: &Path, saved: &mut Vec<(&'static str, String)>) {
    while let Some((name, old)) = saved.pop() {
        let path = root.join(name);
        if let Err(e) = fs::write(&path, &old) {
            tracing::warn!("cannot restore {} to {old}: {e}", path.display());
        }
    }
}

impl KsmSession {
    /// Switches KSM on under `root` scanning `pages_to_scan` pages every `sleep_ms` (or
    /// joins the session already open there). On error the settings already changed are
    /// restored, and the error says which write the host refused.
    pub fn start_at(root: &Path, pages_to_scan: u64, sleep_ms: u64) -> io::Result<Self> {
        let mut all = sessions();
        if let Some((count, _)) = all.get_mut(root) {
            *count += 1;
            return Ok(KsmSession {
                root: root.to_path_buf(),
            });
        }
        let mut saved = Vec::new();
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
                Ok(old) => saved.push((name, old.trim().to_string())),
                Err(e) => {
                    restore(root, &mut saved);
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                }
            }
        }
        all.insert(root.to_path_buf(), (1, saved));
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
}

impl Drop for KsmSession {
    fn drop(&mut self) {
        let mut all = sessions();
        let last = match all.get_mut(&self.root) {
            Some((count, _)) => {
                *count -= 1;
                *count == 0
            }
            None => false,
        };
        if last {
            if let Some((_, mut saved)) = all.remove(&self.root) {
                restore(&self.root, &mut saved);
            }
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
