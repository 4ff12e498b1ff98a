//! Where a run's results go, so that none is lost, overwritten or mixed with another's.
//!
//! The destination is settled and checked for writing before the first guest runs. The
//! files are written into a fresh staging directory beside it and moved into place as
//! one set at the end:
//!
//! - `--out DIR`: `DIR` is replaced as a whole — the old set is renamed aside, the new one
//!   renamed in, the old one removed. A lock (`flock` on `.DIR.lock` beside `DIR`), held
//!   from before the first run until the set is in place, makes a second run into the same
//!   `DIR` wait, so two runs never interleave their files. `DIR` must be new, empty or a
//!   set virtlab wrote (only `results.csv`, `results.json`, `report.html` and the
//!   report's `chart-*.svg`): a directory with other files is refused rather than
//!   replaced.
//! - no `--out`: each run gets a directory of its own, `virtlab-out/<UTC time>-<name>/`,
//!   and the symbolic link `virtlab-out/latest` is switched to it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where results go when no `--out` is given: one directory per run under it.
pub const DEFAULT_BASE: &str = "virtlab-out";

/// The files of a result set, the only ones a directory may hold to be replaced (with
/// the report's charts, `chart-*.svg`).
pub const RESULT_FILES: [&str; 3] = ["results.csv", "results.json", "report.html"];

/// Whether a file name is part of a result set.
pub fn is_result_file(name: &str) -> bool {
    RESULT_FILES.contains(&name) || (name.starts_with("chart-") && name.ends_with(".svg"))
}

/// Why the results cannot go where they should.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The file system refused.
    #[error("cannot {what} {}: {error}", path.display())]
    Io {
        /// What could not be done (`create`, `write into`, …).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What the OS said (part of the message, so not a `source` printed again).
        error: io::Error,
    },
    /// `--out` names something that is not a directory.
    #[error("--out {}: exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// `--out` names a directory holding files virtlab did not write.
    #[error(
        "--out {}: holds {found}, which is not part of a result set; virtlab replaces its \
         --out directory as a whole, so give a new or empty directory or one virtlab wrote",
        path.display()
    )]
    ForeignFiles {
        /// The directory.
        path: PathBuf,
        /// One of the files that are not virtlab's.
        found: String,
    },
    /// `--out` has no last component to name the directory (`""`, `..`, `/`).
    #[error("--out `{}` does not name a directory to write", .0.display())]
    BadPath(PathBuf),
    /// Ctrl-C while waiting for another run to release the directory.
    #[error("interrupted while waiting for {}", .0.display())]
    Interrupted(PathBuf),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OutputError {
    let path = path.to_path_buf();
    move |error| OutputError::Io { what, path, error }
}

/// Where the results of this invocation go.
#[derive(Debug, Clone)]
pub enum Target {
    /// An explicit `--out DIR`, replaced as a whole.
    Dir(PathBuf),
    /// A new directory `<UTC time>-<name>` under `base`, with `base/latest` pointing at
    /// it.
    RunDir {
        /// The directory holding the run directories (`virtlab-out`).
        base: PathBuf,
        /// What ran (a scenario's or a workload's name).
        name: String,
    },
}

/// A destination prepared for writing: staging directory created, lock held.
#[derive(Debug)]
pub struct Output {
    target: Target,
    /// The directory the files are written into before they move into place.
    staging: PathBuf,
    /// `YYYYMMDD-HHMMSS` (UTC) of when the invocation started, for run directories.
    stamp: String,
    /// Held until the set is in place (explicit `--out` only); released on drop.
    _lock: Option<File>,
    committed: bool,
}

/// An exclusive `flock` on `file`; with `wait`, blocks until it is free. Returns whether
/// the lock was taken.
fn flock(file: &File, wait: bool) -> io::Result<bool> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock only reads the flags and acts on the descriptor, which `file` keeps
    // open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) && !wait {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The parent directory of `path` ("." for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned())
}

/// `YYYYMMDD-HHMMSS` in UTC, now.
fn stamp_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    reports::format::utc_stamp(secs)
}

/// A name made safe for a directory: letters, digits, `.`, `_`, `-`; at most 48 bytes.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "run".into()
    } else {
        s
    }
}

/// Creates a fresh, empty directory `parent/.<stem>.tmp-<pid>[-k]`.
fn fresh_staging(parent: &Path, stem: &str) -> Result<PathBuf, OutputError> {
    for k in 0..100 {
        let suffix = if k == 0 {
            String::new()
        } else {
            format!("-{k}")
        };
        let dir = parent.join(format!(".{stem}.tmp-{}{suffix}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("write into", parent)(e)),
        }
    }
    Err(io_err("write into", parent)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a staging directory",
    )))
}

/// Checks that `dir`, if it exists, is a directory virtlab may replace.
fn check_replaceable(dir: &Path) -> Result<(), OutputError> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", dir)(e)),
    };
    if !meta.is_dir() {
        return Err(OutputError::NotADirectory(dir.to_path_buf()));
    }
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let entry = entry.map_err(io_err("read", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !(is_file && is_result_file(&name)) {
            return Err(OutputError::ForeignFiles {
                path: dir.to_path_buf(),
                found: format!("`{name}`"),
            });
        }
    }
    Ok(())
}

impl Output {
    /// Settles the destination before anything runs: creates the directories, checks
    /// that they can be written, takes the lock of an explicit `--out` (calling `waiting`
    /// first if another run holds it, then waiting; `interrupted` is asked when the wait
    /// is broken by a signal) and creates the staging directory.
    pub fn prepare(
        target: Target,
        waiting: impl FnOnce(&Path),
        interrupted: impl Fn() -> bool,
    ) -> Result<Output, OutputError> {
        let stamp = stamp_now();
        match target {
            Target::Dir(dir) => {
                if dir.file_name().is_none() {
                    return Err(OutputError::BadPath(dir));
                }
                // A symbolic link to a directory: replace what it points at.
                let dir = match fs::symlink_metadata(&dir) {
                    Ok(m) if m.file_type().is_symlink() => {
                        fs::canonicalize(&dir).map_err(io_err("resolve", &dir))?
                    }
                    _ => dir,
                };
                let parent = parent_of(&dir);
                fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
                let name = file_name_of(&dir);
                let lock_path = parent.join(format!(".{name}.lock"));
                let lock = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(&lock_path)
                    .map_err(io_err("write into", &parent))?;
                if !flock(&lock, false).map_err(io_err("lock", &lock_path))? {
                    waiting(&dir);
                    loop {
                        match flock(&lock, true) {
                            Ok(_) => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                                if interrupted() {
                                    return Err(OutputError::Interrupted(dir));
                                }
                            }
                            Err(e) => return Err(io_err("lock", &lock_path)(e)),
                        }
                    }
                }
                check_replaceable(&dir)?;
                let staging = fresh_staging(&parent, &name)?;
                Ok(Output {
                    target: Target::Dir(dir),
                    staging,
                    stamp,
                    _lock: Some(lock),
                    committed: false,
                })
            }
            Target::RunDir { base, name } => {
                fs::create_dir_all(&base).map_err(io_err("create", &base))?;
                let name = sanitize(&name);
                let staging = fresh_staging(&base, &format!("{stamp}-{name}"))?;
                Ok(Output {
                    target: Target::RunDir { base, name },
                    staging,
                    stamp,
                    _lock: None,
                    committed: false,
                })
            }
        }
    }

    /// The directory to write the files into; [`Output::commit`] moves them into place.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Moves the written set into place and returns where it is now.
    pub fn commit(mut self) -> Result<Committed, OutputError> {
        let result = match &self.target {
            Target::Dir(dir) => self.replace_dir(dir).map(|()| Committed {
                dir: dir.clone(),
                latest: None,
            }),
            Target::RunDir { base, name } => self.place_run_dir(base, name),
        };
        if result.is_ok() {
            self.committed = true;
        }
        result
    }

    fn replace_dir(&self, dir: &Path) -> Result<(), OutputError> {
        let parent = parent_of(dir);
        let name = file_name_of(dir);
        let aside = parent.join(format!(".{name}.old-{}", std::process::id()));
        let had_old = match fs::rename(dir, &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("replace", dir)(e)),
        };
        if let Err(e) = fs::rename(&self.staging, dir) {
            if had_old {
                let _ = fs::rename(&aside, dir);
            }
            return Err(io_err("replace", dir)(e));
        }
        if had_old {
            let _ = fs::remove_dir_all(&aside);
        }
        Ok(())
    }

    fn place_run_dir(&self, base: &Path, name: &str) -> Result<Committed, OutputError> {
        let mut k = 1;
        let leaf = loop {
            let leaf = if k == 1 {
                format!("{}-{name}", self.stamp)
            } else {
                format!("{}-{name}-{k}", self.stamp)
            };
            let dir = base.join(&leaf);
            // rename() would replace an empty directory: never reuse an existing name.
            if !dir.exists() {
                match fs::rename(&self.staging, &dir) {
                    Ok(()) => break leaf,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {}
                    Err(e) => return Err(io_err("create", &dir)(e)),
                }
            }
            k += 1;
        };
        // Switch `latest` with one rename, so it always points at a whole set.
        let latest = base.join("latest");
        let tmp_link = base.join(format!(".latest.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp_link);
        let linked = std::os::unix::fs::symlink(&leaf, &tmp_link)
            .and_then(|()| fs::rename(&tmp_link, &latest));
        if linked.is_err() {
            let _ = fs::remove_file(&tmp_link);
        }
        Ok(Committed {
            dir: base.join(&leaf),
            latest: linked.is_ok().then_some(latest),
        })
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Where a committed set is.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The `latest` link that now points at it (run directories only).
    pub latest: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("virtlab-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_set(out: &Output, tag: &str) {
        for f in RESULT_FILES {
            fs::write(out.staging().join(f), tag).unwrap();
        }
    }

    #[test]
    fn an_explicit_dir_is_replaced_as_a_whole() {
        let root = scratch("dir");
        let dir = root.join("a/b/out");
        let out = Output::prepare(Target::Dir(dir.clone()), |_| panic!(), || false).unwrap();
        write_set(&out, "one");
        assert!(!dir.exists(), "nothing is in place before the commit");
        out.commit().unwrap();
        let out = Output::prepare(Target::Dir(dir.clone()), |_| panic!(), || false).unwrap();
        write_set(&out, "two");
        // Until the commit the old set is whole.
        assert_eq!(fs::read_to_string(dir.join("results.json")).unwrap(), "one");
        let c = out.commit().unwrap();
        assert_eq!(c.dir, dir);
        for f in RESULT_FILES {
            assert_eq!(fs::read_to_string(dir.join(f)).unwrap(), "two");
        }
        // Nothing is left beside it but the lock file.
        let mut names: Vec<String> = fs::read_dir(root.join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".out.lock", "out"]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_dropped_output_leaves_the_old_set_alone() {
        let root = scratch("drop");
        let dir = root.join("out");
        let out = Output::prepare(Target::Dir(dir.clone()), |_| {}, || false).unwrap();
        write_set(&out, "one");
        out.commit().unwrap();
        let out = Output::prepare(Target::Dir(dir.clone()), |_| {}, || false).unwrap();
        write_set(&out, "half");
        drop(out);
        assert_eq!(fs::read_to_string(dir.join("report.html")).unwrap(), "one");
        assert_eq!(fs::read_dir(&root).unwrap().count(), 2); // out and its lock
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_directory_with_other_files_or_a_file_is_refused() {
        let root = scratch("foreign");
        fs::write(root.join("notes.txt"), "mine").unwrap();
        let e = Output::prepare(Target::Dir(root.clone()), |_| {}, || false).unwrap_err();
        assert!(matches!(e, OutputError::ForeignFiles { .. }), "{e}");
        assert!(e.to_string().contains("`notes.txt`"), "{e}");
        let e = Output::prepare(Target::Dir(root.join("notes.txt")), |_| {}, || false).unwrap_err();
        assert!(matches!(e, OutputError::NotADirectory(_)), "{e}");
        assert_eq!(fs::read_to_string(root.join("notes.txt")).unwrap(), "mine");
        for bad in ["", "..", "/"] {
            let e = Output::prepare(Target::Dir(bad.into()), |_| {}, || false).unwrap_err();
            assert!(matches!(e, OutputError::BadPath(_)), "{bad}: {e}");
        }
        let _ = fs::remove_file(parent_of(&root).join(format!(".{}.lock", file_name_of(&root))));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_unwritable_place_fails_at_once_naming_the_os_error_once() {
        let e = Output::prepare(Target::Dir("/proc/x".into()), |_| {}, || false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/proc"), "{msg}");
        assert_eq!(msg.matches(": ").count(), 1, "{msg}");
    }

    #[test]
    fn run_directories_never_overwrite_each_other_and_latest_follows() {
        let root = scratch("runs");
        let base = root.join("virtlab-out");
        let mut dirs = Vec::new();
        for tag in ["one", "two", "three"] {
            let out = Output::prepare(
                Target::RunDir {
                    base: base.clone(),
                    name: "pio/../x y".into(),
                },
                |_| {},
                || false,
            )
            .unwrap();
            write_set(&out, tag);
            let c = out.commit().unwrap();
            assert_eq!(c.latest.as_deref(), Some(base.join("latest").as_path()));
            assert_eq!(
                fs::read_to_string(base.join("latest/results.json")).unwrap(),
                tag
            );
            dirs.push(c.dir);
        }
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), 3);
        for d in &dirs {
            assert!(d.starts_with(&base), "{}", d.display());
            assert!(
                d.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains("-pio_.._x_y"),
                "{}",
                d.display()
            );
        }
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(sanitize("classroom"), "classroom");
        assert_eq!(sanitize("../../etc"), "_.._etc");
        assert_eq!(sanitize(""), "run");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 48);
    }
}
