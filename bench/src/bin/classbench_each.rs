//! `Classifier::decide` one header at a time against `Classifier::decide_each` over all of
//! them, in one process, on ClassBench lists converted to Calico (default compile options).
//!
//! For each list, direction and header set (the trace where there is one, and headers drawn
//! inside the list's rules as the criterion bench draws them), the two calls alternate pass by
//! pass, so that a noisy machine slows both alike. It prints the median time per header of
//! each and their ratio, then, per seed, how the 100k list's time compares with the 1k list's
//! for each call (the sizes' passes alternate too). Every answer is checked against the linear
//! scan first.
//!
//! ```text
//! cargo run --release -p podwall-bench --bin classbench_each
//! cargo run --release -p podwall-bench --bin classbench_each -- --seeds acl1 --passes 41
//! ```

use std::hint::black_box;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{bail, Result};
use bench::classbench::check::{decide, query};
use bench::classbench::data::{header_sets, list_name, read_rules, seeds_or_all, SIZES};
use bench::classbench::{build, check, Built, Header};
use clap::Parser;
use policy::{Decision, Direction, Query};

/// decide against decide_each, in alternating passes.
///
/// Example: classbench_each --seeds ipc1 --passes 41
#[derive(Parser)]
#[command(name = "classbench_each")]
struct Options {
    /// Seeds: acl1, fw1, ipc1.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// Timed passes over each header set, per call.
    #[arg(long, default_value_t = 21)]
    passes: usize,
}

fn main() -> ExitCode {
    bench::exit_with(compare(Options::parse()))
}

/// One list's classifier and a header set, with the questions asked in each direction.
struct Set {
    list: String,
    kind: &'static str,
    built: Rc<Built>,
    headers: Vec<Header>,
    queries: [Vec<Query>; 2],
}

fn compare(options: Options) -> Result<()> {
    if options.passes == 0 {
        bail!("--passes must be at least 1");
    }
    let seeds = seeds_or_all(options.seeds);
    println!("| list | headers | direction | decide ns | decide_each ns | each / decide |");
    println!("|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for seed in &seeds {
        let mut sets = Vec::new();
        for size in SIZES {
            let list = list_name(seed, size);
            eprintln!("{list}: loading and compiling …");
            let rules = read_rules(seed, size)?;
            let kinds = header_sets(seed, size, &rules)?;
            let built = Rc::new(build(&list, &rules)?);
            for (kind, headers) in kinds {
                let checked = check(
                    &built.classifier,
                    &built.target,
                    &built.conversion.rules,
                    &headers,
                );
                if !checked.is_ok() {
                    bail!("{list} {kind}: {checked}");
                }
                let queries = Direction::BOTH.map(|direction| {
                    headers
                        .iter()
                        .map(|h| query(&built.target, direction, h))
                        .collect()
                });
                sets.push(Set {
                    list: list.clone(),
                    kind,
                    built: Rc::clone(&built),
                    headers,
                    queries,
                });
            }
        }
        for direction in Direction::BOTH {
            let times = alternate(&sets, direction, options.passes);
            for (set, [one, each]) in sets.iter().zip(&times) {
                println!(
                    "| {} | {} | {direction} | {one:.1} | {each:.1} | {:.2} |",
                    set.list,
                    set.kind,
                    each / one
                );
            }
            let generated = |size: usize| {
                let list = list_name(seed, size);
                sets.iter()
                    .position(|s| s.list == list && s.kind == "generated")
                    .map(|i| times[i])
            };
            if let (Some(small), Some(large)) = (generated(1_000), generated(100_000)) {
                ratios.push((seed.clone(), direction, small, large));
            }
        }
    }
    println!();
    println!(
        "| seed | direction | 1k decide ns | 100k decide ns | 100k / 1k | 1k decide_each ns | \
         100k decide_each ns | 100k / 1k |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (seed, direction, [one_1k, each_1k], [one_100k, each_100k]) in ratios {
        println!(
            "| {seed} | {direction} | {one_1k:.1} | {one_100k:.1} | {:.2} | {each_1k:.1} | \
             {each_100k:.1} | {:.2} |",
            one_100k / one_1k,
            each_100k / each_1k
        );
    }
    Ok(())
}

/// Median nanoseconds per header of `decide` and of `decide_each` for every set, the sets and
/// the two calls taking turns pass by pass.
fn alternate(sets: &[Set], direction: Direction, passes: usize) -> Vec<[f64; 2]> {
    let mut times: Vec<[Vec<f64>; 2]> = sets.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let longest = sets.iter().map(|s| s.headers.len()).max().unwrap_or(0);
    let mut decisions = vec![Decision::NotIsolated; longest];
    for pass in 0..passes {
        for (set, time) in sets.iter().zip(&mut times) {
            let (classifier, target) = (&set.built.classifier, &set.built.target);
            for turn in 0..2 {
                let call = (pass + turn) % 2;
                let started = Instant::now();
                if call == 0 {
                    for header in &set.headers {
                        black_box(decide(classifier, target, direction, black_box(header)));
                    }
                } else {
                    let queries = &set.queries[direction.index()];
                    let out = &mut decisions[..queries.len()];
                    classifier.decide_each(black_box(queries), out);
                    black_box(out);
                }
                let per_header = started.elapsed().as_nanos() as f64 / set.headers.len() as f64;
                time[call].push(per_header);
            }
        }
    }
    times
        .into_iter()
        .map(|t| {
            t.map(|mut v| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
        })
        .collect()
}
