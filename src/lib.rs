//! virtlab: trap-and-emulate, paravirtualization and hardware-assisted virtualization,
//! side by side on real KVM. This library is the harness behind the `virtlab` command:
//! it picks engines by mode, builds workloads, runs them and keeps every result.
//!
//! What runs is a [`scenario::Scenario`] — a file, the built-in default, or the one
//! command-line flags make — and its [`scenario::Plan`] is the jobs in order with their
//! images, each assembled once ([`images`]). A list of jobs can also be run directly:
//!
//! ```
//! use virtlab::harness::{run_jobs, Guest, Job};
//! use contract::{Mode, RunOptions};
//!
//! let pio = guests::find("pio")?;
//! let job = Job { guest: Guest::Workload(pio, guests::Params { n: 100, ..Default::default() }),
//!                 mode: Mode::HwAssisted, repeat: 0, warmup: false, backend: None };
//! let (records, failures) = run_jobs(&[job], &RunOptions::default(), |_, _| {});
//! assert!(failures.is_empty());
//! print!("{}", reports::table::render(&records));
//! # Ok::<(), guests::Error>(())
//! ```

pub mod baseline;
pub mod disk;
pub mod engines;
pub mod fleet;
pub mod fleet_memory;
pub mod harness;
pub mod images;
pub mod input;
pub mod interrupt;
pub mod output;
pub mod scenario;
pub mod trace;
