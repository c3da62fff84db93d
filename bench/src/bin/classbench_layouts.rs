//! The two table layouts of `Classifier::compile` compared in one process, on ClassBench lists
//! converted to Calico: rules over every port of a protocol *folded* into each port class (one
//! address search per packet, copies of those rules in every class), and kept *apart* in
//! classes of their own (two searches, no copies). `CompileOptions::fold_budget` picks one per
//! table; this shows what each costs, so that the budget can be checked against measurements.
//!
//! For each list and direction both classifiers decide every header of a set (the trace, and
//! headers drawn inside the list's rules as the criterion bench draws them) in alternating
//! passes, so that a noisy machine slows both alike; it prints the median time per header of
//! each, their ratio, each classifier's heap, and which layout the default budget chose.
//! Both answers are checked against the linear scan first.
//!
//! ```text
//! cargo run --release -p podwall-bench --bin classbench_layouts
//! cargo run --release -p podwall-bench --bin classbench_layouts -- --seeds acl1 --sizes 10000
//! ```

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bench::classbench::check::decide;
use bench::classbench::data::{list_name, read_rules, read_trace, SEEDS, SIZES, TRACED_SIZES};
use bench::classbench::{build_with, check, sample_headers, Built, Header};
use clap::Parser;
use policy::compile::CompileOptions;
use policy::Direction;

/// Headers drawn from each list (as in the criterion bench).
const GENERATED: usize = 10_000;
const RNG_SEED: u64 = 0xC1A5_5BE7C;

/// Folded and apart table layouts, compared in alternating passes.
///
/// Example: classbench_layouts --seeds acl1 --sizes 10000,100000 --passes 41
#[derive(Parser)]
#[command(name = "classbench_layouts")]
struct Options {
    /// Seeds: acl1, fw1, ipc1.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// List sizes: 1000, 10000, 100000.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Timed passes over each header set, per layout.
    #[arg(long, default_value_t = 31)]
    passes: usize,
}

fn main() -> ExitCode {
    match compare(Options::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn compare(options: Options) -> Result<()> {
    if options.passes == 0 {
        bail!("--passes must be at least 1");
    }
    let seeds = options
        .seeds
        .unwrap_or_else(|| SEEDS.iter().map(|s| s.to_string()).collect());
    let sizes = options.sizes.unwrap_or_else(|| SIZES.to_vec());
    println!(
        "| list | headers | direction | folded ns | apart ns | apart / folded | folded heap | \
         apart heap | default |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for seed in &seeds {
        for &size in &sizes {
            let list = list_name(seed, size);
            eprintln!("{list}: loading and compiling both layouts …");
            let rules = read_rules(seed, size)?;
            let layout = |fold_budget| {
                build_with(&list, &rules, CompileOptions { fold_budget })
                    .with_context(|| list.clone())
            };
            // The default budget's choice, before the two layouts are built (at 100k rules the
            // folded one alone is over 100 MiB).
            let chosen = {
                let default = layout(CompileOptions::default().fold_budget)?;
                Direction::BOTH.map(|d| chosen(&default, d))
            };
            let (folded, apart) = (layout(usize::MAX)?, layout(0)?);
            let mut sets: Vec<(&str, Vec<Header>)> = Vec::new();
            if TRACED_SIZES.contains(&size) {
                sets.push(("trace", read_trace(seed, size)?));
            }
            sets.push(("generated", sample_headers(&rules, GENERATED, RNG_SEED)));
            for (kind, headers) in &sets {
                for built in [&folded, &apart] {
                    let checked = check(
                        &built.classifier,
                        &built.target,
                        &built.conversion.rules,
                        headers,
                    );
                    if !checked.is_ok() {
                        bail!("{list} {kind}: {checked}");
                    }
                }
                for direction in Direction::BOTH {
                    let [folded_ns, apart_ns] =
                        alternate([&folded, &apart], direction, headers, options.passes);
                    println!(
                        "| {list} | {kind} | {direction} | {folded_ns:.1} | {apart_ns:.1} | \
                         {:.2} | {} | {} | {} |",
                        apart_ns / folded_ns,
                        mib(&folded),
                        mib(&apart),
                        chosen[direction.index()],
                    );
                }
            }
        }
    }
    Ok(())
}

/// Median nanoseconds per header of each classifier, their passes alternating (and which goes
/// first alternating too).
fn alternate(
    built: [&Built; 2],
    direction: Direction,
    headers: &[Header],
    passes: usize,
) -> [f64; 2] {
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for pass in 0..passes {
        for which in [pass % 2, 1 - pass % 2] {
            let b = built[which];
            let started = Instant::now();
            for header in headers {
                black_box(decide(
                    &b.classifier,
                    &b.target,
                    direction,
                    black_box(header),
                ));
            }
            times[which].push(started.elapsed().as_nanos() as f64 / headers.len() as f64);
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

fn mib(built: &Built) -> String {
    format!(
        "{:.1} MiB",
        built.classifier.stats().heap_bytes as f64 / (1024.0 * 1024.0)
    )
}

/// The layout the default budget gave the table of `direction` (the converted policy's pod has
/// one table per direction).
fn chosen(default: &Built, direction: Direction) -> &'static str {
    if default.classifier.is_apart(default.target.pod, direction) {
        "apart"
    } else {
        "folded"
    }
}
