//! `Classifier::decide` for one endpoint that 10 … 100k ingress rules apply to, in a cluster of
//! 100k pods. Each key class (see `bench::decide`) is timed on its own, one decision per
//! iteration; `mixed` times a batch of 64 ordinary lookups and reports per decision.
//!
//! Every answer is checked against `policy::reference` before timing starts.
//!
//! ```text
//! cargo bench -p podwall-bench --bench decide
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bench::decide::SOURCE_PORT;
use bench::{decide_workload, KeyClass};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use policy::Direction;

const PODS: usize = 100_000;
const RULES: [usize; 5] = [10, 100, 1_000, 10_000, 100_000];

fn decide(c: &mut Criterion) {
    for rules in RULES {
        let started = Instant::now();
        let workload = decide_workload(rules, PODS);
        let built = started.elapsed();
        let classifier = workload.compile_checked();
        let stats = classifier.stats();
        eprintln!(
            "decide setup: {rules} rules, {PODS} pods: built in {built:.2?}, compiled and checked \
             in {:.2?}; {} tables, {} slots, {} pod groups, {} selector terms, {} KiB compiled",
            started.elapsed() - built,
            stats.tables,
            stats.slots,
            stats.pod_groups,
            stats.selector_terms,
            stats.heap_bytes / 1024
        );
        let target = workload.target;

        let mut group = c.benchmark_group("decide");
        group.throughput(Throughput::Elements(1));
        for class in KeyClass::ALL {
            let key = workload.key(class).lookup;
            group.bench_with_input(BenchmarkId::new(class.name(), rules), &key, |b, key| {
                b.iter(|| {
                    classifier.decide(
                        black_box(target),
                        Direction::Ingress,
                        black_box(key.peer),
                        black_box(key.protocol),
                        black_box(key.port),
                        SOURCE_PORT,
                    )
                })
            });
        }
        group.throughput(Throughput::Elements(workload.mixed.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("mixed", rules),
            &workload.mixed,
            |b, mixed| {
                b.iter(|| {
                    for l in mixed {
                        black_box(classifier.decide(
                            target,
                            Direction::Ingress,
                            black_box(l.peer),
                            l.protocol,
                            l.port,
                            SOURCE_PORT,
                        ));
                    }
                })
            },
        );
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    targets = decide
}
criterion_main!(benches);
