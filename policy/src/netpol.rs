//! Validated `networking.k8s.io/v1` NetworkPolicy: the shape the rest of podwall works with.
//! Defaults are already applied (`policyTypes`, protocol TCP, peer namespace).

use std::fmt;

use ipnetwork::IpNetwork;

use crate::error::Location;
use crate::inventory::Protocol;
use crate::selector::LabelSelector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The spec field holding this direction's rules.
    pub fn field(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The peer field inside a rule of this direction.
    pub fn peer_field(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Direction::Ingress => write!(f, "ingress"),
            Direction::Egress => write!(f, "egress"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub origin: Location,
    pub pod_selector: LabelSelector,
    /// Whether the policy isolates the selected pods for ingress / egress (`policyTypes`).
    pub types: [bool; 2],
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl NetworkPolicy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn applies_to(&self, direction: Direction) -> bool {
        self.types[direction.index()]
    }

    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// One ingress or egress rule. Empty `peers` or `ports` match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PortMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Pods selected by `podSelector` in the namespaces of `namespaces`.
    Pods {
        namespaces: NamespaceScope,
        pods: LabelSelector,
    },
    Block(IpBlock),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespaceScope {
    /// No `namespaceSelector`: the policy's own namespace.
    Same(String),
    Selected(LabelSelector),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpBlock {
    pub cidr: IpNetwork,
    pub except: Vec<IpNetwork>,
}

impl IpBlock {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub port: PortSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortSpec {
    Any,
    Range { start: u16, end: u16 },
    Named(String),
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            PortSpec::Any => write!(f, "{}/any", self.protocol),
            PortSpec::Range { start, end } if start == end => {
                write!(f, "{}/{start}", self.protocol)
            }
            PortSpec::Range { start, end } => write!(f, "{}/{start}-{end}", self.protocol),
            PortSpec::Named(name) => write!(f, "{}/{name}", self.protocol),
        }
    }
}
