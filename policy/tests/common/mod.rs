//! What the classifier-against-reference tests share: a seeded generator, random namespaces and
//! pods, and the comparison itself.
#![allow(dead_code)]

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use policy::compile::CompileOptions;
use policy::inventory::Protocol;
use policy::{load, reference, Classifier, Decision, Direction, Party, Query, Source};
use proptest::prelude::*;

/// A tiny deterministic generator: proptest picks the seed and reports it on failure.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_KEYS: [(&str, &[&str]); 2] = [
    ("app", &["web", "db", "cache"]),
    ("tier", &["front", "back"]),
];
pub const NS_KEYS: [(&str, &[&str]); 2] = [
    ("team", &["a", "b"]),
    ("kubernetes.io/metadata.name", &["x", "y", "z"]),
];

/// Namespaces (most with a `team` label) and up to seven pods with labels, IPv4 and sometimes
/// IPv6 addresses, named ports, and now and then on the host network.
pub fn inventory_yaml(rng: &mut Rng) -> String {
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
    out
}

/// A `staged_product_bytes` among the sizes of the random clusters' products, so that some
/// are staged and some not (`random_calico_clusters_mix_staged_and_direct_products` checks
/// that this stays so).
pub const MIXED_STAGING: usize = 1536;

/// Loads `text` and checks that both table layouts decide (and log) exactly like the reference
/// for every pod, direction, peer (the pods and some other addresses), (protocol, port) and
/// source port (each of `source_ports` for protocols with ports, else 0).
pub fn compare(
    text: &str,
    packets: &[(Protocol, u16)],
    source_ports: &[u16],
) -> Result<(), TestCaseError> {
    let cluster = match load(&[Source::new("random.yaml", text.to_string())]) {
        Ok(c) => Arc::new(c),
        Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
    };
    // Every table layout: rules over every port of a protocol folded into each port class, or
    // kept apart in classes of their own, each without the address × port product; and with
    // the product wherever the rules allow one, dense, in steps (where every row has few
    // enough) or chunked, joint for a table's lookups with source ports or one per lookup.
    // Every product is looked up in stages by `decide_each`, however small; in the last
    // layout only those of at least `MIXED_STAGING` bytes, so that groups mix staged products
    // with others.
    let all = usize::MAX;
    let layout_with = |fold_budget, product_budget, shapes: [usize; 2], joint, staged| {
        let [dense_product_budget, steps_product_budget] = shapes;
        Classifier::compile_with(
            Arc::clone(&cluster),
            CompileOptions {
                fold_budget,
                product_budget,
                dense_product_budget,
                steps_product_budget,
                staged_product_bytes: staged,
                // Ranks only count past `u16::MAX` slots, more than these clusters number:
                // the product tests and the 100k ClassBench tests cover them.
                ranked_cells_bytes: 0,
                joint_product_budget: joint,
            },
        )
    };
    let layout = |fold_budget, product_budget, shapes| {
        layout_with(fold_budget, product_budget, shapes, all, 0)
    };
    let (dense, steps, chunked) = ([all, all], [0, all], [0, 0]);
    let layouts = [
        ("folded", layout(all, 0, chunked)),
        ("apart", layout(0, 0, chunked)),
        ("product, folded", layout(all, all, dense)),
        ("product, apart", layout(0, all, dense)),
        ("steps product, folded", layout(all, all, steps)),
        ("steps product, apart", layout(0, all, steps)),
        ("chunked product, folded", layout(all, all, chunked)),
        ("chunked product, apart", layout(0, all, chunked)),
        (
            "products per lookup, folded",
            layout_with(all, all, dense, 0, 0),
        ),
        (
            "steps products per lookup, folded",
            layout_with(all, all, steps, 0, 0),
        ),
        (
            "chunked products per lookup, apart",
            layout_with(0, all, chunked, 0, 0),
        ),
        (
            "product, some staged",
            layout_with(0, all, dense, all, MIXED_STAGING),
        ),
    ];
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
        // Far above every IPv6 start: past `usize` buckets of a fine index.
        "fe80::1",
        "ff02::1",
    ] {
        peers.push(extra.parse().unwrap());
    }
    let mut queries = Vec::new();
    let mut wants = Vec::new();
    for pod in cluster.inventory.pod_ids() {
        for direction in Direction::BOTH {
            for &peer in &peers {
                for &(protocol, port) in packets {
                    let has_ports = protocol.has_ports() || protocol == Protocol::UDPLITE;
                    let sources: &[u16] = if has_ports { source_ports } else { &[0] };
                    for &source in sources {
                        let context = || {
                            format!(
                                "pod {} {:?} peer {} {}/{} from port {}\n{}",
                                cluster.inventory.pod(pod).key(),
                                direction,
                                peer,
                                protocol,
                                port,
                                source,
                                text
                            )
                        };
                        let want = reference::decide(
                            &cluster, pod, direction, peer, protocol, port, source,
                        );
                        queries.push(Query {
                            pod,
                            direction,
                            peer,
                            protocol,
                            port,
                            source_port: source,
                        });
                        wants.push(want);
                        let want_logged = reference::logged(
                            &cluster, pod, direction, peer, protocol, port, source,
                        );
                        for (layout, c) in &layouts {
                            let got = c.decide(pod, direction, peer, protocol, port, source);
                            prop_assert_eq!(got, want, "{}: {}", layout, context());
                            let logged = c.logged(pod, direction, peer, protocol, port, source);
                            prop_assert_eq!(
                                logged,
                                want_logged,
                                "logged, {}: {}",
                                layout,
                                context()
                            );
                        }
                    }
                }
            }
        }
    }
    // The same answers from `decide_each`, whose groups mix pods, directions and peers, and
    // from `connection_each` between every two parties (pods, and the other addresses).
    let parties: Vec<Party> = cluster
        .inventory
        .pod_ids()
        .flat_map(|pod| {
            let ips = cluster.inventory.pod(pod).ips.clone();
            ips.into_iter()
                .map(move |address| Party::Pod { pod, address })
        })
        .chain(peers.iter().map(|&a| Party::External(a)))
        .collect();
    let pairs: Vec<(Party, Party)> = parties
        .iter()
        .flat_map(|&from| parties.iter().map(move |&to| (from, to)))
        .collect();
    for (layout, c) in &layouts {
        let mut decisions = vec![Decision::NotIsolated; queries.len()];
        c.decide_each(&queries, &mut decisions);
        for ((got, want), q) in decisions.iter().zip(&wants).zip(&queries) {
            prop_assert_eq!(got, want, "decide_each, {}: {:?}\n{}", layout, q, text);
        }
        for &(protocol, port) in packets.iter().take(3) {
            let each = c.connection_each(&pairs, protocol, port, source_ports[0]);
            prop_assert_eq!(each.len(), pairs.len());
            for (&(from, to), got) in pairs.iter().zip(&each) {
                let want = c.connection(from, to, protocol, port, source_ports[0]);
                prop_assert_eq!(
                    *got,
                    want,
                    "connection_each, {}: {:?} → {:?}\n{}",
                    layout,
                    from,
                    to,
                    text
                );
            }
        }
    }
    Ok(())
}
