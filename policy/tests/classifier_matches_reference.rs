//! The compiled classifier must decide exactly like the plain reading of the spec
//! (`policy::reference`) — same verdict, same deciding rule — on random clusters.

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use policy::compile::CompileOptions;
use policy::inventory::Protocol;
use policy::{load, reference, Classifier, Direction, Source};
use proptest::prelude::*;

/// A tiny deterministic generator: proptest picks the seed and reports it on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const CIDRS: [(&str, &[&str]); 8] = [
    ("10.0.0.0/24", &["10.0.0.0/30", "10.0.0.8/29"]),
    ("10.0.0.0/29", &["10.0.0.4/32"]),
    ("10.0.0.4/31", &[]),
    ("0.0.0.0/0", &["10.0.0.0/28"]),
    ("192.168.0.0/16", &[]),
    ("fd00::/120", &["fd00::4/126"]),
    ("::/0", &[]),
    ("10.0.0.2/32", &[]),
];

fn selector(rng: &mut Rng, keys: &[(&str, &[&str])]) -> String {
    let mut parts = Vec::new();
    let (key, values) = keys[rng.below(keys.len())];
    match rng.below(6) {
        0 => return "{}".into(),
        1 | 2 => parts.push(format!("matchLabels: {{{key}: {}}}", rng.pick(values))),
        3 => parts.push(format!(
            "matchExpressions: [{{key: {key}, operator: In, values: [{}, {}]}}]",
            rng.pick(values),
            rng.pick(values)
        )),
        4 => parts.push(format!(
            "matchExpressions: [{{key: {key}, operator: NotIn, values: [{}]}}]",
            rng.pick(values)
        )),
        _ => parts.push(format!(
            "matchExpressions: [{{key: {key}, operator: {}}}]",
            rng.pick(&["Exists", "DoesNotExist"])
        )),
    }
    format!("{{{}}}", parts.join(", "))
}

const POD_KEYS: [(&str, &[&str]); 2] = [
    ("app", &["web", "db", "cache"]),
    ("tier", &["front", "back"]),
];
const NS_KEYS: [(&str, &[&str]); 2] = [
    ("team", &["a", "b"]),
    ("kubernetes.io/metadata.name", &["x", "y", "z"]),
];

fn cluster_yaml(rng: &mut Rng) -> String {
    let mut out = String::new();
    for ns in NAMESPACES {
        if rng.chance(80) {
            writeln!(out, "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{team: {}}}}}", rng.pick(&["a", "b"])).unwrap();
        }
    }
    let pods = 1 + rng.below(7);
    for i in 0..pods {
        let ns = rng.pick(&NAMESPACES);
        let mut labels = Vec::new();
        for (key, values) in POD_KEYS {
            if rng.chance(70) {
                labels.push(format!("{key}: {}", rng.pick(values)));
            }
        }
        let mut ips = vec![format!("{{ip: 10.0.0.{}}}", i + 1)];
        if rng.chance(50) {
            ips.push(format!("{{ip: \"fd00::{}\"}}", i + 1));
        }
        let mut ports = Vec::new();
        if rng.chance(60) {
            ports.push(format!(
                "{{name: http, containerPort: {}}}",
                rng.pick(&["80", "8080"])
            ));
        }
        if rng.chance(40) {
            ports.push(format!(
                "{{name: dns, containerPort: 53, protocol: {}}}",
                rng.pick(&["UDP", "TCP"])
            ));
        }
        let host = if rng.chance(8) {
            "hostNetwork: true, "
        } else {
            ""
        };
        writeln!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {ns}, labels: {{{}}}}}\nspec: {{{host}containers: [{{name: c, ports: [{}]}}]}}\nstatus: {{podIP: 10.0.0.{}, podIPs: [{}]}}",
            labels.join(", "),
            ports.join(", "),
            i + 1,
            ips.join(", ")
        )
        .unwrap();
    }
    let policies = rng.below(5);
    for i in 0..policies {
        let ns = rng.pick(&NAMESPACES);
        writeln!(out, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: {ns}}}\nspec:\n  podSelector: {}", selector(rng, &POD_KEYS)).unwrap();
        match rng.below(4) {
            0 => {}
            1 => writeln!(out, "  policyTypes: [Ingress]").unwrap(),
            2 => writeln!(out, "  policyTypes: [Egress]").unwrap(),
            _ => writeln!(out, "  policyTypes: [Ingress, Egress]").unwrap(),
        }
        for (field, peer_field) in [("ingress", "from"), ("egress", "to")] {
            if rng.chance(25) {
                continue;
            }
            writeln!(out, "  {field}:").unwrap();
            for _ in 0..rng.below(3) {
                let rule_start = out.len();
                writeln!(out, "  -").unwrap();
                let peers = rng.below(3);
                if peers > 0 || rng.chance(30) {
                    writeln!(out, "    {peer_field}:").unwrap();
                }
                for _ in 0..peers {
                    match rng.below(4) {
                        0 => {
                            let (cidr, except) = CIDRS[rng.below(CIDRS.len())];
                            let except: Vec<&str> =
                                except.iter().copied().filter(|_| rng.chance(60)).collect();
                            writeln!(
                                out,
                                "    - ipBlock: {{cidr: \"{cidr}\", except: [{}]}}",
                                except
                                    .iter()
                                    .map(|e| format!("\"{e}\""))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                            .unwrap();
                        }
                        1 => writeln!(out, "    - podSelector: {}", selector(rng, &POD_KEYS))
                            .unwrap(),
                        2 => writeln!(out, "    - namespaceSelector: {}", selector(rng, &NS_KEYS))
                            .unwrap(),
                        _ => writeln!(
                            out,
                            "    - namespaceSelector: {}\n      podSelector: {}",
                            selector(rng, &NS_KEYS),
                            selector(rng, &POD_KEYS)
                        )
                        .unwrap(),
                    }
                }
                let ports = rng.below(3);
                if ports > 0 || rng.chance(20) {
                    writeln!(out, "    ports:").unwrap();
                }
                for _ in 0..ports {
                    let protocol = rng.pick(&["TCP", "UDP", "SCTP"]);
                    match rng.below(4) {
                        0 => writeln!(out, "    - {{protocol: {protocol}}}").unwrap(),
                        1 => writeln!(
                            out,
                            "    - {{protocol: {protocol}, port: {}}}",
                            rng.pick(&["53", "80", "81"])
                        )
                        .unwrap(),
                        2 => writeln!(
                            out,
                            "    - {{protocol: {protocol}, port: 80, endPort: {}}}",
                            rng.pick(&["80", "81", "8080"])
                        )
                        .unwrap(),
                        _ => writeln!(
                            out,
                            "    - {{protocol: {protocol}, port: {}}}",
                            rng.pick(&["http", "dns"])
                        )
                        .unwrap(),
                    }
                }
                if out.len() == rule_start + 4 {
                    out.truncate(rule_start);
                    writeln!(out, "  - {{}}").unwrap();
                }
            }
        }
    }
    out
}

fn check(seed: u64) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed | 1);
    let text = cluster_yaml(&mut rng);
    let cluster = match load(&[Source::new("random.yaml", text.clone())]) {
        Ok(c) => Arc::new(c),
        Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
    };
    // Both table layouts: rules without ports folded into every port class, and kept apart.
    let folded = Classifier::compile(Arc::clone(&cluster));
    let apart = Classifier::compile_with(Arc::clone(&cluster), CompileOptions { fold_budget: 0 });
    let mut peers: Vec<IpAddr> = cluster
        .inventory
        .pods
        .iter()
        .flat_map(|p| p.ips.clone())
        .collect();
    for extra in [
        "10.0.0.200",
        "10.0.0.4",
        "192.168.1.1",
        "8.8.8.8",
        "fd00::99",
        "fd00::5",
        "2001:db8::1",
    ] {
        peers.push(extra.parse().unwrap());
    }
    for pod in cluster.inventory.pod_ids() {
        for direction in Direction::BOTH {
            for &peer in &peers {
                for protocol in [Protocol::TCP, Protocol::UDP, Protocol::SCTP, Protocol::ICMP] {
                    for port in [0, 53, 80, 81, 8080] {
                        let want =
                            reference::decide(&cluster, pod, direction, peer, protocol, port);
                        let unfolded = apart.decide(pod, direction, peer, protocol, port);
                        prop_assert_eq!(unfolded, want, "with rules without ports kept apart");
                        let got = folded.decide(pod, direction, peer, protocol, port);
                        prop_assert_eq!(
                            got,
                            want,
                            "pod {} {:?} peer {} {}/{}\n{}",
                            cluster.inventory.pod(pod).key(),
                            direction,
                            peer,
                            protocol,
                            port,
                            text
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn classifier_decides_like_the_reference_evaluator(seed in any::<u64>()) {
        check(seed)?;
    }
}

/// Guards the generator itself: the random clusters must produce every kind of decision, or the
/// comparison above would prove little.
#[test]
fn random_clusters_exercise_allows_denies_and_rule_choice() {
    let (mut allowed, mut denied, mut open, mut later_rule) = (0, 0, 0, 0);
    for seed in 1..200u64 {
        let mut rng = Rng(seed * 7919);
        let cluster = Arc::new(load(&[Source::new("r.yaml", cluster_yaml(&mut rng))]).unwrap());
        let peers: Vec<IpAddr> = cluster
            .inventory
            .pods
            .iter()
            .flat_map(|p| p.ips.clone())
            .collect();
        for pod in cluster.inventory.pod_ids() {
            for &peer in &peers {
                match reference::decide(&cluster, pod, Direction::Ingress, peer, Protocol::TCP, 80)
                {
                    policy::Decision::Allowed(r) => {
                        allowed += 1;
                        later_rule += usize::from(r.rule > 0);
                    }
                    policy::Decision::Denied { .. } => denied += 1,
                    policy::Decision::NotIsolated => open += 1,
                    other => panic!("Kubernetes policies only allow or deny, got {other:?}"),
                }
            }
        }
    }
    assert!(
        allowed > 100 && denied > 100 && open > 100 && later_rule > 10,
        "allowed {allowed} denied {denied} open {open} later-rule {later_rule}"
    );
}
