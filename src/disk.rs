//! The disk of a run that needs one: the image file is the user's (`--disk FILE`,
//! created with the size the workload needs if it does not exist) or a fresh one in the
//! temporary directory, removed after the run. After the run the host reads the image
//! back and checks it holds exactly what the guest wrote.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use contract::{DiskOptions, GuestImage, Outcome, RunOptions, RunRecord};
use guests::{Params, Workload};

/// An image made for one run, removed when dropped.
#[derive(Debug)]
pub struct TempImage(PathBuf);

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh, unique image path in the temporary directory.
fn temp_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("virtlab-disk-{}-{n}.img", std::process::id()))
}

/// The disk options for one run of `w` with `p`, and the image to remove afterwards (if
/// this made a temporary one). `None` if the workload needs no disk.
pub fn prepare(
    w: &Workload,
    p: &Params,
    opts: &RunOptions,
) -> Result<Option<(DiskOptions, Option<TempImage>)>, String> {
    if !guests::blk::needs_disk(w.name) {
        return Ok(None);
    }
    let asked = opts.disk.clone().unwrap_or_default();
    let bytes = guests::blk::disk_bytes(p).max(contract::abi::blk::SECTOR_SIZE);
    let (path, temp) = match &asked.path {
        Some(path) => {
            if !path.exists() {
                create(path, bytes)?;
            }
            (path.clone(), None)
        }
        None => {
            let path = temp_path();
            create(&path, bytes)?;
            (path.clone(), Some(TempImage(path)))
        }
    };
    Ok(Some((
        DiskOptions {
            path: Some(path),
            ..asked
        },
        temp,
    )))
}

fn create(path: &Path, bytes: u64) -> Result<(), String> {
    blk::DiskImage::create(path, bytes)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The disk workload parameters an image of the catalog was built with (`None` for an
/// image that needs no disk).
pub fn params_of(image: &GuestImage) -> Option<Params> {
    if !guests::blk::needs_disk(&image.name) {
        return None;
    }
    let get = |k: &str| image.params.get(k).copied();
    let d = Params::default();
    Some(Params {
        n: get("n")?,
        s: get("s").unwrap_or(d.s),
        q: get("q").unwrap_or(d.q),
        ..d
    })
}

/// [`prepare`] for a catalog image run straight through an engine (as the tests do):
/// the disk options with the image's own parameters, the temporary image and the
/// parameters to [`verify`] with.
pub fn for_image(
    image: &GuestImage,
    opts: &RunOptions,
) -> Result<Option<(DiskOptions, Option<TempImage>, Params)>, String> {
    let Some(p) = params_of(image) else {
        return Ok(None);
    };
    let w = guests::find(&image.name).map_err(|e| e.to_string())?;
    Ok(prepare(w, &p, opts)?.map(|(d, t)| (d, t, p)))
}

/// Judges `record` against the image's expectations under the run's disk backend (a
/// backend that moves the doorbell out of the vCPU's exits changes the oracle).
pub fn judge(image: &GuestImage, disk: Option<&DiskOptions>, record: &mut RunRecord) {
    let backend = disk.map(|d| d.backend).unwrap_or_default();
    match params_of(image) {
        Some(p) if backend != contract::BlockBackend::Inline => {
            let mut own = image.clone();
            let irqfd = machine::disk::completion(machine::GuestPrivilege::Kernel, backend)
                == machine::disk::Completion::Interrupt;
            guests::blk::for_backend(&mut own.expected, &image.name, backend, &p, irqfd);
            own.judge(record);
        }
        _ => image.judge(record),
    }
}

/// Reads the image back and checks its first N·S bytes are the pattern the guest wrote;
/// a completed run whose image differs becomes a divergence that says where.
pub fn verify(disk: &DiskOptions, p: &Params, record: &mut RunRecord) {
    let Some(path) = &disk.path else { return };
    let image = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            record
                .notes
                .push(format!("disk image {} unreadable: {e}", path.display()));
            return;
        }
    };
    let want = guests::blk::disk_bytes(p);
    match guests::blk::first_difference(&image, p) {
        None => record.notes.push(format!(
            "disk image verified on the host: its first {want} bytes are what the guest wrote"
        )),
        Some(at) => {
            let what = format!("the disk image differs from what the guest wrote at byte {at}");
            if let Outcome::Completed { result, .. } = record.outcome {
                let result = Some(result);
                record.outcome = Outcome::Diverged {
                    expected: format!("{want} bytes of the pattern on the disk"),
                    got: what.clone(),
                    why: "the host read the image back after the run".into(),
                    declared: false,
                    host_caused: false,
                    result,
                };
            }
            record.notes.push(what);
        }
    }
}
