//! Per-exit host cost of the pio workload: the harness's exit loop (counting, timing,
//! histograms, watchdog) against a minimal kvm-ioctls KVM_RUN loop running the same
//! guest on the same machine setup, side by side in one run. The ratio of the two is the
//! harness overhead per exit.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hw_assisted::Handler;
use kvm_ioctls::VcpuExit;
use modes::abi::port;
use modes::machine::{GuestPrivilege, Machine, MachineConfig};
use modes::{Flavour, GuestImage, RunOptions};

const N: u64 = 2000;

fn machine(image: &GuestImage, opts: &RunOptions) -> Machine {
    let mut m = Machine::new(&MachineConfig::for_image(
        image,
        opts,
        GuestPrivilege::Kernel,
    ))
    .expect("KVM machine");
    m.load(image).expect("load");
    m
}

/// The floor: KVM_RUN, match the exit, keep the byte, nothing else.
fn raw_loop(m: &mut Machine) -> usize {
    let mut console = Vec::with_capacity(N as usize);
    let vcpu = m.vcpu();
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port::CONSOLE, data) => console.extend_from_slice(data),
            VcpuExit::IoOut(port::EXIT, _) => break,
            other => panic!("unexpected exit {other:?}"),
        }
    }
    console.len()
}

fn pio_exit_cost(c: &mut Criterion) {
    let opts = RunOptions::default();
    let image = guests::build(
        "pio",
        Flavour::Native,
        guests::Params {
            n: N,
            ..Default::default()
        },
    )
    .expect("pio builds");
    let mut g = c.benchmark_group("pio_exit");
    g.throughput(Throughput::Elements(N + 1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function(BenchmarkId::new("floor", "kvm-run-loop"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut m = machine(&image, &opts);
                let t = Instant::now();
                black_box(raw_loop(&mut m));
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function(BenchmarkId::new("harness", "hw-assisted"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut m = machine(&image, &opts);
                let mut h = Handler::new(&opts.limits);
                let t = Instant::now();
                let s = m.run(&mut h, &opts.limits).expect("run");
                total += t.elapsed();
                black_box(s.metrics.total());
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, pio_exit_cost);
criterion_main!(benches);
