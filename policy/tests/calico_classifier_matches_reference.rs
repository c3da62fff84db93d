//! The compiled classifier must decide (and log) exactly like the plain reading of Calico's
//! policy reference (`policy::reference`) on random clusters of Calico NetworkPolicies,
//! GlobalNetworkPolicies and tiers, mixed with Kubernetes NetworkPolicies.

mod common;

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use common::{compare, inventory_yaml, Rng, NAMESPACES};
use policy::calico::rule::icmp_port;
use policy::inventory::Protocol;
use policy::{load, reference, Decision, Direction, Source};
use proptest::prelude::*;

const SELECTORS: [&str; 12] = [
    "all()",
    "app == 'web'",
    "app != 'db'",
    "app in {'web', 'db'}",
    "tier not in {'front'}",
    "has(app)",
    "!has(tier)",
    "app == 'web' && tier == 'back'",
    "app == 'db' || !has(tier)",
    "(app == 'cache' || tier == 'front') && !has(nothing)",
    "projectcalico.org/namespace == 'y'",
    "global()",
];
const NAMESPACE_SELECTORS: [&str; 4] = [
    "team == 'a'",
    "projectcalico.org/name == 'x'",
    "all()",
    "has(team)",
];
const V4_NETS: [&str; 5] = [
    "10.0.0.0/24",
    "10.0.0.0/29",
    "10.0.0.4/31",
    "0.0.0.0/0",
    "10.0.0.2",
];
const V6_NETS: [&str; 3] = ["fd00::/120", "fd00::4/126", "::/0"];

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn nets(rng: &mut Rng, version: Option<u8>) -> String {
    let mut picked = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let v6 = match version {
            Some(4) => false,
            Some(_) => true,
            None => rng.chance(30),
        };
        picked.push(if v6 {
            rng.pick(&V6_NETS)
        } else {
            rng.pick(&V4_NETS)
        });
    }
    format!("[{}]", quoted(&picked))
}

/// One side of a rule; `ports` says whether the rule's protocol allows port conditions.
fn entity(rng: &mut Rng, version: Option<u8>, ports: bool, is_destination: bool) -> String {
    let mut fields = Vec::new();
    if rng.chance(25) {
        fields.push(format!("nets: {}", nets(rng, version)));
    }
    if rng.chance(15) {
        fields.push(format!("notNets: {}", nets(rng, version)));
    }
    if rng.chance(30) {
        fields.push(format!("selector: \"{}\"", rng.pick(&SELECTORS)));
    }
    if rng.chance(15) {
        fields.push(format!("notSelector: \"{}\"", rng.pick(&SELECTORS)));
    }
    if rng.chance(20) {
        fields.push(format!(
            "namespaceSelector: \"{}\"",
            rng.pick(&NAMESPACE_SELECTORS)
        ));
    }
    if ports && is_destination && rng.chance(60) {
        let list = rng.pick(&[
            "[80]",
            "[\"80:81\"]",
            "[http]",
            "[53, dns]",
            "[8080, \"1:79\"]",
        ]);
        fields.push(format!("ports: {list}"));
    }
    if ports && is_destination && rng.chance(25) {
        let list = rng.pick(&[
            "[81]",
            "[\"50:60\"]",
            "[http]",
            "[dns, 81]",
            "[\"1:60\", http]",
        ]);
        fields.push(format!("notPorts: {list}"));
    }
    if ports && !is_destination && rng.chance(30) {
        let list = rng.pick(&[
            "[53]",
            "[\"1024:65535\"]",
            "[http]",
            "[dns, 1000]",
            "[80, \"32000:33000\"]",
        ]);
        fields.push(format!("ports: {list}"));
    }
    if ports && !is_destination && rng.chance(15) {
        let list = rng.pick(&["[\"0:1023\"]", "[http]", "[53, dns]", "[32768]"]);
        fields.push(format!("notPorts: {list}"));
    }
    format!("{{{}}}", fields.join(", "))
}

fn rule(rng: &mut Rng) -> String {
    let action = match rng.below(20) {
        0..=7 => "Allow",
        8..=12 => "Deny",
        13..=15 => "Pass",
        _ => "Log",
    };
    let mut fields = vec![format!("action: {action}")];
    let version = match rng.below(6) {
        0 => Some(4),
        1 => Some(6),
        _ => None,
    };
    let mut ports = false;
    match rng.below(9) {
        0 | 1 => {}
        2 => {
            fields.push("protocol: TCP".into());
            ports = true;
        }
        3 => {
            fields.push(format!("protocol: {}", rng.pick(&["UDP", "17", "SCTP"])));
            ports = true;
        }
        4 => fields.push(format!(
            "notProtocol: {}",
            rng.pick(&["TCP", "UDP", "ICMP"])
        )),
        5 if version != Some(6) => {
            fields.push("protocol: ICMP".into());
            match rng.below(4) {
                0 => fields.push("icmp: {type: 8}".into()),
                1 => fields.push("icmp: {type: 3, code: 1}".into()),
                2 => fields.push("notICMP: {type: 0}".into()),
                _ => {}
            }
        }
        6 => {
            fields.push("protocol: TCP".into());
            fields.push("notProtocol: UDP".into());
            ports = true;
        }
        _ => {}
    }
    if let Some(v) = version {
        fields.push(format!("ipVersion: {v}"));
    }
    if rng.chance(70) {
        fields.push(format!("source: {}", entity(rng, version, ports, false)));
    }
    if rng.chance(70) {
        fields.push(format!(
            "destination: {}",
            entity(rng, version, ports, true)
        ));
    }
    format!("{{{}}}", fields.join(", "))
}

fn cluster_yaml(rng: &mut Rng) -> String {
    let mut out = inventory_yaml(rng);
    let tiered = rng.chance(40);
    if tiered {
        let default = rng.pick(&["Deny", "Pass"]);
        writeln!(out, "---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: security}}\nspec: {{order: 100, defaultAction: {default}}}").unwrap();
    }
    for i in 0..rng.below(5) {
        let global = rng.chance(40);
        let (kind, namespace) = if global {
            ("GlobalNetworkPolicy", String::new())
        } else {
            (
                "NetworkPolicy",
                format!(", namespace: {}", rng.pick(&NAMESPACES)),
            )
        };
        writeln!(out, "---\napiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: cp{i}{namespace}}}\nspec:").unwrap();
        if tiered && rng.chance(50) {
            writeln!(out, "  tier: security").unwrap();
        }
        if rng.chance(70) {
            writeln!(
                out,
                "  order: {}",
                rng.pick(&["10", "100", "1000", "999.5", "2000"])
            )
            .unwrap();
        }
        writeln!(out, "  selector: \"{}\"", rng.pick(&SELECTORS[..10])).unwrap();
        if global && rng.chance(30) {
            writeln!(
                out,
                "  namespaceSelector: \"{}\"",
                rng.pick(&NAMESPACE_SELECTORS)
            )
            .unwrap();
        }
        let ingress = rng.below(4);
        let egress = rng.below(4);
        match rng.below(4) {
            0 => writeln!(out, "  types: [Ingress, Egress]").unwrap(),
            1 if egress == 0 => writeln!(out, "  types: [Ingress]").unwrap(),
            2 if ingress == 0 => writeln!(out, "  types: [Egress]").unwrap(),
            _ => {}
        }
        for (field, count) in [("ingress", ingress), ("egress", egress)] {
            if count > 0 {
                writeln!(out, "  {field}:").unwrap();
            }
            for _ in 0..count {
                writeln!(out, "  - {}", rule(rng)).unwrap();
            }
        }
    }
    // Kubernetes policies take part at order 1000 in the default tier.
    if rng.chance(40) {
        let ns = rng.pick(&NAMESPACES);
        writeln!(out, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: knp, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from: [{{podSelector: {{}}}}]\n    ports: [{{port: 80}}]").unwrap();
    }
    out
}

fn packets() -> Vec<(Protocol, u16)> {
    let mut packets = Vec::new();
    for protocol in [Protocol::TCP, Protocol::UDP, Protocol::SCTP] {
        for port in [53, 55, 80, 81, 8080] {
            packets.push((protocol, port));
        }
    }
    for (icmp_type, code) in [(8, 0), (0, 0), (3, 1), (3, 2)] {
        packets.push((Protocol::ICMP, icmp_port(icmp_type, code)));
        packets.push((Protocol::ICMPV6, icmp_port(icmp_type, code)));
    }
    packets.push((Protocol(47), 0));
    packets
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn classifier_decides_calico_policies_like_the_reference_evaluator(seed in any::<u64>()) {
        let mut rng = Rng(seed | 1);
        compare(&cluster_yaml(&mut rng), &packets(), &[53, 80, 1000, 8080, 32768, 60000])?;
    }
}

/// Guards the generator for the layouts: the comparison above checks the address × port
/// product only where a table's rules look at nothing but addresses and ports, so the random
/// clusters must have such tables, and tables where the layered lookup alone answers; with
/// no budget for a dense product, those tables must get steps where their rows allow (the
/// random tables have few rules, and every one but the joint products does: those are never
/// in steps; rows with too many steps are checked in `classifier/product.rs` and on the
/// ClassBench lists), else chunks, and with no budget for steps either, they must all be
/// chunked.
#[test]
fn random_calico_clusters_have_tables_with_and_without_a_product() {
    let (mut with, mut without, mut chunked, mut steps) = (0, 0, 0, 0);
    for seed in 1..300u64 {
        let mut rng = Rng(seed * 7919);
        let text = cluster_yaml(&mut rng);
        let cluster = Arc::new(
            load(&[Source::new("r.yaml", text.clone())]).unwrap_or_else(|e| panic!("{e}\n{text}")),
        );
        let classifier = policy::Classifier::compile(Arc::clone(&cluster));
        let no_dense = policy::Classifier::compile_with(
            Arc::clone(&cluster),
            policy::compile::CompileOptions {
                dense_product_budget: 0,
                ..Default::default()
            },
        );
        let chunks_only = policy::Classifier::compile_with(
            Arc::clone(&cluster),
            policy::compile::CompileOptions {
                dense_product_budget: 0,
                steps_product_budget: 0,
                ..Default::default()
            },
        );
        for pod in cluster.inventory.pod_ids() {
            for direction in Direction::BOTH {
                if classifier.selecting_policies(pod, direction).is_empty() {
                    continue;
                }
                match classifier.has_product(pod, direction) {
                    true => with += 1,
                    false => without += 1,
                }
                assert!(!classifier.has_chunked_product(pod, direction));
                assert!(!classifier.has_steps_product(pod, direction));
                let (in_steps, in_chunks) = (
                    no_dense.has_steps_product(pod, direction),
                    no_dense.has_chunked_product(pod, direction),
                );
                assert_eq!(
                    in_steps || in_chunks,
                    classifier.has_product(pod, direction),
                    "{text}"
                );
                assert_eq!(
                    chunks_only.has_chunked_product(pod, direction),
                    classifier.has_product(pod, direction),
                    "{text}"
                );
                steps += usize::from(in_steps);
                chunked += usize::from(in_chunks);
            }
        }
    }
    assert!(
        with > 100 && without > 100 && steps > 100 && chunked > 10,
        "with a product {with} (without a dense budget: {steps} in steps, {chunked} chunked), \
         without {without}"
    );
}

/// Guards the comparison's mixed layout: with `MIXED_STAGING`, some random clusters must have
/// both a staged product and one looked up directly, or `decide_each`'s groups would never
/// mix the two.
#[test]
fn random_calico_clusters_mix_staged_and_direct_products() {
    let mut mixed = 0;
    for seed in 1..300u64 {
        let mut rng = Rng(seed * 7919);
        let text = cluster_yaml(&mut rng);
        let cluster = Arc::new(
            load(&[Source::new("r.yaml", text.clone())]).unwrap_or_else(|e| panic!("{e}\n{text}")),
        );
        let stats = policy::Classifier::compile_with(
            cluster,
            policy::compile::CompileOptions {
                staged_product_bytes: common::MIXED_STAGING,
                ..Default::default()
            },
        )
        .stats();
        mixed += usize::from(
            stats.staged_product_tables > 0 && stats.staged_product_tables < stats.product_tables,
        );
    }
    assert!(
        mixed > 20,
        "clusters with staged and direct products: {mixed}"
    );
}

/// Guards the generator itself: the random clusters must produce every kind of decision and
/// log hits, or the comparison above would prove little.
#[test]
fn random_calico_clusters_exercise_every_outcome() {
    let (mut allowed, mut denied_by, mut denied, mut passed, mut open, mut logged) =
        (0, 0, 0, 0, 0, 0);
    for seed in 1..300u64 {
        let mut rng = Rng(seed * 7919);
        let text = cluster_yaml(&mut rng);
        let cluster = Arc::new(
            load(&[Source::new("r.yaml", text.clone())]).unwrap_or_else(|e| panic!("{e}\n{text}")),
        );
        let peers: Vec<IpAddr> = cluster
            .inventory
            .pods
            .iter()
            .flat_map(|p| p.ips.clone())
            .chain(["8.8.8.8".parse().unwrap()])
            .collect();
        for pod in cluster.inventory.pod_ids() {
            for &peer in &peers {
                for (protocol, port) in packets() {
                    for direction in Direction::BOTH {
                        match reference::decide(
                            &cluster, pod, direction, peer, protocol, port, 1000,
                        ) {
                            Decision::Allowed(_) => allowed += 1,
                            Decision::DeniedBy(_) => denied_by += 1,
                            Decision::Denied { .. } => denied += 1,
                            Decision::Passed(_) => passed += 1,
                            Decision::NotIsolated => open += 1,
                        }
                        logged += usize::from(
                            reference::logged(&cluster, pod, direction, peer, protocol, port, 1000)
                                .is_some(),
                        );
                    }
                }
            }
        }
    }
    assert!(
        [allowed, denied_by, denied, passed, open, logged]
            .iter()
            .all(|&n| n > 100),
        "allowed {allowed} denied-by-rule {denied_by} denied {denied} passed {passed} open {open} logged {logged}"
    );
}

/// Guards the comparison's joint layouts: some random clusters must have tables whose
/// source-port rules and others are answered from one joint product, and with no budget for
/// it those tables must keep a product per lookup. Those clusters are rare among the random
/// ones (a selector anywhere in a table rules it out), so each is also compared here.
#[test]
fn random_calico_clusters_have_joint_products() {
    let (mut joint, mut clusters) = (0, 0);
    for seed in 1..600u64 {
        let mut rng = Rng(seed * 7919);
        let text = cluster_yaml(&mut rng);
        let cluster = Arc::new(
            load(&[Source::new("r.yaml", text.clone())]).unwrap_or_else(|e| panic!("{e}\n{text}")),
        );
        let stats = |joint_product_budget| {
            policy::Classifier::compile_with(
                Arc::clone(&cluster),
                policy::compile::CompileOptions {
                    joint_product_budget,
                    ..Default::default()
                },
            )
            .stats()
        };
        let (with, without) = (stats(usize::MAX), stats(0));
        assert_eq!(without.joint_product_tables, 0, "{text}");
        assert_eq!(with.product_tables, without.product_tables, "{text}");
        if with.joint_product_tables > 0 {
            joint += with.joint_product_tables;
            clusters += 1;
            compare(&text, &packets(), &[53, 80, 1000, 8080, 32768, 60000])
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert!(
        joint > 30 && clusters > 20,
        "tables with a joint product {joint}, in {clusters} clusters"
    );
}
