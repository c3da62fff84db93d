//! What the cluster contains: namespaces, pods, their labels, addresses and named ports.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use crate::error::Location;
use crate::selector::Labels;

/// An IP protocol number (6 TCP, 17 UDP, 132 SCTP, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const SCTP: Protocol = Protocol(132);
    pub const UDPLITE: Protocol = Protocol(136);

    /// The Kubernetes spelling (`TCP`, `UDP`, `SCTP`), case-sensitive as the API server is.
    pub fn from_kubernetes(name: &str) -> Option<Protocol> {
        match name {
            "TCP" => Some(Protocol::TCP),
            "UDP" => Some(Protocol::UDP),
            "SCTP" => Some(Protocol::SCTP),
            _ => None,
        }
    }

    /// A protocol by Calico's names (`TCP`, `UDP`, `SCTP`, `UDPLite`, `ICMP`, `ICMPv6`, each also
    /// in lower case) or by number (1–255).
    pub fn parse(name: &str) -> Option<Protocol> {
        match name {
            "TCP" | "tcp" => Some(Protocol::TCP),
            "UDP" | "udp" => Some(Protocol::UDP),
            "SCTP" | "sctp" => Some(Protocol::SCTP),
            "UDPLite" | "udplite" => Some(Protocol::UDPLITE),
            "ICMP" | "icmp" => Some(Protocol::ICMP),
            "ICMPv6" | "icmpv6" => Some(Protocol::ICMPV6),
            number => number.parse::<u8>().ok().filter(|&n| n >= 1).map(Protocol),
        }
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::ICMP | Protocol::ICMPV6)
    }

    /// Whether the protocol has ports at all (port rules never match ICMP and the like).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::TCP | Protocol::UDP | Protocol::SCTP)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Protocol::TCP => write!(f, "TCP"),
            Protocol::UDP => write!(f, "UDP"),
            Protocol::SCTP => write!(f, "SCTP"),
            Protocol::ICMP => write!(f, "ICMP"),
            Protocol::ICMPV6 => write!(f, "ICMPv6"),
            Protocol::UDPLITE => write!(f, "UDPLite"),
            Protocol(n) => write!(f, "protocol {n}"),
        }
    }
}

/// A `containerPort` with a name, which policies may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    /// `None` when no Namespace object was loaded and only the automatic label is known.
    pub origin: Option<Location>,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Pod IPs, the primary (`status.podIP`) first.
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    /// Host-network pods share the node's address; NetworkPolicy does not apply to them.
    pub host_network: bool,
    pub origin: Location,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The port number `name` refers to for `protocol` on this pod, if any.
    pub fn resolve_named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }

    /// Whether policy applies to this pod (it is not on the host network).
    pub fn is_policy_endpoint(&self) -> bool {
        !self.host_network
    }
}

/// Index of a pod in [`Inventory::pods`].
pub type PodId = u32;

/// Namespaces and pods, with lookups by name and by address.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    namespace_index: HashMap<String, usize>,
    pod_index: HashMap<(String, String), PodId>,
    address_index: HashMap<IpAddr, PodId>,
}

impl Inventory {
    /// Builds the indexes. Namespaces that pods or policies refer to but that were not loaded get
    /// only the automatic `kubernetes.io/metadata.name` label.
    pub fn new(
        mut namespaces: Vec<Namespace>,
        pods: Vec<Pod>,
        referenced: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut namespace_index: HashMap<String, usize> = namespaces
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let wanted = pods
            .iter()
            .map(|p| p.namespace.clone())
            .chain(referenced)
            .collect::<Vec<_>>();
        for name in wanted {
            if !namespace_index.contains_key(&name) {
                namespace_index.insert(name.clone(), namespaces.len());
                namespaces.push(Namespace {
                    labels: automatic_namespace_labels(&name),
                    name,
                    origin: None,
                });
            }
        }
        let pod_index = pods
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.namespace.clone(), p.name.clone()), i as PodId))
            .collect();
        // The first pod listed keeps a shared address (the loader warns about the others).
        let mut address_index = HashMap::new();
        for (i, pod) in pods.iter().enumerate() {
            if pod.is_policy_endpoint() {
                for ip in &pod.ips {
                    address_index.entry(*ip).or_insert(i as PodId);
                }
            }
        }
        Inventory {
            namespaces,
            pods,
            namespace_index,
            pod_index,
            address_index,
        }
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespace_index.get(name).map(|&i| &self.namespaces[i])
    }

    pub fn namespace_labels(&self, name: &str) -> &Labels {
        static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();
        self.namespace(name)
            .map(|n| &n.labels)
            .unwrap_or_else(|| EMPTY.get_or_init(Labels::new))
    }

    pub fn pod_id(&self, namespace: &str, name: &str) -> Option<PodId> {
        self.pod_index
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    pub fn pod(&self, id: PodId) -> &Pod {
        &self.pods[id as usize]
    }

    /// The policy endpoint (non-host-network pod) that owns `ip`.
    pub fn pod_by_address(&self, ip: IpAddr) -> Option<PodId> {
        self.address_index.get(&ip).copied()
    }

    pub fn pod_ids(&self) -> impl Iterator<Item = PodId> {
        0..self.pods.len() as PodId
    }
}

/// The label the API server puts on every namespace.
pub fn automatic_namespace_labels(name: &str) -> Labels {
    Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())])
}

pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
