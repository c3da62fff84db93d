//! `Classifier::compile` for 1k policies over 1k pods and 10k policies over 10k pods
//! (`bench::compile_workload`), with the peak heap of one compile measured by a counting
//! global allocator and printed to stderr once per size, next to the classifier's own stats.
//!
//! ```text
//! cargo bench -p podwall-bench --bench compile
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::compile_workload;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use policy::Classifier;

/// `System`, counting the bytes currently allocated and the peak since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counters are plain atomics and never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size), which is
        // `System::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator (so from `System`) with
        // this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr` came from this allocator with `layout` and that
        // `new_size` is valid for it; `System` allocated it.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SIZES: [(usize, usize); 2] = [(1_000, 1_000), (10_000, 10_000)];

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    for (policies, pods) in SIZES {
        let cluster = Arc::new(compile_workload(policies, pods));

        // One measured compile: heap above what was allocated before it started.
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let started = Instant::now();
        let classifier = Classifier::compile(Arc::clone(&cluster));
        let took = started.elapsed();
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let retained = CURRENT.load(Ordering::Relaxed) - before;
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
