//! The throughput runner: delivered packets per second of 64-byte UDP through each path under
//! test, in turn, in one run, at several policy sizes and three stream shapes. Writes
//! `throughput.csv`, `throughput.md` (tables with ratios, the targets) and `throughput.png`
//! (pps against rule count) to `--out`, and prints the tables.
//!
//! ```text
//! ./scripts/setup-bench        # iptables, nftables, ethtool, the chart font
//! cargo run --release -p podwall-bench --bin throughput [-- --quick]
//! ```
//!
//! Needs root and two cores. Every namespace it creates is removed when it ends, also on
//! error; the filter and the verdict thread stop first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::throughput::frames::Stream;
use bench::throughput::paths::{ActivePath, Cores, PathKind};
use bench::throughput::report::{count_text, rate_text, Results};
use bench::throughput::rules::RuleSet;
use bench::throughput::traffic::{self, Generator};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// podwall against the kernel's filters, side by side, at 10 to 100k rules.
///
/// Example: throughput --paths podwall-xdp,noop-xdp,iptables-legacy --rules 1000,10000
#[derive(Parser)]
#[command(name = "throughput")]
struct Options {
    /// Paths under test, in order: bridge, iptables-legacy, iptables-nft, nft-sets, nfqueue,
    /// noop-xdp, podwall-xdp, podwall-tun.
    #[arg(long, value_delimiter = ',', value_parser = parse_path)]
    paths: Option<Vec<PathKind>>,
    /// Policy sizes (rules applying to the receiving pod).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000,100000",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rules: Vec<u32>,
    /// Stream shapes: flow1, flows1000, new (every packet a new connection).
    #[arg(long, value_delimiter = ',', value_parser = parse_stream)]
    streams: Option<Vec<Stream>>,
    /// Counting window of each repetition.
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    seconds: f64,
    /// Traffic before the first window of a point (flows set up, queues filled).
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    warmup: f64,
    /// Length of each measurement while searching a path's throughput (its highest rate with
    /// at most 1 % loss).
    #[arg(long, default_value_t = 0.5, value_parser = seconds)]
    search_seconds: f64,
    /// Bisection steps of that search.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=20))]
    search_steps: u32,
    /// The common rate at which every path's cost is measured (path-core time per frame); a
    /// rate below the AF_XDP paths' throughput. 0: skip that measurement.
    #[arg(long, default_value_t = 150_000.0)]
    cost_rate: f64,
    /// Offer this many frames per second instead of searching for each path's throughput (for
    /// profiling paths at the same load).
    #[arg(long)]
    rate: Option<f64>,
    /// Repetitions of every point at the rate found (median and min–max are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    reps: u16,
    /// A short run: 1 repetition of 1 s at 10, 1k and 10k rules.
    #[arg(long)]
    quick: bool,
    /// The generator's core.
    #[arg(long, default_value_t = 0)]
    generator_core: usize,
    /// The path's core: its receive NAPI thread, podwall's worker, the verdict thread.
    #[arg(long, default_value_t = 1)]
    path_core: usize,
    /// SCHED_FIFO priority (1–99) of the paths' userspace threads on the path core (podwall's
    /// worker, the no-op forwarder's, the NFQUEUE verdict thread); 0: normal scheduling. Sharing
    /// the core with the NAPI thread under normal scheduling, a worker waits up to ~5 ms while
    /// its frames arrive, and AF_XDP drops them at a third of its throughput.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=99))]
    worker_priority: u8,
    /// Where the CSV, the Markdown and the PNG go.
    #[arg(long, default_value = "target/throughput")]
    out: PathBuf,
    /// The TrueType font for the chart's text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

fn parse_path(key: &str) -> Result<PathKind, String> {
    PathKind::parse(key).ok_or_else(|| {
        let known: Vec<&str> = PathKind::ALL.iter().map(|p| p.key()).collect();
        format!("unknown path {key:?}; known: {}", known.join(", "))
    })
}

fn parse_stream(key: &str) -> Result<Stream, String> {
    Stream::parse(key).ok_or_else(|| {
        let known: Vec<&str> = Stream::ALL.iter().map(|s| s.key()).collect();
        format!("unknown stream {key:?}; known: {}", known.join(", "))
    })
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 600.0 => Ok(s),
        Ok(_) => Err("must be above 0 and at most 600".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Set by SIGINT or SIGTERM: the runner stops at the next measurement and unwinds, so that
/// every namespace it made is removed (a signal's default action would leave them behind).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted; everything it built is removed");
    }
    Ok(())
}

fn run() -> Result<()> {
    let mut options = Options::parse();
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("throughput: stopping after the current measurement");
            INTERRUPTED.store(true, Ordering::Relaxed);
        }
    });
    if options.quick {
        options.reps = 1;
        options.seconds = 1.0;
        options.warmup = 0.5;
        options.search_steps = 4;
        options.rules = vec![10, 1000, 10_000];
    }
    let paths = options
        .paths
        .clone()
        .unwrap_or_else(|| PathKind::ALL.to_vec());
    let streams = options
        .streams
        .clone()
        .unwrap_or_else(|| Stream::ALL.to_vec());
    let mut rule_counts: Vec<usize> = options.rules.iter().map(|&r| r as usize).collect();
    rule_counts.sort_unstable();
    rule_counts.dedup();
    preflight(&paths, &options)?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let workdir = options.out.join("work");
    std::fs::create_dir_all(&workdir)?;
    let cores = Cores {
        generator: options.generator_core,
        path: options.path_core,
        priority: (options.worker_priority > 0).then_some(options.worker_priority),
    };

    let points = paths.len() * rule_counts.len() * streams.len();
    eprintln!(
        "throughput: {points} points × {} × {:.1} s (after {:.1} s of warm-up and a search for the \
         rate with ≤ 1 % loss), at most about {:.0} min of traffic; generator on core {}, path \
         on core {}",
        options.reps,
        options.seconds,
        options.warmup,
        points as f64
            * (options.warmup
                + (2 * options.search_steps + 1) as f64 * (options.search_seconds + 0.2)
                + 2.0 * options.reps as f64 * (options.seconds + 0.3))
            / 60.0,
        cores.generator,
        cores.path
    );
    let started = Instant::now();
    let mut results = Results::default();
    measure_all(
        &paths,
        &rule_counts,
        &streams,
        &options,
        cores,
        &workdir,
        &mut results,
    )?;

    let csv = options.out.join("throughput.csv");
    std::fs::write(&csv, results.csv()).with_context(|| format!("writing {}", csv.display()))?;
    let tables = results.tables(&rule_counts)
        + &results.cost_tables(&rule_counts)
        + &results.targets(&rule_counts);
    let markdown = options.out.join("throughput.md");
    std::fs::write(&markdown, &tables)?;
    let png = options.out.join("throughput.png");
    results.chart(&rule_counts, &png, &options.font)?;
    println!("{tables}");
    println!(
        "\n{} repetition(s) of {:.1} s per point, {:.1} min in all; written: {}, {}, {}",
        options.reps,
        options.seconds,
        started.elapsed().as_secs_f64() / 60.0,
        csv.display(),
        markdown.display(),
        png.display()
    );
    let _ = std::fs::remove_dir_all(&workdir);
    let left: Vec<String> = harness::netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(&format!("pw{}x", std::process::id())))
        .collect();
    if !left.is_empty() {
        bail!("namespaces left behind: {}", left.join(", "));
    }
    Ok(())
}

fn preflight(paths: &[PathKind], options: &Options) -> Result<()> {
    if !is_root() {
        bail!("needs root (it builds network namespaces, loads XDP programs and firewall rules)");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for core in [options.generator_core, options.path_core] {
        if core >= cores {
            bail!("core {core} does not exist; this machine has {cores}");
        }
    }
    if options.generator_core == options.path_core {
        bail!("the generator and the path need different cores");
    }
    let mut missing: Vec<&str> = ["ethtool", "taskset", "bridge"]
        .into_iter()
        .chain(paths.iter().flat_map(|p| p.commands().iter().copied()))
        .filter(|c| !on_path(c))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        bail!(
            "missing {}; run ./scripts/setup-bench (it installs iptables, nftables, ethtool and \
             the chart font)",
            missing.join(", ")
        );
    }
    if !options.font.exists() {
        bail!(
            "no chart font at {}; run ./scripts/setup-bench or pass --font",
            options.font.display()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
        .unwrap_or(false)
}

/// Builds every path, then for each policy size and stream measures them in turn: first each
/// path's throughput (the search), then the repetitions, path after path, so that whatever else
/// the machine does falls on all of them alike rather than on one. The rule-independent
/// references (bridge, no-op forwarder) are measured at every size too, beside the others.
fn measure_all(
    kinds: &[PathKind],
    rule_counts: &[usize],
    streams: &[Stream],
    options: &Options,
    cores: Cores,
    workdir: &std::path::Path,
    results: &mut Results,
) -> Result<()> {
    let first = RuleSet::generate(rule_counts[0]);
    let mut paths = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let dir = workdir.join(kind.key());
        std::fs::create_dir_all(&dir)?;
        let built = Instant::now();
        let path = ActivePath::build(kind, &first, cores, &dir)
            .with_context(|| format!("building {}", kind.name()))?;
        eprintln!(
            "throughput: {} built in {:.1} s",
            kind.name(),
            built.elapsed().as_secs_f64()
        );
        paths.push(path);
    }
    for (i, &count) in rule_counts.iter().enumerate() {
        if i > 0 {
            let rules = RuleSet::generate(count);
            for path in paths.iter_mut().filter(|p| p.kind().uses_rules()) {
                let installing = Instant::now();
                path.install(&rules)
                    .with_context(|| format!("{}: installing {count} rules", path.kind().key()))?;
                eprintln!(
                    "throughput: {}: {} rules in force after {:.1} s",
                    path.kind().key(),
                    rules.len(),
                    installing.elapsed().as_secs_f64()
                );
            }
        }
        for &stream in streams {
            let mut rates = Vec::with_capacity(paths.len());
            for path in &paths {
                let rate = throughput_rate(path, stream, options, cores)
                    .with_context(|| format!("measuring {}", path.kind().name()))?;
                rates.push(rate);
            }
            for rep in 0..options.reps {
                for (path, rate) in paths.iter().zip(rates.iter_mut()) {
                    let measured = sustained(path, stream, rate, options, cores)
                        .with_context(|| format!("measuring {}", path.kind().name()))?;
                    let sample = measured.sample;
                    eprintln!(
                        "throughput: {:<16} {:>5} rules  {:<15} rep {}: delivered {:>9}/s, \
                         offered {:>9}/s ({}), path core {:.0} % busy{}",
                        path.kind().key(),
                        count_text(count),
                        stream.name(),
                        rep + 1,
                        rate_text(sample.delivered),
                        rate_text(sample.offered),
                        rate.map_or("full speed".to_string(), |r| format!(
                            "paced to {}/s",
                            rate_text(r)
                        )),
                        measured.busy * 100.0,
                        path.detail().map(|d| format!("; {d}")).unwrap_or_default()
                    );
                    results.add(path.kind(), stream, count, *rate, sample, measured.busy);
                }
            }
            if options.cost_rate > 0.0 {
                for rep in 0..options.reps {
                    for path in &paths {
                        let cost = cost_at(path, stream, options, cores)
                            .with_context(|| format!("measuring {}", path.kind().name()))?;
                        let carried = cost.carried(options.cost_rate);
                        eprintln!(
                            "throughput: {:<16} {:>5} rules  {:<15} cost {}: {:.2} µs of the \
                             path core per frame at {}/s of {}/s offered ({:.0} % busy){}",
                            path.kind().key(),
                            count_text(count),
                            stream.name(),
                            rep + 1,
                            cost.per_frame_ns() / 1000.0,
                            rate_text(cost.sample.delivered),
                            rate_text(cost.sample.offered),
                            cost.busy * 100.0,
                            if carried {
                                ""
                            } else {
                                "; did not carry the rate"
                            }
                        );
                        results.add_cost(
                            path.kind(),
                            stream,
                            count,
                            options.cost_rate,
                            cost.per_frame_ns(),
                            carried,
                        );
                    }
                }
            }
        }
    }
    for path in paths {
        let kind = path.kind();
        let drops = path
            .finish()
            .with_context(|| format!("stopping {}", kind.name()))?;
        if let Some(drops) = drops {
            eprintln!(
                "throughput: {}: port drops over the run: {drops}",
                kind.key()
            );
        }
    }
    Ok(())
}

/// The rate to offer `path`: `--rate`, or its throughput found by a search (`None`: full
/// speed).
fn throughput_rate(
    path: &ActivePath,
    stream: Stream,
    options: &Options,
    cores: Cores,
) -> Result<Option<f64>> {
    if let Some(rate) = options.rate {
        return Ok(Some(rate));
    }
    check_interrupted()?;
    let (netns, interface, framing) = path.sender();
    let generator = Generator::start(netns, interface, stream, framing, cores.generator)?;
    std::thread::sleep(Duration::from_secs_f64(options.warmup));
    let (sink_netns, sink_interface) = path.sink();
    let rate = traffic::find_rate(
        &generator,
        sink_netns,
        sink_interface,
        Duration::from_secs_f64(options.search_seconds),
        options.search_steps,
    )?;
    generator.stop()?;
    Ok(rate)
}

/// The path core's time per frame with the stream at `--cost-rate`. A window in which the
/// generator fell short of the rate (its own core had other work) says nothing about the path,
/// so it is taken again, up to [`COST_ATTEMPTS`] times in all.
fn cost_at(
    path: &ActivePath,
    stream: Stream,
    options: &Options,
    cores: Cores,
) -> Result<traffic::Cost> {
    let mut attempt = 1;
    loop {
        let cost = run_at(path, stream, Some(options.cost_rate), options, cores)?;
        if cost.generator_kept_up(options.cost_rate) || attempt == COST_ATTEMPTS {
            return Ok(cost);
        }
        eprintln!(
            "throughput: {}: the generator offered {}/s of {}/s; measuring again",
            path.kind().key(),
            rate_text(cost.sample.offered),
            rate_text(options.cost_rate)
        );
        attempt += 1;
    }
}

/// How many windows a cost measurement may take when the generator falls short.
const COST_ATTEMPTS: usize = 3;

/// One repetition at a rate the path sustains over the whole window. The search's windows are
/// short, so the rate it found can be one the path carries for half a second and not for the
/// repetition's; a repetition that loses more than [`traffic::LOSS_TOLERANCE`] then steps the
/// rate down by [`STEP_DOWN`] and runs again, up to [`STEPS_DOWN`] times, and the lower rate
/// stays for the repetitions after it. What an overloaded path delivers is lower than what it
/// carries, and swings from run to run (see `traffic`), so it is not the figure.
fn sustained(
    path: &ActivePath,
    stream: Stream,
    rate: &mut Option<f64>,
    options: &Options,
    cores: Cores,
) -> Result<traffic::Cost> {
    let mut measured = run_at(path, stream, *rate, options, cores)?;
    for _ in 0..STEPS_DOWN {
        let Some(paced) = *rate else { break };
        let sample = measured.sample;
        if sample.loss_free() {
            break;
        }
        eprintln!(
            "throughput: {}: {}/s of {}/s arrived; stepping down to {}/s",
            path.kind().key(),
            rate_text(sample.delivered),
            rate_text(sample.offered),
            rate_text(paced * STEP_DOWN)
        );
        *rate = Some(paced * STEP_DOWN);
        measured = run_at(path, stream, *rate, options, cores)?;
    }
    Ok(measured)
}

/// How a repetition lowers a rate its path did not sustain, and how many times at most.
const STEP_DOWN: f64 = 0.95;
const STEPS_DOWN: usize = 8;

/// One repetition: the stream at `rate` for a short settling time, then the counting window,
/// with the path core's busy share over it.
fn run_at(
    path: &ActivePath,
    stream: Stream,
    rate: Option<f64>,
    options: &Options,
    cores: Cores,
) -> Result<traffic::Cost> {
    check_interrupted()?;
    let (netns, interface, framing) = path.sender();
    let generator = Generator::start(netns, interface, stream, framing, cores.generator)?;
    generator.set_rate(rate);
    let (sink_netns, sink_interface) = path.sink();
    let measured = traffic::measure_cost(
        &generator,
        sink_netns,
        sink_interface,
        cores.path,
        Duration::from_millis(300),
        Duration::from_secs_f64(options.seconds),
    )?;
    generator.stop()?;
    Ok(measured)
}
