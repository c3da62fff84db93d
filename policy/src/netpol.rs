//! Validated policies: Kubernetes `networking.k8s.io/v1` NetworkPolicy and Calico
//! `projectcalico.org/v3` NetworkPolicy and GlobalNetworkPolicy, in one shape the rest of podwall
//! works with. Defaults are already applied (`policyTypes`/`types`, protocol TCP, peer namespace,
//! tier).

use std::fmt;

use ipnetwork::IpNetwork;

use crate::calico::rule::{CalicoMatch, Scope};
use crate::calico::selector::Selector;
use crate::error::Location;
use crate::inventory::{Namespace, Pod, Protocol};
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

/// Which API object a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1` NetworkPolicy.
    Kubernetes,
    /// `projectcalico.org/v3` NetworkPolicy (namespaced).
    Calico,
    /// `projectcalico.org/v3` GlobalNetworkPolicy (cluster-wide).
    CalicoGlobal,
}

impl PolicyKind {
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Kubernetes => "NetworkPolicy",
            PolicyKind::Calico => "Calico NetworkPolicy",
            PolicyKind::CalicoGlobal => "GlobalNetworkPolicy",
        }
    }
}

/// The pods a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoints {
    /// Kubernetes `podSelector`, in the policy's namespace.
    Kubernetes(LabelSelector),
    /// Calico `selector`: in the policy's namespace for a NetworkPolicy; for a
    /// GlobalNetworkPolicy in every namespace whose labels `namespaces` matches (all without one).
    Calico {
        selector: Selector,
        namespaces: Option<Selector>,
    },
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Action {
    Allow,
    Deny,
    /// Records the packet and goes on to the next rule.
    Log,
    /// Skips the rest of the tier: the next tier with a policy for the endpoint decides.
    Pass,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Log => "Log",
            Action::Pass => "Pass",
        })
    }
}

/// The tier Kubernetes NetworkPolicies and tierless Calico policies belong to.
pub const DEFAULT_TIER: &str = "default";

/// The `order` Calico gives Kubernetes NetworkPolicies.
pub const KUBERNETES_POLICY_ORDER: f64 = 1000.0;

#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    pub kind: PolicyKind,
    /// Empty for a GlobalNetworkPolicy.
    pub namespace: String,
    pub name: String,
    pub origin: Location,
    /// Calico `tier`; [`DEFAULT_TIER`] for Kubernetes policies.
    pub tier: String,
    /// Calico `order` (lower first; `None` last); [`KUBERNETES_POLICY_ORDER`] for Kubernetes.
    pub order: Option<f64>,
    pub endpoints: Endpoints,
    /// Whether the policy applies to the selected pods for ingress / egress (`policyTypes`,
    /// `types`).
    pub types: [bool; 2],
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl NetworkPolicy {
    /// `namespace/name`, or the name of a global policy.
    pub fn key(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    /// The name Calico orders policies of equal `order` by: Kubernetes policies are
    /// `knp.default.<name>` in their namespace.
    pub fn ordering_name(&self) -> String {
        match self.kind {
            PolicyKind::Kubernetes => format!("{}/knp.default.{}", self.namespace, self.name),
            PolicyKind::Calico => self.key(),
            PolicyKind::CalicoGlobal => self.name.clone(),
        }
    }

    /// Whether the policy applies to `pod` (in `namespace`), whatever the direction.
    pub fn selects(&self, pod: &Pod, namespace: &Namespace) -> bool {
        if !pod.is_policy_endpoint() {
            return false;
        }
        match &self.endpoints {
            Endpoints::Kubernetes(selector) => {
                pod.namespace == self.namespace && selector.matches(&pod.labels)
            }
            Endpoints::Calico {
                selector,
                namespaces,
            } => {
                Scope::of(namespaces.as_ref(), &self.namespace).includes(namespace)
                    && selector.matches(&crate::calico::pod_labels(pod))
            }
        }
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

/// One ingress or egress rule. A Kubernetes rule (`calico` is `None`) allows; it matches when
/// some peer and some port do (empty `peers` or `ports` match everything). A Calico rule has
/// empty `peers` and `ports` and its conditions in `calico`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub action: Action,
    pub peers: Vec<Peer>,
    pub ports: Vec<PortMatch>,
    pub calico: Option<Box<CalicoMatch>>,
}

impl Rule {
    /// A Kubernetes rule.
    pub fn kubernetes(peers: Vec<Peer>, ports: Vec<PortMatch>) -> Rule {
        Rule {
            action: Action::Allow,
            peers,
            ports,
            calico: None,
        }
    }
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
