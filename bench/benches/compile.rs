//! `Classifier::compile` for 1k policies over 1k pods and 10k policies over 10k pods
//! (`bench::compile_workload`), with the peak heap of one compile measured by a counting
//! global allocator and printed to stderr once per size, next to the classifier's own stats.
//!
//! ```text
//! cargo bench -p podwall-bench --bench compile
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{compile_workload, heap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use policy::Classifier;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const SIZES: [(usize, usize); 2] = [(1_000, 1_000), (10_000, 10_000)];

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    for (policies, pods) in SIZES {
        let cluster = Arc::new(compile_workload(policies, pods));

        // One measured compile: heap above what was allocated before it started.
        let before = heap::start();
        let started = Instant::now();
        let classifier = Classifier::compile(Arc::clone(&cluster));
        let took = started.elapsed();
        let peak = heap::peak_since(before);
        let retained = heap::live_since(before);
        let stats = classifier.stats();
        eprintln!(
            "compile {policies} policies / {pods} pods: one compile {took:.2?}, peak heap during \
             compile {:.1} MiB, retained after {:.1} MiB, classifier.heap_bytes() {:.1} MiB; \
             stats: {stats:?}",
            mib(peak),
            mib(retained),
            mib(classifier.heap_bytes()),
        );
        drop(classifier);

        group.bench_with_input(
            BenchmarkId::new("policies_pods", format!("{policies}x{pods}")),
            &cluster,
            |b, cluster| b.iter(|| black_box(Classifier::compile(Arc::clone(cluster)))),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = compile
}
criterion_main!(benches);
