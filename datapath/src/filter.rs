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
use policy::{Decision, Direction, PodId, Published};

use crate::checksum::complete_partial_l4_checksum;
use crate::counters::{bump, AttachmentCounters};
use crate::flow_table::{
    ExistingConnections, FlowConfig, FlowDirection, FlowKey, FlowTable, Lookup, TcpFlags,
    Verdict as FlowVerdict,
};
use crate::frame::{self, Frame, Icmp, Packet};
use crate::port::{Framing, Judge, Side, Verdict};

/// How the filter treats connections and checksums.
#[derive(Debug, Clone, Copy)]
pub struct FilterConfig {
    pub flows: FlowConfig,
    /// Complete partial TCP/UDP checksums (veth TX checksum offload leaves them partial, and
    /// AF_XDP does not carry the "partial" flag along).
    pub complete_checksums: bool,
    /// How many expired flows to sweep per batch at most.
    pub expiry_budget: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            flows: FlowConfig::default(),
            complete_checksums: true,
            expiry_budget: 64,
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
            counters,
            config,
            start: Instant::now(),
            now: 0,
        };
        filter.resolve_pods();
        Ok(filter)
    }

    /// Between batches: read the clock, adopt a newly published classifier, expire some flows.
    pub fn tick(&mut self) {
        self.now = self.start.elapsed().as_nanos() as u64;
        if self.published.load().number != self.current.number {
            self.current = self.published.load_full();
            self.resolve_pods();
        }
        self.flows.expire(self.now, self.config.expiry_budget);
    }

    pub fn generation(&self) -> u64 {
        self.current.number
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    fn resolve_pods(&mut self) {
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

    /// The policy verdict for a new connection of `packet` at `attachment`.
    fn decide(&self, attachment: u32, direction: Direction, packet: &Packet) -> Decision {
        let Some(pod) = self.pod_ids[attachment as usize] else {
            // A pod the manifests do not know is selected by no policy.
            return Decision::NotIsolated;
        };
        let (local, peer) = match direction {
            Direction::Egress => (packet.src, packet.dst),
            Direction::Ingress => (packet.dst, packet.src),
        };
        let classifier = &self.current.classifier;
        // A pod can always reach itself, whichever of its addresses it uses.
        if local == peer || self.local_addresses.get(&peer) == Some(&attachment) {
            return Decision::NotIsolated;
        }
        classifier.decide(pod, direction, peer, packet.protocol, packet.dst_port)
    }

    fn judge_packet(
        &mut self,
        attachment: u32,
        side: Side,
        packet: &Packet,
        bytes: u32,
    ) -> Verdict {
        let counters = &self.counters[attachment as usize];
        let direction = match side {
            Side::Pod => Direction::Egress,
            Side::Node => Direction::Ingress,
        };
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
                    bump(&counters.icmp_unrelated);
                    Verdict::Drop
                }
            };
        }
        let key = flow_key(attachment, packet);
        let flags = TcpFlags::from_bits(packet.tcp_flags.bits());
        let decided = match self.flows.lookup(&key, flags, bytes, self.now, generation) {
            Lookup::Hit { verdict, .. } => return forward_if(verdict.allows()),
            Lookup::Miss => self.decide(attachment, direction, packet),
            // A known connection decided under an older policy: decide it again as its
            // initiator opened it.
            Lookup::Stale {
                direction: FlowDirection::Original,
            } => self.decide(attachment, direction, packet),
            Lookup::Stale {
                direction: FlowDirection::Reply,
            } => {
                let original = Packet {
                    src: packet.dst,
                    dst: packet.src,
                    src_port: packet.dst_port,
                    dst_port: packet.src_port,
                    ..*packet
                };
                self.decide(attachment, opposite(direction), &original)
            }
        };
        let allowed = decided.allows();
        let d = direction.index();
        if allowed {
            bump(&counters.allowed[d]);
        } else {
            bump(&counters.denied[d]);
        }
        let tag = match decided {
            Decision::Allowed(rule) => rule.policy + 1,
            _ => 0,
        };
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

fn forward_if(allowed: bool) -> Verdict {
    if allowed {
        Verdict::Forward
    } else {
        Verdict::Drop
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
        Some(Icmp::EchoRequest { id } | Icmp::EchoReply { id }) => {
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
    fn judge(
        &mut self,
        attachment: u32,
        side: Side,
        framing: Framing,
        bytes: &mut [u8],
    ) -> Verdict {
        let parsed = match framing {
            Framing::Ethernet => frame::parse(bytes),
            Framing::Ip => frame::parse_ip(bytes),
        };
        let verdict = match parsed {
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
