//! The guest images of an invocation, each assembled once: a workload in one flavour with
//! one set of parameters is the same image for every mode, repeat and warm-up that runs it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use contract::{Flavour, GuestImage};
use guests::Params;

use crate::engines;
use crate::harness::{Guest, Job};

/// What makes a workload's image: the workload, the flavour and the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageKey {
    /// The workload's name in the catalog.
    pub workload: &'static str,
    /// The flavour the engine asks for.
    pub flavour: Flavour,
    /// N, B and the timer delay.
    pub params: Params,
}

// `Flavour` and `Params` are only `Eq`; the key hashes what `Eq` compares.
impl Hash for ImageKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.workload.hash(state);
        std::mem::discriminant(&self.flavour).hash(state);
        self.params.n.hash(state);
        self.params.b.hash(state);
        self.params.delay_us.hash(state);
        self.params.k.hash(state);
    }
}

/// The images of a list of jobs, by [`ImageKey`], with the error of one that could not be
/// assembled (every job that needs it fails with that error, the others run).
#[derive(Debug, Default)]
pub struct Images {
    built: HashMap<ImageKey, Result<GuestImage, String>>,
    assembled: usize,
}

impl Images {
    /// No images yet: each is assembled when it is first asked for.
    pub fn new() -> Self {
        Images::default()
    }

    /// Every image `jobs` need, assembled now, once each (in the flavour of the engine of
    /// each job's mode; a mode this build has no engine for needs no image).
    pub fn for_jobs(jobs: &[Job]) -> Self {
        let mut images = Images::new();
        for job in jobs {
            if let Some(engine) = engines::for_mode(job.mode) {
                // An error is kept for the jobs that need the image, and reported by them.
                let _ = images.get(&job.guest, engine.flavour());
            }
        }
        images
    }

    /// The image of `guest` in `flavour`: a workload's is assembled the first time it is
    /// asked for and the same one afterwards; a user's binary is the one the guest holds.
    pub fn get<'a>(
        &'a mut self,
        guest: &'a Guest,
        flavour: Flavour,
    ) -> Result<&'a GuestImage, String> {
        let (workload, params) = match guest {
            Guest::Binary(img) => return Ok(img),
            Guest::Shared(img) => return Ok(img),
            Guest::Workload(w, params) => (*w, *params),
        };
        let key = ImageKey {
            workload: workload.name,
            flavour,
            params,
        };
        let assembled = &mut self.assembled;
        let built = self.built.entry(key).or_insert_with(|| {
            *assembled += 1;
            workload.image(flavour, params).map_err(|e| e.to_string())
        });
        built.as_ref().map_err(Clone::clone)
    }

    /// How many images were assembled (successfully or not): one per key asked for.
    pub fn assembled(&self) -> usize {
        self.assembled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use contract::Mode;

    use super::*;

    fn pio(n: u64) -> Guest {
        let w = guests::find("pio").unwrap();
        Guest::Workload(
            w,
            Params {
                n,
                ..Params::default()
            },
        )
    }

    fn job(guest: Guest, mode: Mode, repeat: u32, warmup: bool) -> Job {
        Job {
            guest,
            mode,
            repeat,
            warmup,
            backend: None,
        }
    }

    #[test]
    fn an_image_is_assembled_once_per_workload_flavour_and_parameters() {
        let mut jobs = Vec::new();
        for (repeat, warmup) in [(0, true), (0, false), (1, false), (2, false)] {
            for n in [10, 20] {
                for mode in Mode::ALL {
                    jobs.push(job(pio(n), mode, repeat, warmup));
                }
            }
        }
        let flavours = {
            let mut f: Vec<Flavour> = Vec::new();
            for mode in Mode::ALL {
                let fl = engines::for_mode(mode).unwrap().flavour();
                if !f.contains(&fl) {
                    f.push(fl);
                }
            }
            f.len()
        };
        let mut images = Images::for_jobs(&jobs);
        // Two N values in each flavour, however many modes, repeats and warm-ups.
        assert_eq!(images.assembled(), 2 * flavours);
        let first: *const GuestImage = images.get(&jobs[0].guest, Flavour::Native).unwrap();
        // The same N and mode one repeat later: two N values for every mode further on.
        let later = &jobs[2 * Mode::ALL.len()].guest;
        let again: *const GuestImage = images.get(later, Flavour::Native).unwrap();
        assert!(std::ptr::eq(first, again), "a repeat reuses the image");
        assert_eq!(images.assembled(), 2 * flavours);
    }

    #[test]
    fn a_binary_is_its_own_image() {
        let img = GuestImage::flat("mine", vec![0xF4], 0x10_0000, 0x10_0000);
        let shared = Guest::Shared(Arc::new(img.clone()));
        let own = Guest::Binary(img);
        let mut images = Images::new();
        assert_eq!(images.get(&own, Flavour::Native).unwrap().name, "mine");
        let from_arc: *const GuestImage = images.get(&shared, Flavour::Native).unwrap();
        let Guest::Shared(arc) = &shared else {
            unreachable!()
        };
        assert!(std::ptr::eq(from_arc, Arc::as_ptr(arc)));
        assert_eq!(images.assembled(), 0);
    }

    #[test]
    fn an_image_that_cannot_be_assembled_is_an_error_for_every_job_once() {
        let over = pio(guests::find("pio").unwrap().max_n + 1);
        let mut images = Images::new();
        for _ in 0..3 {
            let e = images.get(&over, Flavour::Native).unwrap_err();
            assert!(e.contains("over the limit"), "{e}");
        }
        assert_eq!(images.assembled(), 1);
    }
}
