//! The filter: for each frame of a pod attachment, parse it, find its connection in the flow
//! table, and on a miss ask the classifier; forward or drop. ARP and neighbour discovery pass;
//! what cannot be parsed is dropped and counted by reason.
//!
//! It owns one flow table and reads the published classifier between batches (`tick`), so a
//! policy swap never stops traffic: the next batch simply uses the new generation.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use policy::published::Generation;
use policy::{Decision, Direction, PodId, Published, Query};

use crate::ahead::{Ahead, Asked};
use crate::checksum::complete_partial_l4_checksum;
use crate::counters::{bump, AttachmentCounters};
use crate::flow_table::{
    ExistingConnections, FlowConfig, FlowDirection, FlowKey, FlowTable, Lookup,
    Verdict as FlowVerdict,
};
use crate::frame::{self, Frame, Icmp, Packet, TcpFlags};
use crate::port::{Framing, Judge, Side, Verdict};

/// How the filter treats connections and checksums.
#[derive(Debug, Clone, Copy)]
pub struct FilterConfig {
    pub flows: FlowConfig,
    /// Complete partial TCP/UDP checksums (veth TX checksum offload leaves them partial, and
    /// AF_XDP does not carry the "partial" flag along).
    pub complete_checksums: bool,
    /// How many flow-table slots to sweep per batch at most (an idle worker sweeps this many;
    /// a busy one only what the table's sweep pace asks, see `FlowTable::expire_paced`).
    pub expiry_budget: usize,
    /// Decide a batch's new connections together, before judging it, where the classifier
    /// interleaves lookups (see [`crate::ahead`]). Off: each is decided when it is judged.
    pub decide_ahead: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            flows: FlowConfig::default(),
            complete_checksums: true,
            expiry_budget: 64,
            decide_ahead: true,
        }
    }
}

impl FilterConfig {
    pub fn with_existing_connections(mut self, existing: ExistingConnections) -> Self {
        self.flows.existing = existing;
        self
    }
}

pub struct Filter {
    published: Arc<Published>,
    current: Arc<Generation>,
    /// `namespace/name` of each attachment's pod.
    pods: Vec<String>,
    /// Each attachment's pod in the current generation's inventory.
    pod_ids: Vec<Option<PodId>>,
    /// Local pod addresses → attachment, for routed ports.
    local_addresses: AHashMap<IpAddr, u32>,
    flows: FlowTable,
    ahead: Ahead,
    /// `config.decide_ahead`, where the current classifier interleaves lookups.
    ahead_enabled: bool,
    counters: Arc<[AttachmentCounters]>,
    config: FilterConfig,
    start: Instant,
    now: u64,
}

impl Filter {
    pub fn new(
        published: Arc<Published>,
        pods: Vec<String>,
        counters: Arc<[AttachmentCounters]>,
        config: FilterConfig,
    ) -> Result<Filter, crate::flow_table::ConfigError> {
        let current = published.load_full();
        let mut filter = Filter {
            published,
            current,
            pods,
            pod_ids: Vec::new(),
            local_addresses: AHashMap::new(),
            flows: FlowTable::new(config.flows)?,
            ahead: Ahead::default(),
            ahead_enabled: false,
            counters,
            config,
            start: Instant::now(),
            now: 0,
        };
        filter.adopt_current();
        Ok(filter)
    }

    /// Between batches: read the clock, adopt a newly published classifier, expire some flows.
    /// `handled`: frames the last batch moved. A busy filter sweeps at the table's steady pace
    /// (every slot swept is a cold memory access the frames wait for, and a full table makes
    /// room by itself); an idle one sweeps the whole budget.
    pub fn tick(&mut self, handled: usize) {
        self.now = self.start.elapsed().as_nanos() as u64;
        if self.published.load().number != self.current.number {
            self.current = self.published.load_full();
            self.adopt_current();
        }
        match handled {
            0 => {
                self.flows.expire(self.now, self.config.expiry_budget);
            }
            _ => {
                self.flows.expire_paced(self.now, self.config.expiry_budget);
            }
        }
    }

    pub fn generation(&self) -> u64 {
        self.current.number
    }

    /// What the filter takes from the current generation: its pods, their addresses, and
    /// whether to decide ahead. Answers taken ahead under the last one are forgotten.
    fn adopt_current(&mut self) {
        self.ahead.clear();
        self.ahead_enabled =
            self.config.decide_ahead && self.current.classifier.interleaves_lookups();
        let inventory = &self.current.classifier.cluster().inventory;
        self.local_addresses.clear();
        // An attachment named by an address is a host outside the cluster (routed ports attach
        // those too): no policy applies to it, but traffic is routed to it.
        for (attachment, key) in self.pods.iter().enumerate() {
            if let Ok(ip) = key.parse::<IpAddr>() {
                self.local_addresses.insert(ip, attachment as u32);
            }
        }
        self.pod_ids = self
            .pods
            .iter()
            .map(|key| {
                let (ns, name) = key.split_once('/')?;
                inventory.pod_id(ns, name)
            })
            .collect();
        for (attachment, pod) in self.pod_ids.iter().enumerate() {
            if let Some(pod) = pod {
                for ip in &inventory.pod(*pod).ips {
                    self.local_addresses.insert(*ip, attachment as u32);
                }
            }
        }
    }

    /// The pod of `attachment` and the peer of `packet` travelling `direction`, when policy
    /// applies: not for a pod the manifests do not know (no policy selects it), nor for a pod
    /// reaching itself by any of its addresses.
    fn policy_party(
        &self,
        attachment: u32,
        direction: Direction,
        packet: &Packet,
    ) -> Option<(PodId, IpAddr)> {
        let pod = self.pod_ids[attachment as usize]?;
        let (local, peer) = match direction {
            Direction::Egress => (packet.src, packet.dst),
            Direction::Ingress => (packet.dst, packet.src),
        };
        (local != peer && self.local_addresses.get(&peer) != Some(&attachment))
            .then_some((pod, peer))
    }

    /// The policy verdict for `packet` at `attachment`, as the first packet of its connection;
    /// with `log`, also the log line of a Log rule it meets. Takes the answer decided ahead for
    /// this batch where there is one.
    fn decide(
        &mut self,
        attachment: u32,
        direction: Direction,
        packet: &Packet,
        log: bool,
    ) -> Decision {
        let asked = Asked::of(attachment, direction, packet);
        // An answer taken ahead was asked of the same pod and peer.
        let (decided, pod, peer) = match self.ahead.answer(&asked) {
            Some((decided, query)) => (decided, query.pod, query.peer),
            None => {
                let Some((pod, peer)) = self.policy_party(attachment, direction, packet) else {
                    return Decision::NotIsolated;
                };
                let query = classifier_query(pod, peer, direction, packet);
                (self.current.classifier.decide_query(&query), pod, peer)
            }
        };
        if log {
            self.log_if_asked(attachment, (pod, peer), direction, packet, decided);
        }
        decided
    }

    /// Where the classifier interleaves lookups: the frames of this batch that the flow table
    /// will not answer, decided together (see [`crate::ahead`]).
    fn decide_ahead(&mut self) {
        let seen = self.ahead.take_seen();
        let generation = self.current.number;
        for &(attachment, direction, packet) in &seen {
            let lookup = self
                .flows
                .peek(&flow_key(attachment, &packet), self.now, generation);
            let Some((direction, packet)) = to_decide(lookup, direction, &packet) else {
                continue;
            };
            // Not isolated, or talking to itself: no lookup to make.
            if let Some((pod, peer)) = self.policy_party(attachment, direction, &packet) {
                let query = classifier_query(pod, peer, direction, &packet);
                self.ahead
                    .ask(Asked::of(attachment, direction, &packet), query);
            }
        }
        self.ahead.decide(&self.current.classifier, seen);
    }

    /// Answers taken ahead and used since the filter started.
    pub fn decided_ahead(&self) -> u64 {
        self.ahead.used()
    }

    /// Writes the log line of a new connection of `party` (its pod and peer) that meets a
    /// Calico Log rule on its way to a verdict, and counts it.
    fn log_if_asked(
        &self,
        attachment: u32,
        (pod, peer): (PodId, IpAddr),
        direction: Direction,
        packet: &Packet,
        decided: Decision,
    ) {
        let classifier = &self.current.classifier;
        let port = packet.classifier_port();
        let source_port = packet.classifier_source_port();
        let Some(rule) =
            classifier.logged(pod, direction, peer, packet.protocol, port, source_port)
        else {
            return;
        };
        bump(&self.counters[attachment as usize].logged);
        let cluster = classifier.cluster();
        tracing::info!(
            target: "podwall::policy_log",
            pod = %cluster.inventory.pod(pod).key(),
            direction = %direction,
            policy = %cluster.policies[rule.policy as usize].key(),
            rule = %format_args!("spec.{}[{}]", rule.direction.field(), rule.rule),
            src = %packet.src,
            dst = %packet.dst,
            packet = %policy::probe::packet_label(packet.protocol, port),
            allowed = decided.allows(),
            "Log rule hit by a new connection"
        );
    }

    fn judge_packet(
        &mut self,
        attachment: u32,
        side: Side,
        packet: &Packet,
        bytes: u32,
    ) -> Verdict {
        let direction = direction_of(side);
        let generation = self.current.number;
        if let Some(Icmp::Error { embedded, .. }) = packet.icmp {
            // An ICMP error passes only when it is about a connection this attachment allowed.
            let key = FlowKey::for_embedded(
                attachment,
                embedded.protocol,
                embedded.src,
                embedded.src_port,
                embedded.dst,
                embedded.dst_port,
            );
            return match self.flows.peek(&key, self.now, generation) {
                Lookup::Hit { verdict, .. } if verdict.allows() => Verdict::Forward,
                _ => {
                    bump(&self.counters[attachment as usize].icmp_unrelated);
                    Verdict::Drop
                }
            };
        }
        let key = flow_key(attachment, packet);
        let flags = packet.tcp_flags;
        let lookup = self.flows.lookup(&key, flags, bytes, self.now, generation);
        let decided = match lookup {
            Lookup::Hit { verdict, .. } => return forward_if(verdict.allows()),
            Lookup::Miss => self.decide(attachment, direction, packet, true),
            // A known connection decided under an older policy: decide it again as its
            // initiator opened it.
            Lookup::Stale {
                direction: flow_direction,
            } => {
                let (opened, original) = as_opened(flow_direction, direction, packet);
                self.decide(attachment, opened, &original, false)
            }
        };
        if decided != Decision::NotIsolated {
            // A lookup was made: the next batch from here may be worth deciding ahead.
            self.ahead.count_decided(Ahead::source(attachment, side));
        }
        let counters = &self.counters[attachment as usize];
        let allowed = decided.allows();
        let d = direction.index();
        if allowed {
            bump(&counters.allowed[d]);
        } else {
            bump(&counters.denied[d]);
        }
        let tag = decided.rule().map_or(0, |rule| rule.policy + 1);
        let verdict = if allowed {
            FlowVerdict::Allow { tag }
        } else {
            FlowVerdict::Deny { tag }
        };
        // Not being cached (a full shard of live connections) only means the next packet of the
        // flow is decided again.
        let _ = self
            .flows
            .insert(&key, flags, bytes, verdict, generation, self.now);
        forward_if(allowed)
    }
}

/// The addresses, protocol and ports of a plain IPv4 or IPv6 TCP, UDP or SCTP frame, read at
/// fixed offsets without validation: only a hint, for prefetching and for deciding ahead
/// (anything else, or anything odd, gets `None`; the frame is parsed properly when it is
/// judged). The other fields are left empty.
fn quick_packet(framing: Framing, frame: &[u8]) -> Option<Packet> {
    let ip = match framing {
        Framing::Ethernet => {
            let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
            if ethertype != 0x0800 && ethertype != 0x86dd {
                return None;
            }
            frame.get(14..)?
        }
        Framing::Ip => frame,
    };
    let (protocol, src, dst, l4): (u8, IpAddr, IpAddr, &[u8]) = match ip.first()? >> 4 {
        4 => {
            let header = usize::from(ip[0] & 0x0f) * 4;
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (*ip.get(9)?, src.into(), dst.into(), ip.get(header..)?)
        }
        6 => {
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (*ip.get(6)?, src.into(), dst.into(), ip.get(40..)?)
        }
        _ => return None,
    };
    if !matches!(protocol, 6 | 17 | 132) {
        return None;
    }
    Some(Packet {
        src,
        dst,
        protocol: policy::Protocol(protocol),
        src_port: u16::from_be_bytes([*l4.first()?, *l4.get(1)?]),
        dst_port: u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]),
        tcp_flags: TcpFlags::default(),
        icmp: None,
        l3_offset: 0,
        l4_offset: 0,
        l4_len: 0,
    })
}

/// What deciding a packet that the flow table answered `lookup` for means: the direction
/// and packet to decide (`None`: a hit, nothing to decide). A miss is a new connection; a
/// known connection decided under an older policy is decided as its initiator opened it.
fn to_decide(lookup: Lookup, direction: Direction, packet: &Packet) -> Option<(Direction, Packet)> {
    match lookup {
        Lookup::Hit { .. } => None,
        Lookup::Miss => Some((direction, *packet)),
        Lookup::Stale {
            direction: flow_direction,
        } => Some(as_opened(flow_direction, direction, packet)),
    }
}

/// A packet of a known connection travelling `direction`, as the connection's initiator sent
/// it: itself if it goes the `Original` way, else with its ends swapped.
fn as_opened(
    flow_direction: FlowDirection,
    direction: Direction,
    packet: &Packet,
) -> (Direction, Packet) {
    match flow_direction {
        FlowDirection::Original => (direction, *packet),
        FlowDirection::Reply => {
            let original = Packet {
                src: packet.dst,
                dst: packet.src,
                src_port: packet.dst_port,
                dst_port: packet.src_port,
                icmp: match packet.icmp {
                    Some(Icmp::EchoReply { id, code }) => Some(Icmp::EchoRequest { id, code }),
                    other => other,
                },
                ..*packet
            };
            (opposite(direction), original)
        }
    }
}

/// The classifier's question for `packet` of `pod` travelling `direction` with `peer`.
fn classifier_query(pod: PodId, peer: IpAddr, direction: Direction, packet: &Packet) -> Query {
    Query {
        pod,
        direction,
        peer,
        protocol: packet.protocol,
        port: packet.classifier_port(),
        source_port: packet.classifier_source_port(),
    }
}

fn forward_if(allowed: bool) -> Verdict {
    if allowed {
        Verdict::Forward
    } else {
        Verdict::Drop
    }
}

fn parse(framing: Framing, bytes: &[u8]) -> Result<Frame, frame::DropReason> {
    match framing {
        Framing::Ethernet => frame::parse(bytes),
        Framing::Ip => frame::parse_ip(bytes),
    }
}

/// Frames from the pod leave it (egress); frames from the node arrive at it (ingress).
fn direction_of(side: Side) -> Direction {
    match side {
        Side::Pod => Direction::Egress,
        Side::Node => Direction::Ingress,
    }
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn flow_key(attachment: u32, packet: &Packet) -> FlowKey {
    match packet.icmp {
        Some(Icmp::EchoRequest { id, .. } | Icmp::EchoReply { id, .. }) => {
            FlowKey::icmp_echo(attachment, packet.protocol, packet.src, packet.dst, id)
        }
        _ => FlowKey::new(
            attachment,
            packet.protocol,
            packet.src,
            packet.src_port,
            packet.dst,
            packet.dst_port,
        ),
    }
}

impl Judge for Filter {
    fn prefetch(&mut self, attachment: u32, side: Side, framing: Framing, frame: &[u8]) {
        let collects = self
            .ahead
            .collects(self.ahead_enabled, Ahead::source(attachment, side));
        if let Some(packet) = quick_packet(framing, frame) {
            self.flows.prefetch_slot(&flow_key(attachment, &packet));
            if collects {
                self.ahead.see(attachment, direction_of(side), packet);
            }
        }
    }

    fn prefetch_batch(&mut self) {
        self.flows.prefetch_entries();
        self.decide_ahead();
    }

    fn judge(
        &mut self,
        attachment: u32,
        side: Side,
        framing: Framing,
        bytes: &mut [u8],
    ) -> Verdict {
        let verdict = match parse(framing, bytes) {
            Err(reason) => {
                bump(&self.counters[attachment as usize].malformed[reason.index()]);
                Verdict::Drop
            }
            Ok(Frame::Arp | Frame::NeighborDiscovery) => Verdict::Forward,
            Ok(Frame::Ip(packet)) => {
                let verdict = self.judge_packet(attachment, side, &packet, bytes.len() as u32);
                // Senders on veths (pods, and hosts on the bridge with no filter of their own)
                // leave TCP/UDP checksums partial; AF_XDP hands the bytes over without the
                // "partial" mark, so the checksum is finished here. Only partial sums are
                // rewritten: a corrupted packet stays corrupted and its receiver drops it. TUN
                // packets come complete from the kernel.
                if verdict == Verdict::Forward
                    && framing == Framing::Ethernet
                    && self.config.complete_checksums
                {
                    // A fragment or an unusual routing header is forwarded as it is.
                    let _ = complete_partial_l4_checksum(bytes, &packet);
                }
                verdict
            }
        };
        let counters = &self.counters[attachment as usize];
        match verdict {
            Verdict::Forward => bump(&counters.forwarded),
            Verdict::Drop => bump(&counters.dropped),
        }
        verdict
    }

    fn attachment_of(&self, address: IpAddr) -> Option<u32> {
        self.local_addresses.get(&address).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_table::ExistingConnections;
    use etherparse::PacketBuilder;
    use policy::{load, Classifier, Source};

    const CLUSTER: &str = "
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: x, labels: {app: web}}, status: {podIP: 10.0.0.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: client, namespace: x, labels: {app: client}}, status: {podIP: 10.0.0.2}}
";
    const WEB_FROM_CLIENT_ON_80: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
";
    const WEB_DENY_ALL: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
";

    const WEB: u32 = 0;
    const WEB_IP: [u8; 4] = [10, 0, 0, 1];
    const CLIENT_IP: [u8; 4] = [10, 0, 0, 2];
    const OUTSIDE_IP: [u8; 4] = [192, 0, 2, 9];

    fn classifier(policies: &str) -> Classifier {
        let cluster = load(&[
            Source::new("cluster.yaml", CLUSTER),
            Source::new("policies.yaml", policies),
        ])
        .unwrap();
        Classifier::compile(Arc::new(cluster))
    }

    fn filter(policies: &str, existing: ExistingConnections) -> (Filter, Arc<Published>) {
        let published = Arc::new(Published::new(classifier(policies)));
        let counters: Arc<[AttachmentCounters]> = vec![AttachmentCounters::default()].into();
        let config = FilterConfig {
            flows: FlowConfig {
                shards: 2,
                capacity_per_shard: 64,
                ..FlowConfig::default()
            },
            ..FilterConfig::default()
        }
        .with_existing_connections(existing);
        let filter = Filter::new(
            Arc::clone(&published),
            vec!["x/web".to_string()],
            counters,
            config,
        )
        .unwrap();
        (filter, published)
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool, ack: bool) -> Vec<u8> {
        let mut builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1024);
        if syn {
            builder = builder.syn();
        }
        if ack {
            builder = builder.ack(1);
        }
        let mut frame = Vec::new();
        builder.write(&mut frame, b"hello").unwrap();
        frame
    }

    /// An ICMP destination-unreachable from `from` about a TCP segment `quoted_src` → `quoted_dst`.
    fn icmp_error(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(from, to, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut frame, &quoted[14..])
            .unwrap();
        frame
    }

    fn judge(filter: &mut Filter, side: Side, mut frame: Vec<u8>) -> Verdict {
        filter.tick(0);
        filter.judge(WEB, side, Framing::Ethernet, &mut frame)
    }

    /// Calico: ping from anywhere allowed, TCP logged, then denied from outside and allowed
    /// from the client.
    const WEB_CALICO: &str = "
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  selector: app == 'web'
  ingress:
  - {action: Allow, protocol: ICMP, icmp: {type: 8}}
  - {action: Log, protocol: TCP}
  - {action: Deny, protocol: TCP, source: {notSelector: has(app)}}
  - {action: Allow, protocol: TCP, source: {selector: app == 'client'}}
";

    fn ping(src: [u8; 4], dst: [u8; 4], reply: bool) -> Vec<u8> {
        let kind = if reply {
            etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 7, seq: 1 })
        } else {
            etherparse::Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 1 })
        };
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .icmpv4(kind)
            .write(&mut frame, b"ping")
            .unwrap();
        frame
    }

    #[test]
    fn calico_rules_deny_log_and_match_icmp_types() {
        let (mut f, _) = filter(WEB_CALICO, ExistingConnections::Strict);
        // An echo request matches `icmp: {type: 8}`; an unsolicited echo reply (type 0) does not.
        assert_eq!(
            judge(&mut f, Side::Node, ping(OUTSIDE_IP, WEB_IP, false)),
            Verdict::Forward
        );
        assert_eq!(
            judge(&mut f, Side::Pod, ping(WEB_IP, OUTSIDE_IP, true)),
            Verdict::Forward
        );
        assert_eq!(
            judge(&mut f, Side::Node, ping(CLIENT_IP, WEB_IP, true)),
            Verdict::Drop
        );
        // TCP from outside: logged, then denied by the Deny rule; from the client: logged, allowed.
        let from_outside = tcp(OUTSIDE_IP, WEB_IP, 4000, 80, true, false);
        assert_eq!(judge(&mut f, Side::Node, from_outside), Verdict::Drop);
        let from_client = tcp(CLIENT_IP, WEB_IP, 4001, 80, true, false);
        assert_eq!(judge(&mut f, Side::Node, from_client), Verdict::Forward);
        // The next segment of an allowed connection is not a new connection: no second log.
        let again = tcp(CLIENT_IP, WEB_IP, 4001, 80, false, true);
        assert_eq!(judge(&mut f, Side::Node, again), Verdict::Forward);
        let counters = f.counters[0].snapshot();
        assert_eq!(counters.logged, 2);
        assert_eq!((counters.allowed_ingress, counters.denied_ingress), (2, 2));
    }

    #[test]
    fn an_allowed_connection_and_its_replies_pass_and_others_are_denied() {
        let (mut f, _) = filter(WEB_FROM_CLIENT_ON_80, ExistingConnections::Strict);
        let syn = tcp(CLIENT_IP, WEB_IP, 40000, 80, true, false);
        assert_eq!(judge(&mut f, Side::Node, syn), Verdict::Forward);
        // The reply leaves the isolated pod although no egress rule allows it.
        let syn_ack = tcp(WEB_IP, CLIENT_IP, 80, 40000, true, true);
        assert_eq!(judge(&mut f, Side::Pod, syn_ack), Verdict::Forward);
        // A connection the web pod starts itself is egress and denied.
        let out = tcp(WEB_IP, CLIENT_IP, 40001, 80, true, false);
        assert_eq!(judge(&mut f, Side::Pod, out), Verdict::Drop);
        // Another port, or another source, is denied.
        assert_eq!(
            judge(
                &mut f,
                Side::Node,
                tcp(CLIENT_IP, WEB_IP, 40002, 81, true, false)
            ),
            Verdict::Drop
        );
        assert_eq!(
            judge(
                &mut f,
                Side::Node,
                tcp(OUTSIDE_IP, WEB_IP, 40003, 80, true, false)
            ),
            Verdict::Drop
        );
        let counters = f.counters[0].snapshot();
        assert_eq!(
            (
                counters.allowed_ingress,
                counters.denied_ingress,
                counters.denied_egress
            ),
            (1, 2, 1)
        );
    }

    #[test]
    fn icmp_errors_pass_only_for_allowed_connections() {
        let (mut f, _) = filter(WEB_FROM_CLIENT_ON_80, ExistingConnections::Strict);
        let syn = tcp(CLIENT_IP, WEB_IP, 40000, 80, true, false);
        assert_eq!(judge(&mut f, Side::Node, syn.clone()), Verdict::Forward);
        let reply = tcp(WEB_IP, CLIENT_IP, 80, 40000, true, true);
        // The client's host reports the reply undeliverable: about an allowed connection.
        assert_eq!(
            judge(&mut f, Side::Node, icmp_error(CLIENT_IP, WEB_IP, &reply)),
            Verdict::Forward
        );
        // An error about a connection that never existed is dropped and counted.
        let stray = tcp(WEB_IP, OUTSIDE_IP, 80, 5555, false, true);
        assert_eq!(
            judge(&mut f, Side::Node, icmp_error(OUTSIDE_IP, WEB_IP, &stray)),
            Verdict::Drop
        );
        assert_eq!(f.counters[0].snapshot().icmp_unrelated, 1);
    }

    #[test]
    fn arp_passes_and_malformed_frames_are_dropped_and_counted() {
        let (mut f, _) = filter(WEB_DENY_ALL, ExistingConnections::Strict);
        let mut arp = vec![0xff; 6];
        arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend([0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend([2, 0, 0, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        assert_eq!(judge(&mut f, Side::Node, arp), Verdict::Forward);
        let mut truncated = tcp(CLIENT_IP, WEB_IP, 40000, 80, true, false);
        truncated.truncate(30);
        assert_eq!(judge(&mut f, Side::Node, truncated), Verdict::Drop);
        let snapshot = f.counters[0].snapshot();
        assert_eq!(snapshot.malformed.len(), 1, "{:?}", snapshot.malformed);
        assert_eq!(snapshot.malformed[0].1, 1);
    }

    fn policy_change_with(existing: ExistingConnections) -> Verdict {
        let (mut f, published) = filter(WEB_FROM_CLIENT_ON_80, existing);
        assert_eq!(
            judge(
                &mut f,
                Side::Node,
                tcp(CLIENT_IP, WEB_IP, 40000, 80, true, false)
            ),
            Verdict::Forward
        );
        assert_eq!(
            judge(
                &mut f,
                Side::Pod,
                tcp(WEB_IP, CLIENT_IP, 80, 40000, true, true)
            ),
            Verdict::Forward
        );
        published.publish(classifier(WEB_DENY_ALL));
        // A new connection is denied whatever the mode.
        assert_eq!(
            judge(
                &mut f,
                Side::Node,
                tcp(CLIENT_IP, WEB_IP, 40001, 80, true, false)
            ),
            Verdict::Drop
        );
        assert_eq!(f.generation(), 1);
        // The open connection's next packet (a reply, first) follows the mode.
        judge(
            &mut f,
            Side::Pod,
            tcp(WEB_IP, CLIENT_IP, 80, 40000, false, true),
        )
    }

    #[test]
    fn open_connections_are_decided_again_after_a_policy_change_in_strict_mode() {
        assert_eq!(
            policy_change_with(ExistingConnections::Strict),
            Verdict::Drop
        );
    }

    #[test]
    fn open_connections_keep_their_verdict_in_keep_mode() {
        assert_eq!(
            policy_change_with(ExistingConnections::Keep),
            Verdict::Forward
        );
    }

    #[test]
    fn a_pod_always_reaches_itself() {
        let (mut f, _) = filter(WEB_DENY_ALL, ExistingConnections::Strict);
        assert_eq!(
            judge(
                &mut f,
                Side::Pod,
                tcp(WEB_IP, WEB_IP, 40000, 80, true, false)
            ),
            Verdict::Forward
        );
    }
}
