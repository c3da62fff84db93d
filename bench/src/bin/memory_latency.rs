//! The latency of one dependent load against the size of the memory it roams: what a
//! classifier lookup pays per cache line once its tables outgrow the caches. Each buffer holds
//! one random cycle through all its cache lines; a chase follows it, so every load waits for
//! the one before.
//!
//! Read BENCHMARKS.md's decide figures against it: the VMs these benches run on differ, and a
//! 100k-rule table that sits in one VM's last-level cache misses it on another.
//!
//! ```text
//! cargo run --release -p podwall-bench --bin memory_latency
//! ```

use std::hint::black_box;
use std::time::Instant;

use bench::rng::Rng;

/// Buffer sizes, in KiB.
const SIZES_KIB: [usize; 9] = [256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072];
/// Loads timed per buffer (after as many untimed ones).
const LOADS: usize = 10_000_000;
/// One node per cache line.
const LINE_WORDS: usize = 64 / std::mem::size_of::<usize>();

fn main() {
    println!("| buffer | ns per load |");
    println!("|---|---|");
    for kib in SIZES_KIB {
        println!("| {} | {:.1} |", size_label(kib), chase(kib << 10));
    }
}

/// Nanoseconds per load of a chase through `bytes` of memory.
fn chase(bytes: usize) -> f64 {
    let lines = bytes / 64;
    let mut next = vec![0usize; lines * LINE_WORDS];
    // Every line in a random order, each pointing at the next: one cycle through all.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut rng = Rng::new(lines as u64);
    for i in (1..lines).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for (i, &line) in order.iter().enumerate() {
        next[line * LINE_WORDS] = order[(i + 1) % lines] * LINE_WORDS;
    }
    let mut at = 0;
    for _ in 0..LOADS {
        at = next[at];
    }
    let started = Instant::now();
    for _ in 0..LOADS {
        at = next[at];
    }
    let elapsed = started.elapsed();
    black_box(at);
    elapsed.as_nanos() as f64 / LOADS as f64
}

fn size_label(kib: usize) -> String {
    if kib >= 1024 {
        format!("{} MiB", kib / 1024)
    } else {
        format!("{kib} KiB")
    }
}
