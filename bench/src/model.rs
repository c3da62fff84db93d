//! Short constructors for the cluster model (`policy`'s pub types), so the generators read like
//! the manifests they stand for. They build values directly: no YAML, no loader.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use policy::calico::tier::Tier;
use policy::error::Location;
use policy::inventory::{NamedPort, Namespace, Pod, NAMESPACE_NAME_LABEL};
use policy::netpol::{
    Endpoints, IpBlock, NamespaceScope, NetworkPolicy, Peer, PolicyKind, PortMatch, PortSpec, Rule,
    DEFAULT_TIER, KUBERNETES_POLICY_ORDER,
};
use policy::selector::{LabelSelector, Labels, Requirement};
use policy::{Cluster, Inventory, Protocol};

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `matchLabels` with these pairs.
pub fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::from_requirements(pairs.iter().map(|(k, v)| is(k, v)).collect())
}

/// The requirement `key = value` (one `matchLabels` pair).
pub fn is(key: &str, value: &str) -> Requirement {
    Requirement::In(key.to_string(), BTreeSet::from([value.to_string()]))
}

pub fn any_of(key: &str, values: &[&str]) -> Requirement {
    Requirement::In(
        key.to_string(),
        values.iter().map(|v| v.to_string()).collect(),
    )
}

pub fn none_of(key: &str, values: &[&str]) -> Requirement {
    Requirement::NotIn(
        key.to_string(),
        values.iter().map(|v| v.to_string()).collect(),
    )
}

/// A namespace with `labels` plus the `kubernetes.io/metadata.name` label the API server adds.
pub fn namespace(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    let mut labels = labels(pairs);
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    Namespace {
        name: name.to_string(),
        labels,
        origin: None,
    }
}

pub fn pod(
    namespace: &str,
    name: String,
    labels: Labels,
    ips: Vec<IpAddr>,
    named_ports: &[(&str, Protocol, u16)],
) -> Pod {
    Pod {
        namespace: namespace.to_string(),
        name,
        labels,
        ips,
        named_ports: named_ports
            .iter()
            .map(|&(name, protocol, port)| NamedPort {
                name: name.to_string(),
                protocol,
                port,
            })
            .collect(),
        host_network: false,
        origin: Location::default(),
    }
}

/// A NetworkPolicy; `types` is `[ingress, egress]` as in `policyTypes`.
pub fn policy(
    namespace: &str,
    name: String,
    pod_selector: LabelSelector,
    types: [bool; 2],
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
) -> NetworkPolicy {
    NetworkPolicy {
        kind: PolicyKind::Kubernetes,
        namespace: namespace.to_string(),
        name,
        origin: Location::default(),
        tier: DEFAULT_TIER.to_string(),
        order: Some(KUBERNETES_POLICY_ORDER),
        endpoints: Endpoints::Kubernetes(pod_selector),
        types,
        ingress,
        egress,
    }
}

pub fn rule(peers: Vec<Peer>, ports: Vec<PortMatch>) -> Rule {
    Rule::kubernetes(peers, ports)
}

/// `podSelector` alone: pods of the policy's own namespace.
pub fn pods_here(namespace: &str, pods: LabelSelector) -> Peer {
    Peer::Pods {
        namespaces: NamespaceScope::Same(namespace.to_string()),
        pods,
    }
}

/// `namespaceSelector` (+ `podSelector`, `{}` when `pods` selects everything).
pub fn pods_in(namespaces: LabelSelector, pods: LabelSelector) -> Peer {
    Peer::Pods {
        namespaces: NamespaceScope::Selected(namespaces),
        pods,
    }
}

/// `ipBlock`; panics on a malformed literal (generator bug, not input).
pub fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::Block(IpBlock {
        cidr: net(cidr),
        except: except.iter().map(|e| net(e)).collect(),
    })
}

pub fn net(cidr: &str) -> IpNetwork {
    cidr.parse()
        .unwrap_or_else(|e| panic!("bad CIDR {cidr}: {e}"))
}

pub fn port(protocol: Protocol, port: u16) -> PortMatch {
    PortMatch {
        protocol,
        port: PortSpec::Range {
            start: port,
            end: port,
        },
    }
}

/// `port` with `endPort`.
pub fn port_range(protocol: Protocol, start: u16, end: u16) -> PortMatch {
    PortMatch {
        protocol,
        port: PortSpec::Range { start, end },
    }
}

pub fn named_port(protocol: Protocol, name: &str) -> PortMatch {
    PortMatch {
        protocol,
        port: PortSpec::Named(name.to_string()),
    }
}

/// The cluster as `policy::load` would return it: policies in evaluation order, and
/// namespaces named by policies known to the inventory.
pub fn cluster(
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    mut policies: Vec<NetworkPolicy>,
) -> Cluster {
    let mut tiers = vec![Tier::implicit_default()];
    policy::load::sort_for_evaluation(&mut tiers, &mut policies);
    let referenced: Vec<String> = policies
        .iter()
        .flat_map(|p| {
            let peers = p.ingress.iter().chain(&p.egress).flat_map(|r| &r.peers);
            std::iter::once(p.namespace.clone()).chain(peers.filter_map(|peer| match peer {
                Peer::Pods {
                    namespaces: NamespaceScope::Same(ns),
                    ..
                } => Some(ns.clone()),
                _ => None,
            }))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Cluster {
        inventory: Inventory::new(namespaces, pods, referenced),
        tiers,
        policies,
        warnings: Vec::new(),
    }
}
