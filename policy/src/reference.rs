//! A direct, unoptimised reading of the NetworkPolicy spec: every policy, every rule, every peer,
//! in order. It is the yardstick the compiled classifier is tested against; nothing on a hot
//! path uses it.

use std::net::IpAddr;

use crate::decision::{ConnectionDecision, Decision, Party, RuleRef};
use crate::inventory::{PodId, Protocol};
use crate::load::Cluster;
use crate::netpol::{Direction, NamespaceScope, Peer, PortMatch, PortSpec, Rule};

/// Whether `policy` selects `pod` (same namespace, labels match, pod not on the host network).
pub fn selects(cluster: &Cluster, policy: usize, pod: PodId) -> bool {
    let policy = &cluster.policies[policy];
    let pod = cluster.inventory.pod(pod);
    pod.is_policy_endpoint()
        && pod.namespace == policy.namespace
        && policy.pod_selector.matches(&pod.labels)
}

pub fn decide(
    cluster: &Cluster,
    pod: PodId,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Decision {
    let mut isolated = false;
    for (pi, policy) in cluster.policies.iter().enumerate() {
        if !policy.applies_to(direction) || !selects(cluster, pi, pod) {
            continue;
        }
        isolated = true;
        for (ri, rule) in policy.rules(direction).iter().enumerate() {
            if rule_matches(cluster, rule, pod, direction, peer, protocol, port) {
                return Decision::Allowed(RuleRef {
                    policy: pi as u32,
                    direction,
                    rule: ri as u32,
                });
            }
        }
    }
    if isolated {
        Decision::Denied
    } else {
        Decision::NotIsolated
    }
}

fn rule_matches(
    cluster: &Cluster,
    rule: &Rule,
    pod: PodId,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
) -> bool {
    let peer_pod = cluster.inventory.pod_by_address(peer);
    let peer_ok = rule.peers.is_empty()
        || rule.peers.iter().any(|p| match p {
            Peer::Block(block) => block.contains(peer),
            Peer::Pods { namespaces, pods } => peer_pod.is_some_and(|id| {
                let other = cluster.inventory.pod(id);
                let ns_ok = match namespaces {
                    NamespaceScope::Same(ns) => *ns == other.namespace,
                    NamespaceScope::Selected(sel) => {
                        sel.matches(cluster.inventory.namespace_labels(&other.namespace))
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
    // Named ports resolve on the selected pod for ingress, on the destination for egress.
    let resolver = match direction {
        Direction::Ingress => Some(pod),
        Direction::Egress => peer_pod,
    };
    rule.ports
        .iter()
        .any(|m| port_matches(cluster, m, resolver, protocol, port))
}

fn port_matches(
    cluster: &Cluster,
    m: &PortMatch,
    resolver: Option<PodId>,
    protocol: Protocol,
    port: u16,
) -> bool {
    if m.protocol != protocol {
        return false;
    }
    match &m.port {
        PortSpec::Any => true,
        PortSpec::Range { start, end } => (*start..=*end).contains(&port),
        PortSpec::Named(name) => resolver.is_some_and(|id| {
            cluster.inventory.pod(id).resolve_named_port(name, protocol) == Some(port)
        }),
    }
}

pub fn connection(
    cluster: &Cluster,
    from: Party,
    to: Party,
    protocol: Protocol,
    port: u16,
) -> ConnectionDecision {
    ConnectionDecision {
        egress: from
            .pod()
            .map(|p| decide(cluster, p, Direction::Egress, to.address(), protocol, port)),
        ingress: to.pod().map(|p| {
            decide(
                cluster,
                p,
                Direction::Ingress,
                from.address(),
                protocol,
                port,
            )
        }),
        same_pod: from.pod().is_some() && from.pod() == to.pod(),
    }
}
