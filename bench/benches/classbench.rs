//! `Classifier::decide` on ClassBench rule lists (acl1, fw1, ipc1) converted to one Calico
//! GlobalNetworkPolicy (see `bench::classbench`), per header:
//!
//! - `<seed>/<direction>/trace` at 1k and 10k rules: every header of the list's trace, in
//!   trace order;
//! - `<seed>/<direction>/generated` at 1k, 10k and 100k rules: 10,000 headers drawn inside
//!   randomly chosen rules of the list itself (there is no 100k trace; drawing the same way
//!   at every size compares like with like).
//!
//! One iteration decides every header of the set once (ingress: the peer is the header's
//! source; egress: its destination), and throughput is reported per header, so criterion's
//! time per element is the cost of one `decide`. The `…/each` benches ask the same questions
//! with one `decide_each` over the whole set (lookups of tables past the caches interleaved).
//! Before timing, every header's answer is checked against a linear scan over the converted
//! rules (same rule index and action, or no match), in both directions. Setup lines on stderr
//! give load and compile times and the classifier's heap per rule.
//!
//! ```text
//! cargo bench -p podwall-bench --bench classbench
//! CLASSBENCH_SEEDS=fw1 cargo bench -p podwall-bench --bench classbench   # one seed
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bench::classbench::check::{decide, query};
use bench::classbench::data::{header_sets, list_name, read_rules, SEEDS, SIZES};
use bench::classbench::{build, check};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use policy::{Decision, Direction, Query};

fn classbench(c: &mut Criterion) {
    let only = std::env::var("CLASSBENCH_SEEDS").ok();
    let seeds = SEEDS.iter().filter(|s| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == **s))
    });
    for seed in seeds {
        for size in SIZES {
            let list = list_name(seed, size);
            let rules = read_rules(seed, size).unwrap_or_else(|e| panic!("{e:#}"));
            let built = build(&list, &rules).unwrap_or_else(|e| panic!("{e:#}"));
            let sets = header_sets(seed, size, &rules).unwrap_or_else(|e| panic!("{e:#}"));

            let started = Instant::now();
            for (kind, headers) in &sets {
                let checked = check(
                    &built.classifier,
                    &built.target,
                    &built.conversion.rules,
                    headers,
                );
                assert!(checked.is_ok(), "{list} {kind}: {checked}");
                eprintln!("classbench setup: {list} {kind}: {checked}");
            }
            let heap = built.classifier.stats().heap_bytes;
            eprintln!(
                "classbench setup: {list}: {} rules; load {:.2?}, compile {:.2?}, checked in \
                 {:.2?}; heap {:.1} MiB ({:.0} bytes per rule)",
                rules.len(),
                built.load,
                built.compile,
                started.elapsed(),
                heap as f64 / (1024.0 * 1024.0),
                heap as f64 / rules.len() as f64
            );

            let (classifier, target) = (&built.classifier, &built.target);
            let mut group = c.benchmark_group("classbench");
            for (kind, headers) in &sets {
                group.throughput(Throughput::Elements(headers.len() as u64));
                for direction in Direction::BOTH {
                    let name = format!("{seed}/{}/{kind}", direction_name(direction));
                    group.bench_with_input(BenchmarkId::new(name, size), headers, |b, headers| {
                        b.iter(|| {
                            for header in headers {
                                black_box(decide(classifier, target, direction, black_box(header)));
                            }
                        })
                    });
                    let queries: Vec<Query> = headers
                        .iter()
                        .map(|h| query(target, direction, h))
                        .collect();
                    let mut decisions = vec![Decision::NotIsolated; queries.len()];
                    let name = format!("{seed}/{}/{kind}/each", direction_name(direction));
                    group.bench_with_input(BenchmarkId::new(name, size), &queries, |b, queries| {
                        b.iter(|| {
                            classifier.decide_each(black_box(queries), &mut decisions);
                            black_box(&decisions);
                        })
                    });
                }
            }
            group.finish();
        }
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = classbench
}
criterion_main!(benches);
