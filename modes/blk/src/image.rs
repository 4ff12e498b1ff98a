//! The disk image: a host file of whole sectors. Every read and write is checked against
//! the size the image had when it was opened, so nothing is ever written outside it,
//! whatever offset or length a request names.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use contract::abi::blk::SECTOR_SIZE;

/// What went wrong with the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened or created.
    #[error("disk image {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty or not a whole number of sectors.
    #[error("disk image {path}: {len} bytes is not a whole, nonzero number of {SECTOR_SIZE}-byte sectors")]
    NotSectors {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// A request reaches past the end of the image (or wraps around).
    #[error("{len} bytes at offset {offset:#x} reach past the end of the {size}-byte image")]
    OutOfBounds {
        /// Byte offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The image's size.
        size: u64,
    },
    /// The host's read or write failed.
    #[error("disk image I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A disk image file, opened read/write.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    path: PathBuf,
    len: u64,
}

impl DiskImage {
    /// Opens an existing image; its size must be a whole, nonzero number of sectors.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let open_err = |source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        if len == 0 || len % SECTOR_SIZE != 0 {
            return Err(ImageError::NotSectors {
                path: path.to_path_buf(),
                len,
            });
        }
        Ok(DiskImage {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Creates (or truncates) an image of `len` bytes, zero-filled (sparse on the host).
    pub fn create(path: &Path, len: u64) -> Result<Self, ImageError> {
        if len == 0 || len % SECTOR_SIZE != 0 {
            return Err(ImageError::NotSectors {
                path: path.to_path_buf(),
                len,
            });
        }
        let open_err = |source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(open_err)?;
        file.set_len(len).map_err(open_err)?;
        Ok(DiskImage {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image has no bytes (never: [`DiskImage::open`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.len / SECTOR_SIZE
    }

    /// Checks that `len` bytes at `offset` lie inside the image.
    pub fn check(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ImageError::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        self.check(offset, buf.len() as u64)?;
        Ok(self.file.read_exact_at(buf, offset)?)
    }

    /// Writes `buf` at `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), ImageError> {
        self.check(offset, buf.len() as u64)?;
        Ok(self.file.write_all_at(buf, offset)?)
    }

    /// Flushes what was written to the host's disk.
    pub fn flush(&self) -> Result<(), ImageError> {
        Ok(self.file.sync_data()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("blk-test-{tag}-{}.img", std::process::id()))
    }

    #[test]
    fn reads_and_writes_stay_inside_the_image() {
        let path = temp_path("bounds");
        let img = DiskImage::create(&path, 4 * SECTOR_SIZE).unwrap();
        assert_eq!((img.len(), img.sectors()), (2048, 4));
        img.write_at(1536, &[7u8; 512]).unwrap();
        for (offset, len) in [(1537, 512), (2048, 1), (u64::MAX, 2), (0, 2049)] {
            let e = img.write_at(offset, &vec![1u8; len]).unwrap_err();
            assert!(matches!(e, ImageError::OutOfBounds { .. }), "{e}");
        }
        let mut back = [0u8; 512];
        img.read_at(1536, &mut back).unwrap();
        assert_eq!(back, [7u8; 512]);
        assert!(img.read_at(2000, &mut back).is_err());
        drop(img);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2048);
        let again = DiskImage::open(&path).unwrap();
        assert_eq!(again.sectors(), 4);
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert!(matches!(
            DiskImage::open(&path),
            Err(ImageError::NotSectors { len: 100, .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            DiskImage::open(&path),
            Err(ImageError::Open { .. })
        ));
    }
}
