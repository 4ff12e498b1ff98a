//! The user's input files — guest binaries, scenarios, results — read with limits.
//!
//! A path that is not a regular file (a FIFO, a device, a directory, a socket) is refused
//! by its type before it is opened; the open itself never blocks (`O_NONBLOCK`, in case the
//! path was swapped for a FIFO in between); the size is checked before reading, and the
//! read stops one byte past the limit in case the file grows meanwhile.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest scenario file read.
pub const MAX_SCENARIO_BYTES: u64 = 4 << 20;

/// Largest `results.json` that `virtlab report` reads.
pub const MAX_RESULTS_BYTES: u64 = 256 << 20;

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file system refused (missing file, no permission, …).
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said (printed in the message, so not a `source`).
        error: io::Error,
    },
    /// The path names something other than a regular file.
    #[error("{}: is a {kind}, not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than what it is read for can use.
    #[error(
        "{}: {size} bytes is over the limit of {limit} bytes for {what}",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or, when it grew while being read, the bytes read so far).
        size: u64,
        /// The limit.
        limit: u64,
        /// What the file is read as, and why that bounds it.
        what: &'static str,
    },
}

/// What a non-regular file is, for messages.
fn kind_of(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// Reads all of the regular file at `path`, refusing more than `limit` bytes; `what` says
/// in messages what the file is read as.
pub fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, InputError> {
    let io_err = |error| InputError::Io {
        path: path.to_path_buf(),
        error,
    };
    let check = |meta: &Metadata| match kind_of(meta) {
        Some(kind) => Err(InputError::NotAFile {
            path: path.to_path_buf(),
            kind,
        }),
        None if meta.len() > limit => Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
            what,
        }),
        None => Ok(()),
    };
    check(&std::fs::metadata(path).map_err(io_err)?)?;
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    check(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
            what,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused_by_type() {
        for (path, kind) in [("/dev/zero", "character device"), ("/", "directory")] {
            let e = read_bounded(Path::new(path), 10, "a test").unwrap_err();
            assert!(
                matches!(&e, InputError::NotAFile { kind: k, .. } if *k == kind),
                "{e}"
            );
            assert_eq!(
                e.to_string(),
                format!("{path}: is a {kind}, not a regular file")
            );
        }
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("virtlab-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("sparse");
        let file = File::create(&f).unwrap();
        // 1 GiB that takes no space: the size alone must refuse it.
        file.set_len(1 << 30).unwrap();
        let e = read_bounded(&f, 1 << 20, "a test").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("1073741824 bytes is over the limit of 1048576 bytes for a test"),
            "{e}"
        );
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_bounded(&f, 5, "a test").unwrap(), b"12345");
        assert!(read_bounded(&f, 4, "a test").is_err());
        let e = read_bounded(&dir.join("none"), 4, "a test").unwrap_err();
        // The OS error appears once.
        assert_eq!(e.to_string().matches("No such file").count(), 1, "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
