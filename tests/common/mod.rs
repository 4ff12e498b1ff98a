//! What the KVM integration tests share: the one table of iteration counts, the one entry
//! that runs an image and judges the record, and builders of small guests.
//!
//! Whether a test runs at all is [`kvm_or_skip`]'s decision (a skip here, a failure under
//! `CI=true`); no test checks `/dev/kvm` by itself.

#![allow(dead_code)]

pub mod direct_paging;

use std::time::Duration;

use contract::abi::{layout, port};
use contract::{Engine, FaultKind, Flavour, GuestImage, Limits, Outcome, RunOptions, RunRecord};
use guests::Params;
use iced_x86::code_asm::*;

pub use machine::testing::kvm_or_skip;

/// Iterations of every catalog workload, for every test that runs one: enough for each
/// count to mean something, few enough for a host that emulates CPL 0 code instruction by
/// instruction (a trap costs 20–50 µs there).
pub const ITERATIONS: &[(&str, u64)] = &[
    ("compute", 1000),
    ("pio", 1000),
    ("cpuid", 100),
    ("irq-toggle", 1000),
    ("popf", 100),
    ("cr8wr", 100),
    ("mmio", 300),
    ("hlt-timer", 100),
    ("divzero", 100),
    // Odd: the two frames the PTE alternates between are mapped a different number of
    // times.
    ("ptemod", 101),
    ("call-ret", 1000),
    // Requests of 1 KiB (see `params`).
    ("blk-emulated", 100),
    ("blk-virtio", 100),
    ("balloon", 256),
    ("syscall", 200),
    ("pgfault", 200),
    // Odd: A makes one more switch than B.
    ("ctxswitch", 101),
    ("forkwait", 100),
    ("tlb-walk", 1000),
];

/// N of `workload`, from [`ITERATIONS`].
pub fn iterations(workload: &str) -> u64 {
    ITERATIONS
        .iter()
        .find(|(w, _)| *w == workload)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("{workload} has no row in ITERATIONS"))
}

/// The parameters of `workload`: N from [`ITERATIONS`], the defaults for the rest.
pub fn params(workload: &str) -> Params {
    Params {
        n: iterations(workload),
        // Two sectors a request: every loop of the ATA driver turns.
        s: if guests::blk::needs_disk(workload) {
            1024
        } else {
            Params::default().s
        },
        ..Params::default()
    }
}

/// The image of a catalog workload in `flavour` with `params`.
pub fn workload_image(workload: &str, flavour: Flavour, params: Params) -> GuestImage {
    guests::build(workload, flavour, params)
        .unwrap_or_else(|e| panic!("{workload} ({flavour:?}): {e}"))
}

/// Runs `image` in `engine` and judges the record against the image's expectations: the
/// single entry of the tests to a judged record (`outcome`, `mismatches`, `expected`,
/// `console_ok`). Judging twice changes nothing, so this holds whether or not the engine
/// judged already.
pub fn run(engine: &dyn Engine, image: &GuestImage, opts: &RunOptions) -> RunRecord {
    try_run(engine, image, opts)
        .unwrap_or_else(|e| panic!("{} in {}: the VMM failed: {e}", image.name, engine.mode()))
}

/// [`run`], for the tests of images the VMM must refuse.
pub fn try_run(
    engine: &dyn Engine,
    image: &GuestImage,
    opts: &RunOptions,
) -> contract::Result<RunRecord> {
    // A disk workload gets a fresh image, checked on the host afterwards.
    let disk = virtlab::disk::for_image(image, opts).map_err(contract::Error::InvalidOption)?;
    let mut opts = opts.clone();
    if let Some((d, _, _)) = &disk {
        opts.disk = Some(d.clone());
    }
    let mut record = engine.run(image, &opts)?;
    virtlab::disk::judge(image, opts.disk.as_ref(), &mut record);
    if let Some((d, _, p)) = &disk {
        virtlab::disk::verify(d, p, &mut record);
    }
    Ok(record)
}

/// Runs a catalog workload with `params` in `engine`'s flavour, with the default options.
pub fn run_workload(engine: &dyn Engine, workload: &str, params: Params) -> RunRecord {
    let image = workload_image(workload, engine.flavour(), params);
    run(engine, &image, &RunOptions::default())
}

/// Options with short limits for hostile guests.
pub fn short() -> RunOptions {
    RunOptions {
        limits: Limits {
            wall: Duration::from_secs(2),
            max_exits: 100_000,
            ..Limits::default()
        },
        ..RunOptions::default()
    }
}

/// Assembles a flat native image at the default load address.
pub fn assemble(
    name: &str,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> GuestImage {
    let mut a = CodeAssembler::new(64).unwrap();
    body(&mut a).unwrap();
    let bytes = a.assemble(layout::DEFAULT_LOAD).unwrap();
    GuestImage::flat(name, bytes, layout::DEFAULT_LOAD, layout::DEFAULT_LOAD)
}

/// [`assemble`], for a body that cannot fail.
pub fn image(name: &str, body: impl FnOnce(&mut CodeAssembler)) -> GuestImage {
    assemble(name, |a| {
        body(a);
        Ok(())
    })
}

/// A flat native image of raw bytes at the default load address.
pub fn raw(name: &str, bytes: &[u8]) -> GuestImage {
    GuestImage::flat(
        name,
        bytes.to_vec(),
        layout::DEFAULT_LOAD,
        layout::DEFAULT_LOAD,
    )
}

/// `xor eax, eax; out EXIT, eax`: a native guest's end with exit code 0.
pub fn exit(a: &mut CodeAssembler) {
    a.xor(eax, eax).unwrap();
    a.out(u32::from(port::EXIT), eax).unwrap();
}

/// The kind and detail of a run that must have ended as a guest fault.
pub fn fault_of(r: &RunRecord) -> (FaultKind, String) {
    match &r.outcome {
        Outcome::GuestFault { kind, detail, .. } => (*kind, detail.clone()),
        other => panic!("expected a guest fault, got {other:?}"),
    }
}
