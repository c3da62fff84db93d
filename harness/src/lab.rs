//! A lab: the topology of a cluster's manifests with the real filter in front of every pod,
//! probe servers where probes will land, and probes that send real packets. `podwall lab` and
//! the network-namespace tests both drive one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use datapath::filter::FilterConfig;
use datapath::flow_table::FlowConfig;
use datapath::node::{Attachment, DatapathKind, Judging, NodeConfig, RunningNode};
use datapath::port::xdp::XdpConfig;
use policy::probe::IpFamily;
use policy::{Protocol, Published};

use crate::error::{Error, Result};
use crate::probe::{probe_with, Probe, ServeSpec, Server};
use crate::topology::{Datapath, Topology, TopologyOptions};

/// One connection to try: ends as `namespace/pod` or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabProbe {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    /// The destination port; for ICMP and ICMPv6 the type and code as the classifier sees them.
    pub port: u16,
    /// The source port the probe must come from (`None`: an ephemeral one).
    pub source_port: Option<u16>,
    pub family: Option<IpFamily>,
}

#[derive(Debug, Clone, Copy)]
pub struct LabOptions {
    pub datapath: DatapathKind,
    /// How long a probe waits before it counts as blocked.
    pub probe_timeout: Duration,
    /// Probes run at once.
    pub parallel: usize,
    pub filter: FilterConfig,
    /// AF_XDP sizes and mode (`force_generic` tries the generic path first-hand).
    pub xdp: XdpConfig,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            datapath: DatapathKind::Xdp,
            probe_timeout: Duration::from_millis(700),
            parallel: 24,
            filter: FilterConfig {
                // A lab holds a handful of pods: a small table keeps start-up cheap.
                flows: FlowConfig {
                    shards: 4,
                    capacity_per_shard: 4096,
                    ..FlowConfig::default()
                },
                ..FilterConfig::default()
            },
            // A few pods: smaller UMEMs and rings than a node's defaults.
            xdp: XdpConfig {
                frames_per_link: 2048,
                ring_size: 512,
                ..XdpConfig::default()
            },
        }
    }
}

/// The source port a probe is sent from: the one it gives; else, when some rule looks at source
/// ports (`rules_look`), the one the policy answers for (`evaluated`, see
/// [`policy::probe::Probe::packet_source_port`]), so that packets and policy are about the same
/// port; else `None`, an ephemeral port the kernel picks.
pub fn source_port_to_bind(given: Option<u16>, evaluated: u16, rules_look: bool) -> Option<u16> {
    given.or((rules_look && evaluated != 0).then_some(evaluated))
}

/// A probe with both ends resolved to namespaces and addresses.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub probe: LabProbe,
    pub from_address: IpAddr,
    pub to_address: IpAddr,
}

/// The running lab. Dropping it stops the filter and removes every namespace.
pub struct Lab {
    // Field order is drop order: servers, then the filter, then the namespaces.
    _servers: Vec<Server>,
    node: RunningNode,
    topology: Topology,
    options: LabOptions,
}

/// Resolves every probe's ends against the inventory of `published`.
pub fn resolve(published: &Published, probes: &[LabProbe]) -> Result<Vec<Resolved>> {
    let generation = published.load();
    let inventory = &generation.classifier.cluster().inventory;
    probes
        .iter()
        .map(|p| {
            let (from, to) = policy::probe::resolve(inventory, &p.from, &p.to, p.family)
                .map_err(|e| Error::Topology(format!("probe {} -> {}: {e}", p.from, p.to)))?;
            Ok(Resolved {
                probe: p.clone(),
                from_address: from.address(),
                to_address: to.address(),
            })
        })
        .collect()
}

/// The filter's veth attachments for every pod of a `Datapath::Veth` topology.
pub fn veth_attachments(topology: &Topology) -> Vec<Attachment> {
    topology
        .pods()
        .iter()
        .filter_map(|pod| {
            let ports = pod.filter_ports()?;
            Some(Attachment::Veth {
                pod: pod.key().to_string(),
                pod_interface: ports.pod_side.clone(),
                node_interface: ports.bridge_side.clone(),
            })
        })
        .collect()
}

impl Lab {
    /// Builds the topology for the current classifier's cluster (plus a host for every probe
    /// address that is not a pod), starts the filter, and starts servers for `probes`.
    pub fn start(
        published: Arc<Published>,
        probes: &[Resolved],
        options: LabOptions,
    ) -> Result<Lab> {
        let cluster = Arc::clone(published.load().classifier.cluster());
        let datapath = match options.datapath {
            DatapathKind::Xdp => Datapath::Veth,
            DatapathKind::Tun => Datapath::Tun,
        };
        let mut topology = Topology::build(
            &cluster,
            TopologyOptions {
                datapath,
                bypass: false,
                mtu: 1500,
            },
        )?;
        let externals: BTreeSet<IpAddr> = probes
            .iter()
            .flat_map(|p| [p.from_address, p.to_address])
            .filter(|ip| topology.endpoint_by_ip(*ip).is_none())
            .collect();
        for ip in externals {
            topology.add_external(ip)?;
        }

        let node_config = |attachments: Vec<Attachment>, netns: Option<String>| NodeConfig {
            datapath: options.datapath,
            netns,
            attachments,
            uplink: None,
            tun_mtu: 1500,
            xdp: options.xdp,
            filter: options.filter,
            judging: Judging::Policy,
            worker_cpu: None,
            worker_priority: None,
        };
        let node = match options.datapath {
            DatapathKind::Xdp => RunningNode::start(
                node_config(
                    veth_attachments(&topology),
                    Some(topology.node().name().to_string()),
                ),
                Arc::clone(&published),
            )
            .map_err(|e| Error::Topology(format!("starting the filter: {e}")))?,
            DatapathKind::Tun => {
                // Devices are created in this namespace, then moved into their pods. Names are
                // unique per process (several labs may start at once) and fit IFNAMSIZ:
                // "pw" + pid (≤ 6 hex digits) + "t" + counter (≤ 6 hex digits).
                static DEVICES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let pid = std::process::id();
                let attachments: Vec<Attachment> = topology
                    .endpoints()
                    .map(|endpoint| {
                        let n =
                            DEVICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xff_ffff;
                        Attachment::Tun {
                            pod: endpoint.key().to_string(),
                            device: format!("pw{pid:x}t{n:x}"),
                        }
                    })
                    .collect();
                let node = RunningNode::start(
                    node_config(attachments.clone(), None),
                    Arc::clone(&published),
                )
                .map_err(|e| Error::Topology(format!("starting the filter: {e}")))?;
                for attachment in &attachments {
                    if let Attachment::Tun { pod, device } = attachment {
                        topology.adopt_tun(pod, device)?;
                    }
                }
                node
            }
        };

        // One server per destination, listening on every port probes will try there.
        let mut wanted: BTreeMap<String, ServeSpec> = BTreeMap::new();
        for p in probes {
            let endpoint = topology
                .endpoint_by_ip(p.to_address)
                .ok_or_else(|| Error::UnknownEndpoint(p.to_address.to_string()))?;
            crate::probe::sendable(p.probe.protocol, p.probe.port).map_err(|e| {
                Error::Topology(format!("probe {} -> {}: {e}", p.probe.from, p.probe.to))
            })?;
            if p.probe.protocol.is_icmp() {
                continue; // an echo request: the target's kernel answers
            }
            let spec = wanted.entry(endpoint.key().to_string()).or_default();
            let list = match p.probe.protocol {
                Protocol::TCP => &mut spec.tcp,
                Protocol::UDP => &mut spec.udp,
                _ => &mut spec.sctp,
            };
            if !list.contains(&p.probe.port) {
                list.push(p.probe.port);
            }
        }
        let mut servers = Vec::new();
        for (key, spec) in &wanted {
            let endpoint = topology.endpoint(key).expect("resolved above");
            servers.push(endpoint.serve(spec)?);
        }
        Ok(Lab {
            _servers: servers,
            node,
            topology,
            options,
        })
    }

    /// Tries one connection with real packets: `Ok(true)` when it got through.
    pub fn probe(&self, resolved: &Resolved) -> Result<bool> {
        let from = self
            .topology
            .endpoint_by_ip(resolved.from_address)
            .ok_or_else(|| Error::UnknownEndpoint(resolved.from_address.to_string()))?;
        probe_with(
            from.namespace(),
            &Probe {
                protocol: resolved.probe.protocol,
                from: None,
                to: resolved.to_address,
                port: resolved.probe.port,
                source_port: resolved.probe.source_port,
                timeout: self.options.probe_timeout,
            },
        )
        .map(|outcome| outcome.ok)
    }

    /// Runs every probe, `options.parallel` at a time; results in input order.
    pub fn probe_all(&self, probes: &[Resolved]) -> Vec<Result<bool>> {
        let mut results: Vec<Option<Result<bool>>> = (0..probes.len()).map(|_| None).collect();
        for (chunk, slots) in probes
            .chunks(self.options.parallel.max(1))
            .zip(results.chunks_mut(self.options.parallel.max(1)))
        {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|p| scope.spawn(move || self.probe(p)))
                    .collect();
                for (slot, handle) in slots.iter_mut().zip(handles) {
                    *slot = Some(handle.join().unwrap_or_else(|_| {
                        Err(Error::Topology("a probe thread panicked".into()))
                    }));
                }
            });
        }
        results
            .into_iter()
            .map(|r| r.expect("every slot filled"))
            .collect()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn node(&self) -> &RunningNode {
        &self.node
    }
}
