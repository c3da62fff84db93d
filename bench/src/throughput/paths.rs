//! The paths under test, each built in its own namespaces between the same sender and sink:
//!
//! ```text
//! sender ns: s<T> ──veth── a<T> │ path ns: bridge / AF_XDP │ b<T> ──veth── k<T> :sink ns (XDP drop)
//! ```
//!
//! The TUN path has no path namespace: podwall's TUN devices are the sender's and the sink's
//! interfaces, and podwall routes between them. Every path's work runs on the path core: the
//! receive side of `a<T>` is a threaded NAPI kthread pinned there, and so are podwall's worker
//! and the NFQUEUE verdict thread; the generator has the other core.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use datapath::filter::FilterConfig;
use datapath::node::{Attachment, DatapathKind, Judging, NodeConfig, RunningNode};
use datapath::port::netns::NetnsGuard;
use datapath::port::xdp::XdpConfig;
use datapath::port::xdp_drop::{DropMode, XdpDrop};
use datapath::port::PortDrops;
use harness::netns::{run_ip, Namespace};
use policy::{Classifier, Published, Source};

use super::frames::{Framing, SENDER_MAC, SINK_MAC};
use super::nfqueue::VerdictProgram;
use super::rules::{RuleSet, SENDER_IP, SINK_IP};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    Bridge,
    IptablesLegacy,
    IptablesNft,
    NftSets,
    Nfqueue,
    NoopXdp,
    PodwallXdp,
    PodwallTun,
}

impl PathKind {
    pub const ALL: [PathKind; 8] = [
        PathKind::Bridge,
        PathKind::IptablesLegacy,
        PathKind::IptablesNft,
        PathKind::NftSets,
        PathKind::Nfqueue,
        PathKind::NoopXdp,
        PathKind::PodwallXdp,
        PathKind::PodwallTun,
    ];

    pub fn key(self) -> &'static str {
        match self {
            PathKind::Bridge => "bridge",
            PathKind::IptablesLegacy => "iptables-legacy",
            PathKind::IptablesNft => "iptables-nft",
            PathKind::NftSets => "nft-sets",
            PathKind::Nfqueue => "nfqueue",
            PathKind::NoopXdp => "noop-xdp",
            PathKind::PodwallXdp => "podwall-xdp",
            PathKind::PodwallTun => "podwall-tun",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PathKind::Bridge => "kernel bridge, no filter",
            PathKind::IptablesLegacy => "iptables-legacy, linear rules",
            PathKind::IptablesNft => "iptables-nft, linear rules",
            PathKind::NftSets => "nftables, one set (stateless)",
            PathKind::Nfqueue => "NFQUEUE + userspace verdicts",
            PathKind::NoopXdp => "AF_XDP no-op forwarder",
            PathKind::PodwallXdp => "podwall, AF_XDP",
            PathKind::PodwallTun => "podwall, TUN",
        }
    }

    pub fn parse(key: &str) -> Option<PathKind> {
        PathKind::ALL.into_iter().find(|p| p.key() == key)
    }

    /// Whether it enforces the rules at all (the bridge and the no-op forwarder pass everything).
    pub fn filters(self) -> bool {
        self.uses_rules()
    }

    /// Whether the policy size can change what it does (the others are measured once).
    pub fn uses_rules(self) -> bool {
        !matches!(self, PathKind::Bridge | PathKind::NoopXdp)
    }

    /// The programs it needs besides `ip`.
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            PathKind::IptablesLegacy | PathKind::Nfqueue => &["iptables-legacy-restore"],
            PathKind::IptablesNft => &["iptables-nft-restore"],
            PathKind::NftSets => &["nft"],
            _ => &[],
        }
    }
}

/// Which core does what, and how the path's userspace threads are scheduled there.
#[derive(Debug, Clone, Copy)]
pub struct Cores {
    pub generator: usize,
    pub path: usize,
    /// `SCHED_FIFO` priority for every userspace thread of a path (podwall's worker, the no-op
    /// forwarder's, the NFQUEUE verdict thread), so that none waits behind the path core's
    /// NAPI thread while its frames arrive; `None`: normal scheduling.
    pub priority: Option<u8>,
}

/// One path, built and ready for traffic; torn down on drop (the filter and the verdict thread
/// first, then the sink program, then the namespaces).
pub struct ActivePath {
    kind: PathKind,
    node: Option<RunningNode>,
    published: Option<Arc<Published>>,
    verdicts: Option<VerdictProgram>,
    _sink_program: XdpDrop,
    sender_interface: String,
    sink_interface: String,
    workdir: PathBuf,
    path: Option<Namespace>,
    sink: Namespace,
    sender: Namespace,
}

impl ActivePath {
    /// Builds `kind` with `rules` in force.
    pub fn build(kind: PathKind, rules: &RuleSet, cores: Cores, workdir: &Path) -> Result<Self> {
        // Interface names carry the process id: the TUN devices are created in this process's
        // namespace, where another run's could exist.
        let tag = std::process::id();
        let sender = quiet_namespace("s")?;
        let sink = quiet_namespace("k")?;
        if kind == PathKind::PodwallTun {
            return Self::build_tun(kind, rules, cores, workdir, tag, sender, sink);
        }
        let path = quiet_namespace("p")?;
        let (s, a, b, k) = (
            format!("s{tag}"),
            format!("a{tag}"),
            format!("b{tag}"),
            format!("k{tag}"),
        );
        for (outer, inner, ns, mac) in [(&s, &a, &sender, SENDER_MAC), (&k, &b, &sink, SINK_MAC)] {
            path.run([
                "link",
                "add",
                inner,
                "type",
                "veth",
                "peer",
                "name",
                outer,
                "netns",
                ns.name(),
            ])?;
            ns.run(["link", "set", "dev", outer, "address", &mac_text(mac)])?;
            ns.run(["link", "set", "dev", outer, "up"])?;
            path.run(["link", "set", "dev", inner, "up"])?;
        }
        let sink_program = attach_drop(&sink, &k, DropMode::Native)?;
        let mut active = ActivePath {
            kind,
            node: None,
            published: None,
            verdicts: None,
            _sink_program: sink_program,
            sender_interface: s,
            sink_interface: k,
            workdir: workdir.to_path_buf(),
            path: Some(path),
            sink,
            sender,
        };
        let path = active.path.as_ref().expect("set above");
        match kind {
            PathKind::Bridge
            | PathKind::IptablesLegacy
            | PathKind::IptablesNft
            | PathKind::NftSets
            | PathKind::Nfqueue => {
                path.run(["link", "add", "br0", "type", "bridge"])?;
                for port in [&a, &b] {
                    path.run(["link", "set", "dev", port, "master", "br0"])?;
                }
                path.run(["link", "set", "dev", "br0", "up"])?;
                // The sink never sends, so the bridge would never learn where it is.
                path.exec([
                    "bridge",
                    "fdb",
                    "add",
                    &mac_text(SINK_MAC),
                    "dev",
                    &b,
                    "master",
                    "static",
                ])?;
                let through_iptables = matches!(
                    kind,
                    PathKind::IptablesLegacy | PathKind::IptablesNft | PathKind::Nfqueue
                );
                // Missing without br_netfilter: then bridged traffic skips iptables anyway,
                // which is fine for the paths that want it off and fatal for the others.
                path.set_sysctls(
                    &[(
                        "net.bridge.bridge-nf-call-iptables",
                        if through_iptables { "1" } else { "0" },
                    )],
                    !through_iptables,
                )
                .with_context(|| {
                    "net.bridge.bridge-nf-call-iptables: iptables on a bridge needs the \
                     br_netfilter module (modprobe br_netfilter)"
                })?;
                if kind == PathKind::Nfqueue {
                    active.verdicts =
                        Some(VerdictProgram::start(path.name(), cores, rules.clone())?);
                }
            }
            PathKind::NoopXdp | PathKind::PodwallXdp => {
                let judging = if kind == PathKind::NoopXdp {
                    Judging::ForwardAll
                } else {
                    Judging::Policy
                };
                let attachment = Attachment::Veth {
                    pod: "bench/sink".into(),
                    pod_interface: b.clone(),
                    node_interface: a.clone(),
                };
                let published = Arc::new(Published::new(compile(rules)?));
                let node = start_node(
                    DatapathKind::Xdp,
                    vec![attachment],
                    Some(path.name().to_string()),
                    judging,
                    cores,
                    &published,
                )?;
                active.node = Some(node);
                active.published = Some(published);
            }
            PathKind::PodwallTun => unreachable!("built by build_tun"),
        }
        // veth hands a frame to the receiver's NAPI (where XDP runs) only if GRO could merge
        // it, which for a sending device with TSO on means never for UDP: the frame goes to
        // the sending core's backlog and the receiver's XDP program never sees it. So TSO off
        // on the sender (not UDP GRO forwarding on the receiver: that would merge the stream's
        // datagrams, and the filters would see one packet per batch), and on the path's side
        // towards the sink, so that the sink's drop program runs on every path alike.
        active
            .sender
            .exec(["ethtool", "-K", &active.sender_interface, "tso", "off"])?;
        path.exec(["ethtool", "-K", &b, "tso", "off"])?;
        thread_receive_side(path, &a, cores.path)?;
        active.install(rules)?;
        Ok(active)
    }

    fn build_tun(
        kind: PathKind,
        rules: &RuleSet,
        cores: Cores,
        workdir: &Path,
        tag: u32,
        sender: Namespace,
        sink: Namespace,
    ) -> Result<Self> {
        let (s, k) = (format!("ts{tag}"), format!("tk{tag}"));
        let attachments = vec![
            // A sender named by its address: a host outside the cluster that podwall routes
            // for, with no policy of its own.
            Attachment::Tun {
                pod: SENDER_IP.to_string(),
                device: s.clone(),
            },
            Attachment::Tun {
                pod: "bench/sink".into(),
                device: k.clone(),
            },
        ];
        let published = Arc::new(Published::new(compile(rules)?));
        let node = start_node(
            DatapathKind::Tun,
            attachments,
            None,
            Judging::Policy,
            cores,
            &published,
        )?;
        for (device, ns) in [(&s, &sender), (&k, &sink)] {
            run_ip(["link", "set", "dev", device, "netns", ns.name()])?;
            ns.run(["link", "set", "dev", device, "up"])?;
        }
        let sink_program = attach_drop(&sink, &k, DropMode::Generic)?;
        Ok(ActivePath {
            kind,
            node: Some(node),
            published: Some(published),
            verdicts: None,
            _sink_program: sink_program,
            sender_interface: s,
            sink_interface: k,
            workdir: workdir.to_path_buf(),
            path: None,
            sink,
            sender,
        })
    }

    pub fn kind(&self) -> PathKind {
        self.kind
    }

    /// Puts `rules` in force (replacing what was).
    pub fn install(&mut self, rules: &RuleSet) -> Result<()> {
        match self.kind {
            PathKind::Bridge | PathKind::NoopXdp => Ok(()),
            PathKind::IptablesLegacy => self.restore("iptables-legacy-restore", &rules.iptables()),
            PathKind::IptablesNft => self.restore("iptables-nft-restore", &rules.iptables()),
            PathKind::Nfqueue => {
                let queue = format!(
                    "*filter\n\
                     -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
                     -A FORWARD -d {SINK_IP}/32 -j NFQUEUE --queue-num {}\n\
                     COMMIT\n",
                    super::nfqueue::QUEUE
                );
                self.restore("iptables-legacy-restore", &queue)?;
                if let Some(verdicts) = &self.verdicts {
                    verdicts.set_rules(rules.clone());
                }
                Ok(())
            }
            PathKind::NftSets => {
                let file = self.write("rules.nft", &rules.nft_sets())?;
                let path = self.path_namespace()?;
                path.exec(["nft", "flush", "ruleset"])?;
                path.exec(["nft".as_ref(), "-f".as_ref(), file.as_os_str()])?;
                Ok(())
            }
            PathKind::PodwallXdp | PathKind::PodwallTun => {
                let (Some(node), Some(published)) = (&self.node, &self.published) else {
                    bail!("the filter is not running");
                };
                let generation = published.publish(compile(rules)?);
                if !node.wait_for_generation(generation, Duration::from_secs(10)) {
                    bail!("the filter did not adopt the new policy within 10 s");
                }
                Ok(())
            }
        }
    }

    fn restore(&self, program: &str, input: &str) -> Result<()> {
        let file = self.write("rules.iptables", input)?;
        self.path_namespace()?
            .exec([program.as_ref(), file.as_os_str()])
            .with_context(|| format!("{program} {}", file.display()))?;
        Ok(())
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let file = self.workdir.join(name);
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        Ok(file)
    }

    fn path_namespace(&self) -> Result<&Namespace> {
        self.path
            .as_ref()
            .ok_or_else(|| anyhow!("{} has no path namespace", self.kind.key()))
    }

    /// Where the generator writes: namespace, interface, framing.
    pub fn sender(&self) -> (&str, &str, Framing) {
        let framing = if self.kind == PathKind::PodwallTun {
            Framing::Ip
        } else {
            Framing::Ethernet
        };
        (self.sender.name(), &self.sender_interface, framing)
    }

    /// Where the sink counts: namespace, interface.
    pub fn sink(&self) -> (&str, &str) {
        (self.sink.name(), &self.sink_interface)
    }

    /// Frames the sink's XDP program dropped, from the driver's statistics (veth only; `None`
    /// for TUN, whose generic XDP keeps none). That they grow shows the sink is the cheap drop
    /// it should be, and not the sink namespace's IP stack.
    pub fn sink_xdp_drops(&self) -> Result<Option<u64>> {
        if self.kind == PathKind::PodwallTun {
            return Ok(None);
        }
        let stats = self
            .sink
            .exec(["ethtool", "-S", &self.sink_interface])
            .context("ethtool -S on the sink")?;
        let drops = stats
            .lines()
            .filter_map(|line| line.trim().split_once(':'))
            .filter(|(name, _)| name.trim().ends_with("xdp_drops"))
            .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
            .sum();
        Ok(Some(drops))
    }

    /// For reports: what the filter or the verdict program saw, if this path has one.
    pub fn detail(&self) -> Option<String> {
        if let Some(node) = &self.node {
            let mut forwarded = 0;
            let mut dropped = 0;
            let mut allowed = 0;
            let mut denied = 0;
            for counters in node.counters() {
                let s = counters.snapshot();
                forwarded += s.forwarded;
                dropped += s.dropped;
                allowed += s.allowed_ingress + s.allowed_egress;
                denied += s.denied_ingress + s.denied_egress;
            }
            return Some(format!(
                "filter: forwarded {forwarded}, dropped {dropped}, new connections allowed \
                 {allowed}, denied {denied}"
            ));
        }
        self.verdicts
            .as_ref()
            .map(|v| format!("verdicts given: {}", v.verdicts()))
    }

    /// Stops the filter or the verdict program, reporting their errors, then tears down.
    /// Returns the port's drops over the whole run, for paths with podwall's ports.
    pub fn finish(mut self) -> Result<Option<PortDrops>> {
        let mut drops = None;
        if let Some(node) = self.node.take() {
            drops = Some(node.stop().context("stopping the filter")?);
        }
        if let Some(verdicts) = self.verdicts.take() {
            verdicts.stop().context("stopping the verdict program")?;
        }
        Ok(drops)
    }
}

/// A namespace whose interfaces send nothing of their own (IPv6 off: no router or neighbour
/// solicitations, no MLD reports), so that the sink counts the stream and only the stream.
fn quiet_namespace(tag: &str) -> Result<Namespace> {
    let ns = Namespace::create(tag)?;
    ns.set_sysctls(
        &[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ],
        false,
    )?;
    Ok(ns)
}

fn compile(rules: &RuleSet) -> Result<Classifier> {
    let cluster = policy::load(&[Source::new("throughput.yaml", rules.manifests())])
        .map_err(|e| anyhow!("the generated manifests: {e}"))?;
    Ok(Classifier::compile(Arc::new(cluster)))
}

fn start_node(
    datapath: DatapathKind,
    attachments: Vec<Attachment>,
    netns: Option<String>,
    judging: Judging,
    cores: Cores,
    published: &Arc<Published>,
) -> Result<RunningNode> {
    RunningNode::start(
        NodeConfig {
            datapath,
            netns,
            attachments,
            uplink: None,
            tun_mtu: 1500,
            xdp: XdpConfig::default(),
            filter: FilterConfig::default(),
            judging,
            worker_cpu: Some(cores.path),
            worker_priority: cores.priority,
        },
        Arc::clone(published),
    )
    .context("starting the filter")
}

fn attach_drop(ns: &Namespace, interface: &str, mode: DropMode) -> Result<XdpDrop> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<XdpDrop> {
                let _inside = NetnsGuard::enter(ns.name())?;
                XdpDrop::attach(interface, mode)
                    .with_context(|| format!("the sink program on {interface}"))
            })
            .join()
            .map_err(|_| anyhow!("the attaching thread panicked"))?
    })
}

/// Moves the receive work of `interface` (a veth end) off the sender's core: NAPI on (GRO),
/// threaded, and its kthread pinned to `cpu`. Without it, veth does the receiving side's work
/// in the sender's own softirq.
fn thread_receive_side(ns: &Namespace, interface: &str, cpu: usize) -> Result<()> {
    ns.exec(["ethtool", "-K", interface, "gro", "on"])
        .context("ethtool (scripts/setup-bench installs it)")?;
    ns.exec([
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{interface}/threaded"),
    ])?;
    let prefix = format!("napi/{interface}-");
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim_end().starts_with(&prefix) {
            let status = std::process::Command::new("taskset")
                .args(["-p", "-c", &cpu.to_string(), &pid])
                .stdout(std::process::Stdio::null())
                .status()
                .context("running taskset")?;
            if !status.success() {
                bail!("taskset could not pin {comm} (pid {pid})");
            }
            pinned += 1;
        }
    }
    if pinned == 0 {
        bail!("no NAPI thread for {interface} to pin (is NAPI threaded?)");
    }
    Ok(())
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
