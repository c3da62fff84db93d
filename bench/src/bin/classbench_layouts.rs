//! The table layouts of `Classifier::compile` compared in one process, on ClassBench lists
//! converted to Calico: rules over every port of a protocol *folded* into each port class (one
//! address search per packet, copies of those rules in every class), kept *apart* in classes
//! of their own (two searches, no copies), and the *product* of address and port classes (one
//! address search, one port search and one load; see `policy/src/classifier/product.rs`),
//! dense, in *steps* (where every row changes rule at most four times over the ports: one
//! record of 32 bytes per row) or *chunked* (one load more, for a smaller table), and for tables with source-port
//! rules one *joint* product for all their lookups or a product *per lookup* (the main one's,
//! then the source-port class's: two lookups per packet). `CompileOptions::fold_budget`,
//! `product_budget`, `dense_product_budget`, `steps_product_budget` and
//! `joint_product_budget` pick one per table;
//! this shows what each costs, so that the budgets can be checked against measurements.
//!
//! For each list and direction the classifiers decide every header of a set (the trace, and
//! headers drawn inside the list's rules as the criterion bench draws them) in alternating
//! passes, so that a noisy machine slows all alike; it prints the median time per header of
//! each, the product's ratio to the faster layered layout, each classifier's heap, and which
//! layout the default budgets chose. Every answer is checked against the linear scan first.
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
use bench::classbench::data::{header_sets, list_name, read_rules, seeds_or_all, SIZES};
use bench::classbench::{build_with, check, Built, Header};
use clap::Parser;
use policy::compile::CompileOptions;
use policy::Direction;

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
    bench::exit_with(compare(Options::parse()))
}

fn compare(options: Options) -> Result<()> {
    if options.passes == 0 {
        bail!("--passes must be at least 1");
    }
    let seeds = seeds_or_all(options.seeds);
    let sizes = options.sizes.unwrap_or_else(|| SIZES.to_vec());
    println!(
        "| list | headers | direction | folded ns | apart ns | dense ns | chunked ns | steps ns | \
         dense / best layered | chunked / dense | steps / chunked | dense per lookup ns | \
         dense / per lookup | folded heap | apart heap | dense heap | chunked heap | steps heap | \
         dense per lookup heap | default |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for seed in &seeds {
        for &size in &sizes {
            let list = list_name(seed, size);
            eprintln!("{list}: loading and compiling the layouts …");
            let rules = read_rules(seed, size)?;
            // Product budgets: in any shape, dense, in steps.
            let layout = |fold_budget, [product_budget, dense, steps]: [usize; 3], joint| {
                let options = CompileOptions {
                    fold_budget,
                    product_budget,
                    dense_product_budget: dense,
                    steps_product_budget: steps,
                    joint_product_budget: joint,
                    ..CompileOptions::default()
                };
                build_with(&list, &rules, options).with_context(|| list.clone())
            };
            // The default budgets' choice, before the layouts are built (at 100k rules the
            // folded one alone is over 100 MiB).
            let default = CompileOptions::default();
            let chosen = {
                let built = layout(
                    default.fold_budget,
                    [
                        default.product_budget,
                        default.dense_product_budget,
                        default.steps_product_budget,
                    ],
                    default.joint_product_budget,
                )?;
                Direction::BOTH.map(|d| chosen(&built, d))
            };
            let all = usize::MAX;
            let joint = default.joint_product_budget;
            let (none, dense, chunked, steps) = ([0; 3], [all; 3], [all, 0, 0], [all, 0, all]);
            let fold = default.fold_budget;
            let layouts = [
                layout(all, none, 0)?,
                layout(0, none, 0)?,
                layout(fold, dense, joint)?,
                layout(fold, chunked, joint)?,
                layout(fold, steps, joint)?,
                layout(fold, dense, 0)?,
            ];
            let sets = header_sets(seed, size, &rules)?;
            for (kind, headers) in &sets {
                for built in &layouts {
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
                    let [folded_ns, apart_ns, dense_ns, chunked_ns, steps_ns, per_lookup_ns] =
                        alternate(&layouts, direction, headers, options.passes);
                    println!(
                        "| {list} | {kind} | {direction} | {folded_ns:.1} | {apart_ns:.1} | \
                         {dense_ns:.1} | {chunked_ns:.1} | {steps_ns:.1} | {:.2} | {:.2} | \
                         {:.2} | {per_lookup_ns:.1} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
                        dense_ns / folded_ns.min(apart_ns),
                        chunked_ns / dense_ns,
                        steps_ns / chunked_ns,
                        dense_ns / per_lookup_ns,
                        mib(&layouts[0]),
                        mib(&layouts[1]),
                        mib(&layouts[2]),
                        mib(&layouts[3]),
                        mib(&layouts[4]),
                        mib(&layouts[5]),
                        chosen[direction.index()],
                    );
                }
            }
        }
    }
    Ok(())
}

/// Median nanoseconds per header of each classifier, their passes alternating (the order
/// rotating from pass to pass).
fn alternate<const N: usize>(
    built: &[Built; N],
    direction: Direction,
    headers: &[Header],
    passes: usize,
) -> [f64; N] {
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    for pass in 0..passes {
        for turn in 0..N {
            let which = (pass + turn) % N;
            let b = &built[which];
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

/// The layout the default budgets gave the table of `direction` (the converted policy's pod
/// has one table per direction).
fn chosen(default: &Built, direction: Direction) -> &'static str {
    let pod = default.target.pod;
    let classifier = &default.classifier;
    let shape = if classifier.has_chunked_product(pod, direction) {
        "chunked"
    } else if classifier.has_steps_product(pod, direction) {
        "steps"
    } else {
        "dense"
    };
    match (
        classifier.has_product(pod, direction),
        classifier.has_joint_product(pod, direction),
        classifier.is_apart(pod, direction),
    ) {
        (true, true, _) => match shape {
            "chunked" => "chunked, joint",
            "steps" => "steps, joint",
            _ => "dense, joint",
        },
        (true, false, _) => shape,
        (false, _, true) => "apart",
        (false, _, false) => "folded",
    }
}
