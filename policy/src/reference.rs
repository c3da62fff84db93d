//! A direct, unoptimised reading of the Kubernetes NetworkPolicy spec and of Calico's policy
//! reference: every tier, every policy, every rule, every peer, in order. It is the yardstick the
//! compiled classifier is tested against; nothing on a hot path uses it.

use std::net::IpAddr;

use crate::calico::rule::{CalicoMatch, CalicoPort, EntityMatch};
use crate::calico::tier::TierDefault;
use crate::decision::{ConnectionDecision, Decision, Party, RuleRef};
use crate::inventory::{PodId, Protocol};
use crate::load::Cluster;
use crate::netpol::{
    Action, Direction, NamespaceScope, NetworkPolicy, Peer, PortMatch, PortSpec, Rule,
};

/// Whether `policy` selects `pod` (for either direction).
pub fn selects(cluster: &Cluster, policy: usize, pod: PodId) -> bool {
    let pod = cluster.inventory.pod(pod);
    let namespace = cluster
        .inventory
        .namespace(&pod.namespace)
        .expect("every pod's namespace is in the inventory");
    cluster.policies[policy].selects(pod, namespace)
}

/// The verdict for traffic of `pod` in `direction` with `peer` (the source for ingress, the
/// destination for egress), `protocol`, `port` (the destination port; for ICMP see
/// [`crate::calico::rule::icmp_port`]; 0 for other protocols without ports) and `source_port`
/// (0 for protocols without ports).
pub fn decide(
    cluster: &Cluster,
    pod: PodId,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
    source_port: u16,
) -> Decision {
    evaluate(cluster, pod, direction, peer, protocol, port, source_port).0
}

/// The first Log rule the traffic meets before the rule or tier that decides it, if any.
pub fn logged(
    cluster: &Cluster,
    pod: PodId,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
    source_port: u16,
) -> Option<RuleRef> {
    evaluate(cluster, pod, direction, peer, protocol, port, source_port).1
}

fn evaluate(
    cluster: &Cluster,
    pod: PodId,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
    source_port: u16,
) -> (Decision, Option<RuleRef>) {
    let packet = Packet {
        cluster,
        pod,
        direction,
        peer,
        protocol,
        port,
        source_port,
    };
    let mut logged = None;
    let mut applied = false;
    let mut passed_by = None;
    'tiers: for (ti, tier) in cluster.tiers.iter().enumerate() {
        let policies: Vec<usize> = (0..cluster.policies.len())
            .filter(|&pi| {
                let policy = &cluster.policies[pi];
                policy.tier == tier.name
                    && policy.applies_to(direction)
                    && selects(cluster, pi, pod)
            })
            .collect();
        if policies.is_empty() {
            continue;
        }
        applied = true;
        for pi in policies {
            let policy = &cluster.policies[pi];
            for (ri, rule) in policy.rules(direction).iter().enumerate() {
                if !packet.rule_matches(policy, rule) {
                    continue;
                }
                let here = RuleRef {
                    policy: pi as u32,
                    direction,
                    rule: ri as u32,
                };
                match rule.action {
                    Action::Log => {
                        logged.get_or_insert(here);
                    }
                    Action::Allow => return (Decision::Allowed(here), logged),
                    Action::Deny => return (Decision::DeniedBy(here), logged),
                    Action::Pass => {
                        passed_by = Some(here);
                        continue 'tiers;
                    }
                }
            }
        }
        match tier.default_action {
            TierDefault::Deny => return (Decision::Denied { tier: ti as u32 }, logged),
            TierDefault::Pass => passed_by = None,
        }
    }
    let decision = if applied {
        Decision::Passed(passed_by)
    } else {
        Decision::NotIsolated
    };
    (decision, logged)
}

struct Packet<'a> {
    cluster: &'a Cluster,
    pod: PodId,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
    source_port: u16,
}

impl Packet<'_> {
    fn rule_matches(&self, policy: &NetworkPolicy, rule: &Rule) -> bool {
        match &rule.calico {
            None => self.kubernetes_rule_matches(rule),
            Some(calico) => self.calico_rule_matches(policy, calico),
        }
    }

    fn peer_pod(&self) -> Option<PodId> {
        self.cluster.inventory.pod_by_address(self.peer)
    }

    fn kubernetes_rule_matches(&self, rule: &Rule) -> bool {
        let inventory = &self.cluster.inventory;
        let peer_pod = self.peer_pod();
        let peer_ok = rule.peers.is_empty()
            || rule.peers.iter().any(|p| match p {
                Peer::Block(block) => block.contains(self.peer),
                Peer::Pods { namespaces, pods } => peer_pod.is_some_and(|id| {
                    let other = inventory.pod(id);
                    let ns_ok = match namespaces {
                        NamespaceScope::Same(ns) => *ns == other.namespace,
                        NamespaceScope::Selected(sel) => {
                            sel.matches(inventory.namespace_labels(&other.namespace))
                        }
                    };
                    ns_ok && pods.matches(&other.labels)
                }),
            });
        if !peer_ok {
            return false;
        }
        if rule.ports.is_empty() {
            return true;
        }
        rule.ports
            .iter()
            .any(|m| self.kubernetes_port_matches(m, self.port_owner()))
    }

    /// Named destination ports resolve on the selected pod for ingress, on the destination for
    /// egress.
    fn port_owner(&self) -> Option<PodId> {
        match self.direction {
            Direction::Ingress => Some(self.pod),
            Direction::Egress => self.peer_pod(),
        }
    }

    /// Named source ports resolve on the source: the peer for ingress, the selected pod for
    /// egress.
    fn source_port_owner(&self) -> Option<PodId> {
        match self.direction {
            Direction::Ingress => self.peer_pod(),
            Direction::Egress => Some(self.pod),
        }
    }

    fn kubernetes_port_matches(&self, m: &PortMatch, resolver: Option<PodId>) -> bool {
        if m.protocol != self.protocol {
            return false;
        }
        match &m.port {
            PortSpec::Any => true,
            PortSpec::Range { start, end } => (*start..=*end).contains(&self.port),
            PortSpec::Named(name) => self.named_port_is(resolver, name),
        }
    }

    fn named_port_is(&self, owner: Option<PodId>, name: &str) -> bool {
        owner.is_some_and(|id| {
            self.cluster
                .inventory
                .pod(id)
                .resolve_named_port(name, self.protocol)
                == Some(self.port)
        })
    }

    fn calico_rule_matches(&self, policy: &NetworkPolicy, rule: &CalicoMatch) -> bool {
        if !rule.protocol_matches(self.protocol) {
            return false;
        }
        if (rule.icmp.is_some() || rule.not_icmp.is_some()) && !rule.icmp_matches(self.port) {
            return false;
        }
        let version = if self.peer.is_ipv4() { 4 } else { 6 };
        if rule.ip_version.is_some_and(|v| v != version) {
            return false;
        }
        let local_address = self
            .cluster
            .inventory
            .pod(self.pod)
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == self.peer.is_ipv4());
        let peer = rule.peer(self.direction);
        let local = rule.local(self.direction);
        let inventory = &self.cluster.inventory;
        peer.matches(
            inventory,
            &policy.namespace,
            Some(self.peer),
            self.peer_pod(),
        ) && local.matches(inventory, &policy.namespace, local_address, Some(self.pod))
            && self.side_ports_match(&rule.destination, self.port, self.port_owner())
            && self.side_ports_match(&rule.source, self.source_port, self.source_port_owner())
    }

    /// `ports` and `notPorts` of one side against that side's port of the packet; named ports
    /// belong to that side's pod (`owner`).
    fn side_ports_match(&self, side: &EntityMatch, port: u16, owner: Option<PodId>) -> bool {
        let matches = |p: &CalicoPort| match p {
            CalicoPort::Range(..) => p.contains(port),
            CalicoPort::Named(name) => owner.is_some_and(|id| {
                self.cluster
                    .inventory
                    .pod(id)
                    .resolve_named_port(name, self.protocol)
                    == Some(port)
            }),
        };
        (side.ports.is_empty() || side.ports.iter().any(matches))
            && !side.not_ports.iter().any(matches)
    }
}

pub fn connection(
    cluster: &Cluster,
    from: Party,
    to: Party,
    protocol: Protocol,
    port: u16,
    source_port: u16,
) -> ConnectionDecision {
    let decide = |pod, direction, peer: Party| {
        decide(
            cluster,
            pod,
            direction,
            peer.address(),
            protocol,
            port,
            source_port,
        )
    };
    ConnectionDecision {
        egress: from.pod().map(|p| decide(p, Direction::Egress, to)),
        ingress: to.pod().map(|p| decide(p, Direction::Ingress, from)),
        same_pod: from.pod().is_some() && from.pod() == to.pod(),
    }
}
