//! The `compile` workload: a multi-tenant cluster the way platform teams run them.
//!
//! - Infrastructure namespaces `kube-system` (coredns), `monitoring` (prometheus) and
//!   `ingress-nginx` (the ingress controller), and tenant namespaces `tenant-NNN` with `team` and
//!   `env` labels; about 100 pods per namespace, ~5 replicas per app, every fifth tenant
//!   dual-stack.
//! - Every tenant starts with a default deny (ingress and egress), DNS egress to kube-system and
//!   ingress from prometheus on the named `metrics` port; its other policies are per app, in
//!   turn: ingress from other apps of the namespace and from the ingress controller, egress to
//!   the namespace's database, another team's API and the internet (`0.0.0.0/0` minus private
//!   ranges), ingress from other teams' apps, ingress from partner address blocks, port ranges
//!   and UDP, and egress to external services by `/32` and `/24`.
//! - Policies are spread evenly over the tenants; the total is exactly what was asked for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::inventory::Pod;
use policy::netpol::{NetworkPolicy, Rule};
use policy::selector::LabelSelector;
use policy::{Cluster, Protocol};

use crate::model::{
    any_of, block, cluster, labels, match_labels, named_port, namespace, pod, pods_here, pods_in,
    policy, port, port_range, rule,
};
use crate::names::{self, team};
use crate::rng::Rng;

const INFRASTRUCTURE: [&str; 3] = ["kube-system", "monitoring", "ingress-nginx"];
const REPLICAS: usize = 5;

/// A cluster of `pods` pods and exactly `policies` NetworkPolicies (see the module
/// documentation). Deterministic. Panics if `pods < 100`.
pub fn compile_workload(policies: usize, pods: usize) -> Cluster {
    assert!(pods >= 100, "need at least 100 pods, got {pods}");
    let mut rng = Rng::new(0xC0_4D11E ^ (policies as u64) << 32 ^ pods as u64);
    let namespace_count = (pods / 100).clamp(INFRASTRUCTURE.len() + 1, 250);
    let tenants = namespace_count - INFRASTRUCTURE.len();
    let ns_name = |i: usize| match i {
        0..3 => INFRASTRUCTURE[i].to_string(),
        _ => format!("tenant-{:03}", i - INFRASTRUCTURE.len()),
    };

    let namespaces = (0..namespace_count)
        .map(|i| match i {
            0..3 => namespace(&ns_name(i), &[("team", "platform")]),
            _ => {
                let env = if i % 4 == 0 { "staging" } else { "prod" };
                namespace(&ns_name(i), &[("team", &team(i)), ("env", env)])
            }
        })
        .collect();

    let per_namespace = pods / namespace_count;
    let mut tenant_apps: Vec<Vec<String>> = Vec::with_capacity(tenants);
    let mut all_pods: Vec<Pod> = Vec::with_capacity(pods);
    for ns in 0..namespace_count {
        let count = per_namespace + usize::from(ns < pods % namespace_count);
        let apps: Vec<String> = match ns {
            0 => vec!["coredns".into(), "kube-proxy".into()],
            1 => vec!["prometheus".into(), "alertmanager".into()],
            2 => vec!["ingress-nginx".into()],
            _ => (0..(count / REPLICAS).max(1))
                .map(|a| names::app(ns * 7 + a))
                .collect(),
        };
        for j in 0..count {
            let app = &apps[j % apps.len()];
            let tier = names::tier(app);
            let n = j + 1;
            let mut ips = vec![IpAddr::V4(Ipv4Addr::new(
                10,
                ns as u8,
                (n >> 8) as u8,
                n as u8,
            ))];
            if ns % 5 == 1 {
                ips.push(IpAddr::V6(Ipv6Addr::new(
                    0xfd00, 0x20, ns as u16, 0, 0, 0, 0, n as u16,
                )));
            }
            let ports: &[(&str, Protocol, u16)] = match ns {
                0 => &[("dns", Protocol::UDP, 53), ("dns-tcp", Protocol::TCP, 53)],
                1 => &[("web", Protocol::TCP, 9090)],
                2 => &[("http", Protocol::TCP, 80), ("https", Protocol::TCP, 443)],
                _ => names::named_ports(app),
            };
            let name = format!("{app}-{:05x}-{j}", rng.below(1 << 20));
            let labels = labels(&[("app", app), ("tier", tier)]);
            all_pods.push(pod(&ns_name(ns), name, labels, ips, ports));
        }
        if ns >= INFRASTRUCTURE.len() {
            tenant_apps.push(apps);
        }
    }

    let mut out = Vec::with_capacity(policies);
    for t in 0..tenants {
        let quota = policies / tenants + usize::from(t < policies % tenants);
        let ns = ns_name(t + INFRASTRUCTURE.len());
        let gen = TenantGen {
            ns: &ns,
            tenant: t,
            tenants,
            apps: &tenant_apps,
        };
        gen.policies(&mut rng, quota, &mut out);
    }
    cluster(namespaces, all_pods, out)
}

struct TenantGen<'a> {
    ns: &'a str,
    tenant: usize,
    tenants: usize,
    /// Apps of every tenant, by tenant index.
    apps: &'a [Vec<String>],
}

impl TenantGen<'_> {
    fn policies(&self, rng: &mut Rng, quota: usize, out: &mut Vec<NetworkPolicy>) {
        let ns = self.ns;
        let dns = rule(
            vec![pods_in(
                match_labels(&[("kubernetes.io/metadata.name", "kube-system")]),
                match_labels(&[("app", "coredns")]),
            )],
            vec![port(Protocol::UDP, 53), port(Protocol::TCP, 53)],
        );
        let standard = [
            policy(
                ns,
                "default-deny".into(),
                LabelSelector::everything(),
                [true, true],
                Vec::new(),
                Vec::new(),
            ),
            policy(
                ns,
                "allow-dns".into(),
                LabelSelector::everything(),
                [false, true],
                Vec::new(),
                vec![dns],
            ),
            policy(
                ns,
                "allow-monitoring".into(),
                LabelSelector::everything(),
                [true, false],
                vec![rule(
                    vec![pods_in(
                        match_labels(&[("kubernetes.io/metadata.name", "monitoring")]),
                        match_labels(&[("app", "prometheus")]),
                    )],
                    vec![named_port(Protocol::TCP, "metrics")],
                )],
                Vec::new(),
            ),
        ];
        out.extend(standard.into_iter().take(quota));

        let apps = &self.apps[self.tenant];
        for k in 0..quota.saturating_sub(3) {
            let app = &apps[k % apps.len()];
            let kind = k / apps.len() % 7;
            let selector = match rng.below(10) {
                0 => match_labels(&[("tier", names::tier(app))]),
                1 => LabelSelector::from_requirements(vec![any_of(
                    "app",
                    &[app.as_str(), rng.pick(&apps[..]).as_str()],
                )]),
                _ => match_labels(&[("app", app)]),
            };
            let (name, types, ingress, egress) = match kind {
                0 => (
                    "ingress",
                    [true, false],
                    self.ingress_from_neighbours(rng, app),
                    vec![],
                ),
                1 => ("egress", [false, true], vec![], self.to_dependencies(rng)),
                2 => (
                    "from-teams",
                    [true, false],
                    self.ingress_from_other_teams(rng),
                    vec![],
                ),
                3 => ("from-partners", [true, false], partners(rng), vec![]),
                4 => ("port-ranges", [true, false], port_ranges(rng), vec![]),
                5 => ("egress-external", [false, true], vec![], external(rng)),
                _ => (
                    "both",
                    [true, true],
                    self.ingress_from_neighbours(rng, app),
                    self.to_dependencies(rng),
                ),
            };
            out.push(policy(
                ns,
                format!("{app}-{name}-{k}"),
                selector,
                types,
                ingress,
                egress,
            ));
        }
    }

    /// Other apps of the namespace on the service ports; web apps also from the ingress
    /// controller.
    fn ingress_from_neighbours(&self, rng: &mut Rng, app: &str) -> Vec<Rule> {
        let apps = &self.apps[self.tenant];
        let mut rules = vec![rule(
            (0..1 + rng.below(3))
                .map(|_| {
                    pods_here(
                        self.ns,
                        match_labels(&[("app", rng.pick(&apps[..]).as_str())]),
                    )
                })
                .collect(),
            vec![named_port(Protocol::TCP, "http"), port(Protocol::TCP, 8080)],
        )];
        if rng.chance(30) {
            rules.push(rule(
                vec![pods_here(self.ns, match_labels(&[("tier", "frontend")]))],
                vec![named_port(Protocol::TCP, "grpc")],
            ));
        }
        if names::tier(app) == "frontend" || rng.chance(20) {
            rules.push(rule(
                vec![pods_in(
                    match_labels(&[("kubernetes.io/metadata.name", "ingress-nginx")]),
                    match_labels(&[("app", "ingress-nginx")]),
                )],
                vec![port(Protocol::TCP, 8080)],
            ));
        }
        rules
    }

    /// The namespace's database, another team's API, and the internet on 443.
    fn to_dependencies(&self, rng: &mut Rng) -> Vec<Rule> {
        let apps = &self.apps[self.tenant];
        let other = rng.below(self.tenants);
        let mut rules = vec![rule(
            vec![pods_here(self.ns, match_labels(&[("tier", "data")]))],
            vec![
                port(Protocol::TCP, 5432),
                port(Protocol::TCP, 6379),
                named_port(Protocol::TCP, "db"),
            ],
        )];
        rules.push(rule(
            vec![pods_in(
                match_labels(&[("team", &team(other + INFRASTRUCTURE.len()))]),
                match_labels(&[("app", rng.pick(&self.apps[other][..]).as_str())]),
            )],
            vec![named_port(Protocol::TCP, "grpc"), port(Protocol::TCP, 8080)],
        ));
        if rng.chance(50) {
            rules.push(rule(
                vec![block(
                    "0.0.0.0/0",
                    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                )],
                vec![port(Protocol::TCP, 443)],
            ));
        }
        if rng.chance(20) {
            rules.push(rule(
                vec![pods_here(
                    self.ns,
                    match_labels(&[("app", rng.pick(&apps[..]).as_str())]),
                )],
                Vec::new(),
            ));
        }
        rules
    }

    /// Apps of other teams' namespaces, and whole staging namespaces.
    fn ingress_from_other_teams(&self, rng: &mut Rng) -> Vec<Rule> {
        (0..1 + rng.below(3))
            .map(|_| {
                let other = rng.below(self.tenants);
                let peer = if rng.chance(80) {
                    pods_in(
                        match_labels(&[("team", &team(other + INFRASTRUCTURE.len()))]),
                        match_labels(&[("app", rng.pick(&self.apps[other][..]).as_str())]),
                    )
                } else {
                    pods_in(
                        match_labels(&[("env", "staging")]),
                        LabelSelector::everything(),
                    )
                };
                let ports = if rng.chance(25) {
                    Vec::new()
                } else {
                    vec![named_port(Protocol::TCP, "http")]
                };
                rule(vec![peer], ports)
            })
            .collect()
    }
}

/// Office and partner networks: /16 with holes, /24s, single hosts, some IPv6.
fn partners(rng: &mut Rng) -> Vec<Rule> {
    let (a, b) = (rng.below(256), rng.below(256));
    let peers = vec![
        block(&format!("192.168.{a}.0/24"), &[]),
        block(
            &format!("172.{}.0.0/16", 16 + a % 16),
            &[&format!("172.{}.{b}.0/24", 16 + a % 16)],
        ),
        block(&format!("203.0.{b}.{}/32", 1 + a % 254), &[]),
        block(&format!("2001:db8:{a:x}::/48"), &[]),
    ];
    let keep = 1 + rng.below(peers.len());
    vec![rule(
        peers.into_iter().take(keep).collect(),
        vec![port(Protocol::TCP, 443), port(Protocol::TCP, 8443)],
    )]
}

/// Port ranges and UDP from anywhere in the cluster network.
fn port_ranges(rng: &mut Rng) -> Vec<Rule> {
    let start = 30000 + rng.below(2000) as u16;
    vec![
        rule(
            vec![block("10.0.0.0/8", &[])],
            vec![
                port_range(Protocol::TCP, start, start + 100),
                port_range(Protocol::UDP, 60000, 61000),
            ],
        ),
        rule(Vec::new(), vec![port(Protocol::UDP, 8125)]),
    ]
}

/// External services by address.
fn external(rng: &mut Rng) -> Vec<Rule> {
    let (a, b) = (rng.below(256), rng.below(256));
    vec![rule(
        vec![
            block(&format!("198.51.100.{a}/32"), &[]),
            block(&format!("100.{}.{b}.0/24", 64 + a % 64), &[]),
        ],
        vec![port(Protocol::TCP, 443), port(Protocol::TCP, 5432)],
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_cluster_has_exactly_the_requested_size() {
        for (policies, pods) in [(1, 100), (7, 250), (1_000, 1_000)] {
            let cluster = compile_workload(policies, pods);
            assert_eq!(cluster.policies.len(), policies);
            assert_eq!(cluster.inventory.pods.len(), pods);
        }
    }

    #[test]
    fn policies_have_unique_names_and_are_sorted() {
        let cluster = compile_workload(1_000, 1_000);
        let keys: Vec<(String, String)> = cluster
            .policies
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_compiled_classifier_agrees_with_the_reference() {
        let cluster = Arc::new(compile_workload(300, 400));
        let classifier = policy::Classifier::compile(Arc::clone(&cluster));
        let mut rng = Rng::new(3);
        const SOURCE_PORT: u16 = policy::probe::DEFAULT_SOURCE_PORT;
        let peers: Vec<IpAddr> = cluster
            .inventory
            .pods
            .iter()
            .flat_map(|p| p.ips.clone())
            .chain(["8.8.8.8".parse().unwrap(), "192.168.3.4".parse().unwrap()])
            .collect();
        for _ in 0..2_000 {
            let pod = rng.below(cluster.inventory.pods.len()) as policy::PodId;
            let direction = *rng.pick(&policy::Direction::BOTH);
            let peer = *rng.pick(&peers);
            let (protocol, port) = *rng.pick(&[
                (Protocol::TCP, 8080),
                (Protocol::TCP, 443),
                (Protocol::UDP, 53),
            ]);
            assert_eq!(
                classifier.decide(pod, direction, peer, protocol, port, SOURCE_PORT),
                policy::reference::decide(
                    &cluster,
                    pod,
                    direction,
                    peer,
                    protocol,
                    port,
                    SOURCE_PORT
                )
            );
        }
    }
}
