//! A first packets-per-second figure for each datapath: two pods, `bench/sender` and
//! `bench/receiver`, one NetworkPolicy allowing UDP to the receiver's port, and the real filter
//! in front of both pods (AF_XDP, then TUN); the kernel bridge with no filter (`bypass`) is
//! measured in the same run as a reference (not necessarily a ceiling: there the sender's
//! `send` carries the whole kernel path on its own core; see BENCHMARKS.md).
//!
//! Every repetition builds the three setups afresh, in turn; in each, for 1 and 100 flows
//! (source ports): `pw-probe count` in the receiver counts the datagrams its socket reads for
//! SECONDS from the first one on, while `pw-probe flood` in the sender sends 64-byte frames
//! (22-byte payloads) with one `send` per datagram for SECONDS + 1 (so the counting window lies
//! inside the flood). The figure is the receiver's pps; the sender's pps (offered load), the
//! receiver's `eth0` rx rate, socket-buffer drops and the filter's own counters are printed next
//! to it, so a reader can tell what limited it.
//!
//! ```text
//! cargo build --release -p podwall-harness --bin pw-probe
//! cargo run --release -p podwall-bench --bin datapath_pps [-- --seconds 5 --reps 3]
//! ```
//!
//! Needs root. Nothing is pinned: the generator, the sink, the filter's worker and the kernel's
//! softirq work share whatever cores the machine has. Every namespace is removed on exit.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use datapath::counters::Snapshot;
use datapath::filter::FilterConfig;
use datapath::node::{Attachment, DatapathKind, Judging, NodeConfig, RunningNode};
use datapath::port::xdp::XdpConfig;
use datapath::port::PortDrops;
use harness::probe::{self, CountSpec, Counter, FloodSpec};
use harness::{Datapath, Topology, TopologyOptions};
use policy::{Classifier, Published, Source};

const PORT: u16 = 9999;
const SENDER: &str = "bench/sender";
const RECEIVER: &str = "bench/receiver";
const FLOWS: [u16; 2] = [1, 100];
/// Bytes of the Ethernet frame each datagram makes (22 bytes of payload over IPv4).
const SIZE: u16 = 64;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: bench, labels: {kubernetes.io/metadata.name: bench}}
---
apiVersion: v1
kind: Pod
metadata: {name: sender, namespace: bench, labels: {app: sender}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.250.0.1, podIPs: [{ip: 10.250.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: receiver, namespace: bench, labels: {app: receiver}}
spec: {containers: [{name: c, image: x, ports: [{name: sink, containerPort: 9999, protocol: UDP}]}]}
status: {phase: Running, podIP: 10.250.0.2, podIPs: [{ip: 10.250.0.2}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: receiver-udp, namespace: bench}
spec:
  podSelector: {matchLabels: {app: receiver}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: sender}}}]
    ports: [{protocol: UDP, port: 9999}]
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    /// The kernel bridge, no filter: the reference for this generator and sink.
    Bypass,
    Xdp,
    Tun,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Bypass => "kernel bridge (no filter)",
            Setup::Xdp => "AF_XDP (copy mode)",
            Setup::Tun => "TUN",
        }
    }
}

/// One repetition's numbers.
#[derive(Debug, Clone)]
struct Run {
    /// Datagrams the receiver's socket read per second.
    received_pps: f64,
    /// Packets the receiver's `eth0` took in per second (same window).
    rx_pps: Option<f64>,
    /// Datagrams the sender's kernel accepted per second.
    sent_pps: f64,
    /// Datagrams that reached the receiver's socket but found its buffer full.
    rcvbuf_errors: Option<u64>,
    /// The sender's `eth0` tx_dropped over the flood (TUN: the device queue was full).
    sender_tx_dropped: Option<u64>,
    send_errors: u64,
    /// The filter's counters over the run, summed over both pods (none under bypass).
    filter: Option<Snapshot>,
}

/// A first packets-per-second figure for each datapath (AF_XDP, TUN) next to the kernel bridge.
///
/// Example: datapath_pps --seconds 5 --reps 3
#[derive(Parser)]
#[command(name = "datapath_pps")]
struct Options {
    /// Length of each counting window; the sender runs one second longer.
    #[arg(long, default_value_t = 5.0, value_parser = window_seconds)]
    seconds: f64,
    /// Repetitions of every cell; each repetition builds every setup afresh, in turn.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    reps: u16,
}

fn window_seconds(text: &str) -> Result<f64, String> {
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
            eprintln!("datapath_pps: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let options = Options::parse();
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        bail!("needs root (it builds network namespaces and AF_XDP sockets)");
    }
    check_probe_binary()?;

    let cluster = policy::load(&[Source::new("datapath_pps.yaml", MANIFEST)])
        .map_err(|e| anyhow!("the embedded manifest: {e}"))?;
    let published = Arc::new(Published::new(Classifier::compile(Arc::new(cluster))));

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let busy_before = busy_percent(Duration::from_secs(2));
    eprintln!(
        "datapath_pps: {cores} cores, kernel {kernel}, {} of the machine busy before the run; \
         {SIZE}-byte UDP frames, flows {FLOWS:?}, {} × {:.1} s per cell",
        show_percent(busy_before),
        options.reps,
        options.seconds
    );
    if busy_before.is_some_and(|b| b > 10.0) {
        eprintln!(
            "datapath_pps: warning: something else keeps the machine busy; the figures will be low"
        );
    }

    let mut results: BTreeMap<(Setup, u16), Vec<Run>> = BTreeMap::new();
    let mut port_drops: BTreeMap<Setup, PortDrops> = BTreeMap::new();
    // Every repetition builds each setup afresh, in turn, so whatever else the machine does
    // during the run falls on all of them alike rather than on one.
    for rep in 0..options.reps {
        for setup in [Setup::Bypass, Setup::Xdp, Setup::Tun] {
            let drops = measure(setup, rep, &published, &options, &mut results)
                .with_context(|| format!("measuring {}", setup.name()))?;
            if let Some(d) = drops {
                let total = port_drops.entry(setup).or_default();
                total.tx_full += d.tx_full;
                total.tx_error += d.tx_error;
                total.no_route += d.no_route;
            }
        }
    }

    print_table(&results, &port_drops, &options);
    println!(
        "\n{cores} cores, kernel {kernel}; {} of the machine busy with other work before the run, \
         {} right after it",
        show_percent(busy_before),
        show_percent(busy_percent(Duration::from_secs(2)))
    );

    let prefix = format!("pw{}x", std::process::id());
    let left: Vec<String> = harness::netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if !left.is_empty() {
        bail!("namespaces left behind: {}", left.join(", "));
    }
    Ok(())
}

/// Fails early, with the command to fix it, when `pw-probe` is missing or predates `flood`.
fn check_probe_binary() -> Result<()> {
    let hint = "build it with `cargo build --release -p podwall-harness --bin pw-probe`";
    let bin = probe::binary().with_context(|| format!("pw-probe not found; {hint}"))?;
    let status = std::process::Command::new(&bin)
        .args(["flood", "--help"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!(
            "{} has no `flood` command (an old build?); {hint}",
            bin.display()
        );
    }
    Ok(())
}

/// `(busy, total)` jiffies of all cores, from the `cpu` line of /proc/stat (idle and iowait are
/// not busy).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = fields.iter().sum();
    Some((total - fields.get(3)? - fields.get(4)?, total))
}

/// How busy the machine is with other work: the share of all cores busy over `period`, while
/// this program only sleeps. Anything above a few percent will show in the figures.
fn busy_percent(period: Duration) -> Option<f64> {
    let (busy0, total0) = cpu_jiffies()?;
    std::thread::sleep(period);
    let (busy1, total1) = cpu_jiffies()?;
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    Some(100.0 * busy1.saturating_sub(busy0) as f64 / total as f64)
}

fn show_percent(value: Option<f64>) -> String {
    value.map_or("?".to_string(), |v| format!("{v:.0} %"))
}

/// Builds one setup, runs one repetition of every cell in it, and tears it down. Returns what
/// the filter's ports dropped.
fn measure(
    setup: Setup,
    rep: u16,
    published: &Arc<Published>,
    options: &Options,
    results: &mut BTreeMap<(Setup, u16), Vec<Run>>,
) -> Result<Option<PortDrops>> {
    let cluster = Arc::clone(published.load().classifier.cluster());
    let topology = Topology::build(
        &cluster,
        TopologyOptions {
            datapath: if setup == Setup::Tun {
                Datapath::Tun
            } else {
                Datapath::Veth
            },
            bypass: setup == Setup::Bypass,
            mtu: 1500,
        },
    )?;
    // Declared after the topology, so dropped before it (also on an early return): the filter
    // stops before its namespaces go.
    let node = start_filter(setup, &topology, published)?;
    if let Some(node) = &node {
        for line in &node.ports.description {
            eprintln!("datapath_pps: {line}");
        }
    }
    let sender = topology
        .pod(SENDER)
        .ok_or_else(|| anyhow!("no pod {SENDER}"))?;
    let receiver = topology
        .pod(RECEIVER)
        .ok_or_else(|| anyhow!("no pod {RECEIVER}"))?;
    let to: IpAddr = receiver
        .ipv4()
        .ok_or_else(|| anyhow!("{RECEIVER} has no IPv4 address"))?;

    let window = Duration::from_secs_f64(options.seconds);
    for flows in FLOWS {
        let before = node.as_ref().map(filter_totals);
        let started = Instant::now();
        let counter = Counter::start(receiver.namespace(), &CountSpec::new(PORT, window))?;
        let flood = probe::flood(
            sender.namespace(),
            &FloodSpec::new(to, PORT, window + Duration::from_secs(1))
                .with_flows(flows)
                .with_size(SIZE),
        )?;
        let count = counter.finish()?;
        if count.received == 0 {
            bail!(
                "{flows} flow(s): nothing arrived ({}); the sender sent {} (first error: {})",
                count.detail,
                flood.sent,
                flood.first_error.as_deref().unwrap_or("none")
            );
        }
        let filter = node
            .as_ref()
            .zip(before)
            .map(|(n, b)| filter_totals(n).since(&b));
        let run = Run {
            received_pps: count.pps,
            rx_pps: count
                .interface
                .as_ref()
                .map(|i| i.packets as f64 / count.seconds.max(1e-9)),
            sent_pps: flood.pps,
            rcvbuf_errors: count.rcvbuf_errors,
            sender_tx_dropped: flood.interface.as_ref().map(|i| i.dropped),
            send_errors: flood.errors,
            filter,
        };
        eprintln!(
            "datapath_pps: {:<26} flows {flows:>3} rep {}: received {:>9.0} pps, eth0 rx \
             {:>9.0} pps, sent {:>9.0} pps, rcvbuf drops {}, sender tx_dropped {}, send \
             errors {}{} ({:.1} s)",
            setup.name(),
            rep + 1,
            run.received_pps,
            run.rx_pps.unwrap_or(f64::NAN),
            run.sent_pps,
            show(run.rcvbuf_errors),
            show(run.sender_tx_dropped),
            run.send_errors,
            run.filter
                .as_ref()
                .map(|f| format!(
                    "; filter: forwarded {}, dropped {}, denied {}, malformed {}",
                    f.forwarded,
                    f.dropped,
                    f.denied_ingress + f.denied_egress,
                    if f.malformed.is_empty() {
                        "none".to_string()
                    } else {
                        f.malformed
                            .iter()
                            .map(|(r, n)| format!("{r}={n}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                ))
                .unwrap_or_default(),
            started.elapsed().as_secs_f64()
        );
        results.entry((setup, flows)).or_default().push(run);
    }

    let drops = match node {
        Some(node) => {
            let drops = node.stop().context("stopping the filter")?;
            eprintln!(
                "datapath_pps: {}: port drops: tx ring/queue full {}, tx errors {}, no route {}",
                setup.name(),
                drops.tx_full,
                drops.tx_error,
                drops.no_route
            );
            Some(drops)
        }
        None => None,
    };
    drop(topology);
    Ok(drops)
}

/// Starts the filter in front of both pods, configured as `podwall run` configures it
/// (`XdpConfig::default()`, `FilterConfig::default()`), the way `harness::lab::Lab` attaches it.
fn start_filter(
    setup: Setup,
    topology: &Topology,
    published: &Arc<Published>,
) -> Result<Option<RunningNode>> {
    let config = |datapath, attachments, netns| NodeConfig {
        datapath,
        netns,
        attachments,
        uplink: None,
        tun_mtu: 1500,
        xdp: XdpConfig::default(),
        filter: FilterConfig::default(),
        judging: Judging::Policy,
        worker_cpu: None,
    };
    match setup {
        Setup::Bypass => Ok(None),
        Setup::Xdp => {
            let attachments = harness::lab::veth_attachments(topology);
            let node = RunningNode::start(
                config(
                    DatapathKind::Xdp,
                    attachments,
                    Some(topology.node().name().to_string()),
                ),
                Arc::clone(published),
            )
            .context("starting the AF_XDP filter")?;
            Ok(Some(node))
        }
        Setup::Tun => {
            // Created in this namespace, then moved into the pods (as the lab does).
            let pid = std::process::id();
            let attachments: Vec<Attachment> = topology
                .endpoints()
                .enumerate()
                .map(|(k, endpoint)| Attachment::Tun {
                    pod: endpoint.key().to_string(),
                    device: format!("pwt{pid}x{k}"),
                })
                .collect();
            let node = RunningNode::start(
                config(DatapathKind::Tun, attachments.clone(), None),
                Arc::clone(published),
            )
            .context("starting the TUN filter")?;
            for attachment in &attachments {
                if let Attachment::Tun { pod, device } = attachment {
                    topology.adopt_tun(pod, device)?;
                }
            }
            Ok(Some(node))
        }
    }
}

/// The filter's counters summed over every attachment.
fn filter_totals(node: &RunningNode) -> Snapshot {
    let mut total = Snapshot::default();
    let mut malformed: BTreeMap<&'static str, u64> = BTreeMap::new();
    for counters in node.counters() {
        let s = counters.snapshot();
        total.allowed_ingress += s.allowed_ingress;
        total.allowed_egress += s.allowed_egress;
        total.denied_ingress += s.denied_ingress;
        total.denied_egress += s.denied_egress;
        total.forwarded += s.forwarded;
        total.dropped += s.dropped;
        total.icmp_unrelated += s.icmp_unrelated;
        for (reason, n) in s.malformed {
            *malformed.entry(reason).or_default() += n;
        }
    }
    total.malformed = malformed.into_iter().collect();
    total
}

fn show(value: Option<u64>) -> String {
    value.map_or("?".to_string(), |v| v.to_string())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `1.23 M`, `456 k`.
fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} M", pps / 1e6)
    } else {
        format!("{:.0} k", pps / 1e3)
    }
}

fn median_range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} ({}–{})", rate(median(values)), rate(min), rate(max))
}

fn print_table(
    results: &BTreeMap<(Setup, u16), Vec<Run>>,
    port_drops: &BTreeMap<Setup, PortDrops>,
    options: &Options,
) {
    println!();
    println!(
        "{SIZE}-byte UDP, received pps over {:.1} s windows: median (min–max) of {}",
        options.seconds, options.reps
    );
    println!();
    println!(
        "| datapath | flows | received by the socket | at receiver eth0 | offered (sender) | \
         socket-buffer drops | filter dropped / malformed |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((setup, flows), runs) in results {
        let received: Vec<f64> = runs.iter().map(|r| r.received_pps).collect();
        let rx: Vec<f64> = runs.iter().filter_map(|r| r.rx_pps).collect();
        let sent: Vec<f64> = runs.iter().map(|r| r.sent_pps).collect();
        let rcvbuf: u64 = runs.iter().filter_map(|r| r.rcvbuf_errors).sum();
        let filter = if runs.iter().all(|r| r.filter.is_none()) {
            "–".to_string()
        } else {
            let dropped: u64 = runs
                .iter()
                .filter_map(|r| r.filter.as_ref())
                .map(|f| f.dropped)
                .sum();
            let malformed: u64 = runs
                .iter()
                .filter_map(|r| r.filter.as_ref())
                .flat_map(|f| f.malformed.iter().map(|(_, n)| *n))
                .sum();
            format!("{dropped} / {malformed}")
        };
        println!(
            "| {} | {flows} | {} | {} | {} | {rcvbuf} | {filter} |",
            setup.name(),
            median_range(&received),
            if rx.len() == runs.len() {
                rate(median(&rx))
            } else {
                "?".to_string()
            },
            rate(median(&sent)),
        );
    }
    for (setup, drops) in port_drops {
        println!(
            "\n{}: ports dropped {} (tx ring/queue full), {} (tx errors), {} (no route) over all \
             runs",
            setup.name(),
            drops.tx_full,
            drops.tx_error,
            drops.no_route
        );
    }
}
