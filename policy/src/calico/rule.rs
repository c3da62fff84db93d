//! The match conditions of a Calico rule, validated: everything but the action (which
//! [`crate::netpol::Rule`] holds for both kinds of policy).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::calico::selector::Selector;
use crate::inventory::{Inventory, Namespace, PodId, Protocol};

/// Every condition of one Calico rule; all of them must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct CalicoMatch {
    pub protocol: Option<Protocol>,
    pub not_protocol: Option<Protocol>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    /// 4 or 6.
    pub ip_version: Option<u8>,
    pub source: EntityMatch,
    pub destination: EntityMatch,
}

impl CalicoMatch {
    /// The side of the rule that describes the peer (the other end) of traffic in `direction`;
    /// the other side describes the endpoint the policy applies to.
    pub fn peer(&self, direction: crate::Direction) -> &EntityMatch {
        match direction {
            crate::Direction::Ingress => &self.source,
            crate::Direction::Egress => &self.destination,
        }
    }

    pub fn local(&self, direction: crate::Direction) -> &EntityMatch {
        match direction {
            crate::Direction::Ingress => &self.destination,
            crate::Direction::Egress => &self.source,
        }
    }

    /// Whether the protocol conditions hold for `protocol` (the ICMP ones need the type and
    /// code too: see [`CalicoMatch::icmp_matches`]).
    pub fn protocol_matches(&self, protocol: Protocol) -> bool {
        self.protocol.is_none_or(|p| p == protocol) && self.not_protocol != Some(protocol)
    }

    /// Whether `icmp`/`notICMP` hold for a packet whose "port" is `type << 8 | code` (see
    /// [`icmp_port`]). Both are only ever set together with an ICMP `protocol`.
    pub fn icmp_matches(&self, port: u16) -> bool {
        self.icmp.is_none_or(|m| m.contains(port))
            && !self.not_icmp.is_some_and(|m| m.contains(port))
    }
}

/// ICMP or ICMPv6 type, and optionally code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

impl IcmpMatch {
    /// The "ports" (see [`icmp_port`]) this matches, as an inclusive range.
    pub fn range(self) -> (u16, u16) {
        let base = u16::from(self.icmp_type) << 8;
        match self.code {
            Some(code) => (base | u16::from(code), base | u16::from(code)),
            None => (base, base | 0xff),
        }
    }

    pub fn contains(self, port: u16) -> bool {
        let (start, end) = self.range();
        (start..=end).contains(&port)
    }
}

/// How ICMP and ICMPv6 packets are presented to the classifier, which matches numbers in one
/// dimension for every protocol: type in the high byte, code in the low one.
pub fn icmp_port(icmp_type: u8, code: u8) -> u16 {
    u16::from(icmp_type) << 8 | u16::from(code)
}

/// One side (`source` or `destination`) of a rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntityMatch {
    pub nets: Vec<IpNetwork>,
    pub not_nets: Vec<IpNetwork>,
    pub selector: Option<Selector>,
    pub not_selector: Option<Selector>,
    pub namespace_selector: Option<Selector>,
    pub ports: Vec<CalicoPort>,
    pub not_ports: Vec<CalicoPort>,
}

impl EntityMatch {
    /// Whether any condition on the endpoint's labels is given (which is when Calico scopes the
    /// positive selector to a namespace).
    pub fn has_selectors(&self) -> bool {
        self.selector.is_some() || self.not_selector.is_some() || self.namespace_selector.is_some()
    }

    /// The positive label condition, as Calico builds it: the `selector` limited to the pods of
    /// the `namespaceSelector`'s namespaces, or else of the policy's own namespace
    /// (`policy_namespace`, empty for a global policy), whenever the side names any selector.
    /// `None`: no positive condition (any address, pod or not, may match).
    pub fn scoped_selector(&self, policy_namespace: &str) -> Option<(Scope, Selector)> {
        if !self.has_selectors() {
            return None;
        }
        let scope = Scope::of(self.namespace_selector.as_ref(), policy_namespace);
        if scope == Scope::Everywhere && self.selector.is_none() {
            return None;
        }
        Some((scope, self.selector.clone().unwrap_or(Selector::All)))
    }

    /// Whether the side can match packets of IPv4 (`ipv4`) or IPv6: as in Calico's dataplane, a
    /// rule whose `nets` or `notNets` list has no network of a family does not apply to that
    /// family at all (it is left out when the rule is rendered for it).
    pub fn applies_to_family(&self, ipv4: bool) -> bool {
        let has = |nets: &[IpNetwork]| nets.is_empty() || nets.iter().any(|n| n.is_ipv4() == ipv4);
        has(&self.nets) && has(&self.not_nets)
    }

    /// Whether an address (`None`: the local pod has none of the packet's family), belonging to
    /// `pod` if it is a pod's, satisfies the nets and selectors of this side.
    pub fn matches(
        &self,
        inventory: &Inventory,
        policy_namespace: &str,
        address: Option<IpAddr>,
        pod: Option<PodId>,
    ) -> bool {
        let in_nets =
            |nets: &[IpNetwork]| address.is_some_and(|a| nets.iter().any(|n| n.contains(a)));
        let listed = !self.nets.is_empty() || !self.not_nets.is_empty();
        if listed && !address.is_some_and(|a| self.applies_to_family(a.is_ipv4())) {
            return false;
        }
        if !self.nets.is_empty() && !in_nets(&self.nets) {
            return false;
        }
        if in_nets(&self.not_nets) {
            return false;
        }
        if let Some((scope, selector)) = self.scoped_selector(policy_namespace) {
            if !pod.is_some_and(|id| {
                scope.contains(inventory, id)
                    && selector.matches(&super::pod_labels(inventory.pod(id)))
            }) {
                return false;
            }
        }
        match (&self.not_selector, pod) {
            (Some(not), Some(id)) => !not.matches(&super::pod_labels(inventory.pod(id))),
            _ => true,
        }
    }
}

/// The namespaces a positive selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Everywhere,
    Namespace(String),
    /// Namespaces whose labels (see [`super::namespace_labels`]) match.
    Namespaces(Selector),
}

impl Scope {
    /// The namespaces a `namespaceSelector` (when given) names, or else those of a policy in
    /// `policy_namespace` (empty for a global policy: every namespace).
    pub fn of(namespace_selector: Option<&Selector>, policy_namespace: &str) -> Scope {
        match (namespace_selector, policy_namespace) {
            (Some(selector), _) => Scope::Namespaces(selector.clone()),
            (None, "") => Scope::Everywhere,
            (None, own) => Scope::Namespace(own.to_string()),
        }
    }

    pub fn contains(&self, inventory: &Inventory, pod: PodId) -> bool {
        inventory
            .namespace(&inventory.pod(pod).namespace)
            .is_some_and(|n| self.includes(n))
    }

    pub fn includes(&self, namespace: &Namespace) -> bool {
        match self {
            Scope::Everywhere => true,
            Scope::Namespace(own) => &namespace.name == own,
            Scope::Namespaces(selector) => selector.matches(&super::namespace_labels(namespace)),
        }
    }
}

/// A port, a range (`"1000:2000"`) or a named port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CalicoPort {
    Range(u16, u16),
    Named(String),
}

impl CalicoPort {
    pub fn contains(&self, port: u16) -> bool {
        match self {
            CalicoPort::Range(start, end) => (*start..=*end).contains(&port),
            CalicoPort::Named(_) => false,
        }
    }
}
