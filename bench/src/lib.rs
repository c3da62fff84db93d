//! Workload generators shared by the benchmarks (`benches/`): deterministic clusters built
//! directly as `policy` model values (no YAML), shaped like real multi-tenant clusters.
//!
//! - [`decide_workload`]: one endpoint that exactly N ingress rules apply to, in a cluster of
//!   many pods, with lookup keys whose answers are known and checked against
//!   [`policy::reference`] before anything is timed.
//! - [`compile_workload`]: many policies over many pods, for timing `Classifier::compile`.
//!
//! - [`classbench`]: ClassBench rule lists as one Calico GlobalNetworkPolicy, and a linear scan
//!   to check the classifier against (`benches/classbench.rs`, `tests/classbench.rs`).
//!
//! - [`throughput`]: the throughput runner's parts (rules rendered for every path, frames,
//!   paths, traffic, report); its binary is `src/bin/throughput.rs`.
//!
//! Nothing here is timed; it only builds inputs. Randomness comes from a seeded [`rng::Rng`],
//! so every run measures the same cluster.

pub mod classbench;
pub mod compile;
pub mod decide;
pub mod heap;
mod model;
pub mod names;
pub mod rng;
pub mod throughput;

pub use compile::compile_workload;
pub use decide::{decide_workload, DecideWorkload, Key, KeyClass, Lookup};

/// How a benchmark binary ends: success, or its error chain on stderr and failure.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
