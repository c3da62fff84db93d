//! Connection tracking: the flow table that remembers what was decided for each connection, so
//! that only the first packet of a connection (and the first after a policy change) pays for a
//! classifier decision, and reply traffic of an allowed connection passes.
//!
//! What it does: maps a [`FlowKey`] (pod attachment + canonical 5-tuple, the same for both
//! directions) to the connection's protocol state, verdict, classifier generation, last-seen time
//! and per-direction counters. What it must not do: read a clock (the caller passes `now`, in
//! nanoseconds of a monotonic clock), allocate after [`FlowTable::new`], lock, log, or classify
//! (the caller decides with the classifier and reports back through [`FlowTable::insert`]).
//!
//! # Ownership
//! One worker thread owns one `FlowTable`: every method that changes it takes `&mut self`, so
//! there are no locks or atomics on the hot path. The table is `Send`, so it can be built on one
//! thread and moved to its worker. Shards still matter without threads: eviction and expiry work
//! is bounded per shard, and a later multi-worker design can hand shards to different workers.
//!
//! # Memory
//! The entries and the hash index of all shards are allocated once, in [`FlowTable::new`], as
//! two slabs that cannot grow, on transparent huge pages where the kernel gives them (lookups
//! with many flows then miss the cache but not the TLB). A shard holds at most `capacity_per_shard` flows; when it is full,
//! an insert reclaims an expired entry among the least recently seen ones, or else evicts the
//! least recently seen entry (O(1), through an intrusive LRU list of `u32` indices). Memory is
//! therefore fixed under any flood.
//!
//! The LRU order is kept to [`RELIST_AFTER_NS`]: a hit moves its entry to the front of the list
//! only when it has not moved there for that long. Moving an entry writes its two neighbours,
//! which with many flows are cold cache lines; a busy flow therefore pays for that once per
//! interval instead of once per packet, and eviction may pick an entry seen up to that much
//! later than the true least recently seen one.
//!
//! # Semantics the caller relies on
//! - **Lookup first, then insert.** [`FlowTable::lookup`] answers [`Lookup::Hit`] (use the cached
//!   verdict), [`Lookup::Miss`] (no usable entry: decide this packet as the first of a new
//!   connection, then insert) or [`Lookup::Stale`] (the connection exists but its verdict must be
//!   decided again; decide it *as its initiator opened it*, then insert, which only replaces the
//!   verdict and generation and keeps state and counters).
//! - **Generations.** With [`ExistingConnections::Strict`] (the default) any entry decided under a
//!   generation other than the one now in force is `Stale`. With [`ExistingConnections::Keep`]
//!   allowed connections keep their verdict, but a *denied* entry is still `Stale`: a new policy
//!   may allow it, and a cached denial must never outlive the policy that caused it.
//! - **Deny caching.** Denied flows are cached (a flood of one denied flow costs one classifier
//!   decision), with their own short idle timeout ([`Timeouts::denied`]), and a denied flow never
//!   evicts an allowed one: on a full shard a denial takes a free or expired slot, or the slot of
//!   the least recently seen entry if that one is denied too; otherwise it is not cached
//!   ([`Inserted::NotCached`]) and its next packet is classified again.
//! - **TCP mid-stream pickup.** A first packet without SYN (for example after podwall restarted)
//!   starts an `Established` entry, like Linux conntrack's loose mode, so that the connection
//!   keeps working when the policy allows it. The packet's sender is taken as the initiator. A
//!   SYN without ACK on a `Closed` or `Closing` entry starts a new connection (`Miss`).
//! - **Other protocols.** UDP and every protocol without its own rules here (GRE, ESP, …) use the
//!   UDP timeouts; SCTP and ICMP/ICMPv6 echo track New/Replied with their own timeouts.
//!   ICMP errors are not tracked: [`FlowKey::for_embedded`] and [`FlowTable::peek`] let the
//!   caller find the connection an error refers to.

use std::fmt;
use std::net::IpAddr;
use std::ops::AddAssign;
use std::time::Duration;

use policy::Protocol;

use crate::huge_slab::HugeSlab;

pub use crate::frame::TcpFlags;

/// "No entry" in the `u32` links of the LRU and free lists and in index slots.
const NIL: u32 = u32::MAX;

/// How long a hit leaves its entry where it is in the LRU list before moving it to the front
/// (see the module documentation). Far below any timeout, so expiry is unaffected.
pub const RELIST_AFTER_NS: u64 = 100_000_000;

/// How many of the least recently seen entries an insert into a full shard examines for an
/// expired one before it evicts. Timeouts differ by state, so the oldest entry is not always the
/// first to expire; a short bounded look finds the common case (an expired UDP or closed TCP flow
/// near the tail) without making any insert pay for a scan.
const RECLAIM_SCAN: usize = 8;

/// The fewest slots [`FlowTable::expire_paced`] sweeps at once.
const PACED_SWEEP_BATCH: usize = 32;

/// Largest `capacity_per_shard`: entry indices are `u32` with `NIL` reserved, and the index has
/// twice as many slots as the shard has entries.
const MAX_CAPACITY_PER_SHARD: usize = 1 << 30;

/// Largest shard count: the shard is picked from 32 bits of the hash.
const MAX_SHARDS: usize = 1 << 16;

/// A SYN that opens a connection (not the SYN-ACK answering one).
const fn is_opening_syn(flags: TcpFlags) -> bool {
    flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK)
}

/// The canonical, direction-free part of a key: what is hashed and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tuple {
    /// The endpoint that sorts first by (address, port); IPv4 addresses are stored IPv4-mapped.
    lo_addr: u128,
    hi_addr: u128,
    attachment: u32,
    lo_port: u16,
    hi_port: u16,
    protocol: u8,
    /// Kept apart from the addresses so that an IPv6 packet with IPv4-mapped addresses can never
    /// match an IPv4 connection.
    ipv6: bool,
}

/// Four writes instead of one per field (seven): the hash runs once per frame.
impl std::hash::Hash for Tuple {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.lo_addr);
        state.write_u128(self.hi_addr);
        state.write_u64(
            u64::from(self.attachment) << 32
                | u64::from(self.lo_port) << 16
                | u64::from(self.hi_port),
        );
        state.write_u16(u16::from(self.protocol) << 8 | u16::from(self.ipv6));
    }
}

impl Tuple {
    const EMPTY: Tuple = Tuple {
        lo_addr: 0,
        hi_addr: 0,
        attachment: 0,
        lo_port: 0,
        hi_port: 0,
        protocol: 0,
        ipv6: false,
    };

    /// Both endpoints are the same (a pod talking to itself from and to one port): the two
    /// directions cannot be told apart, and every packet counts as the initiator's.
    fn is_symmetric(&self) -> bool {
        self.lo_addr == self.hi_addr && self.lo_port == self.hi_port
    }
}

/// Identifies a connection on one pod attachment, and which way one packet of it travels.
///
/// Built once per packet from the parsed headers. Both directions of a connection give the same
/// table entry; the key also remembers the packet's direction, so the table can tell the
/// initiator's packets from the replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    tuple: Tuple,
    /// The packet travels from the `hi` endpoint to the `lo` one.
    from_hi: bool,
}

impl FlowKey {
    /// The key of a packet from `src:src_port` to `dst:dst_port` on `attachment` (the pod
    /// interface the flow belongs to). For protocols without ports pass 0 for both; for ICMP
    /// echo use [`FlowKey::icmp_echo`].
    pub fn new(
        attachment: u32,
        protocol: Protocol,
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
    ) -> FlowKey {
        let (src_addr, src_v6) = address_bits(src);
        let (dst_addr, dst_v6) = address_bits(dst);
        let from_hi = (src_addr, src_port) > (dst_addr, dst_port);
        let ((lo_addr, lo_port), (hi_addr, hi_port)) = if from_hi {
            ((dst_addr, dst_port), (src_addr, src_port))
        } else {
            ((src_addr, src_port), (dst_addr, dst_port))
        };
        FlowKey {
            tuple: Tuple {
                lo_addr,
                hi_addr,
                attachment,
                lo_port,
                hi_port,
                protocol: protocol.0,
                ipv6: src_v6 || dst_v6,
            },
            from_hi,
        }
    }

    /// The key of an ICMP or ICMPv6 echo request or reply: the echo identifier takes the place
    /// of both ports, so a reply (addresses swapped, same identifier) finds the request's entry.
    pub fn icmp_echo(
        attachment: u32,
        protocol: Protocol,
        src: IpAddr,
        dst: IpAddr,
        identifier: u16,
    ) -> FlowKey {
        FlowKey::new(attachment, protocol, src, identifier, dst, identifier)
    }

    /// The key of the connection an ICMP error refers to, from the header embedded in the error
    /// (pass its fields as written; for an embedded echo pass the identifier as both ports).
    ///
    /// The embedded header is a packet the error's *recipient* sent, so it travels the opposite
    /// way of the error; the key returned is oriented like the error itself. [`FlowTable::peek`]
    /// with it answers whether the connection exists and which direction the error travels in.
    pub fn for_embedded(
        attachment: u32,
        protocol: Protocol,
        embedded_src: IpAddr,
        embedded_src_port: u16,
        embedded_dst: IpAddr,
        embedded_dst_port: u16,
    ) -> FlowKey {
        FlowKey::new(
            attachment,
            protocol,
            embedded_src,
            embedded_src_port,
            embedded_dst,
            embedded_dst_port,
        )
        .reversed()
    }

    /// The same connection, seen travelling the other way.
    pub fn reversed(self) -> FlowKey {
        FlowKey {
            tuple: self.tuple,
            // Keep `FlowKey::new`'s choice for a symmetric tuple: both directions give `false`.
            from_hi: !self.from_hi && !self.tuple.is_symmetric(),
        }
    }

    pub fn attachment(&self) -> u32 {
        self.tuple.attachment
    }

    pub fn protocol(&self) -> Protocol {
        Protocol(self.tuple.protocol)
    }
}

/// An address as 128 bits (IPv4 mapped into IPv6) and whether it was IPv6.
fn address_bits(address: IpAddr) -> (u128, bool) {
    match address {
        IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    }
}

/// Which way a packet travels relative to the connection's initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowDirection {
    /// From the side that sent the connection's first packet.
    Original,
    /// Towards it.
    Reply,
}

impl FlowDirection {
    pub fn opposite(self) -> FlowDirection {
        match self {
            FlowDirection::Original => FlowDirection::Reply,
            FlowDirection::Reply => FlowDirection::Original,
        }
    }

    const fn index(self) -> usize {
        match self {
            FlowDirection::Original => 0,
            FlowDirection::Reply => 1,
        }
    }
}

/// What the caller decided for a connection. `tag` is opaque here: typically the number of the
/// rule that decided, so counters and `explain` can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow { tag: u32 },
    Deny { tag: u32 },
}

impl Verdict {
    pub fn allows(self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }

    pub fn tag(self) -> u32 {
        match self {
            Verdict::Allow { tag } | Verdict::Deny { tag } => tag,
        }
    }
}

/// Protocol state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// TCP: the initiator's SYN was seen.
    SynSent,
    /// TCP: the reply side answered with SYN-ACK.
    SynReceived,
    /// TCP: the handshake completed, or the connection was picked up mid-stream.
    Established,
    /// TCP: one side sent FIN.
    FinWait { first_fin: FlowDirection },
    /// TCP: both sides sent FIN; waiting for the last ACK (from the side that did not send the
    /// last FIN).
    Closing { last_fin: FlowDirection },
    /// TCP: reset, or both FINs acknowledged. Lives for [`Timeouts::tcp_closed`].
    Closed,
    /// UDP, SCTP, ICMP echo, other protocols: seen in the original direction only.
    New,
    /// UDP, SCTP, ICMP echo, other protocols: seen both ways.
    Replied,
}

/// How a protocol number is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    /// UDP and every protocol without rules of its own.
    Datagram,
    Sctp,
    Icmp,
}

impl Kind {
    fn of(protocol: u8) -> Kind {
        match Protocol(protocol) {
            Protocol::TCP => Kind::Tcp,
            Protocol::SCTP => Kind::Sctp,
            Protocol::ICMP | Protocol::ICMPV6 => Kind::Icmp,
            _ => Kind::Datagram,
        }
    }
}

/// The state of a new entry whose first packet travels in the original direction.
fn initial_state(kind: Kind, flags: TcpFlags) -> FlowState {
    if kind != Kind::Tcp {
        return FlowState::New;
    }
    if flags.contains(TcpFlags::RST) {
        FlowState::Closed
    } else if is_opening_syn(flags) {
        FlowState::SynSent
    } else if flags.contains(TcpFlags::FIN) {
        FlowState::FinWait {
            first_fin: FlowDirection::Original,
        }
    } else {
        // Mid-stream pickup (loose mode), including a SYN-ACK whose SYN we never saw.
        FlowState::Established
    }
}

/// The state after a packet travelling `direction` with `flags`.
///
/// Deliberately loose: no sequence or window tracking, so the table follows the connection
/// without validating it (the policy decides who may talk, not whether TCP is well-formed).
fn next_state(
    kind: Kind,
    state: FlowState,
    direction: FlowDirection,
    flags: TcpFlags,
) -> FlowState {
    use FlowDirection::{Original, Reply};
    use FlowState::*;

    if kind != Kind::Tcp {
        return match state {
            New if direction == Reply => Replied,
            other => other,
        };
    }
    if flags.contains(TcpFlags::RST) {
        return Closed;
    }
    let syn = flags.contains(TcpFlags::SYN);
    let ack = flags.contains(TcpFlags::ACK);
    let fin = flags.contains(TcpFlags::FIN);
    match state {
        SynSent if syn && ack && direction == Reply => SynReceived,
        SynReceived if ack && !syn && direction == Original => {
            if fin {
                FinWait {
                    first_fin: Original,
                }
            } else {
                Established
            }
        }
        SynSent | SynReceived | Established if fin => FinWait {
            first_fin: direction,
        },
        FinWait { first_fin } if fin && direction != first_fin => Closing {
            last_fin: direction,
        },
        Closing { last_fin } if ack && !fin && !syn && direction != last_fin => Closed,
        other => other,
    }
}

/// Whether a packet with `flags` on an entry in `state` opens a new connection on the same
/// tuple (port reuse after close) instead of belonging to the old one.
fn starts_new_connection(kind: Kind, state: FlowState, flags: TcpFlags) -> bool {
    kind == Kind::Tcp
        && is_opening_syn(flags)
        && matches!(state, FlowState::Closed | FlowState::Closing { .. })
}

/// Idle timeouts: an entry expires when it has seen no packet for the timeout of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP `SynSent`, `SynReceived`. Default 2 min (Linux: `nf_conntrack_tcp_timeout_syn_sent`).
    pub tcp_syn: Duration,
    /// TCP `Established`. Default 6 h: longer than Linux's default 2 h keepalive interval, so an
    /// idle connection with keepalives never expires (an expired one would be picked up again
    /// with its next packet's sender as initiator, which may be the wrong side for the policy).
    /// Memory stays bounded regardless: full shards evict the least recently seen.
    pub tcp_established: Duration,
    /// TCP `FinWait`, `Closing`. Default 2 min (Linux: `fin_wait`, `time_wait`).
    pub tcp_closing: Duration,
    /// TCP `Closed`. Default 10 s (Linux: `close`): long enough to pass stray segments and
    /// retransmitted RSTs, short enough to free the slot.
    pub tcp_closed: Duration,
    /// UDP and other protocols, `New`. Default 30 s (Linux: `udp_timeout`).
    pub udp_new: Duration,
    /// UDP and other protocols, `Replied`. Default 3 min.
    pub udp_replied: Duration,
    /// SCTP, `New`. Default 30 s.
    pub sctp_new: Duration,
    /// SCTP, `Replied`. Default 210 s (Linux's `established` since 5.x): associations send
    /// heartbeats every 30 s, so a live one never gets near it.
    pub sctp_replied: Duration,
    /// ICMP/ICMPv6 echo, both states. Default 30 s (Linux: `icmp_timeout`).
    pub icmp: Duration,
    /// Any entry with a `Deny` verdict, whatever its state. Default 10 s: a flood of one denied
    /// flow keeps refreshing it, a denied flow that stops frees its slot soon.
    pub denied: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MINUTE: u64 = 60;
        Timeouts {
            tcp_syn: Duration::from_secs(2 * MINUTE),
            tcp_established: Duration::from_secs(6 * 60 * MINUTE),
            tcp_closing: Duration::from_secs(2 * MINUTE),
            tcp_closed: Duration::from_secs(10),
            udp_new: Duration::from_secs(30),
            udp_replied: Duration::from_secs(3 * MINUTE),
            sctp_new: Duration::from_secs(30),
            sctp_replied: Duration::from_secs(210),
            icmp: Duration::from_secs(30),
            denied: Duration::from_secs(10),
        }
    }
}

/// [`Timeouts`] in nanoseconds, the unit of `now`, converted once at construction.
#[derive(Debug, Clone, Copy)]
struct TimeoutsNs {
    tcp_syn: u64,
    tcp_established: u64,
    tcp_closing: u64,
    tcp_closed: u64,
    udp_new: u64,
    udp_replied: u64,
    sctp_new: u64,
    sctp_replied: u64,
    icmp: u64,
    denied: u64,
    /// The least of them: an entry idle for less than this cannot have expired.
    shortest: u64,
}

impl TimeoutsNs {
    fn new(t: &Timeouts) -> TimeoutsNs {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        TimeoutsNs {
            tcp_syn: ns(t.tcp_syn),
            tcp_established: ns(t.tcp_established),
            tcp_closing: ns(t.tcp_closing),
            tcp_closed: ns(t.tcp_closed),
            udp_new: ns(t.udp_new),
            udp_replied: ns(t.udp_replied),
            sctp_new: ns(t.sctp_new),
            sctp_replied: ns(t.sctp_replied),
            icmp: ns(t.icmp),
            denied: ns(t.denied),
            shortest: [
                t.tcp_syn,
                t.tcp_established,
                t.tcp_closing,
                t.tcp_closed,
                t.udp_new,
                t.udp_replied,
                t.sctp_new,
                t.sctp_replied,
                t.icmp,
                t.denied,
            ]
            .into_iter()
            .map(ns)
            .min()
            .unwrap_or(0),
        }
    }

    fn of(&self, entry: &Entry) -> u64 {
        if !entry.verdict.allows() {
            return self.denied;
        }
        let kind = Kind::of(entry.tuple.protocol);
        match entry.state {
            FlowState::SynSent | FlowState::SynReceived => self.tcp_syn,
            FlowState::Established => self.tcp_established,
            FlowState::FinWait { .. } | FlowState::Closing { .. } => self.tcp_closing,
            FlowState::Closed => self.tcp_closed,
            FlowState::New => match kind {
                Kind::Sctp => self.sctp_new,
                Kind::Icmp => self.icmp,
                Kind::Tcp | Kind::Datagram => self.udp_new,
            },
            FlowState::Replied => match kind {
                Kind::Sctp => self.sctp_replied,
                Kind::Icmp => self.icmp,
                Kind::Tcp | Kind::Datagram => self.udp_replied,
            },
        }
    }

    /// Idle for at least its timeout. A `now` earlier than the last packet (clocks of different
    /// workers, a caller's mistake) counts as no idle time rather than wrapping around.
    fn expired(&self, entry: &Entry, now: u64) -> bool {
        now.saturating_sub(entry.last_seen) >= self.of(entry)
    }
}

/// What to do with connections decided under an older classifier generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingConnections {
    /// Decide them again on their next packet (a connection the new policy denies is cut).
    #[default]
    Strict,
    /// Allowed connections keep their verdict; denied ones are still decided again.
    Keep,
}

/// Size and behaviour of a [`FlowTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// Number of shards, 1..=65536.
    pub shards: usize,
    /// Flows each shard can hold, 1..=2^30. Memory is about 150 bytes per flow, allocated up
    /// front.
    pub capacity_per_shard: usize,
    pub timeouts: Timeouts,
    pub existing: ExistingConnections,
}

impl Default for FlowConfig {
    /// 64 shards of 4096 flows: 262,144 flows (Linux's `nf_conntrack_max` on a mid-sized node),
    /// about 40 MB.
    fn default() -> Self {
        FlowConfig {
            shards: 64,
            capacity_per_shard: 4096,
            timeouts: Timeouts::default(),
            existing: ExistingConnections::Strict,
        }
    }
}

/// A [`FlowConfig`] the table cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("flow table shards must be between 1 and {max}, got {got}")]
    Shards { got: usize, max: usize },
    #[error("flow table capacity per shard must be between 1 and {max}, got {got}")]
    CapacityPerShard { got: usize, max: usize },
}

/// The answer of [`FlowTable::lookup`] (and [`FlowTable::peek`]).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The connection is known and its verdict holds: apply it.
    Hit {
        verdict: Verdict,
        direction: FlowDirection,
    },
    /// No usable entry: this packet starts a connection. Decide it and call
    /// [`FlowTable::insert`].
    Miss,
    /// The connection is known (its state and counters were updated) but its verdict was decided
    /// under another classifier generation and must be decided again. Decide the connection as
    /// its initiator opened it — when `direction` is `Reply`, swap source and destination (and
    /// ports) of this packet before asking the classifier — then call [`FlowTable::insert`].
    Stale { direction: FlowDirection },
}

/// What [`FlowTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new entry, counting this packet as its first.
    Created,
    /// The connection had a live entry (the `Stale` case): only its verdict and generation were
    /// replaced; state, initiator, counters and last-seen time stay.
    Updated,
    /// A denied flow met a full shard whose least recently seen entry is allowed, and denials do
    /// not evict allowed connections. Nothing was stored.
    NotCached,
}

/// Packets and bytes of one direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Everything the table holds about one connection (for inspection and tests; not hot-path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    pub state: FlowState,
    pub verdict: Verdict,
    pub generation: u64,
    pub last_seen: u64,
    /// The direction of the key that was asked about.
    pub direction: FlowDirection,
    pub original: Counters,
    pub reply: Counters,
}

/// Operation counters, kept per shard and summed by [`FlowTable::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Lookups answered [`Lookup::Hit`].
    pub hits: u64,
    /// Lookups answered [`Lookup::Miss`].
    pub misses: u64,
    /// Lookups answered [`Lookup::Stale`].
    pub stale: u64,
    /// Entries created.
    pub inserts: u64,
    /// Verdicts replaced on live entries (after `Stale`).
    pub updates: u64,
    /// Denials not stored because only allowed entries could have made room.
    pub not_cached: u64,
    /// Entries removed because they were idle past their timeout.
    pub expirations: u64,
    /// Live entries removed to make room in a full shard.
    pub evictions: u64,
}

impl AddAssign for FlowStats {
    fn add_assign(&mut self, other: FlowStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.stale += other.stale;
        self.inserts += other.inserts;
        self.updates += other.updates;
        self.not_cached += other.not_cached;
        self.expirations += other.expirations;
        self.evictions += other.evictions;
    }
}

/// One connection, or a free slot (`live == false`, linked through `next`). Two cache lines,
/// aligned, so that a lookup's prefetch of both covers it.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Entry {
    tuple: Tuple,
    /// Low 32 bits of the tuple's hash: the index slot to start probing from (`tag & mask`), and
    /// a cheap first comparison before the tuple's.
    tag: u32,
    /// The initiator is the tuple's `hi` endpoint.
    initiator_hi: bool,
    live: bool,
    state: FlowState,
    verdict: Verdict,
    generation: u64,
    last_seen: u64,
    /// When the entry last moved to the front of the LRU list; never after `last_seen`.
    listed_at: u64,
    /// Indexed by [`FlowDirection::index`].
    counters: [Counters; 2],
    /// Towards the most recently seen entry (LRU list).
    prev: u32,
    /// Towards the least recently seen entry (LRU list), or the next free slot.
    next: u32,
}

// A third cache line per entry would cost every lookup with many flows another miss.
const _: () = assert!(std::mem::size_of::<Entry>() == 128);

impl Entry {
    const VACANT: Entry = Entry {
        tuple: Tuple::EMPTY,
        tag: 0,
        initiator_hi: false,
        live: false,
        state: FlowState::New,
        verdict: Verdict::Deny { tag: 0 },
        generation: 0,
        last_seen: 0,
        listed_at: 0,
        counters: [Counters {
            packets: 0,
            bytes: 0,
        }; 2],
        prev: NIL,
        next: NIL,
    };

    fn direction_of(&self, key: &FlowKey) -> FlowDirection {
        if key.from_hi == self.initiator_hi {
            FlowDirection::Original
        } else {
            FlowDirection::Reply
        }
    }

    /// Counts one packet travelling `direction` and makes `now` its last-seen time.
    fn record(&mut self, direction: FlowDirection, bytes: u32, now: u64) {
        let counters = &mut self.counters[direction.index()];
        counters.packets += 1;
        counters.bytes += u64::from(bytes);
        // Never move last-seen backwards: an out-of-order `now` must not make a busy entry
        // look idle.
        self.last_seen = self.last_seen.max(now);
    }

    fn is_stale(&self, generation: u64, existing: ExistingConnections) -> bool {
        self.generation != generation
            && (existing == ExistingConnections::Strict || !self.verdict.allows())
    }

    fn answer(&self, key: &FlowKey, generation: u64, existing: ExistingConnections) -> Lookup {
        let direction = self.direction_of(key);
        if self.is_stale(generation, existing) {
            Lookup::Stale { direction }
        } else {
            Lookup::Hit {
                verdict: self.verdict,
                direction,
            }
        }
    }
}

/// A slot of a shard's open-addressing index (linear probing, at most half full).
#[derive(Debug, Clone, Copy)]
struct Slot {
    tag: u32,
    /// Index into the shard's entries, or `NIL` for an empty slot.
    entry: u32,
}

const EMPTY_SLOT: Slot = Slot { tag: 0, entry: NIL };

/// The lists of one shard: the LRU list through its live entries, the free list through the
/// others, and its counters.
#[derive(Debug, Clone, Copy)]
struct ShardLists {
    /// Most recently seen live entry.
    head: u32,
    /// Least recently seen live entry: the first to evict.
    tail: u32,
    /// First free entry.
    free: u32,
    /// One past the highest entry ever used. The free list starts in index order and takes
    /// back freed entries at its front, so every entry from here on has never been live: the
    /// expiry sweep stops here instead of reading a shard's never-used lines.
    used: u32,
    len: usize,
    stats: FlowStats,
}

impl ShardLists {
    fn new() -> ShardLists {
        ShardLists {
            head: NIL,
            tail: NIL,
            free: 0,
            used: 0,
            len: 0,
            stats: FlowStats::default(),
        }
    }
}

/// The index slot where `tuple` (with `tag`) is, in one shard's `index` over its `entries`.
fn find(entries: &[Entry], index: &[Slot], tuple: &Tuple, tag: u32) -> Option<u32> {
    let mask = index.len() - 1;
    let mut pos = tag as usize & mask;
    loop {
        let slot = index[pos];
        if slot.entry == NIL {
            return None;
        }
        if slot.tag == tag && entries[slot.entry as usize].tuple == *tuple {
            return Some(slot.entry);
        }
        pos = (pos + 1) & mask;
    }
}

/// A fixed-capacity part of the table, borrowed from it for one operation: its range of the
/// entry slab, its range of the hash index, and its lists. Entry numbers are local to the shard.
struct Shard<'t> {
    entries: &'t mut [Entry],
    index: &'t mut [Slot],
    /// `index.len() - 1`; the index length is a power of two.
    mask: usize,
    lists: &'t mut ShardLists,
}

impl Shard<'_> {
    fn is_full(&self) -> bool {
        self.lists.free == NIL
    }

    fn find(&self, tuple: &Tuple, tag: u32) -> Option<u32> {
        find(self.entries, self.index, tuple, tag)
    }

    /// The index slot that points at live entry `entry`.
    fn slot_of(&self, entry: u32) -> usize {
        let mut pos = self.entries[entry as usize].tag as usize & self.mask;
        while self.index[pos].entry != entry {
            pos = (pos + 1) & self.mask;
        }
        pos
    }

    fn index_insert(&mut self, tag: u32, entry: u32) {
        let mut pos = tag as usize & self.mask;
        while self.index[pos].entry != NIL {
            pos = (pos + 1) & self.mask;
        }
        self.index[pos] = Slot { tag, entry };
    }

    /// Empties index slot `pos` by backward-shift deletion: later slots of the probe run move
    /// back into the hole when that keeps them reachable from their home slot. No tombstones, so
    /// probes never lengthen however many flows come and go.
    fn index_remove(&mut self, pos: usize) {
        let mask = self.mask;
        let mut hole = pos;
        let mut next = (pos + 1) & mask;
        loop {
            let slot = self.index[next];
            if slot.entry == NIL {
                break;
            }
            let home = slot.tag as usize & mask;
            // The slot may move into the hole when the hole lies (cyclically) between its home
            // and where it is now.
            if next.wrapping_sub(hole) & mask <= next.wrapping_sub(home) & mask {
                self.index[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.index[hole] = EMPTY_SLOT;
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let entry = &self.entries[i as usize];
            (entry.prev, entry.next)
        };
        if prev == NIL {
            self.lists.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.lists.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old_head = self.lists.head;
        {
            let entry = &mut self.entries[i as usize];
            entry.prev = NIL;
            entry.next = old_head;
        }
        if old_head == NIL {
            self.lists.tail = i;
        } else {
            self.entries[old_head as usize].prev = i;
        }
        self.lists.head = i;
    }

    /// Marks entry `i` as seen at `now`: moves it to the front of the LRU list unless it moved
    /// there less than [`RELIST_AFTER_NS`] ago.
    fn touch(&mut self, i: u32, now: u64) {
        let entry = &mut self.entries[i as usize];
        if self.lists.head != i && now.saturating_sub(entry.listed_at) >= RELIST_AFTER_NS {
            entry.listed_at = now;
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn remove(&mut self, i: u32) {
        let pos = self.slot_of(i);
        self.index_remove(pos);
        self.unlink(i);
        let entry = &mut self.entries[i as usize];
        entry.live = false;
        entry.next = self.lists.free;
        self.lists.free = i;
        self.lists.len -= 1;
    }

    /// Stores a new entry in a free slot; the caller has made sure there is one.
    fn create(&mut self, entry: Entry) {
        let i = self.lists.free;
        debug_assert!(i != NIL, "create on a full shard");
        self.lists.free = self.entries[i as usize].next;
        self.lists.used = self.lists.used.max(i + 1);
        let tag = entry.tag;
        self.entries[i as usize] = entry;
        self.push_front(i);
        self.index_insert(tag, i);
        self.lists.len += 1;
    }

    /// Makes room in a full shard for a flow with verdict `incoming`: an expired entry among the
    /// least recently seen, else the least recently seen one — unless that one is allowed and
    /// `incoming` is a denial. Returns whether there is room now.
    fn make_room(&mut self, timeouts: &TimeoutsNs, now: u64, incoming: Verdict) -> bool {
        let mut i = self.lists.tail;
        // Every entry was listed no earlier than the tail, and seen no earlier than it was
        // listed, so while the tail was listed less than the shortest timeout ago nothing can
        // have expired, and the look (a cache miss per entry) is skipped: the case of a flood
        // of new connections, where a full shard turns over in seconds.
        let tail_idle = now.saturating_sub(self.entries[i as usize].listed_at);
        let scan = if tail_idle < timeouts.shortest {
            0
        } else {
            RECLAIM_SCAN
        };
        for _ in 0..scan {
            if i == NIL {
                break;
            }
            if timeouts.expired(&self.entries[i as usize], now) {
                self.remove(i);
                self.lists.stats.expirations += 1;
                return true;
            }
            i = self.entries[i as usize].prev;
        }
        let oldest = self.lists.tail;
        if !incoming.allows() && self.entries[oldest as usize].verdict.allows() {
            return false;
        }
        self.remove(oldest);
        self.lists.stats.evictions += 1;
        true
    }
}

/// The connection-tracking table of one worker. See the module documentation for the rules.
pub struct FlowTable {
    /// Every shard's entries, shard by shard, `capacity_per_shard` each; a free entry links to
    /// the next one of its shard.
    entries: HugeSlab<Entry>,
    /// Every shard's hash index, shard by shard, `index_per_shard` slots each.
    index: HugeSlab<Slot>,
    shards: Box<[ShardLists]>,
    /// A power of two, at least twice `capacity_per_shard`: probe sequences stay short and
    /// always end at an empty slot.
    index_per_shard: usize,
    /// Seeded randomly at construction: the tuple is attacker-controlled, and with fixed seeds
    /// someone who learned them could aim a flood at one shard and one probe run.
    hasher: ahash::RandomState,
    timeouts: TimeoutsNs,
    existing: ExistingConnections,
    capacity_per_shard: usize,
    /// Where [`FlowTable::expire`] continues: (shard, entry).
    sweep: (usize, usize),
    /// [`FlowTable::expire_paced`]'s clock: when it last ran, and the part of an entry slot it
    /// owed then (in slot-nanoseconds, below one sweep period).
    paced: (u64, u128),
    /// (shard, slot of `index`) of the batch being prefetched.
    prefetched: Vec<(u32, u32)>,
    /// Where the tuples of the batch being prefetched were located (tuple, shard, tag), in the
    /// order they came, and how many of them lookups have used: the lookups that follow in the
    /// same order take the location instead of hashing the tuple a second time.
    located: Vec<(Tuple, u32, u32)>,
    next_located: usize,
}

impl fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("shards", &self.shards.len())
            .field("capacity_per_shard", &self.capacity_per_shard)
            .field("len", &self.len())
            .field("existing", &self.existing)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl FlowTable {
    /// Allocates every shard at its full capacity; nothing is allocated afterwards.
    pub fn new(config: FlowConfig) -> Result<FlowTable, ConfigError> {
        if !(1..=MAX_SHARDS).contains(&config.shards) {
            return Err(ConfigError::Shards {
                got: config.shards,
                max: MAX_SHARDS,
            });
        }
        if !(1..=MAX_CAPACITY_PER_SHARD).contains(&config.capacity_per_shard) {
            return Err(ConfigError::CapacityPerShard {
                got: config.capacity_per_shard,
                max: MAX_CAPACITY_PER_SHARD,
            });
        }
        let capacity = config.capacity_per_shard;
        let index_per_shard = (capacity * 2).next_power_of_two();
        let entries = HugeSlab::new(config.shards * capacity, |i| Entry {
            next: if (i + 1) % capacity == 0 {
                NIL
            } else {
                (i % capacity) as u32 + 1
            },
            ..Entry::VACANT
        });
        Ok(FlowTable {
            entries,
            index: HugeSlab::new(config.shards * index_per_shard, |_| EMPTY_SLOT),
            shards: (0..config.shards).map(|_| ShardLists::new()).collect(),
            index_per_shard,
            hasher: ahash::RandomState::new(),
            timeouts: TimeoutsNs::new(&config.timeouts),
            existing: config.existing,
            capacity_per_shard: config.capacity_per_shard,
            sweep: (0, 0),
            paced: (0, 0),
            prefetched: Vec::with_capacity(256),
            located: Vec::with_capacity(256),
            next_located: 0,
        })
    }

    /// The shard of a tuple and its tag. The shard comes from the high 32 bits, the tag (and so
    /// the index slot) from the low 32, so that the flows of one shard still spread over its
    /// whole index.
    /// Shard `s`'s entries and index, to read.
    fn shard(&self, s: usize) -> (&[Entry], &[Slot]) {
        let (capacity, slots) = (self.capacity_per_shard, self.index_per_shard);
        (
            &self.entries[s * capacity..(s + 1) * capacity],
            &self.index[s * slots..(s + 1) * slots],
        )
    }

    /// Shard `s`, to change.
    fn shard_mut(&mut self, s: usize) -> Shard<'_> {
        let (capacity, slots) = (self.capacity_per_shard, self.index_per_shard);
        Shard {
            entries: &mut self.entries[s * capacity..(s + 1) * capacity],
            index: &mut self.index[s * slots..(s + 1) * slots],
            mask: slots - 1,
            lists: &mut self.shards[s],
        }
    }

    fn locate(&self, tuple: &Tuple) -> (usize, u32) {
        let hash = self.hasher.hash_one(tuple);
        // Multiply-shift maps 32 bits onto 0..shards without a division.
        let shard = ((hash >> 32) * self.shards.len() as u64) >> 32;
        (shard as usize, hash as u32)
    }

    /// [`FlowTable::locate`], from what the last prefetch computed when `tuple` is the next
    /// one it located (the judge takes a batch's frames in the order they were prefetched), or
    /// the one just taken (an insert after its lookup's miss). Anything else is hashed.
    #[inline]
    fn locate_next(&mut self, tuple: &Tuple) -> (usize, u32) {
        if let Some(&(located, s, tag)) = self.located.get(self.next_located) {
            if located == *tuple {
                self.next_located += 1;
                return (s as usize, tag);
            }
        }
        match self.next_located.checked_sub(1).map(|i| self.located[i]) {
            Some((located, s, tag)) if located == *tuple => (s as usize, tag),
            _ => self.locate(tuple),
        }
    }

    /// Starts loading the index slot where [`FlowTable::lookup`] of `key` will begin, and
    /// remembers it for [`FlowTable::prefetch_entries`]. Lookups of a batch then wait for their
    /// memory together rather than one after another: with many flows, the kernel's per-frame
    /// copies evict the table between two packets of one flow. When the tuple's shard is full,
    /// a new connection there will evict the shard's least recently seen entry, so that entry
    /// starts loading too.
    pub fn prefetch_slot(&mut self, key: &FlowKey) {
        if self.prefetched.is_empty() {
            // A new batch: the previous one's locations are spent.
            self.located.clear();
            self.next_located = 0;
        }
        let (s, tag) = self.locate(&key.tuple);
        let pos = s * self.index_per_shard + (tag as usize & (self.index_per_shard - 1));
        crate::port::prefetch(&self.index[pos]);
        let lists = &self.shards[s];
        if lists.free == NIL && lists.tail != NIL {
            crate::port::prefetch(&self.entries[s * self.capacity_per_shard + lists.tail as usize]);
        }
        self.prefetched.push((s as u32, pos as u32));
        self.located.push((key.tuple, s as u32, tag));
    }

    /// Starts loading the entries the slots remembered by [`FlowTable::prefetch_slot`] point at,
    /// and forgets the slots. For a full shard, also what evicting its least recently seen
    /// entry touches: that entry's index slot and its neighbour in the LRU list (a miss in a
    /// full table otherwise waits for the three one after another).
    pub fn prefetch_entries(&mut self) {
        let capacity = self.capacity_per_shard;
        for &(s, pos) in &self.prefetched {
            let s = s as usize;
            let slot = self.index[pos as usize];
            if slot.entry != NIL {
                crate::port::prefetch(&self.entries[s * capacity + slot.entry as usize]);
            }
            let lists = &self.shards[s];
            if lists.free == NIL && lists.tail != NIL {
                let victim = &self.entries[s * capacity + lists.tail as usize];
                let home = victim.tag as usize & (self.index_per_shard - 1);
                crate::port::prefetch(&self.index[s * self.index_per_shard + home]);
                if victim.prev != NIL {
                    crate::port::prefetch(&self.entries[s * capacity + victim.prev as usize]);
                }
            }
        }
        self.prefetched.clear();
    }

    /// Looks up the connection of a packet travelling as `key` says, with TCP `flags` (or
    /// [`TcpFlags::NONE`]) and `bytes` on the wire, at `now`, while classifier `generation` is in
    /// force. On `Hit` and `Stale` the packet is counted and the state advanced; an entry idle
    /// past its timeout is removed and reported as `Miss`, and so is a closed TCP connection that
    /// this packet (a SYN) opens again.
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        flags: TcpFlags,
        bytes: u32,
        now: u64,
        generation: u64,
    ) -> Lookup {
        let (s, tag) = self.locate_next(&key.tuple);
        let (timeouts, existing) = (self.timeouts, self.existing);
        let mut shard = self.shard_mut(s);
        let Some(i) = shard.find(&key.tuple, tag) else {
            shard.lists.stats.misses += 1;
            return Lookup::Miss;
        };
        let entry = &mut shard.entries[i as usize];
        let kind = Kind::of(key.tuple.protocol);
        if timeouts.expired(entry, now) {
            shard.remove(i);
            shard.lists.stats.expirations += 1;
            shard.lists.stats.misses += 1;
            return Lookup::Miss;
        }
        if starts_new_connection(kind, entry.state, flags) {
            shard.remove(i);
            shard.lists.stats.misses += 1;
            return Lookup::Miss;
        }
        let direction = entry.direction_of(key);
        entry.state = next_state(kind, entry.state, direction, flags);
        entry.record(direction, bytes, now);
        let answer = entry.answer(key, generation, existing);
        shard.touch(i, now);
        match answer {
            Lookup::Hit { .. } => shard.lists.stats.hits += 1,
            Lookup::Stale { .. } => shard.lists.stats.stale += 1,
            Lookup::Miss => shard.lists.stats.misses += 1,
        }
        answer
    }

    /// Records the caller's decision for the packet that `lookup` answered `Miss` or `Stale`
    /// for (same arguments). After `Miss` a new entry is created with this packet's sender as
    /// the initiator and the packet counted; after `Stale` only the verdict and generation of
    /// the existing entry change. On a full shard a new entry takes the place of an expired or
    /// the least recently seen one (see [`Inserted::NotCached`] for denials).
    pub fn insert(
        &mut self,
        key: &FlowKey,
        flags: TcpFlags,
        bytes: u32,
        verdict: Verdict,
        generation: u64,
        now: u64,
    ) -> Inserted {
        let (s, tag) = self.locate_next(&key.tuple);
        let timeouts = self.timeouts;
        let mut shard = self.shard_mut(s);
        let kind = Kind::of(key.tuple.protocol);
        if let Some(i) = shard.find(&key.tuple, tag) {
            let entry = &mut shard.entries[i as usize];
            if timeouts.expired(entry, now) {
                shard.remove(i);
                shard.lists.stats.expirations += 1;
            } else if starts_new_connection(kind, entry.state, flags) {
                shard.remove(i);
            } else {
                entry.verdict = verdict;
                entry.generation = generation;
                shard.lists.stats.updates += 1;
                return Inserted::Updated;
            }
        }
        if shard.is_full() && !shard.make_room(&timeouts, now, verdict) {
            shard.lists.stats.not_cached += 1;
            return Inserted::NotCached;
        }
        let mut entry = Entry {
            tuple: key.tuple,
            tag,
            initiator_hi: key.from_hi,
            live: true,
            state: initial_state(kind, flags),
            verdict,
            generation,
            last_seen: now,
            listed_at: now,
            ..Entry::VACANT
        };
        entry.record(FlowDirection::Original, bytes, now);
        shard.create(entry);
        shard.lists.stats.inserts += 1;
        Inserted::Created
    }

    /// What `lookup` would answer for a packet travelling as `key`, without counting it or
    /// changing any state: for ICMP errors (with [`FlowKey::for_embedded`]) and diagnostics.
    /// An expired entry is `Miss` (and stays until swept).
    pub fn peek(&self, key: &FlowKey, now: u64, generation: u64) -> Lookup {
        let (s, tag) = self.locate(&key.tuple);
        let (entries, index) = self.shard(s);
        match find(entries, index, &key.tuple, tag) {
            Some(i) => {
                let entry = &entries[i as usize];
                if self.timeouts.expired(entry, now) {
                    Lookup::Miss
                } else {
                    entry.answer(key, generation, self.existing)
                }
            }
            None => Lookup::Miss,
        }
    }

    /// Everything stored about the connection of `key`, ignoring timeouts and generations.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowInfo> {
        let (s, tag) = self.locate(&key.tuple);
        let (entries, index) = self.shard(s);
        let entry = &entries[find(entries, index, &key.tuple, tag)? as usize];
        Some(FlowInfo {
            state: entry.state,
            verdict: entry.verdict,
            generation: entry.generation,
            last_seen: entry.last_seen,
            direction: entry.direction_of(key),
            original: entry.counters[FlowDirection::Original.index()],
            reply: entry.counters[FlowDirection::Reply.index()],
        })
    }

    /// Removes expired entries, examining at most `budget` entry slots (free or not), continuing
    /// where the previous call stopped and moving on shard by shard. Call it a little at a time
    /// (say once per batch) so that no packet waits for a full sweep; `capacity()` slots in
    /// total make one full pass. Returns how many entries were removed.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let per_shard = self.capacity_per_shard;
        let mut left = budget.min(self.capacity());
        let mut removed = 0;
        while left > 0 {
            let (s, start) = self.sweep;
            let end = per_shard.min(start + left);
            let timeouts = self.timeouts;
            let mut shard = self.shard_mut(s);
            // Slots past `used` count as examined without being read.
            for i in start..end.min(shard.lists.used as usize) {
                let entry = &shard.entries[i];
                if entry.live && timeouts.expired(entry, now) {
                    shard.remove(i as u32);
                    shard.lists.stats.expirations += 1;
                    removed += 1;
                }
            }
            left -= end - start;
            self.sweep = if end == per_shard {
                ((s + 1) % self.shards.len(), 0)
            } else {
                (s, end)
            };
        }
        removed
    }

    /// How long one full pass of [`FlowTable::expire_paced`] over the table takes: half the
    /// shortest timeout, so that an expired entry's slot is reclaimed within 1.5 timeouts of its
    /// last packet. (A lookup of an expired entry never answers from it, and a full shard makes
    /// room by itself: the sweep only returns slots early.)
    pub fn sweep_period_ns(&self) -> u64 {
        (self.timeouts.shortest / 2).max(1)
    }

    /// [`FlowTable::expire`] at a steady pace, whatever the packet rate: the slots due since the
    /// last call, so that the table is swept once per [`FlowTable::sweep_period_ns`], and at
    /// most `max`. A busy worker calls this between batches: a sweep step per frame would bring
    /// a cold entry into the cache for every frame forwarded (64 × 4,096 entries take 32 MiB),
    /// where a pass every few seconds is all expiry needs.
    pub fn expire_paced(&mut self, now: u64, max: usize) -> usize {
        let (last, owed) = self.paced;
        let period = u128::from(self.sweep_period_ns());
        let due = u128::from(now.saturating_sub(last)) * self.capacity() as u128 + owed;
        let slots = (due / period).min(max as u128) as usize;
        // A few slots at a time would pay a call's overhead for each: they wait until a
        // handful are due (or `max`, if that is fewer).
        if slots < PACED_SWEEP_BATCH.min(max) {
            self.paced = (now, due);
            return 0;
        }
        // What `max` cut off is not carried over: a stalled worker does not owe a burst.
        self.paced = (now, if slots == max { 0 } else { due % period });
        self.expire(now, slots)
    }

    /// Removes every flow of one attachment (a pod interface that went away, whose id may be
    /// reused). A full sweep: for control events, never per packet. Returns how many were
    /// removed.
    pub fn remove_attachment(&mut self, attachment: u32) -> usize {
        let mut removed = 0;
        for s in 0..self.shards.len() {
            let mut shard = self.shard_mut(s);
            for i in 0..shard.lists.used as usize {
                let entry = &shard.entries[i];
                if entry.live && entry.tuple.attachment == attachment {
                    shard.remove(i as u32);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Entries held, including expired ones not yet removed.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the table can hold: shards × capacity per shard.
    pub fn capacity(&self) -> usize {
        self.shards.len() * self.capacity_per_shard
    }

    pub fn stats(&self) -> FlowStats {
        let mut total = FlowStats::default();
        for shard in self.shards.iter() {
            total += shard.stats;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const ALLOW: Verdict = Verdict::Allow { tag: 7 };
    const DENY: Verdict = Verdict::Deny { tag: 9 };
    const SYN: TcpFlags = TcpFlags::SYN;
    const ACK: TcpFlags = TcpFlags::ACK;

    fn table(config: FlowConfig) -> FlowTable {
        FlowTable::new(config).expect("valid config")
    }

    fn small(shards: usize, capacity_per_shard: usize) -> FlowTable {
        table(FlowConfig {
            shards,
            capacity_per_shard,
            ..FlowConfig::default()
        })
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    /// Client 10.0.0.1:40000 → server 10.0.0.2:`port`.
    fn client_to_server(protocol: Protocol, port: u16) -> FlowKey {
        FlowKey::new(1, protocol, v4(1), 40000, v4(2), port)
    }

    fn udp(n: u16) -> FlowKey {
        FlowKey::new(1, Protocol::UDP, v4(1), 1000 + n, v4(2), 53)
    }

    fn state(table: &FlowTable, key: &FlowKey) -> FlowState {
        table.flow(key).expect("flow exists").state
    }

    fn hit(verdict: Verdict, direction: FlowDirection) -> Lookup {
        Lookup::Hit { verdict, direction }
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    proptest! {
        #[test]
        fn both_directions_of_a_connection_share_one_entry(
            attachment in any::<u32>(),
            protocol in prop_oneof![Just(Protocol::TCP), Just(Protocol::UDP), Just(Protocol::SCTP), any::<u8>().prop_map(Protocol)],
            src in address(), dst in address(),
            src_port in any::<u16>(), dst_port in any::<u16>(),
        ) {
            prop_assume!((src, src_port) != (dst, dst_port));
            let forward = FlowKey::new(attachment, protocol, src, src_port, dst, dst_port);
            let backward = FlowKey::new(attachment, protocol, dst, dst_port, src, src_port);
            prop_assert_eq!(backward, forward.reversed());
            prop_assert_eq!(forward, backward.reversed());

            let mut table = small(4, 16);
            prop_assert_eq!(table.insert(&forward, SYN, 60, ALLOW, 1, 0), Inserted::Created);
            prop_assert_eq!(table.lookup(&backward, SYN | ACK, 60, 1, 1), hit(ALLOW, FlowDirection::Reply));
            prop_assert_eq!(table.lookup(&forward, ACK, 60, 2, 1), hit(ALLOW, FlowDirection::Original));
            prop_assert_eq!(table.len(), 1);
        }
    }

    proptest! {
        /// Prefetching only saves work: whatever was prefetched, in whatever order, the table
        /// answers and stores exactly what one that never prefetched does.
        #[test]
        fn prefetching_never_changes_an_answer(
            batches in prop::collection::vec(
                (prop::collection::vec(0u16..24, 0..12), prop::collection::vec(0u16..24, 1..12)),
                1..20,
            ),
        ) {
            let mut with = small(1, 64);
            let mut without = small(1, 64);
            let mut now = 0;
            for (prefetched, packets) in batches {
                for &n in &prefetched {
                    with.prefetch_slot(&udp(n));
                }
                with.prefetch_entries();
                for &n in &packets {
                    now += 1_000;
                    let key = if n % 3 == 0 { udp(n).reversed() } else { udp(n) };
                    let a = with.lookup(&key, TcpFlags::NONE, 60, now, 1);
                    let b = without.lookup(&key, TcpFlags::NONE, 60, now, 1);
                    prop_assert_eq!(a, b);
                    if a == Lookup::Miss {
                        prop_assert_eq!(
                            with.insert(&key, TcpFlags::NONE, 60, ALLOW, 1, now),
                            without.insert(&key, TcpFlags::NONE, 60, ALLOW, 1, now)
                        );
                    }
                }
                prop_assert_eq!(with.len(), without.len());
            }
        }
    }

    #[test]
    fn the_same_tuple_on_another_attachment_is_another_flow() {
        let mut table = small(1, 8);
        let a = FlowKey::new(1, Protocol::UDP, v4(1), 1, v4(2), 2);
        let b = FlowKey::new(2, Protocol::UDP, v4(1), 1, v4(2), 2);
        let _ = table.insert(&a, TcpFlags::NONE, 10, ALLOW, 0, 0);
        assert_eq!(table.lookup(&b, TcpFlags::NONE, 10, 0, 0), Lookup::Miss);
    }

    #[test]
    fn an_ipv6_packet_with_ipv4_mapped_addresses_does_not_match_an_ipv4_flow() {
        let mut table = small(1, 8);
        let ipv4 = FlowKey::new(1, Protocol::UDP, v4(1), 1, v4(2), 2);
        let mapped = |a: u8| IpAddr::V6(Ipv4Addr::new(10, 0, 0, a).to_ipv6_mapped());
        let ipv6 = FlowKey::new(1, Protocol::UDP, mapped(1), 1, mapped(2), 2);
        let _ = table.insert(&ipv4, TcpFlags::NONE, 10, ALLOW, 0, 0);
        assert_eq!(table.lookup(&ipv6, TcpFlags::NONE, 10, 0, 0), Lookup::Miss);
    }

    #[test]
    fn tcp_handshake_goes_through_syn_sent_and_syn_received_to_established() {
        let mut table = small(1, 8);
        let client = client_to_server(Protocol::TCP, 80);
        let server = client.reversed();
        assert_eq!(table.lookup(&client, SYN, 60, 0, 1), Lookup::Miss);
        assert_eq!(
            table.insert(&client, SYN, 60, ALLOW, 1, 0),
            Inserted::Created
        );
        assert_eq!(state(&table, &client), FlowState::SynSent);

        assert_eq!(
            table.lookup(&server, SYN | ACK, 60, 1, 1),
            hit(ALLOW, FlowDirection::Reply)
        );
        assert_eq!(state(&table, &client), FlowState::SynReceived);

        assert_eq!(
            table.lookup(&client, ACK, 52, 2, 1),
            hit(ALLOW, FlowDirection::Original)
        );
        assert_eq!(state(&table, &client), FlowState::Established);
    }

    /// An established TCP connection from `client_to_server(TCP, 80)`, decided at time 0.
    fn established(table: &mut FlowTable, verdict: Verdict, generation: u64) -> FlowKey {
        let client = client_to_server(Protocol::TCP, 80);
        let _ = table.insert(&client, SYN, 60, verdict, generation, 0);
        let _ = table.lookup(&client.reversed(), SYN | ACK, 60, 0, generation);
        let _ = table.lookup(&client, ACK, 52, 0, generation);
        assert_eq!(state(table, &client), FlowState::Established);
        client
    }

    #[test]
    fn tcp_fin_both_ways_then_the_last_ack_closes_the_connection() {
        let mut table = small(1, 8);
        let client = established(&mut table, ALLOW, 1);
        let server = client.reversed();
        let fin = TcpFlags::FIN | ACK;

        let _ = table.lookup(&client, fin, 52, 1, 1);
        assert_eq!(
            state(&table, &client),
            FlowState::FinWait {
                first_fin: FlowDirection::Original
            }
        );
        // The server's ACK of the client's FIN changes nothing; its own FIN does.
        let _ = table.lookup(&server, ACK, 52, 2, 1);
        assert!(matches!(state(&table, &client), FlowState::FinWait { .. }));
        let _ = table.lookup(&server, fin, 52, 3, 1);
        assert_eq!(
            state(&table, &client),
            FlowState::Closing {
                last_fin: FlowDirection::Reply
            }
        );
        // The last ACK comes from the side that did not send the last FIN.
        let _ = table.lookup(&server, ACK, 52, 4, 1);
        assert!(matches!(state(&table, &client), FlowState::Closing { .. }));
        assert_eq!(
            table.lookup(&client, ACK, 52, 5, 1),
            hit(ALLOW, FlowDirection::Original)
        );
        assert_eq!(state(&table, &client), FlowState::Closed);
    }

    #[test]
    fn tcp_rst_from_either_side_closes_with_the_short_timeout() {
        for from_server in [false, true] {
            let mut table = small(1, 8);
            let client = established(&mut table, ALLOW, 1);
            let sender = if from_server {
                client.reversed()
            } else {
                client
            };
            let _ = table.lookup(&sender, TcpFlags::RST, 40, 0, 1);
            assert_eq!(state(&table, &client), FlowState::Closed);
            // Stray segments within the closed timeout still pass (and refresh it) ...
            assert!(matches!(
                table.lookup(&client, ACK, 40, 9 * SECOND, 1),
                Lookup::Hit { .. }
            ));
            // ... then the entry is gone.
            assert_eq!(table.lookup(&client, ACK, 40, 19 * SECOND, 1), Lookup::Miss);
            assert!(table.is_empty());
        }
    }

    #[test]
    fn a_syn_on_a_closed_connection_starts_a_new_one() {
        let mut table = small(1, 8);
        let client = established(&mut table, ALLOW, 1);
        let _ = table.lookup(&client, TcpFlags::RST, 40, 1, 1);

        // The new connection is opened by the former server this time.
        let server = client.reversed();
        assert_eq!(table.lookup(&server, SYN, 60, 2, 1), Lookup::Miss);
        assert_eq!(
            table.insert(&server, SYN, 60, DENY, 1, 2),
            Inserted::Created
        );
        let info = table.flow(&server).unwrap();
        assert_eq!(info.state, FlowState::SynSent);
        assert_eq!(info.direction, FlowDirection::Original);
        assert_eq!(info.verdict, DENY);
        assert_eq!(
            info.original,
            Counters {
                packets: 1,
                bytes: 60
            }
        );
        assert_eq!(info.reply, Counters::default());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_syn_ack_on_a_closed_connection_belongs_to_it() {
        let mut table = small(1, 8);
        let client = established(&mut table, ALLOW, 1);
        let _ = table.lookup(&client, TcpFlags::RST, 40, 1, 1);
        assert!(matches!(
            table.lookup(&client.reversed(), SYN | ACK, 60, 2, 1),
            Lookup::Hit { .. }
        ));
    }

    #[test]
    fn a_tcp_connection_first_seen_mid_stream_is_picked_up_as_established() {
        let mut table = small(1, 8);
        let server = client_to_server(Protocol::TCP, 80).reversed();
        assert_eq!(table.lookup(&server, ACK, 1500, 0, 1), Lookup::Miss);
        let _ = table.insert(&server, ACK, 1500, ALLOW, 1, 0);
        assert_eq!(state(&table, &server), FlowState::Established);
        // The sender of the first packet seen counts as the initiator.
        assert_eq!(
            table.lookup(&server.reversed(), ACK, 52, 1, 1),
            hit(ALLOW, FlowDirection::Reply)
        );
        // And it lives as long as an established connection.
        let much_later = 3600 * SECOND;
        assert!(matches!(
            table.lookup(&server, ACK, 52, much_later, 1),
            Lookup::Hit { .. }
        ));
    }

    #[test]
    fn udp_sctp_and_icmp_echo_go_from_new_to_replied() {
        let keys = [
            client_to_server(Protocol::UDP, 53),
            client_to_server(Protocol::SCTP, 9000),
            FlowKey::icmp_echo(1, Protocol::ICMP, v4(1), v4(2), 77),
            FlowKey::icmp_echo(
                1,
                Protocol::ICMPV6,
                "fd00::1".parse().unwrap(),
                "fd00::2".parse().unwrap(),
                77,
            ),
            client_to_server(Protocol(47), 0), // GRE: tracked like UDP
        ];
        for key in keys {
            let mut table = small(1, 8);
            let _ = table.insert(&key, TcpFlags::NONE, 100, ALLOW, 1, 0);
            assert_eq!(state(&table, &key), FlowState::New, "{key:?}");
            let _ = table.lookup(&key, TcpFlags::NONE, 100, 1, 1);
            assert_eq!(state(&table, &key), FlowState::New, "{key:?}");
            assert_eq!(
                table.lookup(&key.reversed(), TcpFlags::NONE, 100, 2, 1),
                hit(ALLOW, FlowDirection::Reply)
            );
            assert_eq!(state(&table, &key), FlowState::Replied, "{key:?}");
        }
    }

    #[test]
    fn an_echo_reply_with_another_identifier_is_another_flow() {
        let mut table = small(1, 8);
        let request = FlowKey::icmp_echo(1, Protocol::ICMP, v4(1), v4(2), 77);
        let other = FlowKey::icmp_echo(1, Protocol::ICMP, v4(2), v4(1), 78);
        let _ = table.insert(&request, TcpFlags::NONE, 84, ALLOW, 1, 0);
        assert_eq!(table.lookup(&other, TcpFlags::NONE, 84, 0, 1), Lookup::Miss);
    }

    #[test]
    fn entries_expire_after_the_idle_timeout_of_their_state() {
        let timeouts = Timeouts::default();
        let mut table = small(1, 8);
        let key = client_to_server(Protocol::UDP, 53);
        let _ = table.insert(&key, TcpFlags::NONE, 100, ALLOW, 1, 0);
        let udp_new = timeouts.udp_new.as_nanos() as u64;
        // Each packet restarts the idle time.
        assert!(matches!(
            table.lookup(&key, TcpFlags::NONE, 1, udp_new - 1, 1),
            Lookup::Hit { .. }
        ));
        let _ = table.lookup(&key.reversed(), TcpFlags::NONE, 1, udp_new, 1);
        assert_eq!(state(&table, &key), FlowState::Replied);
        let udp_replied = timeouts.udp_replied.as_nanos() as u64;
        assert!(matches!(
            table.peek(&key, udp_new + udp_replied - 1, 1),
            Lookup::Hit { .. }
        ));
        assert_eq!(table.peek(&key, udp_new + udp_replied, 1), Lookup::Miss);
        assert_eq!(
            table.lookup(&key, TcpFlags::NONE, 1, udp_new + udp_replied, 1),
            Lookup::Miss
        );
        assert!(table.is_empty());
        assert_eq!(table.stats().expirations, 1);
    }

    /// A table of 4 × 64 slots, every one holding a UDP flow that is expired by `now`.
    fn full_of_expired_flows() -> (FlowTable, u64) {
        let mut table = small(4, 64);
        let mut n = 0;
        while table.len() < table.capacity() {
            let _ = table.insert(&udp(n), TcpFlags::NONE, 60, ALLOW, 1, 0);
            n += 1;
        }
        (table, Timeouts::default().udp_new.as_nanos() as u64)
    }

    #[test]
    fn a_paced_sweep_passes_over_the_table_once_per_sweep_period() {
        let (mut table, start) = full_of_expired_flows();
        let period = table.sweep_period_ns();
        assert_eq!(
            table.expire_paced(start, 0),
            0,
            "the first call only starts the clock"
        );
        let step = 1_000_000; // one call per millisecond
        let mut removed = 0;
        let mut now = start;
        while now < start + period / 2 {
            now += step;
            removed += table.expire_paced(now, 64);
        }
        let half = table.capacity() / 2;
        assert!(
            removed.abs_diff(half) <= 1,
            "{removed} slots reclaimed in half a period"
        );
        while now < start + period {
            now += step;
            removed += table.expire_paced(now, 64);
        }
        assert_eq!(
            removed,
            table.capacity(),
            "one period reclaims every slot once"
        );
        assert!(table.is_empty());
    }

    #[test]
    fn a_paced_sweep_after_a_stall_does_at_most_its_maximum_and_owes_nothing() {
        let (mut table, start) = full_of_expired_flows();
        let _ = table.expire_paced(start, 0);
        let period = table.sweep_period_ns();
        assert_eq!(table.expire_paced(start + 100 * period, 10), 10);
        // A millisecond later little is due: the stall's backlog was not carried.
        assert_eq!(table.expire_paced(start + 100 * period + 1_000_000, 10), 0);
    }

    #[test]
    fn an_unanswered_syn_expires_after_the_syn_timeout() {
        let mut table = table(FlowConfig {
            shards: 1,
            capacity_per_shard: 8,
            timeouts: Timeouts {
                tcp_syn: Duration::from_secs(5),
                ..Timeouts::default()
            },
            ..FlowConfig::default()
        });
        let key = client_to_server(Protocol::TCP, 80);
        let _ = table.insert(&key, SYN, 60, ALLOW, 1, 0);
        assert!(matches!(
            table.peek(&key, 5 * SECOND - 1, 1),
            Lookup::Hit { .. }
        ));
        assert_eq!(table.lookup(&key, SYN, 60, 5 * SECOND, 1), Lookup::Miss);
    }

    #[test]
    fn a_now_before_the_last_packet_does_not_expire_or_rewind_an_entry() {
        let mut table = small(1, 8);
        let key = client_to_server(Protocol::UDP, 53);
        let _ = table.insert(&key, TcpFlags::NONE, 1, ALLOW, 1, 100 * SECOND);
        assert!(matches!(
            table.lookup(&key, TcpFlags::NONE, 1, 50 * SECOND, 1),
            Lookup::Hit { .. }
        ));
        assert_eq!(table.flow(&key).unwrap().last_seen, 100 * SECOND);
    }

    #[test]
    fn expire_examines_at_most_its_budget_and_eventually_removes_every_expired_entry() {
        // Room for all 60 flows even if the hash puts them all in one shard.
        let mut table = small(2, 64);
        for n in 0..60 {
            let _ = table.insert(&udp(n), TcpFlags::NONE, 1, ALLOW, 1, 0);
        }
        // One flow stays alive past the others' timeout.
        let late = 31 * SECOND;
        let _ = table.lookup(&udp(0), TcpFlags::NONE, 1, 20 * SECOND, 1);
        assert_eq!(table.len(), 60);

        let mut removed = 0;
        let mut calls = 0;
        while calls * 10 < table.capacity() {
            let now_removed = table.expire(late, 10);
            assert!(now_removed <= 10);
            removed += now_removed;
            calls += 1;
        }
        assert_eq!(removed, 59);
        assert_eq!(table.len(), 1);
        assert!(table.flow(&udp(0)).is_some());
        assert_eq!(table.stats().expirations, 59);
        // A budget larger than the table makes one pass, no more.
        assert_eq!(table.expire(late + 60 * SECOND, usize::MAX), 1);
        assert_eq!(table.expire(late, 0), 0);
    }

    #[test]
    fn the_sweep_reaches_entries_that_churn_left_high_in_a_shard() {
        let mut table = small(1, 16);
        let timeout = Timeouts::default().udp_new.as_nanos() as u64;
        for n in 0..16 {
            let _ = table.insert(&udp(n), TcpFlags::NONE, 60, ALLOW, 1, 0);
        }
        assert_eq!(table.expire(timeout + 1, usize::MAX), 16);
        // Freed entries are taken back in reverse: these two land on the shard's last slots,
        // the higher one first.
        for n in 100..102 {
            let _ = table.insert(&udp(n), TcpFlags::NONE, 60, ALLOW, 1, timeout + 1);
        }
        assert_eq!(table.expire(2 * timeout + 2, usize::MAX), 2);
        assert!(table.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Lookup(u16),
        Insert(u16, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..16).prop_map(Op::Lookup),
            (0u16..16, any::<bool>()).prop_map(|(key, allow)| Op::Insert(key, allow)),
        ]
    }

    proptest! {
        /// Against a reference LRU: a list of (key, allowed) ordered from least to most recently
        /// seen. Operations are [`RELIST_AFTER_NS`] apart, so every hit relists its entry, and
        /// nothing expires (every timeout is a day).
        #[test]
        fn a_full_shard_evicts_the_least_recently_seen_flow(
            capacity in 1usize..8,
            ops in vec(op(), 1..200),
        ) {
            let day = Duration::from_secs(24 * 3600);
            let mut table = table(FlowConfig {
                shards: 1,
                capacity_per_shard: capacity,
                timeouts: Timeouts {
                    tcp_syn: day,
                    tcp_established: day,
                    tcp_closing: day,
                    tcp_closed: day,
                    udp_new: day,
                    udp_replied: day,
                    sctp_new: day,
                    sctp_replied: day,
                    icmp: day,
                    denied: day,
                },
                ..FlowConfig::default()
            });
            let mut model: Vec<(u16, bool)> = Vec::new();
            let mut evictions = 0;
            for (now, op) in ops.into_iter().enumerate() {
                let now = now as u64 * RELIST_AFTER_NS;
                match op {
                    Op::Lookup(n) => {
                        let got = table.lookup(&udp(n), TcpFlags::NONE, 1, now, 0);
                        match model.iter().position(|&(m, _)| m == n) {
                            Some(p) => {
                                let seen = model.remove(p);
                                model.push(seen);
                                prop_assert!(matches!(got, Lookup::Hit { .. }), "expected a hit, got {:?}", got);
                            }
                            None => prop_assert_eq!(got, Lookup::Miss),
                        }
                    }
                    Op::Insert(n, allow) => {
                        let verdict = if allow { ALLOW } else { DENY };
                        let got = table.insert(&udp(n), TcpFlags::NONE, 1, verdict, 0, now);
                        let expected = if let Some(p) = model.iter().position(|&(m, _)| m == n) {
                            model[p].1 = allow;
                            Inserted::Updated
                        } else if model.len() < capacity {
                            model.push((n, allow));
                            Inserted::Created
                        } else if !allow && model[0].1 {
                            Inserted::NotCached
                        } else {
                            model.remove(0);
                            evictions += 1;
                            model.push((n, allow));
                            Inserted::Created
                        };
                        prop_assert_eq!(got, expected);
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                for n in 0..16 {
                    prop_assert_eq!(
                        table.flow(&udp(n)).map(|f| f.verdict.allows()),
                        model.iter().find(|&&(m, _)| m == n).map(|&(_, a)| a)
                    );
                }
            }
            prop_assert_eq!(table.stats().evictions, evictions);
        }
    }

    #[test]
    fn a_hit_relists_its_flow_only_once_per_relist_interval() {
        for (hit_at, evicted, kept) in [(1, 1, 2), (RELIST_AFTER_NS, 2, 1)] {
            let mut table = small(1, 2);
            table.insert(&udp(1), TcpFlags::NONE, 1, ALLOW, 0, 0);
            table.insert(&udp(2), TcpFlags::NONE, 1, ALLOW, 0, 1);
            let hit = table.lookup(&udp(1), TcpFlags::NONE, 1, hit_at, 0);
            assert!(matches!(hit, Lookup::Hit { .. }));
            table.insert(&udp(3), TcpFlags::NONE, 1, ALLOW, 0, hit_at + 1);
            assert!(table.flow(&udp(evicted)).is_none(), "hit at {hit_at}");
            assert!(table.flow(&udp(kept)).is_some(), "hit at {hit_at}");
        }
    }

    #[test]
    fn a_flood_of_new_flows_never_grows_the_table_past_its_capacity() {
        let mut table = small(4, 32);
        let inserts = 100 * table.capacity();
        for n in 0..inserts {
            let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n as u32));
            let key = FlowKey::new(1, Protocol::UDP, src, 1234, v4(2), 53);
            assert_eq!(
                table.insert(&key, TcpFlags::NONE, 64, ALLOW, 1, n as u64),
                Inserted::Created
            );
            assert!(table.len() <= table.capacity());
        }
        let stats = table.stats();
        assert_eq!(stats.inserts, inserts as u64);
        assert_eq!(stats.evictions as usize, inserts - table.len());
        // Shards fill about evenly: every one is full by now.
        assert_eq!(table.len(), table.capacity());
    }

    #[test]
    fn a_full_shard_reclaims_an_expired_flow_before_evicting_a_live_one() {
        let mut table = small(1, 2);
        let established_tcp = established(&mut table, ALLOW, 1);
        let old_udp = udp(1);
        let _ = table.insert(&old_udp, TcpFlags::NONE, 1, ALLOW, 1, SECOND);
        // The TCP flow is the least recently seen, but the UDP flow has expired.
        let now = 40 * SECOND;
        assert_eq!(
            table.insert(&udp(2), TcpFlags::NONE, 1, ALLOW, 1, now),
            Inserted::Created
        );
        assert!(table.flow(&established_tcp).is_some());
        assert!(table.flow(&old_udp).is_none());
        let stats = table.stats();
        assert_eq!((stats.expirations, stats.evictions), (1, 0));
    }

    #[test]
    fn a_denied_flow_does_not_evict_an_allowed_one() {
        let mut table = small(1, 2);
        let _ = table.insert(&udp(1), TcpFlags::NONE, 1, ALLOW, 1, 0);
        let _ = table.insert(&udp(2), TcpFlags::NONE, 1, DENY, 1, 1);
        // The oldest is allowed: a denial is not cached.
        assert_eq!(
            table.insert(&udp(3), TcpFlags::NONE, 1, DENY, 1, 2),
            Inserted::NotCached
        );
        // Once the oldest is the denied one, a denial may take its place.
        let _ = table.lookup(&udp(1), TcpFlags::NONE, 1, RELIST_AFTER_NS, 1);
        assert_eq!(
            table.insert(&udp(3), TcpFlags::NONE, 1, DENY, 1, RELIST_AFTER_NS + 1),
            Inserted::Created
        );
        assert!(table.flow(&udp(1)).is_some());
        assert!(table.flow(&udp(2)).is_none());
        // An allowed flow evicts whatever is oldest, denied or not.
        assert_eq!(
            table.insert(&udp(4), TcpFlags::NONE, 1, ALLOW, 1, RELIST_AFTER_NS + 2),
            Inserted::Created
        );
        assert!(table.flow(&udp(1)).is_none());
        let stats = table.stats();
        assert_eq!((stats.not_cached, stats.evictions), (1, 2));
    }

    #[test]
    fn denied_flows_are_cached_and_expire_after_the_denied_timeout() {
        let mut table = small(1, 8);
        let key = client_to_server(Protocol::TCP, 22);
        let _ = table.insert(&key, SYN, 60, DENY, 1, 0);
        for retry in 1..=3 {
            assert_eq!(
                table.lookup(&key, SYN, 60, retry * 5 * SECOND, 1),
                hit(DENY, FlowDirection::Original)
            );
        }
        assert_eq!(table.flow(&key).unwrap().original.packets, 4);
        assert_eq!(table.lookup(&key, SYN, 60, 25 * SECOND, 1), Lookup::Miss);
    }

    #[test]
    fn strict_mode_redecides_connections_of_an_older_generation() {
        let mut table = small(1, 8);
        let client = established(&mut table, ALLOW, 1);
        let server = client.reversed();
        // A reply arrives first after the policy changed: decide the connection as the client
        // opened it.
        assert_eq!(
            table.lookup(&server, ACK, 1000, 1, 2),
            Lookup::Stale {
                direction: FlowDirection::Reply
            }
        );
        assert_eq!(
            table.insert(&server, ACK, 1000, Verdict::Allow { tag: 8 }, 2, 1),
            Inserted::Updated
        );
        let info = table.flow(&client).unwrap();
        assert_eq!(info.state, FlowState::Established);
        assert_eq!(info.direction, FlowDirection::Original);
        assert_eq!(info.generation, 2);
        assert_eq!(info.reply.packets, 2); // SYN-ACK and the stale-answered packet
        assert_eq!(
            table.lookup(&server, ACK, 1000, 2, 2),
            hit(Verdict::Allow { tag: 8 }, FlowDirection::Reply)
        );

        // The new policy may deny it: the next packet is dropped, the connection stays known.
        assert!(matches!(
            table.lookup(&client, ACK, 52, 3, 3),
            Lookup::Stale { .. }
        ));
        let _ = table.insert(&client, ACK, 52, DENY, 3, 3);
        assert_eq!(
            table.lookup(&client, ACK, 52, 4, 3),
            hit(DENY, FlowDirection::Original)
        );
        assert_eq!(table.stats().stale, 2);
    }

    #[test]
    fn keep_mode_keeps_allowed_connections_but_redecides_denied_ones() {
        let mut table = table(FlowConfig {
            shards: 1,
            capacity_per_shard: 8,
            existing: ExistingConnections::Keep,
            ..FlowConfig::default()
        });
        let allowed = established(&mut table, ALLOW, 1);
        let denied = udp(1);
        let _ = table.insert(&denied, TcpFlags::NONE, 1, DENY, 1, 0);

        assert_eq!(
            table.lookup(&allowed, ACK, 52, 1, 2),
            hit(ALLOW, FlowDirection::Original)
        );
        assert_eq!(
            table.lookup(&denied, TcpFlags::NONE, 1, 1, 2),
            Lookup::Stale {
                direction: FlowDirection::Original
            }
        );
        assert_eq!(
            table.insert(&denied, TcpFlags::NONE, 1, ALLOW, 2, 1),
            Inserted::Updated
        );
        assert_eq!(
            table.lookup(&denied, TcpFlags::NONE, 1, 2, 2),
            hit(ALLOW, FlowDirection::Original)
        );
    }

    #[test]
    fn counters_are_kept_per_direction() {
        let mut table = small(1, 8);
        let client = client_to_server(Protocol::UDP, 53);
        let _ = table.insert(&client, TcpFlags::NONE, 70, ALLOW, 1, 0);
        let _ = table.lookup(&client, TcpFlags::NONE, 30, 1, 1);
        let _ = table.lookup(&client.reversed(), TcpFlags::NONE, 500, 2, 1);
        let info = table.flow(&client.reversed()).unwrap();
        assert_eq!(info.direction, FlowDirection::Reply);
        assert_eq!(
            info.original,
            Counters {
                packets: 2,
                bytes: 100
            }
        );
        assert_eq!(
            info.reply,
            Counters {
                packets: 1,
                bytes: 500
            }
        );
        assert_eq!(info.last_seen, 2);
    }

    #[test]
    fn peek_finds_the_flow_of_an_icmp_error_without_changing_it() {
        let mut table = small(1, 8);
        let client = client_to_server(Protocol::UDP, 53);
        let _ = table.insert(&client, TcpFlags::NONE, 70, ALLOW, 1, 0);
        let before = table.flow(&client);
        let stats = table.stats();

        // The server (or a router) answers the client's datagram with an ICMP error quoting it.
        let error = FlowKey::for_embedded(1, Protocol::UDP, v4(1), 40000, v4(2), 53);
        assert_eq!(table.peek(&error, 1, 1), hit(ALLOW, FlowDirection::Reply));
        assert_eq!(
            table.peek(&error, 1, 2),
            Lookup::Stale {
                direction: FlowDirection::Reply
            }
        );
        let unrelated = FlowKey::for_embedded(1, Protocol::UDP, v4(1), 40001, v4(2), 53);
        assert_eq!(table.peek(&unrelated, 1, 1), Lookup::Miss);

        assert_eq!(table.flow(&client), before);
        assert_eq!(table.stats(), stats);
    }

    #[test]
    fn remove_attachment_drops_only_that_attachments_flows() {
        let mut table = small(2, 8);
        for attachment in [1, 2] {
            for port in [53, 54, 55] {
                let key = FlowKey::new(attachment, Protocol::UDP, v4(1), 1, v4(2), port);
                let _ = table.insert(&key, TcpFlags::NONE, 1, ALLOW, 1, 0);
            }
        }
        assert_eq!(table.remove_attachment(1), 3);
        assert_eq!(table.len(), 3);
        let kept = FlowKey::new(2, Protocol::UDP, v4(1), 1, v4(2), 53);
        assert!(table.flow(&kept).is_some());
    }

    #[test]
    fn a_table_of_zero_shards_or_zero_capacity_is_refused() {
        let zero_shards = FlowConfig {
            shards: 0,
            ..FlowConfig::default()
        };
        assert!(matches!(
            FlowTable::new(zero_shards),
            Err(ConfigError::Shards { got: 0, .. })
        ));
        let zero_capacity = FlowConfig {
            capacity_per_shard: 0,
            ..FlowConfig::default()
        };
        assert_eq!(
            FlowTable::new(zero_capacity).unwrap_err().to_string(),
            "flow table capacity per shard must be between 1 and 1073741824, got 0"
        );
    }

    #[test]
    fn many_flows_come_and_go_without_losing_any_in_the_index() {
        // Exercises backward-shift deletion: every live flow must stay findable after others
        // around it in the probe runs are removed.
        let mut table = small(1, 64);
        let mut live = Vec::new();
        for round in 0u16..20 {
            for n in 0..40 {
                let key = udp(round * 40 + n);
                let _ = table.insert(&key, TcpFlags::NONE, 1, ALLOW, 1, 0);
                live.push(key);
            }
            live.retain(|key| {
                let keep = table.flow(key).is_some();
                if keep && (key.tuple.lo_port + key.tuple.hi_port) % 3 == 0 {
                    let tag = table.locate(&key.tuple).1;
                    let mut shard = table.shard_mut(0);
                    let i = shard.find(&key.tuple, tag).unwrap();
                    shard.remove(i);
                    return false;
                }
                keep
            });
            for key in &live {
                assert!(table.flow(key).is_some());
            }
            assert_eq!(table.len(), live.len());
        }
    }
}
