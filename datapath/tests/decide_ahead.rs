//! Decisions taken ahead for a batch's new connections (`FilterConfig::decide_ahead`) give
//! exactly the verdicts, counters and log hits of deciding each frame as it is judged, across
//! batches that open, repeat, answer and re-decide connections, and policy changes.

use std::sync::Arc;

use datapath::counters::{AttachmentCounters, Snapshot};
use datapath::filter::{Filter, FilterConfig};
use datapath::flow_table::{ExistingConnections, FlowConfig};
use datapath::port::{Framing, Judge, Side, Verdict};
use etherparse::PacketBuilder;
use policy::compile::CompileOptions;
use policy::{load, Classifier, Published, Source};
use proptest::prelude::*;

const CLUSTER: &str = "
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: x, labels: {app: web}}, status: {podIP: 10.0.0.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: x, labels: {app: client}}, status: {podIP: 10.0.0.2}}
";

/// Addresses and ports only, so the tables get products; a Log rule, Deny before Allow.
const FIRST: &str = "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: app == 'web'
  types: [Ingress, Egress]
  ingress:
  - {action: Deny, protocol: TCP, source: {nets: [192.0.2.0/28]}, destination: {ports: [80]}}
  - {action: Log, protocol: TCP, destination: {ports: [443]}}
  - {action: Allow, protocol: TCP, source: {nets: [192.0.2.0/24, 10.0.0.0/8]}, destination: {ports: [80, 443, '8000:8080']}}
  - {action: Allow, protocol: UDP, destination: {ports: [53]}}
  egress:
  - {action: Allow, protocol: TCP, destination: {nets: [192.0.2.0/24], ports: [443]}}
  - {action: Allow, protocol: UDP, destination: {ports: [53]}}
";

/// What the policy becomes: some allowed connections are now denied and some denied ones
/// allowed, so open connections are decided again (strict mode).
const SECOND: &str = "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: app == 'web'
  types: [Ingress, Egress]
  ingress:
  - {action: Log, protocol: UDP}
  - {action: Allow, protocol: TCP, source: {nets: [192.0.2.16/28, 198.51.100.0/24]}, destination: {ports: ['80:9090']}}
  - {action: Deny, protocol: UDP, source: {nets: [10.0.0.0/8]}}
  - {action: Allow, protocol: UDP}
  egress:
  - {action: Allow, protocol: TCP, destination: {ports: [80, 443]}}
";

const WEB: [u8; 4] = [10, 0, 0, 1];
const PEERS: [[u8; 4]; 6] = [
    [10, 0, 0, 2],
    [192, 0, 2, 5],
    [192, 0, 2, 20],
    [192, 0, 2, 200],
    [198, 51, 100, 7],
    [203, 0, 113, 9],
];
const WEB_PORTS: [u16; 5] = [53, 80, 443, 8080, 9090];

/// Every product staged, so `decide_each` interleaves even these small tables.
fn classifier(policies: &str) -> Classifier {
    let cluster = load(&[
        Source::new("cluster.yaml", CLUSTER),
        Source::new("policies.yaml", policies),
    ])
    .unwrap();
    let options = CompileOptions {
        staged_product_bytes: 0,
        ..CompileOptions::default()
    };
    Classifier::compile_with(Arc::new(cluster), options)
}

struct Judged {
    filter: Filter,
    published: Arc<Published>,
    counters: Arc<[AttachmentCounters]>,
}

/// A filter for web whose flow table holds `capacity` connections. One shard: which
/// connections a full table evicts then does not depend on the table's random hash seed.
fn judged(decide_ahead: bool, capacity: usize) -> Judged {
    let published = Arc::new(Published::new(classifier(FIRST)));
    assert!(published.load().classifier.interleaves_lookups());
    let counters: Arc<[AttachmentCounters]> = vec![AttachmentCounters::default()].into();
    let config = FilterConfig {
        flows: FlowConfig {
            shards: 1,
            capacity_per_shard: capacity,
            ..FlowConfig::default()
        },
        decide_ahead,
        ..FilterConfig::default()
    }
    .with_existing_connections(ExistingConnections::Strict);
    let filter = Filter::new(
        Arc::clone(&published),
        vec!["x/web".to_string()],
        Arc::clone(&counters),
        config,
    )
    .unwrap();
    Judged {
        filter,
        published,
        counters,
    }
}

/// One frame: which side it comes from, the peer, the peer's port, web's port, UDP or TCP
/// with SYN and ACK as given.
#[derive(Debug, Clone, Copy)]
struct Sent {
    from_pod: bool,
    peer: usize,
    peer_port: u16,
    web_port: usize,
    udp: bool,
    syn: bool,
    ack: bool,
}

fn frame(sent: &Sent) -> Vec<u8> {
    let peer = PEERS[sent.peer];
    let web_port = WEB_PORTS[sent.web_port];
    let (src, dst, sport, dport) = if sent.from_pod {
        (WEB, peer, web_port, sent.peer_port)
    } else {
        (peer, WEB, sent.peer_port, web_port)
    };
    let ip = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
    let mut frame = Vec::new();
    if sent.udp {
        ip.udp(sport, dport).write(&mut frame, b"hello").unwrap();
    } else {
        let mut tcp = ip.tcp(sport, dport, 1, 1024);
        if sent.syn {
            tcp = tcp.syn();
        }
        if sent.ack {
            tcp = tcp.ack(1);
        }
        tcp.write(&mut frame, b"hello").unwrap();
    }
    frame
}

/// A batch as an AF_XDP port hands it over: every frame prefetched, then each judged.
fn run_batch(judged: &mut Judged, batch: &[Sent]) -> Vec<Verdict> {
    let filter = &mut judged.filter;
    filter.tick(batch.len());
    let mut frames: Vec<(Side, Vec<u8>)> = batch
        .iter()
        .map(|sent| {
            let side = if sent.from_pod { Side::Pod } else { Side::Node };
            (side, frame(sent))
        })
        .collect();
    for (side, frame) in &frames {
        filter.prefetch(0, *side, Framing::Ethernet, frame);
    }
    filter.prefetch_batch();
    frames
        .iter_mut()
        .map(|(side, frame)| filter.judge(0, *side, Framing::Ethernet, frame))
        .collect()
}

fn snapshot(judged: &Judged) -> Snapshot {
    judged.counters[0].snapshot()
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        any::<bool>(),
        0..PEERS.len(),
        40_000u16..40_004,
        0..WEB_PORTS.len(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(from_pod, peer, peer_port, web_port, udp, syn, ack)| Sent {
                from_pod,
                peer,
                peer_port,
                web_port,
                udp,
                syn,
                ack,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn deciding_ahead_changes_no_verdict_counter_or_log(
        batches in prop::collection::vec(prop::collection::vec(sent(), 1..24), 1..12),
        change_at in 0usize..12,
    ) {
        // A small table, so that connections are evicted and opened again.
        let mut ahead = judged(true, 32);
        let mut direct = judged(false, 32);
        for (b, batch) in batches.iter().enumerate() {
            if b == change_at {
                ahead.published.publish(classifier(SECOND));
                direct.published.publish(classifier(SECOND));
            }
            let with_ahead = run_batch(&mut ahead, batch);
            let without = run_batch(&mut direct, batch);
            prop_assert_eq!(&with_ahead, &without, "batch {}: {:?}", b, batch);
        }
        prop_assert_eq!(snapshot(&ahead), snapshot(&direct));
        prop_assert_eq!(direct.filter.decided_ahead(), 0);
    }
}

fn new_connections(peer_port: u16) -> Vec<Sent> {
    (0..PEERS.len())
        .flat_map(|peer| {
            (0..WEB_PORTS.len()).map(move |web_port| Sent {
                from_pod: false,
                peer,
                peer_port,
                web_port,
                udp: false,
                syn: true,
                ack: false,
            })
        })
        .collect()
}

#[test]
fn a_batch_after_one_that_decided_connections_is_decided_ahead() {
    let mut ahead = judged(true, 2048);
    let mut direct = judged(false, 2048);
    // The first batch has no batch before it that decided anything: it is decided as judged.
    for peer_port in [40_000, 40_001] {
        let batch = new_connections(peer_port);
        assert_eq!(
            run_batch(&mut ahead, &batch),
            run_batch(&mut direct, &batch)
        );
    }
    // Every frame of the second batch was a new connection of an isolated pod.
    assert_eq!(
        ahead.filter.decided_ahead(),
        new_connections(0).len() as u64
    );
    assert_eq!(snapshot(&ahead), snapshot(&direct));
    assert!(snapshot(&ahead).logged > 0, "the Log rule is met");
}

#[test]
fn floods_are_decided_ahead_though_their_replies_come_between() {
    let mut ahead = judged(true, 2048);
    let mut direct = judged(false, 2048);
    let rounds = 4;
    for round in 0..rounds {
        // A port's batches alternate sides: the SYNs arrive from the node, the answers to
        // the allowed ones (flow-table hits) leave the pod in the batch after.
        let syns = new_connections(40_000 + round);
        assert_eq!(run_batch(&mut ahead, &syns), run_batch(&mut direct, &syns));
        let answers: Vec<Sent> = syns
            .iter()
            .map(|sent| Sent {
                from_pod: true,
                ack: true,
                ..*sent
            })
            .collect();
        assert_eq!(
            run_batch(&mut ahead, &answers),
            run_batch(&mut direct, &answers)
        );
    }
    // Every SYN batch after the first, whatever came from the pod's side in between.
    assert_eq!(
        ahead.filter.decided_ahead(),
        (rounds as u64 - 1) * new_connections(0).len() as u64
    );
    assert_eq!(snapshot(&ahead), snapshot(&direct));
}

#[test]
fn a_batch_after_one_that_decided_nothing_is_decided_as_judged() {
    let mut ahead = judged(true, 2048);
    let opening = new_connections(40_000);
    let opened = run_batch(&mut ahead, &opening);
    // The same connections' next segments: all flow-table hits, nothing decided.
    let established: Vec<Sent> = opening
        .iter()
        .map(|sent| Sent {
            syn: false,
            ack: true,
            ..*sent
        })
        .collect();
    assert_eq!(run_batch(&mut ahead, &established), opened);
    // So the batch after them is not asked ahead, though its connections are all new ...
    run_batch(&mut ahead, &new_connections(40_001));
    assert_eq!(ahead.filter.decided_ahead(), 0);
    // ... and the one after that is.
    run_batch(&mut ahead, &new_connections(40_002));
    assert_eq!(
        ahead.filter.decided_ahead(),
        new_connections(0).len() as u64
    );
}

#[test]
fn tables_that_fit_the_caches_are_never_decided_ahead() {
    let cluster = load(&[
        Source::new("cluster.yaml", CLUSTER),
        Source::new("policies.yaml", FIRST),
    ])
    .unwrap();
    let small = Classifier::compile(Arc::new(cluster));
    assert!(!small.interleaves_lookups());
    let mut judged = judged(true, 2048);
    judged.published.publish(small);
    for peer_port in [40_000, 40_001, 40_002] {
        run_batch(&mut judged, &new_connections(peer_port));
    }
    assert_eq!(judged.filter.decided_ahead(), 0);
}
