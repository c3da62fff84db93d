//! The compiled classifier: immutable, `Send + Sync`, answering `decide` with a few lookups whose
//! cost does not grow with the number of policies in the cluster.
//!
//! For each endpoint class (pods selected by the same policies) and direction there is a
//! [`Chain`]: one [`Table`] per tier with policies for the class, in tier order. A table's rules
//! are numbered *slots* in evaluation order; its first matching slot decides (Allow, Deny) or
//! passes to the next tier (Pass). Log rules have a table of their own, numbered alike, asked
//! only when a new connection is logged. Each slot constrains up to three
//! dimensions — the peer pod (through its label group), the peer address (CIDR ranges) and the
//! port. A lookup maps the packet to one class per dimension; the lowest slot common to the
//! classes (the lowest set bit of their AND) is computed at compile time for every combination
//! that can occur, so the lookup itself never scans rules.

pub mod intervals;
pub mod lpm;
mod origins;
pub mod ports;
mod product;

use std::net::IpAddr;
use std::sync::Arc;

use arrayvec::ArrayVec;

use crate::calico::tier::TierDefault;
use crate::decision::{ConnectionDecision, Decision, Party, RuleRef};
use crate::inventory::{PodId, Protocol};
use crate::load::Cluster;
use crate::netpol::{Action, Direction};

use lpm::{AddressMap, AddressRange};
use origins::SlotRules;
use ports::{PortMap, PortRange};
pub(crate) use product::{Budgets, Product};

/// "No slot": larger than every slot number, so `min` ignores it.
pub(crate) const NONE: u32 = u32::MAX;

pub(crate) const NO_TABLE: u32 = u32::MAX;

/// Pod group of the peer → the first slot whose pod condition the group satisfies.
#[derive(Debug)]
pub(crate) struct GroupFirst {
    pub(crate) by_group: rustc_hash::FxHashMap<u32, u32>,
    /// The first slot that any pod satisfies (a peer of every pod in every namespace).
    pub(crate) all_pods: u32,
    /// The first slot that an address of no pod satisfies (Calico's `notSelector` alone).
    pub(crate) external: u32,
}

impl Default for GroupFirst {
    fn default() -> Self {
        GroupFirst {
            by_group: rustc_hash::FxHashMap::default(),
            all_pods: NONE,
            external: NONE,
        }
    }
}

impl GroupFirst {
    #[inline]
    fn first(&self, group: Option<u32>) -> u32 {
        match group {
            None => self.external,
            Some(g) => self
                .by_group
                .get(&g)
                .copied()
                .unwrap_or(NONE)
                .min(self.all_pods),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.by_group.capacity() * 9
    }
}

/// Peer address → the first slot whose CIDR terms contain it.
#[derive(Debug)]
pub(crate) struct AddressFirst {
    /// Maps straight to the slot (`NONE` where no term contains the address).
    pub(crate) map: AddressMap,
}

impl AddressFirst {
    #[inline]
    fn first(&self, peer: IpAddr) -> u32 {
        self.map.class_of(peer)
    }

    fn heap_bytes(&self) -> usize {
        self.map.heap_bytes()
    }
}

/// Everything known about one port class: its first slot for each kind of peer condition.
#[derive(Debug)]
pub(crate) struct PortClass {
    /// First slot with no peer condition.
    pub(crate) any_peer: u32,
    pub(crate) pods: Option<GroupFirst>,
    pub(crate) addresses: Option<AddressFirst>,
}

impl PortClass {
    #[inline(always)]
    fn first(&self, group: Option<u32>, peer: IpAddr) -> u32 {
        let mut best = self.any_peer;
        if let Some(pods) = &self.pods {
            best = best.min(pods.first(group));
        }
        if let Some(addresses) = &self.addresses {
            best = best.min(addresses.first(peer));
        }
        best
    }

    /// A measure of its size: one, plus its pod groups and address intervals.
    pub(crate) fn entries(&self) -> usize {
        1 + self.pods.as_ref().map_or(0, |p| p.by_group.len())
            + self.addresses.as_ref().map_or(0, |a| a.map.intervals())
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<PortClass>()
            + self.pods.as_ref().map_or(0, GroupFirst::heap_bytes)
            + self.addresses.as_ref().map_or(0, AddressFirst::heap_bytes)
    }
}

/// The slots that match every port of a protocol (no port condition, a full port range, Calico's
/// `notProtocol`), kept apart from the port classes: a class per protocol some slot names, and
/// one for every other protocol.
#[derive(Debug)]
pub(crate) struct WideClasses {
    pub(crate) by_protocol: Vec<(Protocol, PortClass)>,
    pub(crate) other: Option<PortClass>,
}

impl WideClasses {
    /// The class for `protocol`, if any slot matches it.
    #[inline]
    pub(crate) fn class(&self, protocol: Protocol) -> Option<&PortClass> {
        self.by_protocol
            .iter()
            .find(|(p, _)| *p == protocol)
            .map(|(_, class)| class)
            .or(self.other.as_ref())
    }

    #[inline]
    fn first(&self, group: Option<u32>, peer: IpAddr, protocol: Protocol) -> u32 {
        self.class(protocol)
            .map_or(NONE, |class| class.first(group, peer))
    }

    fn classes(&self) -> impl Iterator<Item = &PortClass> {
        self.by_protocol
            .iter()
            .map(|(_, class)| class)
            .chain(&self.other)
    }

    /// How much folding these slots into the port classes of `ports` would copy (see
    /// [`PortClass::entries`]): each protocol's class once per port class of the protocol.
    pub(crate) fn copies(&self, ports: &PortMap) -> usize {
        ports
            .classes_per_protocol()
            .map(|(protocol, classes)| {
                classes.saturating_mul(self.class(protocol).map_or(0, PortClass::entries))
            })
            .fold(0, usize::saturating_add)
    }

    pub(crate) fn needs_group(&self) -> bool {
        self.classes().any(|class| class.pods.is_some())
    }

    fn heap_bytes(&self) -> usize {
        self.classes().map(PortClass::heap_bytes).sum::<usize>() + self.by_protocol.len() * 8
    }
}

/// A port condition of a [`MixedSlot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortTest {
    Range(PortRange),
    /// Every port of every protocol but this one (Calico `notProtocol`).
    AllBut(Protocol),
}

impl PortTest {
    fn matches(self, protocol: Protocol, port: u16) -> bool {
        match self {
            PortTest::Range(r) => r.protocol == protocol && (r.start..=r.end).contains(&port),
            PortTest::AllBut(p) => p != protocol,
        }
    }
}

/// A slot that constrains the peer's pod *and* its address (an egress named port towards an
/// ipBlock; a Calico rule with both selectors and nets). Rare enough to be checked one by one.
#[derive(Debug, Clone)]
pub(crate) struct MixedSlot {
    pub(crate) slot: u32,
    /// Sorted groups that satisfy the pod condition.
    pub(crate) groups: Box<[u32]>,
    /// Whether addresses of no pod satisfy the pod condition.
    pub(crate) external: bool,
    pub(crate) ranges: Box<[AddressRange]>,
    pub(crate) ports: Option<Box<[PortTest]>>,
}

impl MixedSlot {
    fn matches(&self, group: Option<u32>, peer: IpAddr, protocol: Protocol, port: u16) -> bool {
        group.map_or(self.external, |g| self.groups.binary_search(&g).is_ok())
            && self.ranges.iter().any(|r| r.contains(peer))
            && self
                .ports
                .as_ref()
                .is_none_or(|ports| ports.iter().any(|p| p.matches(protocol, port)))
    }
}

/// The slots of a table (or of one source-port class of it) by port, peer group and peer
/// address.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// Per (protocol, port) class, the first slot for each kind of peer condition. Unless
    /// `wide` is set, the slots matching every port of a protocol are folded into every class.
    pub(crate) ports: (PortMap, Vec<PortClass>),
    /// Slots matching every port of a protocol, kept apart when there were too many to fold
    /// into every port class.
    pub(crate) wide: Option<WideClasses>,
    pub(crate) mixed: Vec<MixedSlot>,
    /// The lowest slot in the lookup (`NONE` if it has none).
    pub(crate) lowest: u32,
    /// The same answers in one table, when the slots look only at addresses and ports and the
    /// table fits `CompileOptions::product_budget`.
    pub(crate) product: Option<Product>,
}

impl Lookup {
    /// The first slot matching the peer (its pod group, if it is a pod) and the destination
    /// port, or `NONE`.
    #[inline]
    fn first(&self, group: Option<u32>, peer: IpAddr, protocol: Protocol, port: u16) -> u32 {
        if let Some(product) = &self.product {
            return product.first(peer, protocol, port);
        }
        let (map, classes) = &self.ports;
        let mut best = classes[map.class_of(protocol, port) as usize].first(group, peer);
        if let Some(wide) = &self.wide {
            best = best.min(wide.first(group, peer, protocol));
        }
        for mixed in &self.mixed {
            if mixed.slot >= best {
                break;
            }
            if mixed.matches(group, peer, protocol, port) {
                best = mixed.slot;
                break;
            }
        }
        best
    }

    /// Forgets the layers, once a product answers every lookup of them.
    pub(crate) fn drop_layers(&mut self) {
        self.ports = (PortMap::default(), Vec::new());
        self.wide = None;
    }

    fn needs_group(&self) -> bool {
        !self.mixed.is_empty()
            || self.ports.1.iter().any(|c| c.pods.is_some())
            || self.wide.as_ref().is_some_and(WideClasses::needs_group)
    }

    fn heap_bytes(&self) -> usize {
        let (map, classes) = &self.ports;
        map.heap_bytes()
            + classes.iter().map(PortClass::heap_bytes).sum::<usize>()
            + self.wide.as_ref().map_or(0, WideClasses::heap_bytes)
            + self
                .mixed
                .iter()
                .map(|m| 48 + m.groups.len() * 4 + m.ranges.len() * 40)
                .sum::<usize>()
            + self.product.as_ref().map_or(0, Product::heap_bytes)
    }
}

/// The slots with a source-port condition (Calico's `source.ports` and `notPorts` on ingress,
/// and on egress where the source is the endpoint itself), by source-port class: each class
/// has a [`Lookup`] of the slots whose source ports it lies in. Such rules are rare, so a
/// table without them pays one branch.
#[derive(Debug)]
pub(crate) struct SourcePorts {
    /// (protocol, source port) → index into `lookups`.
    pub(crate) map: PortMap,
    /// `None` for a class no slot's source ports include.
    pub(crate) lookups: Vec<Option<Lookup>>,
    /// One product for the table's main lookup and these together, when their slots look
    /// only at addresses and ports and it fits `CompileOptions::joint_product_budget`: then
    /// it answers alone, and neither the main lookup nor these keep layers or products.
    pub(crate) joint: Option<JointProduct>,
}

/// See [`Product::build_joint`].
#[derive(Debug)]
pub(crate) struct JointProduct {
    pub(crate) product: Product,
    /// Source-port class (index into [`SourcePorts::lookups`]) → its part of the product.
    pub(crate) part_of_class: Box<[u32]>,
}

/// Where a packet's source port sends its lookup (see [`SourcePorts::route`]).
enum SourceRoute<'a> {
    /// The joint product's part for its source-port class answers alone.
    Joint(&'a Product, u32),
    /// The main lookup answers, and its source-port class's lookup, if the class has one.
    Class(Option<&'a Lookup>),
}

impl SourcePorts {
    #[inline]
    fn class(&self, protocol: Protocol, source_port: u16) -> usize {
        self.map.class_of(protocol, source_port) as usize
    }

    /// What answers for a packet with these ports besides (or instead of) the main lookup.
    #[inline]
    fn route(&self, protocol: Protocol, source_port: u16) -> SourceRoute<'_> {
        let class = self.class(protocol, source_port);
        match &self.joint {
            Some(joint) => SourceRoute::Joint(&joint.product, joint.part_of_class[class]),
            None => SourceRoute::Class(self.lookups[class].as_ref()),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Lookup> {
        self.lookups.iter().flatten()
    }

    fn heap_bytes(&self) -> usize {
        self.map.heap_bytes()
            + self.lookups.len() * std::mem::size_of::<Option<Lookup>>()
            + self.all().map(Lookup::heap_bytes).sum::<usize>()
            + self
                .joint
                .as_ref()
                .map_or(0, |j| j.product.heap_bytes() + j.part_of_class.len() * 4)
    }
}

/// The rules that apply to one endpoint class in one direction, compiled.
///
/// Slots are numbered in evaluation order; the answer is the lowest slot whose every condition
/// holds. That lowest slot is precomputed per class (and per port class × peer class), so a
/// lookup is a port search, a hash lookup and an address search, whatever the number of rules.
#[derive(Debug)]
pub struct Table {
    /// Slot → the rule it came from and what that rule does.
    pub(crate) slots: SlotRules,
    /// The slots without a source-port condition.
    pub(crate) lookup: Lookup,
    /// The slots with one.
    pub(crate) by_source: Option<SourcePorts>,
    /// Whether any slot looks at the peer's pod group.
    pub(crate) needs_group: bool,
}

impl Table {
    pub(crate) fn new(
        slots: Vec<(RuleRef, Action)>,
        lookup: Lookup,
        by_source: Option<SourcePorts>,
    ) -> Table {
        let needs_group = lookup.needs_group()
            || by_source
                .as_ref()
                .is_some_and(|s| s.all().any(Lookup::needs_group));
        Table {
            slots: SlotRules::new(&slots),
            lookup,
            by_source,
            needs_group,
        }
    }

    /// The first slot matching the peer (its pod group, if it is a pod) and the ports.
    #[inline]
    fn first_match(
        &self,
        group: Option<u32>,
        peer: IpAddr,
        protocol: Protocol,
        port: u16,
        source_port: u16,
    ) -> Option<u32> {
        let best = match &self.by_source {
            None => self.lookup.first(group, peer, protocol, port),
            Some(by_source) => match by_source.route(protocol, source_port) {
                SourceRoute::Joint(product, part) => product.first_in(part, peer, protocol, port),
                SourceRoute::Class(class) => {
                    let best = self.lookup.first(group, peer, protocol, port);
                    match class {
                        // An earlier slot already matched: nothing here can come first.
                        Some(lookup) if lookup.lowest < best => {
                            best.min(lookup.first(group, peer, protocol, port))
                        }
                        _ => best,
                    }
                }
            },
        };
        (best != NONE).then_some(best)
    }

    /// The product that answers for the slots without a source-port condition: the joint
    /// product if there is one, else the main lookup's, if it has one.
    fn main_product(&self) -> Option<&Product> {
        self.by_source
            .as_ref()
            .and_then(|s| s.joint.as_ref())
            .map(|j| &j.product)
            .or(self.lookup.product.as_ref())
    }

    /// Whether the table's main lookup (the slots without a source-port condition) answers
    /// from an address × port product, its own or the joint one (see
    /// [`Stats::product_tables`]). Without a joint product, the lookups of its source-port
    /// classes get products of their own where they fit.
    fn has_product(&self) -> bool {
        self.main_product().is_some()
    }

    /// Whether that product is chunked (see [`Stats::chunked_product_tables`]).
    fn has_chunked_product(&self) -> bool {
        self.main_product()
            .is_some_and(|p| matches!(p.shape(), product::Shape::Chunked { .. }))
    }

    /// Whether that product holds its rows as steps (see [`Stats::steps_product_tables`]).
    fn has_steps_product(&self) -> bool {
        self.main_product()
            .is_some_and(|p| p.shape() == product::Shape::Steps)
    }

    /// Whether that product is looked up in stages by `decide_each` (see
    /// [`Stats::staged_product_tables`]).
    fn has_staged_product(&self) -> bool {
        self.main_product().is_some_and(Product::is_staged)
    }

    /// Whether one joint product answers for all of the table's lookups (see
    /// [`Stats::joint_product_tables`]).
    fn has_joint_product(&self) -> bool {
        self.by_source.as_ref().is_some_and(|s| s.joint.is_some())
    }

    /// Whether a lookup of the table keeps the rules over every port of a protocol apart (see
    /// [`Stats::apart_tables`]; a lookup with a product has no layers left to keep apart).
    fn is_apart(&self) -> bool {
        let apart = |l: &Lookup| l.wide.is_some();
        apart(&self.lookup) || self.by_source.as_ref().is_some_and(|s| s.all().any(apart))
    }

    fn heap_bytes(&self) -> usize {
        self.slots.heap_bytes()
            + self.lookup.heap_bytes()
            + self.by_source.as_ref().map_or(0, SourcePorts::heap_bytes)
    }
}

/// The tables of one tier for one endpoint class and direction.
#[derive(Debug)]
pub(crate) struct TierTables {
    /// Index into [`Cluster::tiers`].
    pub(crate) tier: u32,
    pub(crate) default_action: TierDefault,
    /// Allow, Deny and Pass rules.
    pub(crate) rules: Table,
    /// Log rules, numbered like `rules`.
    pub(crate) log: Option<Table>,
}

/// Everything that decides for one endpoint class in one direction: a table per tier.
#[derive(Debug)]
pub struct Chain {
    /// The policies selecting these endpoints for the direction, in evaluation order.
    pub(crate) policies: Vec<u32>,
    pub(crate) tiers: Vec<TierTables>,
    /// Whether any table looks at the peer's pod group.
    pub(crate) needs_group: bool,
}

impl Chain {
    /// Every table of the chain, deciding and Log.
    fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tiers
            .iter()
            .flat_map(|t| std::iter::once(&t.rules).chain(&t.log))
    }

    /// The products [`Classifier::decide_each`] may interleave: the first tier's deciding
    /// table's, of its main lookup and source-port classes or the joint one.
    pub(crate) fn first_tier_products(&self) -> impl Iterator<Item = &Product> {
        self.tiers.first().into_iter().flat_map(|tier| {
            let table = &tier.rules;
            let joint = table.by_source.iter().flat_map(|s| &s.joint);
            std::iter::once(&table.lookup)
                .chain(table.by_source.iter().flat_map(SourcePorts::all))
                .filter_map(|lookup| lookup.product.as_ref())
                .chain(joint.map(|j| &j.product))
        })
    }

    fn heap_bytes(&self) -> usize {
        self.policies.len() * 4 + self.tables().map(Table::heap_bytes).sum::<usize>()
    }
}

/// How many queries [`Classifier::decide_each`] interleaves: in each of its two rounds (the
/// main lookups, then the source-port classes'), a query has at most one product lookup.
const DECIDE_GROUP: usize = product::STAGED;

/// The lookups of one round of [`Classifier::decide_each`]'s group: those that answer from a
/// staged product wait here and are looked up together; the others answer at once.
#[derive(Default)]
struct Staging<'a> {
    staged: ArrayVec<product::Staged<'a>, DECIDE_GROUP>,
    /// The query each staged lookup answers for.
    owners: ArrayVec<usize, DECIDE_GROUP>,
}

impl<'a> Staging<'a> {
    /// `lookup` for query `i`: its first slot lowers `firsts[i]`, now or at `finish`.
    fn add(
        &mut self,
        i: usize,
        lookup: &'a Lookup,
        group: Option<u32>,
        q: &Query,
        firsts: &mut [u32],
    ) {
        match &lookup.product {
            Some(product) => self.add_product(i, product, 0, q, firsts),
            None => firsts[i] = firsts[i].min(lookup.first(group, q.peer, q.protocol, q.port)),
        }
    }

    /// `part` of `product` for query `i`, as [`Staging::add`].
    fn add_product(
        &mut self,
        i: usize,
        product: &'a Product,
        part: u32,
        q: &Query,
        firsts: &mut [u32],
    ) {
        if product.is_staged() {
            self.staged.push(product::Staged {
                product,
                part,
                peer: q.peer,
                protocol: q.protocol,
                port: q.port,
            });
            self.owners.push(i);
        } else {
            firsts[i] = firsts[i].min(product.first_in(part, q.peer, q.protocol, q.port));
        }
    }

    /// Looks up what waits, and empties the round.
    fn finish(&mut self, firsts: &mut [u32]) {
        let mut found = [NONE; DECIDE_GROUP];
        let found = &mut found[..self.staged.len()];
        product::first_each(&self.staged, found);
        for (&owner, &first) in self.owners.iter().zip(found.iter()) {
            firsts[owner] = firsts[owner].min(first);
        }
        self.staged.clear();
        self.owners.clear();
    }
}

/// The arguments of one [`Classifier::decide`], for [`Classifier::decide_each`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub pod: PodId,
    pub direction: Direction,
    /// The source for ingress, the destination for egress.
    pub peer: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    pub source_port: u16,
}

/// The questions a connection from `from` to `to` asks: the source's egress and the
/// destination's ingress, each where that end is a pod.
fn connection_queries(
    from: Party,
    to: Party,
    protocol: Protocol,
    port: u16,
    source_port: u16,
) -> [Option<Query>; 2] {
    let query = |pod, direction, peer: Party| Query {
        pod,
        direction,
        peer: peer.address(),
        protocol,
        port,
        source_port,
    };
    [
        from.pod().map(|p| query(p, Direction::Egress, to)),
        to.pod().map(|p| query(p, Direction::Ingress, from)),
    ]
}

/// Numbers describing a compiled classifier.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub tables: usize,
    /// Tables (deciding or Log) whose rules over every port of a protocol are kept apart in
    /// classes of their own, because folding them into each port class would have outgrown
    /// `CompileOptions::fold_budget`, and that have no product to answer instead.
    pub apart_tables: usize,
    /// Tables (deciding or Log) answered from one table of first slots per address class and
    /// port class, because their rules look only at addresses and ports and that table fits
    /// `CompileOptions::product_budget`.
    pub product_tables: usize,
    /// Of those, the tables whose product is chunked, because the dense one would outgrow
    /// `CompileOptions::dense_product_budget` and the steps shape does not fit (a row with
    /// more than five steps over its block's base, or past
    /// `CompileOptions::steps_product_budget`): one dependent load more per lookup.
    pub chunked_product_tables: usize,
    /// Of those, the tables whose product holds each row as at most five steps over the ports
    /// where it is below its block of addresses' base row, because the dense one would
    /// outgrow `CompileOptions::dense_product_budget` (one record load per lookup, beside a
    /// base slot that does not wait for it).
    pub steps_product_tables: usize,
    /// Tables whose main lookup's product `decide_each` looks up in stages, because it takes
    /// at least `CompileOptions::staged_product_bytes`.
    pub staged_product_tables: usize,
    /// Tables with source-port rules answered from one joint product of their lookups (see
    /// `CompileOptions::joint_product_budget`): one lookup per packet instead of two.
    pub joint_product_tables: usize,
    pub slots: usize,
    pub pod_groups: usize,
    pub selector_terms: usize,
    pub heap_bytes: usize,
}

/// The compiled form of a [`Cluster`]'s policies. Build it with [`Classifier::compile`].
#[derive(Debug)]
pub struct Classifier {
    pub(crate) cluster: Arc<Cluster>,
    /// Address of a policy endpoint → its pod group, per family (a `u32` key hashes faster than
    /// an `IpAddr`).
    pub(crate) group_by_v4: rustc_hash::FxHashMap<u32, u32>,
    pub(crate) group_by_v6: rustc_hash::FxHashMap<u128, u32>,
    /// Pod → chain per direction (`NO_TABLE`: no policy applies).
    pub(crate) chains_of_pod: Vec<[u32; 2]>,
    pub(crate) chains: Vec<Chain>,
    pub(crate) pod_groups: usize,
    pub(crate) selector_terms: usize,
    /// Whether any product that `decide_each` interleaves (see
    /// [`Chain::first_tier_products`]) is staged.
    pub(crate) has_staged_products: bool,
}

impl Classifier {
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The chain deciding for `pod` in `direction` (`None`: no policy applies), and `peer`'s pod
    /// group if the chain looks at it.
    #[inline]
    fn chain_for(
        &self,
        pod: PodId,
        direction: Direction,
        peer: IpAddr,
    ) -> Option<(&Chain, Option<u32>)> {
        let chain = self.chain(pod, direction)?;
        let group = if chain.needs_group {
            self.group_of(peer)
        } else {
            None
        };
        Some((chain, group))
    }

    /// The verdict for traffic of `pod` in `direction` with `peer` (the source for ingress, the
    /// destination for egress), `protocol`, `port` (the destination port; for ICMP and ICMPv6
    /// the type and code, see [`crate::calico::rule::icmp_port`]; 0 for other protocols
    /// without ports) and `source_port` (0 for protocols without ports; only Calico rules with
    /// `source` ports look at it).
    #[inline]
    pub fn decide(
        &self,
        pod: PodId,
        direction: Direction,
        peer: IpAddr,
        protocol: Protocol,
        port: u16,
        source_port: u16,
    ) -> Decision {
        self.decide_query(&Query {
            pod,
            direction,
            peer,
            protocol,
            port,
            source_port,
        })
    }

    /// [`Classifier::decide`] with its arguments in a [`Query`].
    #[inline]
    pub fn decide_query(&self, query: &Query) -> Decision {
        match self.chain_for(query.pod, query.direction, query.peer) {
            None => Decision::NotIsolated,
            Some((chain, group)) => Self::decide_in(chain, group, query, None),
        }
    }

    /// [`Classifier::decide`] of every query, `decisions[i]` for `queries[i]`: the same
    /// answers, computed in groups of 16 whose lookups of large products (the first tier's
    /// deciding table's, from `CompileOptions::staged_product_bytes` up) are interleaved so
    /// that their memory accesses overlap; every other lookup is made as `decide` makes it.
    /// Worth it where tables outgrow the caches (tens of thousands of rules) and many
    /// decisions are wanted at once, as for a reachability matrix.
    ///
    /// Panics if the slices differ in length.
    pub fn decide_each(&self, queries: &[Query], decisions: &mut [Decision]) {
        assert_eq!(queries.len(), decisions.len(), "one decision per query");
        if !self.has_staged_products {
            // Every table sits in the caches: one after another is the fastest.
            for (query, decision) in queries.iter().zip(decisions) {
                *decision = self.decide_query(query);
            }
            return;
        }
        for (queries, decisions) in queries
            .chunks(DECIDE_GROUP)
            .zip(decisions.chunks_mut(DECIDE_GROUP))
        {
            self.decide_group(queries, decisions);
        }
    }

    /// At most [`DECIDE_GROUP`] queries: each query's chain and peer group, then the first
    /// tier's first matching slot of every query (its product lookups interleaved, any other
    /// lookup directly), then the rest of each decision as `decide` takes it.
    fn decide_group(&self, queries: &[Query], decisions: &mut [Decision]) {
        let mut chains: ArrayVec<Option<(&Chain, Option<u32>)>, DECIDE_GROUP> = ArrayVec::new();
        let mut firsts = [NONE; DECIDE_GROUP];
        let mut lookups = Staging::default();
        // The first tier's source-port lookups, asked only where they can still come first.
        let mut by_source: ArrayVec<Option<&Lookup>, DECIDE_GROUP> = ArrayVec::new();
        for (i, q) in queries.iter().enumerate() {
            let chain = self.chain_for(q.pod, q.direction, q.peer);
            chains.push(chain);
            let table = chain
                .and_then(|(chain, _)| chain.tiers.first())
                .map(|t| &t.rules);
            let route = table
                .and_then(|table| table.by_source.as_ref())
                .map(|by_source| by_source.route(q.protocol, q.source_port));
            by_source.push(match route {
                Some(SourceRoute::Class(class)) => class,
                _ => None,
            });
            match (table, chain, route) {
                (_, _, Some(SourceRoute::Joint(product, part))) => {
                    lookups.add_product(i, product, part, q, &mut firsts)
                }
                (Some(table), Some((_, group)), _) => {
                    lookups.add(i, &table.lookup, group, q, &mut firsts)
                }
                _ => {}
            }
        }
        lookups.finish(&mut firsts);
        for (i, q) in queries.iter().enumerate() {
            if let (Some(lookup), Some((_, group))) = (by_source[i], chains[i]) {
                // As in `Table::first_match`: only a slot below the first match can change it.
                if lookup.lowest < firsts[i] {
                    lookups.add(i, lookup, group, q, &mut firsts);
                }
            }
        }
        lookups.finish(&mut firsts);
        for (i, q) in queries.iter().enumerate() {
            decisions[i] = match chains[i] {
                None => Decision::NotIsolated,
                Some((chain, group)) => {
                    let first = (firsts[i] != NONE).then_some(firsts[i]);
                    Self::decide_in(chain, group, q, Some(first))
                }
            };
        }
    }

    /// The decision of `chain` for `query` (`group`: the peer's pod group, if the chain looks
    /// at it), with the first tier's first matching slot if it is already known.
    #[inline]
    fn decide_in(
        chain: &Chain,
        group: Option<u32>,
        query: &Query,
        first_tier: Option<Option<u32>>,
    ) -> Decision {
        let mut passed_by = None;
        for (i, tier) in chain.tiers.iter().enumerate() {
            let first = match first_tier {
                Some(first) if i == 0 => first,
                _ => tier.rules.first_match(
                    group,
                    query.peer,
                    query.protocol,
                    query.port,
                    query.source_port,
                ),
            };
            match first {
                Some(slot) => {
                    let rule = tier.rules.slots.rule(slot);
                    let action = tier.rules.slots.action(slot);
                    if matches!(action, Action::Allow | Action::Deny) {
                        // Chosen without a branch: where Allow and Deny rules mix (every
                        // third ClassBench rule denies), a branch on the action mispredicts,
                        // and the next decision's loads restart after the last load of this
                        // one (100k rules: 56 against 54 ns, one process at a time).
                        return [Decision::Allowed(rule), Decision::DeniedBy(rule)]
                            [usize::from(action == Action::Deny)];
                    }
                    passed_by = Some(rule);
                }
                None => match tier.default_action {
                    TierDefault::Deny => return Decision::Denied { tier: tier.tier },
                    TierDefault::Pass => passed_by = None,
                },
            }
        }
        Decision::Passed(passed_by)
    }

    /// The first Log rule that traffic meets before the rule or tier that decides it (see
    /// [`Classifier::decide`] for the arguments). A separate question from `decide` because it
    /// is asked once per new connection, and only there.
    pub fn logged(
        &self,
        pod: PodId,
        direction: Direction,
        peer: IpAddr,
        protocol: Protocol,
        port: u16,
        source_port: u16,
    ) -> Option<RuleRef> {
        let (chain, group) = self.chain_for(pod, direction, peer)?;
        for tier in &chain.tiers {
            let decided = tier
                .rules
                .first_match(group, peer, protocol, port, source_port);
            if let Some(log) = &tier.log {
                if let Some(slot) = log.first_match(group, peer, protocol, port, source_port) {
                    if decided.is_none_or(|d| slot < d) {
                        return Some(log.slots.rule(slot));
                    }
                }
            }
            match decided {
                Some(slot) if tier.rules.slots.action(slot) == Action::Pass => {}
                Some(_) => return None,
                None if tier.default_action == TierDefault::Pass => {}
                None => return None,
            }
        }
        None
    }

    #[inline]
    fn group_of(&self, peer: IpAddr) -> Option<u32> {
        match peer {
            IpAddr::V4(a) => self.group_by_v4.get(&u32::from(a)).copied(),
            IpAddr::V6(a) => self.group_by_v6.get(&u128::from(a)).copied(),
        }
    }

    /// Whether a table (deciding or Log) for `pod` in `direction` keeps the rules over every
    /// port of a protocol apart from its port classes (see [`Stats::apart_tables`]).
    pub fn is_apart(&self, pod: PodId, direction: Direction) -> bool {
        self.any_table(pod, direction, Table::is_apart)
    }

    /// Whether a table (deciding or Log) for `pod` in `direction` answers from an address ×
    /// port product (see [`Stats::product_tables`]).
    pub fn has_product(&self, pod: PodId, direction: Direction) -> bool {
        self.any_table(pod, direction, Table::has_product)
    }

    /// Whether such a product is chunked (see [`Stats::chunked_product_tables`]).
    pub fn has_chunked_product(&self, pod: PodId, direction: Direction) -> bool {
        self.any_table(pod, direction, Table::has_chunked_product)
    }

    /// Whether such a product holds its rows as steps (see [`Stats::steps_product_tables`]).
    pub fn has_steps_product(&self, pod: PodId, direction: Direction) -> bool {
        self.any_table(pod, direction, Table::has_steps_product)
    }

    /// Whether a table for `pod` in `direction` answers its source-port rules and the others
    /// from one joint product (see [`Stats::joint_product_tables`]).
    pub fn has_joint_product(&self, pod: PodId, direction: Direction) -> bool {
        self.any_table(pod, direction, Table::has_joint_product)
    }

    fn any_table(&self, pod: PodId, direction: Direction, test: fn(&Table) -> bool) -> bool {
        self.chain(pod, direction)
            .is_some_and(|chain| chain.tables().any(test))
    }

    /// Whether [`Classifier::decide_each`] interleaves any lookups: some table is large enough
    /// that its lookups wait on memory. Otherwise it decides one query after another, exactly
    /// as `decide` would, and asking in groups gains nothing.
    pub fn interleaves_lookups(&self) -> bool {
        self.has_staged_products
    }

    /// Whether any rule for any pod looks at the source port (Calico `source` ports).
    pub fn matches_source_ports(&self) -> bool {
        self.chains
            .iter()
            .flat_map(Chain::tables)
            .any(|table| table.by_source.is_some())
    }

    /// Whether `pod` is isolated in `direction` and, if so, by which policies.
    pub fn selecting_policies(&self, pod: PodId, direction: Direction) -> &[u32] {
        self.chain(pod, direction)
            .map_or(&[], |chain| chain.policies.as_slice())
    }

    /// The chain deciding for `pod` in `direction`, if any policy applies.
    #[inline]
    fn chain(&self, pod: PodId, direction: Direction) -> Option<&Chain> {
        match self.chains_of_pod[pod as usize][direction.index()] {
            NO_TABLE => None,
            c => Some(&self.chains[c as usize]),
        }
    }

    /// A connection from `from` to `to`: the source's egress and the destination's ingress.
    pub fn connection(
        &self,
        from: Party,
        to: Party,
        protocol: Protocol,
        port: u16,
        source_port: u16,
    ) -> ConnectionDecision {
        let [egress, ingress] = connection_queries(from, to, protocol, port, source_port);
        ConnectionDecision {
            egress: egress.map(|q| self.decide_query(&q)),
            ingress: ingress.map(|q| self.decide_query(&q)),
            same_pod: from.pod().is_some() && from.pod() == to.pod(),
        }
    }

    /// [`Classifier::connection`] of every pair, the decisions taken with
    /// [`Classifier::decide_each`]: for many connections at once (a reachability matrix).
    pub fn connection_each(
        &self,
        pairs: &[(Party, Party)],
        protocol: Protocol,
        port: u16,
        source_port: u16,
    ) -> Vec<ConnectionDecision> {
        let asked: Vec<[Option<Query>; 2]> = pairs
            .iter()
            .map(|&(from, to)| connection_queries(from, to, protocol, port, source_port))
            .collect();
        let queries: Vec<Query> = asked.iter().flatten().flatten().copied().collect();
        let mut decisions = vec![Decision::NotIsolated; queries.len()];
        self.decide_each(&queries, &mut decisions);
        let mut decided = decisions.into_iter();
        pairs
            .iter()
            .zip(&asked)
            .map(|(&(from, to), [egress, ingress])| ConnectionDecision {
                egress: egress.and_then(|_| decided.next()),
                ingress: ingress.and_then(|_| decided.next()),
                same_pod: from.pod().is_some() && from.pod() == to.pod(),
            })
            .collect()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            tables: self.chains.iter().map(|c| c.tiers.len()).sum(),
            apart_tables: self.count_tables(Table::is_apart),
            product_tables: self.count_tables(Table::has_product),
            chunked_product_tables: self.count_tables(Table::has_chunked_product),
            steps_product_tables: self.count_tables(Table::has_steps_product),
            staged_product_tables: self.count_tables(Table::has_staged_product),
            joint_product_tables: self.count_tables(Table::has_joint_product),
            slots: self
                .chains
                .iter()
                .flat_map(|c| &c.tiers)
                .map(|t| t.rules.slots.len())
                .sum(),
            pod_groups: self.pod_groups,
            selector_terms: self.selector_terms,
            heap_bytes: self.heap_bytes(),
        }
    }

    /// How many tables (deciding or Log) of every chain pass `test`.
    fn count_tables(&self, test: fn(&Table) -> bool) -> usize {
        self.chains
            .iter()
            .flat_map(Chain::tables)
            .filter(|table| test(table))
            .count()
    }

    /// Approximate heap memory of the compiled structures (not of the cluster model).
    pub fn heap_bytes(&self) -> usize {
        self.group_by_v4.capacity() * 9
            + self.group_by_v6.capacity() * 21
            + self.chains_of_pod.len() * 8
            + self.chains.iter().map(Chain::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy with `wide` rules over every TCP port (each from its own /24) after rules on 40
    /// single ports, and one rule for every protocol.
    fn wide_and_narrow_policy(wide: usize) -> String {
        let mut text = String::from(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\n\
             spec:\n  selector: all()\n  types: [Ingress]\n  ingress:\n",
        );
        for port in 0..40 {
            text += &format!(
                "  - action: Allow\n    protocol: TCP\n    source: {{nets: [\"10.1.{port}.0/24\"]}}\n    \
                 destination: {{ports: [{}]}}\n",
                8000 + port * 2
            );
        }
        for i in 0..wide {
            text += &format!(
                "  - action: Deny\n    protocol: TCP\n    source: {{nets: [\"10.2.{}.0/24\"]}}\n",
                i % 250
            );
        }
        text += "  - action: Allow\n    source: {nets: [\"10.3.0.0/16\"]}\n";
        text += "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: n\n\
                 status:\n  podIP: 10.0.0.1\n";
        text
    }

    fn is_apart(classifier: &Classifier) -> bool {
        classifier.stats().apart_tables == 1
    }

    #[test]
    fn rules_over_every_port_fold_into_port_classes_within_the_budget_only() {
        let cluster = Arc::new(
            crate::load(&[crate::Source::new("p.yaml", wide_and_narrow_policy(200))])
                .expect("a valid policy"),
        );
        let compile = |fold_budget| {
            Classifier::compile_with(
                Arc::clone(&cluster),
                crate::compile::CompileOptions {
                    fold_budget,
                    product_budget: 0,
                    dense_product_budget: 0,
                    ..Default::default()
                },
            )
        };
        let (folded, apart) = (compile(usize::MAX), compile(0));
        assert!(!is_apart(&folded));
        assert!(is_apart(&apart));
        // Apart, the 200 wide rules are not copied into each of the ~80 port classes.
        assert!(apart.heap_bytes() * 4 < folded.heap_bytes());
        assert!(!is_apart(&Classifier::compile(Arc::clone(&cluster))));

        let pod = cluster.inventory.pod_id("n", "a").expect("the pod");
        for (peer, port) in [
            ("10.1.3.7", 8006),
            ("10.1.3.7", 8007),
            ("10.2.7.1", 8006),
            ("10.2.7.1", 443),
            ("10.3.1.1", 9),
            ("10.9.9.9", 8000),
        ] {
            let peer: IpAddr = peer.parse().expect("an address");
            for protocol in [Protocol::TCP, Protocol::UDP] {
                let decide =
                    |c: &Classifier| c.decide(pod, Direction::Ingress, peer, protocol, port, 40000);
                assert_eq!(
                    decide(&folded),
                    decide(&apart),
                    "{peer} {protocol:?} {port}"
                );
            }
        }
    }

    #[test]
    fn classifier_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Classifier>();
    }
}
