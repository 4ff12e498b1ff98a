//! One criterion group per disk device × backend (`blk-virtio/inline`,
//! `blk-virtio/kernel-notify`, `blk-virtio/driver-domain`, `blk-emulated/inline`), one `BenchmarkId` per mode: the
//! guest's run (first KVM_RUN to its end, VM setup and image creation excluded) writing
//! and reading back N requests of S bytes, as bytes moved per second.
//!
//! `cargo bench --bench io -- --quick` for a fast pass; `-- blk-virtio` for one device.

use std::time::Duration;

use contract::{BlockBackend, DiskOptions, RunOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use guests::Params;

/// The measured shape: blk-virtio at the Q = 32 and 64 KiB; the emulated disk
/// with the same request size but fewer requests (each of its words is an exit).
fn params(device: &str) -> Params {
    match device {
        "blk-virtio" => Params {
            n: 16,
            s: 64 << 10,
            q: 32,
            ..Params::default()
        },
        _ => Params {
            n: 2,
            s: 64 << 10,
            ..Params::default()
        },
    }
}

fn per_device_and_backend(c: &mut Criterion) {
    for (device, backend) in [
        ("blk-virtio", BlockBackend::Inline),
        ("blk-virtio", BlockBackend::KernelNotify),
        ("blk-virtio", BlockBackend::DriverDomain),
        ("blk-emulated", BlockBackend::Inline),
    ] {
        if let Some(why) = machine::disk::backend_unavailable(backend) {
            eprintln!("{device}/{backend}: skipped: {why}");
            continue;
        }
        let w = guests::find(device).expect("in the catalog");
        let p = params(device);
        let mut g = c.benchmark_group(format!("{device}/{backend}"));
        g.throughput(Throughput::Bytes(2 * p.n * p.s));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(200));
        g.measurement_time(Duration::from_secs(3));
        for engine in virtlab::engines::all() {
            let image = match w.image(engine.flavour(), p) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{device} in {}: skipped: {e}", engine.mode());
                    continue;
                }
            };
            let asked = RunOptions {
                disk: Some(DiskOptions {
                    path: None,
                    backend,
                    no_ioeventfd: false,
                }),
                ..RunOptions::default()
            };
            g.bench_function(BenchmarkId::new(engine.mode().name(), p.s), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // A fresh image for every run, made before the clock starts.
                        let (disk, _temp) = virtlab::disk::prepare(w, &p, &asked)
                            .expect("an image")
                            .expect("a disk workload");
                        let opts = RunOptions {
                            disk: Some(disk),
                            ..RunOptions::default()
                        };
                        let r = engine.run(&image, &opts).expect("the VMM runs");
                        assert!(
                            matches!(r.outcome, contract::Outcome::Completed { exit_code: 0, .. }),
                            "{device} in {}: {:?}",
                            engine.mode(),
                            r.outcome
                        );
                        total += Duration::from_nanos(r.wall_ns);
                    }
                    total
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, per_device_and_backend);
criterion_main!(benches);
