//! The datapath topology of DESIGN.md, built from the same manifests the policy engine reads:
//!
//! ```text
//! [pod ns: eth0] ⇄ veth ⇄ [pw{k}a]  (filter)  [pw{k}b] ⇄ veth ⇄ [pw{k}c ∈ br0, node ns]
//! [external ns: eth0] ⇄ veth ⇄ [pwe{j} ∈ br0, node ns]
//! ```
//!
//! Every pod that is a policy endpoint (not `hostNetwork`) and has an IP gets its own
//! namespace whose `eth0` carries its IPs as /32 and /128 with on-link default routes, so ARP
//! and neighbour discovery go straight to the peer across the bridge. `pw{k}a` and `pw{k}b`
//! live in the node namespace and are left unconnected: the filter joins them, and without it
//! nothing passes (fail closed). `bypass` wires the pod straight to the bridge instead (a
//! baseline without a filter); `Datapath::Tun` creates only the namespaces and lets the filter
//! hand over one TUN device per pod ([`Topology::adopt_tun`]).
//!
//! The node namespace's own IP stack stays silent (no addresses, IPv6 off), so every frame a
//! filter sees was sent by a pod or an external host. This module builds and removes; it does
//! not filter, forward or probe.

use std::collections::HashSet;
use std::net::IpAddr;

use policy::Cluster;

use crate::error::{Error, Result};
use crate::netns::{run_ip, Namespace};
use crate::probe::{ServeSpec, Server};

/// The bridge in the node namespace.
pub const BRIDGE: &str = "br0";
/// The pod-side interface's name inside a pod (or external host) namespace.
pub const POD_INTERFACE: &str = "eth0";

/// How the filter will be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Datapath {
    /// veth pairs; the filter forwards between `pw{k}a` and `pw{k}b` in the node namespace.
    #[default]
    Veth,
    /// The filter creates one TUN device per pod and hands it over with
    /// [`Topology::adopt_tun`]; the harness creates the namespaces only.
    Tun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyOptions {
    pub datapath: Datapath,
    /// Wire pods straight to the bridge, with no filter in between (`Veth` only).
    pub bypass: bool,
    /// MTU of every pod-facing interface (AF_XDP with 2048-byte frames carries at most 1792).
    pub mtu: u16,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            datapath: Datapath::Veth,
            bypass: false,
            mtu: 1500,
        }
    }
}

/// The two node-namespace interfaces the filter forwards between, for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPorts {
    /// `pw{k}a`: the veth peer of the pod's `eth0`. Frames received here are the pod's egress.
    pub pod_side: String,
    /// `pw{k}b`: the veth whose peer `pw{k}c` is on the bridge. Frames received here are the
    /// pod's ingress.
    pub bridge_side: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// A pod from the manifests: enforced by the filter.
    Pod,
    /// A host outside the cluster, on the bridge with no filter (for ipBlock cases).
    External,
}

/// One pod or external host: its namespace and how it is attached.
#[derive(Debug)]
pub struct Endpoint {
    key: String,
    kind: EndpointKind,
    index: usize,
    ips: Vec<IpAddr>,
    filter_ports: Option<FilterPorts>,
    bridge_port: Option<String>,
    namespace: Namespace,
}

impl Endpoint {
    /// `namespace/name` for a pod; the first address for an external host.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn kind(&self) -> EndpointKind {
        self.kind
    }

    /// `k` in `pw{k}a` for a pod, `j` in `pwe{j}` for an external host.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    pub fn ipv4(&self) -> Option<IpAddr> {
        self.ips.iter().copied().find(IpAddr::is_ipv4)
    }

    pub fn ipv6(&self) -> Option<IpAddr> {
        self.ips.iter().copied().find(IpAddr::is_ipv6)
    }

    /// The address of the same family as `other`, if it has one.
    pub fn ip_like(&self, other: IpAddr) -> Option<IpAddr> {
        self.ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == other.is_ipv4())
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Where the filter attaches for this pod: `None` for external hosts, under `bypass`, and
    /// with `Datapath::Tun`.
    pub fn filter_ports(&self) -> Option<&FilterPorts> {
        self.filter_ports.as_ref()
    }

    /// Its port on the bridge (`pw{k}c`, `pwe{j}`); `None` with `Datapath::Tun`.
    pub fn bridge_port(&self) -> Option<&str> {
        self.bridge_port.as_deref()
    }

    /// Starts a `pw-probe` server in its namespace, bound to its addresses (so under
    /// `Datapath::Tun` only after [`Topology::adopt_tun`] gave it them).
    pub fn serve(&self, spec: &ServeSpec) -> Result<Server> {
        Server::start(&self.namespace, &spec.clone().bound_to(&self.ips))
    }
}

/// Pods, external hosts and the node namespace with its bridge; all removed on drop.
#[derive(Debug)]
pub struct Topology {
    options: TopologyOptions,
    // Declared before `node`, so they are dropped first: the node namespace goes last.
    pods: Vec<Endpoint>,
    externals: Vec<Endpoint>,
    node: Namespace,
}

impl Topology {
    /// Builds the topology for every pod of `cluster` that is a policy endpoint with an address.
    /// A pod whose addresses all belong to an earlier pod (the loader warns about shared
    /// addresses) is left out; of a partly shared pod, only its own addresses are used.
    pub fn build(cluster: &Cluster, options: TopologyOptions) -> Result<Topology> {
        let pods = cluster
            .inventory
            .pods
            .iter()
            .filter(|p| p.is_policy_endpoint())
            .map(|p| (p.key(), p.ips.clone()));
        Topology::build_from(pods, options)
    }

    /// [`Topology::build`] from `(namespace/name, addresses)` pairs, for callers without
    /// manifests.
    pub fn build_from(
        pods: impl IntoIterator<Item = (String, Vec<IpAddr>)>,
        options: TopologyOptions,
    ) -> Result<Topology> {
        if options.mtu < 1280 {
            return Err(Error::Topology(format!(
                "MTU {} is below 1280, the least IPv6 works with",
                options.mtu
            )));
        }
        if options.bypass && options.datapath == Datapath::Tun {
            return Err(Error::Topology(
                "bypass wires veths to the bridge; it does not apply to the TUN datapath".into(),
            ));
        }
        let node = Namespace::create("node")?;
        let mut topology = Topology {
            options,
            pods: Vec::new(),
            externals: Vec::new(),
            node,
        };
        topology.build_node()?;
        let mut taken = HashSet::new();
        for (key, ips) in pods {
            let ips: Vec<IpAddr> = ips.into_iter().filter(|ip| taken.insert(*ip)).collect();
            if !ips.is_empty() {
                topology.add_pod(key, ips)?;
            }
        }
        Ok(topology)
    }

    fn build_node(&self) -> Result<()> {
        let node = &self.node;
        // The node namespace only bridges: with IPv6 off on its interfaces (the defaults are
        // read when each is created) and no IPv4 addresses, it sends nothing of its own (no
        // router solicitations or MLD reports reaching pods around the filter).
        node.set_sysctls(
            &[
                ("net.ipv6.conf.default.disable_ipv6", "1"),
                ("net.ipv6.conf.all.disable_ipv6", "1"),
            ],
            false,
        )?;
        // bridge-nf-call-* defaults to 1 in every namespace: bridged frames would go through
        // iptables. Absent without br_netfilter, and then there is nothing to turn off.
        node.set_sysctls(
            &[
                ("net.bridge.bridge-nf-call-iptables", "0"),
                ("net.bridge.bridge-nf-call-ip6tables", "0"),
                ("net.bridge.bridge-nf-call-arptables", "0"),
            ],
            true,
        )?;
        // Multicast snooping off, so IPv6 neighbour solicitations (to solicited-node multicast
        // groups nobody reported) flood to every port; STP off so ports forward at once.
        node.run([
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
        ])?;
        node.run(["link", "set", BRIDGE, "up"])?;
        Ok(())
    }

    fn add_pod(&mut self, key: String, ips: Vec<IpAddr>) -> Result<()> {
        let k = self.pods.len();
        let namespace = Namespace::create(&format!("p{k}"))?;
        let mut endpoint = Endpoint {
            key,
            kind: EndpointKind::Pod,
            index: k,
            ips,
            filter_ports: None,
            bridge_port: None,
            namespace,
        };
        if self.options.datapath == Datapath::Veth {
            let bridge_port = format!("pw{k}c");
            if self.options.bypass {
                self.veth_to_pod(&bridge_port, &endpoint.namespace)?;
            } else {
                let ports = FilterPorts {
                    pod_side: format!("pw{k}a"),
                    bridge_side: format!("pw{k}b"),
                };
                self.veth_to_pod(&ports.pod_side, &endpoint.namespace)?;
                let mtu = self.options.mtu.to_string();
                self.node.run([
                    "link",
                    "add",
                    &ports.bridge_side,
                    "mtu",
                    &mtu,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &bridge_port,
                    "mtu",
                    &mtu,
                ])?;
                self.node.run(["link", "set", &ports.pod_side, "up"])?;
                self.node.run(["link", "set", &ports.bridge_side, "up"])?;
                endpoint.filter_ports = Some(ports);
            }
            self.node
                .run(["link", "set", &bridge_port, "master", BRIDGE, "up"])?;
            endpoint.bridge_port = Some(bridge_port);
            self.configure_addresses(&endpoint)?;
        }
        self.pods.push(endpoint);
        Ok(())
    }

    /// A veth pair: `node_side` in the node namespace, its peer `eth0` in `ns`.
    fn veth_to_pod(&self, node_side: &str, ns: &Namespace) -> Result<()> {
        let mtu = self.options.mtu.to_string();
        self.node
            .run([
                "link",
                "add",
                node_side,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                POD_INTERFACE,
                "netns",
                ns.name(),
                "mtu",
                &mtu,
            ])
            .map(drop)
    }

    /// `eth0` up with the endpoint's addresses as host routes (/32, /128, no DAD) and on-link
    /// default routes: every destination is resolved by ARP/ND on `eth0` (TUN: sent as is).
    fn configure_addresses(&self, endpoint: &Endpoint) -> Result<()> {
        let ns = &endpoint.namespace;
        ns.run(["link", "set", POD_INTERFACE, "up"])?;
        for ip in &endpoint.ips {
            match ip {
                IpAddr::V4(_) => {
                    ns.run(["addr", "add", &format!("{ip}/32"), "dev", POD_INTERFACE])?
                }
                IpAddr::V6(_) => ns.run([
                    "addr",
                    "add",
                    &format!("{ip}/128"),
                    "dev",
                    POD_INTERFACE,
                    "nodad",
                ])?,
            };
        }
        if endpoint.ipv4().is_some() {
            ns.run(["route", "add", "default", "dev", POD_INTERFACE])?;
        }
        if endpoint.ipv6().is_some() {
            ns.run(["-6", "route", "add", "default", "dev", POD_INTERFACE])?;
        }
        Ok(())
    }

    /// Adds a host outside the cluster with address `ip`, attached straight to the bridge.
    pub fn add_external(&mut self, ip: IpAddr) -> Result<&Endpoint> {
        self.add_external_with(&[ip])
    }

    /// Adds a host outside the cluster with several addresses (say, one of each family).
    /// Under `Datapath::Tun` only its namespace is made, and the filter hands it a TUN device
    /// like a pod's ([`Topology::adopt_tun`] with the first address as the key).
    pub fn add_external_with(&mut self, ips: &[IpAddr]) -> Result<&Endpoint> {
        let Some(first) = ips.first() else {
            return Err(Error::Topology("an external host needs an address".into()));
        };
        if let Some(owner) = ips.iter().find_map(|ip| self.endpoint_by_ip(*ip)) {
            return Err(Error::Topology(format!(
                "address {} of the new external host already belongs to {}",
                ips.iter()
                    .find(|ip| owner.ips.contains(ip))
                    .copied()
                    .unwrap_or(*first),
                owner.key
            )));
        }
        let j = self.externals.len();
        let namespace = Namespace::create(&format!("e{j}"))?;
        let mut endpoint = Endpoint {
            key: first.to_string(),
            kind: EndpointKind::External,
            index: j,
            ips: ips.to_vec(),
            filter_ports: None,
            bridge_port: None,
            namespace,
        };
        if self.options.datapath == Datapath::Veth {
            let bridge_port = format!("pwe{j}");
            self.veth_to_pod(&bridge_port, &endpoint.namespace)?;
            self.node
                .run(["link", "set", &bridge_port, "master", BRIDGE, "up"])?;
            endpoint.bridge_port = Some(bridge_port);
            self.configure_addresses(&endpoint)?;
        }
        self.externals.push(endpoint);
        Ok(self.externals.last().expect("just pushed"))
    }

    /// `Datapath::Tun`: moves the interface `ifname` from the namespace this process is in into
    /// the namespace of `endpoint` (a pod key, an external host's key, or any of its addresses),
    /// renames it `eth0`, and gives it the MTU, addresses and routes a veth would get. TUN is
    /// layer 3, so there is no ARP or ND: the filter routes by destination address.
    pub fn adopt_tun(&self, endpoint: &str, ifname: &str) -> Result<()> {
        if self.options.datapath != Datapath::Tun {
            return Err(Error::Topology(
                "adopt_tun is for the TUN datapath; this topology uses veths".into(),
            ));
        }
        let target = self
            .endpoint(endpoint)
            .ok_or_else(|| Error::UnknownEndpoint(endpoint.to_string()))?;
        let ns = &target.namespace;
        run_ip(["link", "set", "dev", ifname, "netns", ns.name()])?;
        ns.run(["link", "set", "dev", ifname, "name", POD_INTERFACE])?;
        ns.run([
            "link",
            "set",
            "dev",
            POD_INTERFACE,
            "mtu",
            &self.options.mtu.to_string(),
        ])?;
        self.configure_addresses(target)
    }

    pub fn options(&self) -> TopologyOptions {
        self.options
    }

    /// The node namespace: the bridge `br0`, the bridge ports, and (without bypass) each pod's
    /// `pw{k}a`/`pw{k}b` for the filter.
    pub fn node(&self) -> &Namespace {
        &self.node
    }

    pub fn pods(&self) -> &[Endpoint] {
        &self.pods
    }

    pub fn externals(&self) -> &[Endpoint] {
        &self.externals
    }

    /// Pods, then external hosts.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.pods.iter().chain(&self.externals)
    }

    /// A pod by `namespace/name`.
    pub fn pod(&self, key: &str) -> Option<&Endpoint> {
        self.pods.iter().find(|p| p.key == key)
    }

    /// A pod or external host by key (`namespace/name`, an external host's first address) or
    /// by any of its addresses.
    pub fn endpoint(&self, key: &str) -> Option<&Endpoint> {
        self.endpoints().find(|e| e.key == key).or_else(|| {
            key.parse::<IpAddr>()
                .ok()
                .and_then(|ip| self.endpoint_by_ip(ip))
        })
    }

    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints().find(|e| e.ips.contains(&ip))
    }

    /// Every namespace this topology made (to check, after drop, that none is left).
    pub fn namespace_names(&self) -> Vec<String> {
        std::iter::once(self.node.name())
            .chain(self.endpoints().map(|e| e.namespace.name()))
            .map(str::to_string)
            .collect()
    }

    /// Starts the same servers on every endpoint, each bound to its own addresses.
    pub fn serve_all(&self, spec: &ServeSpec) -> Result<Vec<Server>> {
        self.endpoints().map(|e| e.serve(spec)).collect()
    }
}
