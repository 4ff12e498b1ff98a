//! The workload catalog: small x86-64 guests assembled in Rust with iced-x86's
//! `CodeAssembler`, each written once against the [`GuestOps`] pv-ops interface and
//! carrying its expected result, console output and expected-counts oracle.
//!
//! ```
//! use guests::{build, Params};
//! use contract::{CountKey, ExitKind, Flavour, Mode};
//!
//! let image = build("pio", Flavour::Native, Params { n: 1000, ..Params::default() })?;
//! let oracle = &image.expected.oracles[&Mode::HwAssisted];
//! assert_eq!(oracle.counts[&CountKey::PortWrites(0xE9)], 1000);
//! assert_eq!(oracle.counts[&CountKey::Exits(ExitKind::IoOut)], 1001); // + the exit port
//! # Ok::<(), guests::Error>(())
//! ```

pub mod asm;
pub mod blk;
pub mod kernel;
pub mod memory;
pub mod ops;
pub mod oracles;
pub mod pv_ops;
pub mod workloads;

use std::collections::BTreeMap;

use contract::abi::layout;
use contract::{Flavour, GuestImage};
use iced_x86::code_asm::CodeAssembler;

pub use ops::{GuestOps, NativeOps};
pub use pv_ops::ParavirtOps;
pub use workloads::{Params, Workload, WORKLOADS};

impl Default for Params {
    fn default() -> Self {
        Params {
            n: 100,
            b: 1,
            delay_us: 0,
            s: 4096,
            q: 8,
            k: 8,
        }
    }
}

/// Why a workload could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No workload has this name.
    #[error("unknown workload `{name}` (known workloads: {known})")]
    UnknownWorkload {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// This flavour of the workload does not exist yet.
    #[error("the {flavour:?} flavour of `{name}` is not available")]
    FlavourUnavailable {
        /// Workload.
        name: String,
        /// Flavour.
        flavour: Flavour,
    },
    /// A parameter is above its limit.
    #[error("`{name}`: {param} = {value} is over the limit of {limit} ({why})")]
    OverLimit {
        /// Workload.
        name: String,
        /// The parameter (`n`, `b` or `k`).
        param: &'static str,
        /// The value asked for.
        value: u64,
        /// The largest value accepted.
        limit: u64,
        /// What the limit protects.
        why: &'static str,
    },
    /// A parameter is out of range.
    #[error("invalid parameter for `{name}`: {why}")]
    InvalidParams {
        /// Workload.
        name: String,
        /// Why.
        why: String,
    },
    /// The assembler refused the program (a bug in the workload).
    #[error("assembling `{name}` failed: {source}")]
    Assemble {
        /// Workload.
        name: String,
        /// The assembler's error.
        #[source]
        source: iced_x86::IcedError,
    },
}

/// Largest N any workload accepts; each has its own [`Workload::max_n`], at most this.
pub const MAX_N: u64 = 10_000_000;

/// Largest B (batch size) any workload accepts, in every flavour: the paravirtual ops'
/// buffers hold this many operations, and one hypercall carries at most this many.
pub const MAX_B: u64 = pv_ops::MAX_B;

/// Why `mode` cannot run `workload` in this build, if it cannot: the workload has no
/// oracle there, and a scenario reports the pair as missing instead of running it. Every
/// mode runs every workload today (the guest kernel included: natively on hw-assisted,
/// on shadow tables in trap-emulate and binary translation, on direct paging in its
/// paravirtual flavour), so the answer is `None`; the question stays for a workload a
/// mode cannot run yet.
///
/// ```
/// use contract::Mode;
/// for mode in Mode::ALL {
///     assert!(guests::unsupported("syscall", mode).is_none());
/// }
/// assert!(guests::unsupported("pio", Mode::Paravirt).is_none());
/// ```
pub fn unsupported(_workload: &str, _mode: contract::Mode) -> Option<&'static str> {
    None
}

/// Largest K (pages per address space) forkwait accepts.
pub const MAX_K: u64 = 2_500;

/// Looks a workload up by name.
pub fn find(name: &str) -> Result<&'static Workload, Error> {
    WORKLOADS
        .iter()
        .find(|w| w.name == name)
        .ok_or_else(|| Error::UnknownWorkload {
            name: name.to_string(),
            known: names().join(", "),
        })
}

/// Every workload name.
pub fn names() -> Vec<&'static str> {
    WORKLOADS.iter().map(|w| w.name).collect()
}

/// The ops of a flavour, unbatched (B = 1); [`ops_with`] takes the batch size.
pub fn ops_for(flavour: Flavour) -> Option<&'static dyn GuestOps> {
    match flavour {
        Flavour::Native => Some(&NativeOps),
        Flavour::Paravirt => Some(&pv_ops::UNBATCHED),
    }
}

/// The ops of a flavour for these parameters (the paravirtual ops batch `params.b`
/// operations per hypercall); `None` if the flavour cannot take them.
pub fn ops_with(flavour: Flavour, params: &Params) -> Option<Box<dyn GuestOps>> {
    match flavour {
        Flavour::Native => Some(Box::new(NativeOps)),
        Flavour::Paravirt => ParavirtOps::new(params.b).map(|o| Box::new(o) as Box<dyn GuestOps>),
    }
}

/// Builds a workload's image in one flavour.
pub fn build(name: &str, flavour: Flavour, params: Params) -> Result<GuestImage, Error> {
    let w = find(name)?;
    w.image(flavour, params)
}

impl Workload {
    /// Checks `params` against this workload's limits, without building anything.
    ///
    /// N is at most [`Workload::max_n`]. The limits keep one run within what the default
    /// run limits and a patient user can meet: at its limit a workload needs at most 5
    /// million exits, traps or hypercalls in any mode (the default `--max-exits`), and
    /// the loops without exits (compute, call-ret) at most 10 million iterations, which a
    /// host that emulates guest kernel code (`kvm_pvm`, about 15 µs an iteration) runs in
    /// a few minutes. pio's limit also bounds its expected console text. B is at most
    /// [`MAX_B`] in every flavour. Nothing on the host grows with N: expected results are
    /// computed in closed form.
    pub fn check(&self, params: &Params) -> Result<(), Error> {
        if params.n > self.max_n {
            return Err(Error::OverLimit {
                name: self.name.into(),
                param: "n",
                value: params.n,
                limit: self.max_n,
                why: "the most iterations a run of this workload may have",
            });
        }
        if params.b == 0 {
            return Err(Error::InvalidParams {
                name: self.name.into(),
                why: "b (batch size) must be at least 1".into(),
            });
        }
        if self.name == "forkwait" && params.k > MAX_K {
            return Err(Error::OverLimit {
                name: self.name.into(),
                param: "k",
                value: params.k,
                limit: MAX_K,
                why: "the frames the guest kernel has in 16 MiB of RAM",
            });
        }
        if params.b > MAX_B {
            return Err(Error::OverLimit {
                name: self.name.into(),
                param: "b",
                value: params.b,
                limit: MAX_B,
                why: "the paravirtual ops' batch buffers",
            });
        }
        if blk::needs_disk(self.name) {
            blk::check(params).map_err(|why| Error::InvalidParams {
                name: self.name.into(),
                why,
            })?;
        }
        Ok(())
    }

    /// Assembles this workload in `flavour` with `params` (checked first).
    pub fn image(&self, flavour: Flavour, params: Params) -> Result<GuestImage, Error> {
        self.check(&params)?;
        let unavailable = || Error::FlavourUnavailable {
            name: self.name.into(),
            flavour,
        };
        let ops = ops_with(flavour, &params).ok_or_else(unavailable)?;
        if kernel::workloads::KERNEL_WORKLOADS.contains(&self.name) && ops.kernel().is_none() {
            return Err(unavailable());
        }
        let asm_err = |source| Error::Assemble {
            name: self.name.into(),
            source,
        };
        let mut a = CodeAssembler::new(64).map_err(asm_err)?;
        (self.build)(&mut a, ops.as_ref(), &params).map_err(asm_err)?;
        let bytes = a.assemble(layout::DEFAULT_LOAD).map_err(asm_err)?;
        let mut p = BTreeMap::from([("n".to_string(), params.n)]);
        if self.batched {
            p.insert("b".into(), params.b);
        }
        if self.name == "hlt-timer" || self.name == "balloon" {
            p.insert("delay_us".into(), u64::from(params.delay_us));
        }
        if blk::needs_disk(self.name) {
            p.insert("s".into(), params.s);
            if self.name == "blk-virtio" {
                p.insert("q".into(), params.q);
            }
        }
        if self.name == "balloon" {
            p.insert("b".into(), params.b);
        }
        if self.name == "forkwait" {
            p.insert("k".into(), params.k);
        }
        Ok(GuestImage {
            name: self.name.to_string(),
            bytes,
            load_addr: layout::DEFAULT_LOAD,
            entry: layout::DEFAULT_LOAD,
            stack_top: layout::DEFAULT_STACK_TOP,
            flavour,
            params: p,
            expected: self.expectations(&params),
        })
    }

    /// Result, console and, for every mode that has one, the oracle.
    pub fn expectations(&self, params: &Params) -> contract::Expectations {
        let mut e = (self.expect)(params);
        for mode in contract::Mode::ALL {
            if let Some(o) = oracles::oracle(mode, self.name, params) {
                e.oracles.insert(mode, o);
            }
        }
        e.variants = oracles::variants(self.name, params);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::Mode;

    #[test]
    fn every_workload_assembles_with_an_oracle() {
        for w in WORKLOADS {
            let img = w
                .image(
                    Flavour::Native,
                    Params {
                        n: 10,
                        ..Params::default()
                    },
                )
                .unwrap();
            assert!(!img.bytes.is_empty(), "{}", w.name);
            assert!(
                img.expected.oracles.contains_key(&Mode::HwAssisted),
                "{}",
                w.name
            );
            for mode in Mode::ALL {
                assert_eq!(
                    img.expected.oracles.get(&mode),
                    oracles::oracle(
                        mode,
                        w.name,
                        &Params {
                            n: 10,
                            ..Params::default()
                        }
                    )
                    .as_ref()
                );
            }
            assert!(img.expected.result.is_some(), "{}", w.name);
            img.validate(layout::DEFAULT_RAM_SIZE).unwrap();
        }
    }

    #[test]
    fn unknown_workload_lists_the_known_ones() {
        let e = build("nope", Flavour::Native, Params::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown workload `nope`"), "{msg}");
        for w in WORKLOADS {
            assert!(msg.contains(w.name), "{msg}");
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for w in WORKLOADS {
            assert!(w.default_n <= w.max_n && w.max_n <= MAX_N, "{}", w.name);
            let e = w
                .image(
                    Flavour::Native,
                    Params {
                        n: w.max_n + 1,
                        ..Params::default()
                    },
                )
                .unwrap_err();
            assert!(
                matches!(e, Error::OverLimit { param: "n", limit, .. } if limit == w.max_n),
                "{e}"
            );
            assert!(e.to_string().contains(&w.max_n.to_string()), "{e}");
        }
        for flavour in [Flavour::Native, Flavour::Paravirt] {
            let e = build(
                "compute",
                flavour,
                Params {
                    b: MAX_B + 1,
                    ..Params::default()
                },
            )
            .unwrap_err();
            assert!(e.to_string().contains("over the limit of 512"), "{e}");
        }
        assert!(matches!(
            build(
                "pio",
                Flavour::Native,
                Params {
                    n: 1 << 40,
                    ..Params::default()
                }
            ),
            Err(Error::OverLimit { .. })
        ));
        assert!(matches!(
            build(
                "pio",
                Flavour::Native,
                Params {
                    b: 0,
                    ..Params::default()
                }
            ),
            Err(Error::InvalidParams { .. })
        ));
    }

    #[test]
    fn host_side_expectations() {
        assert_eq!(workloads::pio_text(28), "abcdefghijklmnopqrstuvwxyzab");
        assert_eq!(workloads::compute_checksum(0), 0);
        assert_ne!(
            workloads::compute_checksum(10),
            workloads::compute_checksum(11)
        );
    }

    /// The compute loop, step by step, as the guest runs it.
    fn compute_by_steps(n: u64) -> u64 {
        let (mut x, mut sum) = (1u64, 0u64);
        for i in 0..n {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
            sum = sum.wrapping_add(x);
        }
        sum
    }

    #[test]
    fn the_compute_checksum_in_closed_form_matches_the_loop() {
        for n in (0..300).chain([1000, 4096, 65_537, 1_000_003]) {
            assert_eq!(
                workloads::compute_checksum(n),
                compute_by_steps(n),
                "n = {n}"
            );
        }
        // Any N costs the host a few hundred multiplications.
        let _ = workloads::compute_checksum(u64::MAX);
    }
}
