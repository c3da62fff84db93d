//! For each ClassBench list: rules, what the conversion approximated, and what the converted
//! GlobalNetworkPolicy costs podwall to build — manifest size, `policy::load` and
//! `Classifier::compile` time, the peak heap while it loads and compiles the list (live heap
//! bytes above those before, counted by [`bench::heap::Counting`]), and the compiled
//! classifier's heap (`Stats::heap_bytes`) per rule. Prints a Markdown table; progress goes to
//! stderr.
//!
//! ```text
//! cargo run --release -p podwall-bench --bin classbench_report
//! cargo run --release -p podwall-bench --bin classbench_report -- --seeds fw1 --sizes 1000
//! cargo run --release -p podwall-bench --bin classbench_report -- --ranked-cells-bytes 0
//! ```

use std::process::ExitCode;

use anyhow::{Context, Result};
use bench::classbench::build_with;
use bench::classbench::data::{list_name, read_rules, seeds_or_all, SIZES};
use bench::heap;
use clap::Parser;
use policy::compile::CompileOptions;

/// Build time and memory of podwall's classifier for ClassBench lists converted to Calico.
///
/// Example: classbench_report --seeds acl1,fw1 --sizes 1000,10000
#[derive(Parser)]
#[command(name = "classbench_report")]
struct Options {
    /// Seeds: acl1, fw1, ipc1.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// List sizes: 1000, 10000, 100000.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// `CompileOptions::ranked_cells_bytes`: from how many bytes of four-byte cells a product
    /// keeps ranks of its slots instead (0: wherever the slots allow). Default: the
    /// compiler's.
    #[arg(long)]
    ranked_cells_bytes: Option<usize>,
}

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

fn main() -> ExitCode {
    bench::exit_with(report(Options::parse()))
}

fn report(options: Options) -> Result<()> {
    let seeds = seeds_or_all(options.seeds);
    let sizes = options.sizes.unwrap_or_else(|| SIZES.to_vec());
    let defaults = CompileOptions::default();
    let compile_options = CompileOptions {
        ranked_cells_bytes: options
            .ranked_cells_bytes
            .unwrap_or(defaults.ranked_cells_bytes),
        ..defaults
    };
    println!(
        "| list | rules | approximated | narrowed to TCP | with source ports | manifest | \
         load | compile | load + compile | peak heap | slots | products (steps, chunked) | heap | \
         bytes per rule |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for seed in &seeds {
        for &size in &sizes {
            let list = list_name(seed, size);
            eprintln!("{list}: loading and compiling …");
            let rules = read_rules(seed, size)?;
            let before = heap::start();
            let built = build_with(&list, &rules, compile_options).with_context(|| list.clone())?;
            let peak = heap::peak_since(before);
            let c = &built.conversion;
            let stats = built.classifier.stats();
            let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
            let total = built.load + built.compile;
            println!(
                "| {list} | {} | {} | {} | {} | {:.1} MiB | {:.2} s | {:.2} s | {:.2} s | \
                 {:.0} MiB | {} | {} ({}, {}) | {:.1} MiB | {:.0} |",
                rules.len(),
                c.approximated,
                c.narrowed,
                c.with_source_ports,
                mib(built.manifest_bytes),
                built.load.as_secs_f64(),
                built.compile.as_secs_f64(),
                total.as_secs_f64(),
                mib(peak),
                stats.slots,
                stats.product_tables,
                stats.steps_product_tables,
                stats.chunked_product_tables,
                mib(stats.heap_bytes),
                stats.heap_bytes as f64 / rules.len() as f64,
            );
        }
    }
    Ok(())
}
