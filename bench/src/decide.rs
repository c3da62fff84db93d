//! The `decide` workload: a large cluster and one endpoint (the `checkout-api` pods in namespace
//! `shop`) that exactly `rules` ingress rules apply to, with lookup keys whose answers are known.
//!
//! # Shape
//!
//! - 100 namespaces: 96 tenants (`shop`, `tenant-01` … `tenant-95`, labels `team`, `env`) and four
//!   infrastructure ones: `kube-system` (coredns), `monitoring` (prometheus, team
//!   `observability`), `edge` (the `api-gateway`, team `platform`) and `security`
//!   (`audit-collector`, team `sre`).
//! - `pods` pods spread evenly over them, labelled `app` (one of ~1000 applications), `tier` and
//!   `version`, with named container ports. Namespace *i* uses `10.i.0.0/16`; every fourth
//!   tenant is dual-stack (`fd00:10:i::/64`).
//! - The target: three `checkout-api` replicas in `shop`, selected by `ceil(rules / 10)`
//!   policies of 10 ingress rules each (the last one holds the remainder), with varied pod
//!   selectors that all pick exactly those replicas. `shop` also has a default-deny policy (no
//!   rules) and a DNS egress policy, and every other tenant has background policies, so other
//!   endpoints are isolated too.
//! - Rules are drawn from the mix real clusters show: the edge gateway on service ports,
//!   prometheus on metrics ports, same-namespace apps, apps of other teams' namespaces
//!   (`namespaceSelector` + `podSelector`), whole namespaces, `ipBlock`s (/32, /24, /16 with
//!   `except`, some IPv6), and public ports open to everyone. Ports are single ports, `endPort`
//!   ranges and named ports, TCP and UDP; a fifth of the rules have no ports.
//!
//! # Keys
//!
//! Random rules never name the addresses the keys use (the gateway's replicas are only named by
//! gateway rules, which never open the metrics ports; `198.51.100.0/24` and `203.0.113.0/24` are
//! only in the designed rules), so each key's answer is known by construction:
//!
//! | class | peer | packet | answer |
//! |---|---|---|---|
//! | `first-rule/pod` | gateway pod | TCP 8080 | rule 0 |
//! | `middle-rule/external` | 198.51.100.20 | TCP 5432 | rule `rules / 2` |
//! | `last-rule/pod` | gateway pod | TCP 9090 (named `metrics`) | rule `rules - 1` |
//! | `last-rule/external` | 203.0.113.50 | TCP 9090 | rule `rules - 1` |
//! | `no-match/pod` | gateway pod | TCP 9100 | denied |
//! | `no-match/external` | 192.0.2.1 | UDP 53 | denied |
//!
//! The gateway keys are the hard ones: about a quarter of all rules name the gateway, and the
//! metrics ports are open in many other rules, so both dimensions hold many rules and only
//! their intersection (one rule, or none) answers. [`DecideWorkload::mixed`] adds a batch of
//! ordinary lookups (random pods and external addresses, common ports) whose answers come from
//! [`policy::reference::decide`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use policy::inventory::Pod;
use policy::netpol::{NetworkPolicy, Peer, PortMatch, Rule};
use policy::selector::LabelSelector;
use policy::{reference, Classifier, Cluster, Decision, Direction, PodId, Protocol, RuleRef};

use crate::model::{
    any_of, block, cluster, is, labels, match_labels, named_port, namespace, none_of, pod,
    pods_here, pods_in, policy, port, port_range, rule,
};
use crate::names::{self, team, NamedPorts};
use crate::rng::Rng;

/// Rules per generated policy.
pub const RULES_PER_POLICY: usize = 10;

const NAMESPACES: usize = 100;
const TENANTS: usize = 96;
const KUBE_SYSTEM: usize = 96;
const MONITORING: usize = 97;
const EDGE: usize = 98;
const SECURITY: usize = 99;
const TARGET_NAMESPACE: &str = "shop";
const TARGET_APP: &str = "checkout-api";
/// Apps of namespace `i` are a window of this many names starting at `i * 10`.
const APPS_PER_NAMESPACE: usize = 40;

/// The key classes, each one packet whose answer is known by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    FirstRulePod,
    MiddleRuleExternal,
    LastRulePod,
    LastRuleExternal,
    NoMatchPod,
    NoMatchExternal,
}

impl KeyClass {
    pub const ALL: [KeyClass; 6] = [
        KeyClass::FirstRulePod,
        KeyClass::MiddleRuleExternal,
        KeyClass::LastRulePod,
        KeyClass::LastRuleExternal,
        KeyClass::NoMatchPod,
        KeyClass::NoMatchExternal,
    ];

    /// The name benchmarks are reported under.
    pub fn name(self) -> &'static str {
        match self {
            KeyClass::FirstRulePod => "first-rule/pod",
            KeyClass::MiddleRuleExternal => "middle-rule/external",
            KeyClass::LastRulePod => "last-rule/pod",
            KeyClass::LastRuleExternal => "last-rule/external",
            KeyClass::NoMatchPod => "no-match/pod",
            KeyClass::NoMatchExternal => "no-match/external",
        }
    }
}

/// The packet part of a lookup (the endpoint is the workload's target, the direction ingress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    pub peer: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// The source port of every lookup: the generated policies have no source-port rules.
pub const SOURCE_PORT: u16 = policy::probe::DEFAULT_SOURCE_PORT;

/// A lookup with the answer it must get.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub class: KeyClass,
    pub lookup: Lookup,
    pub expected: Decision,
}

/// What [`decide_workload`] builds.
#[derive(Debug, Clone)]
pub struct DecideWorkload {
    pub cluster: Arc<Cluster>,
    /// The first `checkout-api` replica: the endpoint every lookup is for (ingress).
    pub target: PodId,
    /// Ingress rules that apply to the target.
    pub rules: usize,
    pub keys: Vec<Key>,
    /// Ordinary lookups (random pods and external peers, common ports); answers from the
    /// reference evaluator.
    pub mixed: Vec<Lookup>,
}

impl DecideWorkload {
    /// Compiles the classifier and checks it: every key and every mixed lookup must get the
    /// reference evaluator's answer, and the keys also the answer they were designed for.
    /// Panics otherwise, so a benchmark can never time a wrong answer.
    pub fn compile_checked(&self) -> Classifier {
        let classifier = Classifier::compile(Arc::clone(&self.cluster));
        self.check(&classifier);
        classifier
    }

    /// See [`DecideWorkload::compile_checked`].
    pub fn check(&self, classifier: &Classifier) {
        let decide = |l: &Lookup| {
            let (pod, ingress) = (self.target, Direction::Ingress);
            let got = classifier.decide(pod, ingress, l.peer, l.protocol, l.port, SOURCE_PORT);
            let want = reference::decide(
                &self.cluster,
                pod,
                ingress,
                l.peer,
                l.protocol,
                l.port,
                SOURCE_PORT,
            );
            assert_eq!(got, want, "classifier and reference disagree on {l:?}");
            got
        };
        for key in &self.keys {
            assert_eq!(
                decide(&key.lookup),
                key.expected,
                "{} ({:?}) with {} rules",
                key.class.name(),
                key.lookup,
                self.rules
            );
        }
        for lookup in &self.mixed {
            decide(lookup);
        }
    }

    pub fn key(&self, class: KeyClass) -> &Key {
        self.keys
            .iter()
            .find(|k| k.class == class)
            .expect("every class has a key")
    }
}

/// A cluster of `pods` pods in which exactly `rules` ingress rules apply to one endpoint (see the
/// module documentation). Deterministic: the same arguments give the same cluster.
///
/// Panics if `rules < 3` (the first, middle and last rules must differ) or `pods < 1000`.
pub fn decide_workload(rules: usize, pods: usize) -> DecideWorkload {
    assert!(rules >= 3, "need at least 3 rules, got {rules}");
    assert!(pods >= 1000, "need at least 1000 pods, got {pods}");
    let mut rng = Rng::new(0xDEC1DE ^ rules as u64);

    let namespaces: Vec<_> = (0..NAMESPACES)
        .map(|i| {
            let name = namespace_name(i);
            match i {
                KUBE_SYSTEM => namespace(&name, &[("team", "system")]),
                MONITORING => namespace(&name, &[("team", "observability")]),
                EDGE => namespace(&name, &[("team", "platform")]),
                SECURITY => namespace(&name, &[("team", "sre")]),
                _ => {
                    let env = if i % 3 == 2 { "staging" } else { "prod" };
                    namespace(&name, &[("team", &team(i)), ("env", env)])
                }
            }
        })
        .collect();

    let mut all_pods: Vec<Pod> = Vec::with_capacity(pods);
    for ns in 0..NAMESPACES {
        let count = pods / NAMESPACES + usize::from(ns < pods % NAMESPACES);
        let name = namespace_name(ns);
        let special: &[(&str, &str, NamedPorts)] = match ns {
            0 => &[(
                TARGET_APP,
                "backend",
                &[
                    ("http", Protocol::TCP, 8080),
                    ("grpc", Protocol::TCP, 9000),
                    ("metrics", Protocol::TCP, 9090),
                    ("admin", Protocol::TCP, 9901),
                ],
            )],
            KUBE_SYSTEM => &[("coredns", "system", &[("dns", Protocol::UDP, 53)])],
            MONITORING => &[("prometheus", "system", &[("web", Protocol::TCP, 9090)])],
            EDGE => &[("api-gateway", "frontend", &[("http", Protocol::TCP, 8080)])],
            SECURITY => &[("audit-collector", "system", &[])],
            _ => &[],
        };
        for j in 0..count {
            let (app, tier, ports) = match special.get(j / 3) {
                Some(&(app, tier, ports)) => (app.to_string(), tier, ports),
                None => {
                    let app = names::app(ns * 10 + rng.below(APPS_PER_NAMESPACE));
                    let (tier, ports) = (names::tier(&app), names::named_ports(&app));
                    (app, tier, ports)
                }
            };
            let labels = labels(&[
                ("app", &app),
                ("tier", tier),
                ("version", ["v1", "v2", "v3"][j % 3]),
            ]);
            let pod_name = format!("{app}-{:05x}-{j}", rng.below(1 << 20));
            all_pods.push(pod(&name, pod_name, labels, pod_ips(ns, j), ports));
        }
    }

    let mut policies = background_policies();
    let mut rules_gen = RuleGen {
        rng: &mut rng,
        shop_apps: (0..APPS_PER_NAMESPACE).map(names::app).collect(),
    };
    let policy_count = rules.div_ceil(RULES_PER_POLICY);
    let (middle, last) = (rules / 2, rules - 1);
    for p in 0..policy_count {
        let first_rule = p * RULES_PER_POLICY;
        let ingress: Vec<Rule> = (first_rule..rules.min(first_rule + RULES_PER_POLICY))
            .map(|r| match r {
                0 => rule(vec![gateway()], vec![port(Protocol::TCP, 8080)]),
                _ if r == middle => rule(
                    vec![block("198.51.100.0/24", &["198.51.100.128/25"])],
                    vec![port(Protocol::TCP, 5432)],
                ),
                _ if r == last => rule(
                    vec![gateway(), block("203.0.113.0/24", &[])],
                    vec![
                        named_port(Protocol::TCP, "metrics"),
                        port_range(Protocol::TCP, 9443, 9450),
                    ],
                ),
                _ => rules_gen.random_rule(),
            })
            .collect();
        policies.push(policy(
            TARGET_NAMESPACE,
            format!("{TARGET_APP}-ingress-{p:06}"),
            target_selector(p),
            [true, false],
            ingress,
            Vec::new(),
        ));
    }

    let mixed = mixed_lookups(&mut rng, &all_pods);
    let cluster = Arc::new(cluster(namespaces, all_pods, policies));
    let inventory = &cluster.inventory;
    let target = first_pod_of(&cluster, 0) as PodId;
    let gateway_ip = inventory.pods[first_pod_of(&cluster, EDGE)].ips[0];
    let rule_ref = |position: usize| {
        let name = format!("{TARGET_APP}-ingress-{:06}", position / RULES_PER_POLICY);
        let policy = cluster
            .policies
            .iter()
            .position(|p| p.namespace == TARGET_NAMESPACE && p.name == name)
            .expect("target policy exists");
        Decision::Allowed(RuleRef {
            policy: policy as u32,
            direction: Direction::Ingress,
            rule: (position % RULES_PER_POLICY) as u32,
        })
    };
    let key = |class, peer: IpAddr, protocol, port, expected| Key {
        class,
        lookup: Lookup {
            peer,
            protocol,
            port,
        },
        expected,
    };
    let external = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let keys = vec![
        key(
            KeyClass::FirstRulePod,
            gateway_ip,
            Protocol::TCP,
            8080,
            rule_ref(0),
        ),
        key(
            KeyClass::MiddleRuleExternal,
            external(198, 51, 100, 20),
            Protocol::TCP,
            5432,
            rule_ref(middle),
        ),
        key(
            KeyClass::LastRulePod,
            gateway_ip,
            Protocol::TCP,
            9090,
            rule_ref(last),
        ),
        key(
            KeyClass::LastRuleExternal,
            external(203, 0, 113, 50),
            Protocol::TCP,
            9090,
            rule_ref(last),
        ),
        key(
            KeyClass::NoMatchPod,
            gateway_ip,
            Protocol::TCP,
            9100,
            Decision::Denied { tier: 0 },
        ),
        key(
            KeyClass::NoMatchExternal,
            external(192, 0, 2, 1),
            Protocol::UDP,
            53,
            Decision::Denied { tier: 0 },
        ),
    ];
    DecideWorkload {
        cluster,
        target,
        rules,
        keys,
        mixed,
    }
}

fn namespace_name(i: usize) -> String {
    match i {
        0 => TARGET_NAMESPACE.to_string(),
        KUBE_SYSTEM => "kube-system".to_string(),
        MONITORING => "monitoring".to_string(),
        EDGE => "edge".to_string(),
        SECURITY => "security".to_string(),
        _ => format!("tenant-{i:02}"),
    }
}

/// `10.ns.x.y` (and `fd00:10:ns::n` in every fourth tenant) for pod `j` of namespace `ns`.
fn pod_ips(ns: usize, j: usize) -> Vec<IpAddr> {
    let n = j + 1;
    let v4 = Ipv4Addr::new(10, ns as u8, (n >> 8) as u8, n as u8);
    let mut ips = vec![IpAddr::V4(v4)];
    if ns % 4 == 1 && ns < TENANTS {
        ips.push(IpAddr::V6(Ipv6Addr::new(
            0xfd00, 0x10, ns as u16, 0, 0, 0, 0, n as u16,
        )));
    }
    ips
}

fn first_pod_of(cluster: &Cluster, ns: usize) -> usize {
    let name = namespace_name(ns);
    cluster
        .inventory
        .pods
        .iter()
        .position(|p| p.namespace == name)
        .expect("every namespace has pods")
}

/// The gateway replicas in `edge`, and nothing else.
fn gateway() -> Peer {
    pods_in(
        match_labels(&[("team", "platform")]),
        match_labels(&[("app", "api-gateway")]),
    )
}

/// Different ways real policies pick the same three replicas.
fn target_selector(p: usize) -> LabelSelector {
    match p % 4 {
        0 => match_labels(&[("app", TARGET_APP)]),
        1 => match_labels(&[("app", TARGET_APP), ("tier", "backend")]),
        2 => LabelSelector::from_requirements(vec![any_of(
            "app",
            &[TARGET_APP, "checkout-api-canary"],
        )]),
        _ => LabelSelector::from_requirements(vec![
            is("app", TARGET_APP),
            none_of("tier", &["frontend", "batch"]),
        ]),
    }
}

/// Default deny and DNS egress in `shop`; in every other tenant a default deny, same-namespace
/// traffic and scraping by prometheus.
fn background_policies() -> Vec<NetworkPolicy> {
    let dns = rule(
        vec![pods_in(
            match_labels(&[("kubernetes.io/metadata.name", "kube-system")]),
            match_labels(&[("app", "coredns")]),
        )],
        vec![port(Protocol::UDP, 53), port(Protocol::TCP, 53)],
    );
    let mut policies = vec![
        policy(
            TARGET_NAMESPACE,
            "default-deny".into(),
            LabelSelector::everything(),
            [true, true],
            Vec::new(),
            Vec::new(),
        ),
        policy(
            TARGET_NAMESPACE,
            "allow-dns".into(),
            LabelSelector::everything(),
            [false, true],
            Vec::new(),
            vec![dns],
        ),
    ];
    for ns in 1..TENANTS {
        let name = namespace_name(ns);
        policies.push(policy(
            &name,
            "default-deny-ingress".into(),
            LabelSelector::everything(),
            [true, false],
            Vec::new(),
            Vec::new(),
        ));
        policies.push(policy(
            &name,
            "allow-same-namespace".into(),
            LabelSelector::everything(),
            [true, false],
            vec![rule(
                vec![pods_here(&name, LabelSelector::everything())],
                Vec::new(),
            )],
            Vec::new(),
        ));
        policies.push(policy(
            &name,
            "allow-prometheus".into(),
            LabelSelector::everything(),
            [true, false],
            vec![rule(
                vec![pods_in(
                    match_labels(&[("team", "observability")]),
                    match_labels(&[("app", "prometheus")]),
                )],
                vec![named_port(Protocol::TCP, "metrics")],
            )],
            Vec::new(),
        ));
    }
    policies
}

/// Draws the undesigned rules. None of them names the gateway's replicas except the gateway
/// rules (which never open 9090 or 9100), and none covers `198.51.100.0/24`, `203.0.113.0/24`,
/// `192.0.2.0/24` or the infrastructure namespaces' addresses.
struct RuleGen<'a> {
    rng: &'a mut Rng,
    shop_apps: Vec<String>,
}

impl RuleGen<'_> {
    fn random_rule(&mut self) -> Rule {
        match self.rng.below(100) {
            // From the edge gateway, on service ports.
            0..=24 => {
                let mut peers = vec![gateway()];
                if self.rng.chance(30) {
                    peers.push(self.same_namespace_peer());
                }
                let choices = [
                    port(Protocol::TCP, 8080),
                    port(Protocol::TCP, 8443),
                    named_port(Protocol::TCP, "http"),
                    named_port(Protocol::TCP, "grpc"),
                    port_range(Protocol::TCP, 8000, 8099),
                ];
                let ports = self.some_of(&choices, 2);
                rule(peers, ports)
            }
            // Scraping by prometheus.
            25..=39 => {
                let choices = [
                    port(Protocol::TCP, 9090),
                    named_port(Protocol::TCP, "metrics"),
                    port(Protocol::TCP, 9100),
                    port_range(Protocol::TCP, 9100, 9110),
                ];
                let ports = self.some_of(&choices, 2);
                rule(
                    vec![pods_in(
                        match_labels(&[("team", "observability")]),
                        match_labels(&[("app", "prometheus")]),
                    )],
                    ports,
                )
            }
            // Other apps of the same namespace.
            40..=59 => {
                let peers = (0..1 + self.rng.below(2))
                    .map(|_| self.same_namespace_peer())
                    .collect();
                let ports = self.random_ports(20);
                rule(peers, ports)
            }
            // Apps in other teams' namespaces.
            60..=74 => {
                let peers = (0..1 + self.rng.below(2))
                    .map(|_| self.other_namespace_peer())
                    .collect();
                let ports = self.random_ports(20);
                rule(peers, ports)
            }
            // Whole namespaces of a team.
            75..=79 => {
                let peer = pods_in(
                    match_labels(&[("team", &team(self.rng.below(20)))]),
                    LabelSelector::everything(),
                );
                let ports = self.random_ports(0);
                rule(vec![peer], ports)
            }
            // Address blocks.
            80..=94 => {
                let peers = (0..1 + self.rng.below(3))
                    .map(|_| self.address_block())
                    .collect();
                let ports = self.random_ports(25);
                rule(peers, ports)
            }
            // Public ports, from anywhere.
            _ => {
                let choices = [port(Protocol::TCP, 80), port(Protocol::TCP, 443)];
                let ports = self.some_of(&choices, 2);
                rule(Vec::new(), ports)
            }
        }
    }

    fn some_of(&mut self, choices: &[PortMatch], most: usize) -> Vec<PortMatch> {
        let mut ports: Vec<PortMatch> = Vec::new();
        for _ in 0..1 + self.rng.below(most) {
            let p = self.rng.pick(choices).clone();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        ports
    }

    /// 1–3 ports from a catalogue of common ones; none (all ports) with `none_percent`.
    fn random_ports(&mut self, none_percent: u64) -> Vec<PortMatch> {
        if self.rng.chance(none_percent) {
            return Vec::new();
        }
        let catalogue = [
            port(Protocol::TCP, 80),
            port(Protocol::TCP, 443),
            port(Protocol::TCP, 8080),
            port(Protocol::TCP, 8443),
            port(Protocol::TCP, 3000),
            port(Protocol::TCP, 5000),
            port(Protocol::TCP, 5432),
            port(Protocol::TCP, 6379),
            port(Protocol::TCP, 9000),
            port(Protocol::TCP, 9090),
            port(Protocol::TCP, 9100),
            port(Protocol::TCP, 27017),
            port(Protocol::UDP, 53),
            port(Protocol::UDP, 514),
            port(Protocol::UDP, 8125),
            port_range(Protocol::TCP, 30000, 32767),
            port_range(Protocol::TCP, 8000, 8099),
            port_range(Protocol::TCP, 6000, 6100),
            port_range(Protocol::UDP, 60000, 61000),
            named_port(Protocol::TCP, "http"),
            named_port(Protocol::TCP, "grpc"),
            named_port(Protocol::TCP, "metrics"),
            named_port(Protocol::TCP, "admin"),
            named_port(Protocol::UDP, "syslog"),
        ];
        self.some_of(&catalogue, 3)
    }

    fn same_namespace_peer(&mut self) -> Peer {
        let app = self.rng.pick(&self.shop_apps).clone();
        let pods = match self.rng.below(4) {
            0 | 1 => match_labels(&[("app", &app)]),
            2 => match_labels(&[("app", &app), ("tier", names::tier(&app))]),
            _ => {
                let other = self.rng.pick(&self.shop_apps).clone();
                LabelSelector::from_requirements(vec![any_of(
                    "app",
                    &[app.as_str(), other.as_str()],
                )])
            }
        };
        pods_here(TARGET_NAMESPACE, pods)
    }

    fn other_namespace_peer(&mut self) -> Peer {
        let ns = 1 + self.rng.below(TENANTS - 1);
        let app = names::app(ns * 10 + self.rng.below(APPS_PER_NAMESPACE));
        match self.rng.below(5) {
            0..=2 => pods_in(
                match_labels(&[("team", &team(ns))]),
                match_labels(&[("app", &app)]),
            ),
            3 => pods_in(
                LabelSelector::from_requirements(vec![any_of(
                    "team",
                    &[team(ns).as_str(), team(ns + 7).as_str()],
                )]),
                match_labels(&[("tier", "backend")]),
            ),
            _ => pods_in(
                match_labels(&[("env", "staging")]),
                match_labels(&[("app", &app)]),
            ),
        }
    }

    fn address_block(&mut self) -> Peer {
        let ns = self.rng.below(TENANTS);
        let (x, y) = (self.rng.below(4), 1 + self.rng.below(250));
        let k = self.rng.below(16);
        match self.rng.below(8) {
            0 => block(&format!("10.{ns}.{x}.{y}/32"), &[]),
            1 => block(&format!("10.{ns}.{x}.0/24"), &[]),
            2 => block(&format!("10.{ns}.0.0/16"), &[]),
            3 => block(&format!("10.{ns}.0.0/16"), &[&format!("10.{ns}.{x}.0/24")]),
            4 => block(
                &format!("172.{}.0.0/16", 16 + k),
                &[&format!("172.{}.{y}.0/24", 16 + k)],
            ),
            5 => block(&format!("192.168.{y}.0/24"), &[]),
            6 => block("100.64.0.0/10", &[&format!("100.64.{y}.0/24")]),
            _ => {
                let ns = 1 + 4 * self.rng.below(TENANTS / 4);
                if self.rng.chance(50) {
                    block(&format!("fd00:10:{ns:x}::/64"), &[])
                } else {
                    block(&format!("2001:db8:{k:x}::/48"), &[])
                }
            }
        }
    }
}

/// Ordinary traffic: pods of the tenants, the gateway and prometheus, and external addresses,
/// on common ports.
fn mixed_lookups(rng: &mut Rng, pods: &[Pod]) -> Vec<Lookup> {
    const PORTS: [(Protocol, u16); 14] = [
        (Protocol::TCP, 80),
        (Protocol::TCP, 443),
        (Protocol::TCP, 8080),
        (Protocol::TCP, 8443),
        (Protocol::TCP, 5432),
        (Protocol::TCP, 6379),
        (Protocol::TCP, 9000),
        (Protocol::TCP, 9090),
        (Protocol::TCP, 9100),
        (Protocol::TCP, 31000),
        (Protocol::TCP, 8050),
        (Protocol::UDP, 53),
        (Protocol::UDP, 8125),
        (Protocol::TCP, 22),
    ];
    let infrastructure = |app: &str| {
        pods.iter()
            .filter(|p| p.labels.get("app").is_some_and(|a| a == app))
            .flat_map(|p| p.ips.iter().copied())
            .collect::<Vec<_>>()
    };
    let gateway = infrastructure("api-gateway");
    let prometheus = infrastructure("prometheus");
    (0..64)
        .map(|_| {
            let peer = match rng.below(20) {
                0..=9 => {
                    let p = rng.pick(pods);
                    *rng.pick(&p.ips)
                }
                10..=11 => *rng.pick(&gateway),
                12 => *rng.pick(&prometheus),
                13..=15 => IpAddr::V4(Ipv4Addr::new(
                    172,
                    16 + rng.below(16) as u8,
                    rng.below(256) as u8,
                    1 + rng.below(254) as u8,
                )),
                16 => IpAddr::V4(Ipv4Addr::new(192, 168, rng.below(256) as u8, 7)),
                17 => IpAddr::V4(Ipv4Addr::new(100, 64, rng.below(256) as u8, 9)),
                18 => IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
                _ => IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    rng.below(16) as u16,
                    0,
                    0,
                    0,
                    0,
                    1,
                )),
            };
            let (protocol, port) = *rng.pick(&PORTS);
            Lookup {
                peer,
                protocol,
                port,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_requested_rules_apply_to_the_target() {
        for rules in [3, 10, 25, 100] {
            let w = decide_workload(rules, 2_000);
            let applying: usize = w
                .cluster
                .policies
                .iter()
                .enumerate()
                .filter(|&(i, p)| {
                    p.applies_to(Direction::Ingress) && reference::selects(&w.cluster, i, w.target)
                })
                .map(|(_, p)| p.ingress.len())
                .sum();
            assert_eq!(applying, rules);
            assert_eq!(w.cluster.inventory.pods.len(), 2_000);
        }
    }

    #[test]
    fn keys_get_their_designed_answers_from_classifier_and_reference() {
        for rules in [3, 10, 100, 1_000] {
            let w = decide_workload(rules, 3_000);
            w.compile_checked();
            assert_eq!(w.keys.len(), KeyClass::ALL.len());
        }
    }

    #[test]
    fn the_mix_has_allowed_and_denied_lookups() {
        let w = decide_workload(1_000, 3_000);
        let classifier = w.compile_checked();
        let allowed = w
            .mixed
            .iter()
            .filter(|l| {
                classifier
                    .decide(
                        w.target,
                        Direction::Ingress,
                        l.peer,
                        l.protocol,
                        l.port,
                        SOURCE_PORT,
                    )
                    .allows()
            })
            .count();
        assert!(
            allowed > 5 && allowed < w.mixed.len() - 5,
            "{allowed} allowed"
        );
    }

    #[test]
    fn the_gateway_is_named_by_about_a_quarter_of_the_rules() {
        let w = decide_workload(1_000, 3_000);
        let gateway = gateway();
        let naming = w
            .cluster
            .policies
            .iter()
            .flat_map(|p| &p.ingress)
            .filter(|r| r.peers.contains(&gateway))
            .count();
        assert!((200..300).contains(&naming), "{naming}");
    }

    #[test]
    fn the_same_arguments_build_the_same_workload() {
        let a = decide_workload(50, 1_000);
        let b = decide_workload(50, 1_000);
        assert_eq!(a.mixed, b.mixed);
        let rules = |w: &DecideWorkload| -> Vec<Rule> {
            w.cluster
                .policies
                .iter()
                .flat_map(|p| p.ingress.clone())
                .collect()
        };
        assert_eq!(rules(&a), rules(&b));
    }
}
