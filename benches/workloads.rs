//! One criterion group per workload, one `BenchmarkId` per mode: the time of the guest's
//! run (first KVM_RUN to its end, as the harness measures it; VM setup excluded), per
//! iteration of the workload's loop.
//!
//! The `pio` group also carries the exit-loop floor: the same guest driven by a bare
//! kvm-ioctls `KVM_RUN` loop, and by the harness's exit loop without the engine's setup,
//! so the harness overhead per exit is a ratio measured side by side in the same run.
//!
//! `cargo bench --bench workloads -- --quick` for a fast pass; `-- pio` for one group.

use std::hint::black_box;
use std::time::{Duration, Instant};

use contract::abi::port;
use contract::{Flavour, GuestImage, RunOptions};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use hw_assisted::Handler;
use kvm_ioctls::VcpuExit;
use machine::{GuestPrivilege, Machine, MachineConfig};

/// Exits per run of the floor comparison: enough that the per-run costs (VM entry, the
/// watchdog thread, two statistics snapshots) fade next to the per-exit ones.
const FLOOR_N: u64 = 4000;

/// Iterations per run: enough that per-run fixed costs fade, few enough for a 2-core box.
fn bench_n(workload: &str) -> u64 {
    match workload {
        "compute" | "call-ret" => 4000,
        // User-mode reads: cheap, and many are needed for the TLB misses to show.
        "tlb-walk" => 100_000,
        // Each iteration builds and tears down an address space in emulated kernel code.
        "forkwait" => 20,
        _ => 500,
    }
}

fn per_mode(c: &mut Criterion) {
    let opts = RunOptions::default();
    for w in guests::WORKLOADS {
        let n = bench_n(w.name);
        let params = guests::Params {
            n,
            b: 16,
            ..guests::Params::default()
        };
        let mut g = c.benchmark_group(w.name);
        g.throughput(Throughput::Elements(n));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(3));
        for engine in virtlab::engines::all() {
            if let Some(why) = guests::unsupported(w.name, engine.mode()) {
                eprintln!("{} in {}: missing: {why}", w.name, engine.mode());
                continue;
            }
            let image = match w.image(engine.flavour(), params) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{} in {}: skipped: {e}", w.name, engine.mode());
                    continue;
                }
            };
            g.bench_function(BenchmarkId::new(engine.mode().name(), n), |b| {
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
        if w.name == "pio" {
            floor(&mut g, FLOOR_N, &opts);
        }
        g.finish();
    }
}

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
    let mut console = Vec::new();
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

fn floor(g: &mut BenchmarkGroup<'_, WallTime>, n: u64, opts: &RunOptions) {
    let image = guests::build(
        "pio",
        Flavour::Native,
        guests::Params {
            n,
            ..Default::default()
        },
    )
    .expect("pio builds");
    g.throughput(Throughput::Elements(n + 1));
    g.bench_function(BenchmarkId::new("floor-kvm-run-loop", n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut m = machine(&image, opts);
                let t = Instant::now();
                black_box(raw_loop(&mut m));
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function(BenchmarkId::new("harness-exit-loop", n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut m = machine(&image, opts);
                let mut h = Handler::new(&opts.limits);
                let t = Instant::now();
                let s = m.run(&mut h, &opts.limits).expect("run");
                total += t.elapsed();
                black_box(s.metrics.total());
            }
            total
        })
    });
}

criterion_group!(benches, per_mode);
criterion_main!(benches);
