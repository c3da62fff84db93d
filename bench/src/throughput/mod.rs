//! The throughput runner (`cargo run --release -p podwall-bench --bin throughput`): podwall
//! against the kernel's filters and its own datapath's limit, side by side in one run, at
//! policy sizes from 10 to 100k rules. See BENCHMARKS.md for what it measures and how.

pub mod frames;
pub mod nfqueue;
pub mod paths;
pub mod report;
pub mod rules;
pub mod traffic;
