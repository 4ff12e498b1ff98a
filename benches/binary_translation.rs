//! The binary-translation engine measured on its own terms.
//!
//! * `bt-translate`: the pure translator (no KVM) over the blocks of every workload of the
//!   catalog (native flavour, found from each entry point as `virtlab explain --mode
//!   binary-translation` finds them): the time to translate one guest basic block.
//! * `bt-irq-toggle`: irq-toggle's run time per iteration under trap-emulate (two traps
//!   per iteration) and binary-translation (CLI and STI rewritten inline), side by side in
//!   the same run.
//!
//! `cargo bench --bench binary_translation` (`-- bt-translate` for the translator alone).

use std::hint::black_box;
use std::time::Duration;

use binary_translation::layout;
use binary_translation::translate::{self, explain};
use contract::{Engine, Flavour, GuestImage, RunOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Iterations of irq-toggle per run.
const IRQ_N: u64 = 500;

/// Every workload's native image and the guest RIPs of its blocks.
fn catalog_blocks() -> Vec<(GuestImage, Vec<u64>)> {
    guests::WORKLOADS
        .iter()
        .filter_map(|w| {
            let image = w.image(Flavour::Native, guests::Params::default()).ok()?;
            let (starts, _, _) = explain::block_starts(&image).ok()?;
            Some((image, starts))
        })
        .collect()
}

fn translation(c: &mut Criterion) {
    let catalog = catalog_blocks();
    let blocks: u64 = catalog.iter().map(|(_, s)| s.len() as u64).sum();
    let mut g = c.benchmark_group("bt-translate");
    g.throughput(Throughput::Elements(blocks));
    g.bench_function(BenchmarkId::new("catalog-blocks", blocks), |b| {
        b.iter(|| {
            for (image, starts) in &catalog {
                let mut read = explain::image_reader(image);
                for &rip in starts {
                    let block =
                        translate::translate(&mut read, rip, layout::TC + 0x100, layout::TC)
                            .expect("the catalog translates");
                    black_box(block);
                }
            }
        })
    });
    g.finish();
}

fn irq_toggle(c: &mut Criterion) {
    if machine::open_kvm().is_err() {
        eprintln!("bt-irq-toggle: no /dev/kvm, skipped");
        return;
    }
    let opts = RunOptions::default();
    let image = guests::build(
        "irq-toggle",
        Flavour::Native,
        guests::Params {
            n: IRQ_N,
            ..Default::default()
        },
    )
    .expect("irq-toggle builds");
    let mut g = c.benchmark_group("bt-irq-toggle");
    g.throughput(Throughput::Elements(IRQ_N));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    let engines: [&dyn Engine; 2] = [
        &trap_emulate::TrapEmulate,
        &binary_translation::BinaryTranslation,
    ];
    for engine in engines {
        g.bench_function(BenchmarkId::new(engine.mode().name(), IRQ_N), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let r = engine.run(&image, &opts).expect("the VMM runs");
                    total += Duration::from_nanos(r.wall_ns);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, translation, irq_toggle);
criterion_main!(benches);
