//! The filter judging frames as an AF_XDP port hands them over (batches of 64: every frame
//! prefetched, then each judged), with `FilterConfig::decide_ahead` on and off in the same
//! run, on ClassBench lists converted to Calico (see `bench::classbench`):
//!
//! - `<seed>/new/{ahead,as-judged}` at 1k and 100k rules: the list's 10,000 generated headers
//!   as TCP or UDP frames to the target pod (ingress), through a flow table of 1,024
//!   connections, so every frame is a new connection (its entry was evicted long before the
//!   header comes round again): a flow-table miss, a decision and an insert that evicts;
//! - `<seed>/established/{ahead,as-judged}` at 100k rules: the first 512 of those frames over
//!   and over, all flow-table hits, which must cost the same either way.
//!
//! Throughput is per frame. Before timing, both filters' verdicts are checked against the
//! classifier's decision for every header, and a setup line on stderr gives the two variants'
//! medians over alternating passes and their ratio (one run, same moments of the machine).
//!
//! ```text
//! cargo bench -p podwall-bench --bench filter_misses
//! CLASSBENCH_SEEDS=acl1 cargo bench -p podwall-bench --bench filter_misses   # one seed
//! ```

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::classbench::check::decide;
use bench::classbench::data::{list_name, read_rules, SEEDS};
use bench::classbench::manifest::{NAMESPACE, POD, POD_IP};
use bench::classbench::{build, sample_headers, Header};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use datapath::counters::AttachmentCounters;
use datapath::filter::{Filter, FilterConfig};
use datapath::flow_table::FlowConfig;
use datapath::port::{Framing, Judge, Side, Verdict};
use etherparse::PacketBuilder;
use policy::{Direction, Published};

/// The AF_XDP port's default RX batch.
const BATCH: usize = 64;
const HEADERS: usize = 10_000;
const ESTABLISHED_FLOWS: usize = 512;

fn filter_misses(c: &mut Criterion) {
    let only = std::env::var("CLASSBENCH_SEEDS").ok();
    let seeds = SEEDS.iter().filter(|s| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == **s))
    });
    let mut group = c.benchmark_group("filter_misses");
    for seed in seeds {
        for size in [1_000, 100_000] {
            let list = list_name(seed, size);
            let rules = read_rules(seed, size).unwrap_or_else(|e| panic!("{e:#}"));
            let built = build(&list, &rules).unwrap_or_else(|e| panic!("{e:#}"));
            let headers: Vec<Header> = sample_headers(&rules, HEADERS, 0x5EED)
                .into_iter()
                .filter(|h| matches!(h.protocol, 6 | 17))
                .collect();
            let allowed: Vec<bool> = headers
                .iter()
                .map(|h| decide(&built.classifier, &built.target, Direction::Ingress, h).allows())
                .collect();
            let interleaves = built.classifier.interleaves_lookups();
            let published = Arc::new(Published::new(built.classifier));
            let mut frames: Vec<Vec<u8>> = headers.iter().map(frame).collect();
            let mut filters = [true, false].map(|ahead| filter(&published, ahead, 1024));
            for filter in &mut filters {
                let verdicts = judge_all(filter, &mut frames);
                let wrong = verdicts
                    .iter()
                    .zip(&allowed)
                    .filter(|(v, a)| (**v == Verdict::Forward) != **a)
                    .count();
                assert_eq!(wrong, 0, "{list}: verdicts unlike the classifier's");
            }
            eprintln!(
                "filter_misses setup: {list}: {} TCP and UDP frames, {} allowed; lookups \
                 interleaved: {interleaves}; decided ahead: {}",
                frames.len(),
                allowed.iter().filter(|a| **a).count(),
                filters[0].decided_ahead()
            );
            let [ahead, judged] = alternate(&mut filters, &mut frames, PASSES);
            eprintln!(
                "filter_misses setup: {list}: new connections, median of {PASSES} alternating \
                 passes: ahead {ahead:.0} ns, as judged {judged:.0} ns per frame ({:.2} ×)",
                ahead / judged
            );
            group.throughput(Throughput::Elements(frames.len() as u64));
            for (filter, variant) in filters.iter_mut().zip(["ahead", "as-judged"]) {
                let name = format!("{seed}/new/{variant}");
                group.bench_function(BenchmarkId::new(name, size), |b| {
                    b.iter(|| black_box(judge_all(filter, &mut frames)))
                });
            }
            if size == 100_000 {
                let mut frames: Vec<Vec<u8>> = frames[..ESTABLISHED_FLOWS].to_vec();
                let mut filters = [true, false].map(|ahead| filter(&published, ahead, 4096));
                group.throughput(Throughput::Elements(frames.len() as u64));
                for (filter, variant) in filters.iter_mut().zip(["ahead", "as-judged"]) {
                    judge_all(filter, &mut frames);
                    let name = format!("{seed}/established/{variant}");
                    group.bench_function(BenchmarkId::new(name, size), |b| {
                        b.iter(|| black_box(judge_all(filter, &mut frames)))
                    });
                }
            }
        }
    }
    group.finish();
}

/// Passes per variant in the alternating comparison printed before timing.
const PASSES: usize = 41;

/// Median nanoseconds per frame of each filter over `frames`, the filters taking turns pass by
/// pass, so that both see the same moments of a noisy machine.
fn alternate(filters: &mut [Filter; 2], frames: &mut [Vec<u8>], passes: usize) -> [f64; 2] {
    let mut times = [Vec::new(), Vec::new()];
    for pass in 0..passes {
        for turn in 0..2 {
            let which = (pass + turn) % 2;
            let started = Instant::now();
            black_box(judge_all(&mut filters[which], frames));
            times[which].push(started.elapsed().as_nanos() as f64 / frames.len() as f64);
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

/// A filter for the target pod whose flow table holds `flows` connections.
fn filter(published: &Arc<Published>, decide_ahead: bool, flows: usize) -> Filter {
    let config = FilterConfig {
        flows: FlowConfig {
            shards: 4,
            capacity_per_shard: flows / 4,
            ..FlowConfig::default()
        },
        complete_checksums: false,
        decide_ahead,
        ..FilterConfig::default()
    };
    let counters: Arc<[AttachmentCounters]> = vec![AttachmentCounters::default()].into();
    Filter::new(
        Arc::clone(published),
        vec![format!("{NAMESPACE}/{POD}")],
        counters,
        config,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every frame, in batches as the AF_XDP port hands them over.
fn judge_all(filter: &mut Filter, frames: &mut [Vec<u8>]) -> Vec<Verdict> {
    let mut verdicts = Vec::with_capacity(frames.len());
    for batch in frames.chunks_mut(BATCH) {
        filter.tick(batch.len());
        for frame in batch.iter() {
            filter.prefetch(0, Side::Node, Framing::Ethernet, frame);
        }
        filter.prefetch_batch();
        for frame in batch.iter_mut() {
            verdicts.push(filter.judge(0, Side::Node, Framing::Ethernet, frame));
        }
    }
    verdicts
}

/// `header` as the first segment of its connection, sent to the target pod.
fn frame(header: &Header) -> Vec<u8> {
    let pod: Ipv4Addr = POD_IP.parse().expect("the target pod's address");
    let ip = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        Ipv4Addr::from(header.src).octets(),
        pod.octets(),
        64,
    );
    let mut frame = Vec::new();
    let written = match header.protocol {
        6 => ip
            .tcp(header.src_port, header.dst_port, 1, 1024)
            .syn()
            .write(&mut frame, &[]),
        _ => ip
            .udp(header.src_port, header.dst_port)
            .write(&mut frame, &[]),
    };
    written.unwrap_or_else(|e| panic!("building a frame: {e}"));
    frame
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = filter_misses
}
criterion_main!(benches);
