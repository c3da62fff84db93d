//! The compiled classifier must decide exactly like the plain reading of the spec
//! (`policy::reference`) — same verdict, same deciding rule — on random clusters of Kubernetes
//! NetworkPolicies.

mod common;

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use common::{compare, inventory_yaml, Rng, NAMESPACES, NS_KEYS, POD_KEYS};
use policy::inventory::Protocol;
use policy::{load, reference, Direction, Source};
use proptest::prelude::*;

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

fn cluster_yaml(rng: &mut Rng) -> String {
    let mut out = inventory_yaml(rng);
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
    let mut packets = Vec::new();
    for protocol in [Protocol::TCP, Protocol::UDP, Protocol::SCTP, Protocol::ICMP] {
        for port in [0, 53, 80, 81, 8080] {
            packets.push((protocol, port));
        }
    }
    compare(&text, &packets, &[policy::probe::DEFAULT_SOURCE_PORT])
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
                match reference::decide(
                    &cluster,
                    pod,
                    Direction::Ingress,
                    peer,
                    Protocol::TCP,
                    80,
                    32768,
                ) {
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
