//! Builds a [`Classifier`] from a [`Cluster`]: policies are lowered to slots, selectors are
//! resolved once to pod sets (through a label index), pods are grouped by the selector terms they
//! satisfy, and each endpoint class gets, per tier, a table of dimension classes.
//!
//! Calico rules lower to the same fragments as Kubernetes rules: the peer side's selectors become
//! pod atoms (a `notSelector` an excluded atom, which addresses of no pod satisfy), its nets
//! address ranges; `protocol`, ports and ICMP type/code become port ranges (see
//! [`crate::calico::rule::icmp_port`]), `notProtocol` a term on every other protocol. The local
//! side's conditions (`destination` on ingress, `source` on egress) hold or not per endpoint and
//! address family, so they are decided when the endpoint's table is built.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::calico::rule::{CalicoMatch, CalicoPort, EntityMatch, Scope};
use crate::calico::selector::Selector;
use crate::classifier::intervals::ClassInterner;
use crate::classifier::lpm::{
    block_ranges, nets_ranges, subtract, AddressMap, AddressRange, Families,
};
use crate::classifier::ports::{PortMap, PortRange};
use crate::classifier::{
    AddressFirst, Budgets, Chain, Classifier, GroupFirst, JointProduct, Lookup, MixedSlot,
    PortClass, PortTest, Product, SourcePorts, Table, TierTables, WideClasses, NONE, NO_TABLE,
};
use crate::decision::RuleRef;
use crate::inventory::{Inventory, PodId, Protocol};
use crate::load::Cluster;
use crate::netpol::{Action, Direction, Endpoints, NamespaceScope, Peer, PortSpec};
use crate::selector::LabelSelector;

/// A condition on the peer pod that selects a set of pods.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Atom {
    Selector(NamespaceScope, LabelSelector),
    /// A Calico selector over pods (with Calico's extra labels) in a scope of namespaces.
    Calico(Scope, Selector),
    /// The pod has a container port `name`/`protocol` numbered `port` (egress named ports).
    NamedPort {
        name: String,
        protocol: Protocol,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PodPart {
    /// Any peer, pod or not.
    Any,
    /// Any pod, but no other address.
    AllPods,
    /// Pods satisfying every atom of `all` and none of `none`, and, if `external`, addresses of
    /// no pod (Calico's `notSelector` alone; a named port in `notPorts`, which no such address
    /// has).
    Pods {
        all: Vec<u32>,
        none: Vec<u32>,
        external: bool,
    },
}

impl PodPart {
    fn atoms(all: Vec<u32>) -> PodPart {
        PodPart::Pods {
            all,
            none: Vec::new(),
            external: false,
        }
    }

    /// The same part, also requiring `atom` (which only pods satisfy).
    fn and(&self, atom: u32) -> PodPart {
        match self {
            PodPart::Any | PodPart::AllPods => PodPart::atoms(vec![atom]),
            PodPart::Pods { all, none, .. } => PodPart::Pods {
                all: sorted_with(all, atom),
                none: none.clone(),
                external: false,
            },
        }
    }

    /// The same part, without the pods satisfying `atom`.
    fn and_not(&self, atom: u32) -> PodPart {
        match self {
            PodPart::Any => PodPart::Pods {
                all: Vec::new(),
                none: vec![atom],
                external: true,
            },
            PodPart::AllPods => PodPart::Pods {
                all: Vec::new(),
                none: vec![atom],
                external: false,
            },
            PodPart::Pods {
                all,
                none,
                external,
            } => PodPart::Pods {
                all: all.clone(),
                none: sorted_with(none, atom),
                external: *external,
            },
        }
    }
}

fn sorted_with(atoms: &[u32], atom: u32) -> Vec<u32> {
    let mut atoms = atoms.to_vec();
    atoms.push(atom);
    atoms.sort_unstable();
    atoms.dedup();
    atoms
}

#[derive(Debug, Clone)]
enum PortTerm {
    Range(PortRange),
    /// Resolved on the selected pod when its table is built: `port` (a range or one of the
    /// pod's named ports) less the `excluded` ports (Calico `notPorts`, ranges or the pod's
    /// named ports). Ingress only, where the destination is the selected pod.
    OnEndpoint {
        port: CalicoPort,
        protocol: Protocol,
        excluded: Vec<CalicoPort>,
    },
    /// Every port of every protocol but this one (Calico `notProtocol`).
    AllBut(Protocol),
}

/// A port condition on the peer's side of a rule (the destination on egress, the source on
/// ingress) that holds only for some peers: `range` where the peer is a pod with the atom
/// `with` (a named port of the peer) and none of the atoms `without` (named ports in
/// `notPorts` that stand for a number of `range` on some pods).
#[derive(Debug, Clone)]
struct PeerPort {
    with: Option<u32>,
    without: Vec<u32>,
    range: PortRange,
}

/// A rule's port conditions, each side's plain terms (`None`: no condition) and the peer's
/// side's values that hold for some peers only.
#[derive(Debug, Clone, Default)]
struct RulePorts {
    destination: Option<Vec<PortTerm>>,
    source: Option<Vec<PortTerm>>,
    peer_ports: Vec<PeerPort>,
    /// Whether the peer's side is the source (ingress) or the destination (egress).
    peer_is_source: bool,
}

/// `start..=end` less the `holes`, as ranges.
fn ports_minus(start: u16, end: u16, holes: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let holes = holes
        .iter()
        .map(|&(a, b)| (u128::from(a), u128::from(b)))
        .collect();
    subtract(start.into(), end.into(), holes)
        .into_iter()
        .map(|(a, b)| (a as u16, b as u16))
        .collect()
}

fn has_ports(side: &EntityMatch) -> bool {
    !side.ports.is_empty() || !side.not_ports.is_empty()
}

/// The numeric ports and ranges of a list.
fn numeric_ranges(ports: &[CalicoPort]) -> Vec<(u16, u16)> {
    ports
        .iter()
        .filter_map(|p| match p {
            CalicoPort::Range(a, b) => Some((*a, *b)),
            CalicoPort::Named(_) => None,
        })
        .collect()
}

/// The ports of the endpoint's side of a rule (the destination on ingress, the source on
/// egress): numbers less numbers stay plain ranges; a named port in either list is resolved on
/// the pod when its table is built.
fn lower_ports_on_endpoint(
    protocol: Protocol,
    included: &[CalicoPort],
    not_ports: &[CalicoPort],
    plain: &mut Vec<PortTerm>,
) {
    let names_excluded = not_ports.iter().any(|p| matches!(p, CalicoPort::Named(_)));
    let numbers = numeric_ranges(not_ports);
    for port in included {
        match port {
            CalicoPort::Range(start, end) if !names_excluded => {
                for (start, end) in ports_minus(*start, *end, &numbers) {
                    plain.push(PortTerm::Range(PortRange {
                        protocol,
                        start,
                        end,
                    }));
                }
            }
            _ => plain.push(PortTerm::OnEndpoint {
                port: port.clone(),
                protocol,
                excluded: not_ports.to_vec(),
            }),
        }
    }
}

/// An [`PortTerm::OnEndpoint`] term on `endpoint`: nothing where a named port is not the
/// endpoint's.
fn resolve_on_endpoint(
    endpoint: &crate::inventory::Pod,
    port: &CalicoPort,
    protocol: Protocol,
    excluded: &[CalicoPort],
) -> Vec<PortTest> {
    let resolve = |p: &CalicoPort| match p {
        CalicoPort::Range(a, b) => Some((*a, *b)),
        CalicoPort::Named(name) => endpoint.resolve_named_port(name, protocol).map(|n| (n, n)),
    };
    let Some((start, end)) = resolve(port) else {
        return Vec::new();
    };
    let holes: Vec<(u16, u16)> = excluded.iter().filter_map(resolve).collect();
    ports_minus(start, end, &holes)
        .into_iter()
        .map(|(start, end)| {
            PortTest::Range(PortRange {
                protocol,
                start,
                end,
            })
        })
        .collect()
}

/// One slot-to-be: a rule restricted to one peer (and one named-port value).
#[derive(Debug, Clone)]
struct Fragment {
    rule: u32,
    action: Action,
    pods: PodPart,
    addresses: Option<Vec<AddressRange>>,
    /// The peer's address families (Calico `ipVersion`).
    families: Families,
    /// The destination port's condition (`None`: any port of any protocol).
    ports: Option<Vec<PortTerm>>,
    /// The source port's condition (Calico `source.ports`, `source.notPorts`).
    source_ports: Option<Vec<PortTerm>>,
    /// A condition on the endpoint itself (index into [`Compiler::locals`]).
    local: Option<u32>,
}

#[derive(Default)]
struct Atoms {
    ids: HashMap<Atom, u32>,
    list: Vec<Atom>,
}

impl Atoms {
    fn intern(&mut self, atom: Atom) -> u32 {
        if let Some(&id) = self.ids.get(&atom) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(atom.clone());
        self.ids.insert(atom, id);
        id
    }
}

/// Pods by namespace and by label, so that selectors look at candidates, not at every pod.
struct PodIndex<'a> {
    inventory: &'a Inventory,
    by_namespace: HashMap<&'a str, Vec<PodId>>,
    by_label: HashMap<(&'a str, &'a str), Vec<PodId>>,
}

impl<'a> PodIndex<'a> {
    fn new(inventory: &'a Inventory) -> Self {
        let mut by_namespace: HashMap<&str, Vec<PodId>> = HashMap::new();
        let mut by_label: HashMap<(&str, &str), Vec<PodId>> = HashMap::new();
        for id in inventory.pod_ids() {
            let pod = inventory.pod(id);
            if !pod.is_policy_endpoint() {
                continue;
            }
            by_namespace.entry(&pod.namespace).or_default().push(id);
            for (k, v) in &pod.labels {
                by_label.entry((k, v)).or_default().push(id);
            }
        }
        PodIndex {
            inventory,
            by_namespace,
            by_label,
        }
    }

    /// Policy-endpoint pods in `scope` whose labels `selector` matches, sorted.
    fn select(&self, scope: &NamespaceScope, selector: &LabelSelector) -> Vec<PodId> {
        let namespaces: Vec<&str> = match scope {
            NamespaceScope::Same(ns) => vec![ns.as_str()],
            NamespaceScope::Selected(sel) => self
                .by_namespace
                .keys()
                .copied()
                .filter(|ns| sel.matches(self.inventory.namespace_labels(ns)))
                .collect(),
        };
        let in_scope: usize = namespaces
            .iter()
            .map(|ns| self.by_namespace.get(ns).map_or(0, Vec::len))
            .sum();
        let posting: Option<Vec<PodId>> = selector.required_values().map(|(key, values)| {
            values
                .iter()
                .flat_map(|v| self.by_label.get(&(key, v.as_str())).into_iter().flatten())
                .copied()
                .collect()
        });
        let mut candidates = match posting {
            Some(pods) if pods.len() < in_scope => {
                let wanted: std::collections::HashSet<&str> = namespaces.iter().copied().collect();
                pods.into_iter()
                    .filter(|&id| wanted.contains(self.inventory.pod(id).namespace.as_str()))
                    .collect()
            }
            _ => namespaces
                .iter()
                .flat_map(|ns| self.by_namespace.get(ns).into_iter().flatten())
                .copied()
                .collect::<Vec<PodId>>(),
        };
        candidates.retain(|&id| selector.matches(&self.inventory.pod(id).labels));
        candidates.sort_unstable();
        candidates.dedup();
        candidates
    }

    fn with_named_port(&self, name: &str, protocol: Protocol, port: u16) -> Vec<PodId> {
        self.by_namespace
            .values()
            .flatten()
            .copied()
            .filter(|&id| self.inventory.pod(id).resolve_named_port(name, protocol) == Some(port))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// How many times the bytes of a table's separate products (its main lookup's and its
/// source-port classes') a joint product may take. Unbounded, joint tables were dense and
/// 4–11 times those bytes (ipc1 at 10k rules: 19 MiB of classifier instead of 1.7), for no
/// more speed than the chunked joint tables within this bound (fw1 at 1k and 10k rules:
/// 0.70–0.85 × the time of two lookups either way; `classbench_layouts`, BENCHMARKS.md).
const JOINT_GROWTH: usize = 2;

/// Knobs of the compiler that trade memory for lookup speed.
#[derive(Debug, Clone, Copy)]
pub struct CompileOptions {
    /// How much (in pod groups and address intervals) a table may grow by folding the rules
    /// that match every port of a protocol into each port class of the protocol. Past it, those
    /// rules are kept apart, in classes of their own: one more group lookup and address search
    /// per packet, but no copies. The default (256k, a few MiB of copies) keeps a folded table
    /// within the caches; `classbench_layouts` in the bench crate measures both layouts
    /// (BENCHMARKS.md, ClassBench).
    pub fold_budget: usize,
    /// How many bytes a table may spend on a product of its address and port classes (see
    /// `classifier/product.rs`), in any shape: one address search, one port search and one or
    /// two loads per packet, for tables whose rules look only at addresses and ports. Past it,
    /// or with 0, the layered lookup answers alone. `classbench_layouts` in the bench crate
    /// measures the shapes against the layered layouts (BENCHMARKS.md, ClassBench).
    pub product_budget: usize,
    /// How many of those bytes the product may spend in its dense shape (one load per
    /// packet). Past it, the product takes steps where its rows allow (see
    /// `steps_product_budget`), else it is chunked: the columns cut into chunks shared between
    /// rows, one dependent load more for a smaller table (2.4–5.4 × smaller on the 100k
    /// ClassBench lists; not guaranteed smaller in general, since chunks are padded).
    pub dense_product_budget: usize,
    /// How many of those bytes the product may spend in its steps shape, taken where the
    /// dense one does not fit and every row of the product changes first slot at most four
    /// times over the ports, counted where it is below its block of addresses' base row: each
    /// row is then one record of 32 bytes per block it reaches, and a lookup loads the record
    /// and, without waiting for it, a slot of the base (acl1's 100k-rule ingress table: 3.2 MB
    /// of records against 15.5 MB of chunks, and 0.6 × the time per lookup; BENCHMARKS.md,
    /// ClassBench). With 0, such a product is chunked.
    pub steps_product_budget: usize,
    /// Products of at least this many bytes are looked up in interleaved stages by
    /// [`Classifier::decide_each`], so that the cache misses of a group of lookups overlap.
    /// Smaller ones sit in the caches, where the stages would only add work: they are looked
    /// up one by one. The default (4 MiB) is where a dependent load stops costing tens of
    /// nanoseconds and starts costing a trip to memory on the machines measured in
    /// BENCHMARKS.md (`memory_latency`); at 1 MiB the 10k ClassBench tables were staged and
    /// took up to 1.15 × the time of one lookup after another.
    pub staged_product_bytes: usize,
    /// A dense or chunked product whose slots are numbered past `u16::MAX` keeps, in each
    /// cell, the rank of its slot among the table's distinct slots in two bytes instead of
    /// the slot in four, where four-byte cells would take at least this many bytes and the
    /// table holds fewer than `u16::MAX` distinct slots: half the cells' bytes, for one more
    /// dependent load into the slots of the ranks (at most 256 KiB). On the 100k ClassBench
    /// lists, that load cost 4–5 ns per lookup where a table was warm (one process at a time,
    /// best pass: fw1 ingress 54.7–55.1 → 59.7–60.2 ns, acl1 egress 44.1–44.7 → 48.5–48.7 ns)
    /// and saved nothing measurable where it was cold, for 22–32 % less memory (fw1 15.6 →
    /// 10.7 MiB, acl1 15.8 → 12.3; BENCHMARKS.md, *Ranked cells*). Speed comes first, so by
    /// default (`usize::MAX`) no table keeps ranks. Any threshold also lets shapes that would
    /// outgrow their limit in four-byte cells take ranks once their cells reach it, so that
    /// a smaller shape in ranks may win over one that fits in four bytes (at 8 MiB, fw1's
    /// 100k classifier took 13.9 MiB where it takes 15.6); with it, a chunked table past
    /// `product_budget` in four-byte cells may still fit it. (A dense table is tried only
    /// where it fits in four-byte cells: trying one whose slots then prove too many for ranks
    /// costs a whole build.) Set it to trade that time for memory.
    pub ranked_cells_bytes: usize,
    /// How many bytes a table with source-port rules (Calico `source.ports`) may spend on one
    /// product for its main lookup and every source-port class's together (also within the
    /// budgets above): a packet then costs one product lookup where it took two, the
    /// main lookup's and its source-port class's (`Product::build_joint`). Past it, or with
    /// 0, each lookup gets a product of its own where it fits.
    pub joint_product_budget: usize,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            fold_budget: 1 << 18,
            product_budget: 16 << 20,
            dense_product_budget: 16 << 20,
            steps_product_budget: 16 << 20,
            staged_product_bytes: 4 << 20,
            ranked_cells_bytes: usize::MAX,
            joint_product_budget: 16 << 20,
        }
    }
}

impl Classifier {
    /// Compiles every policy of `cluster` for every pod in it.
    pub fn compile(cluster: Arc<Cluster>) -> Classifier {
        Self::compile_with(cluster, CompileOptions::default())
    }

    pub fn compile_with(cluster: Arc<Cluster>, options: CompileOptions) -> Classifier {
        Compiler::new(&cluster, options).finish(Arc::clone(&cluster))
    }
}

struct Compiler<'a> {
    cluster: &'a Cluster,
    options: CompileOptions,
    index: PodIndex<'a>,
    atoms: Atoms,
    /// Per policy, per direction: the fragments of its rules in order.
    fragments: Vec<[Vec<Fragment>; 2]>,
    /// Conditions on the endpoint itself: a rule's local side and its policy's namespace.
    locals: Vec<(EntityMatch, String)>,
}

impl<'a> Compiler<'a> {
    fn new(cluster: &'a Cluster, options: CompileOptions) -> Self {
        let mut compiler = Compiler {
            cluster,
            options,
            index: PodIndex::new(&cluster.inventory),
            atoms: Atoms::default(),
            fragments: Vec::with_capacity(cluster.policies.len()),
            locals: Vec::new(),
        };
        let named_values = compiler.named_port_values();
        for policy in &cluster.policies {
            let lowered = Direction::BOTH.map(|direction| {
                policy
                    .rules(direction)
                    .iter()
                    .enumerate()
                    .flat_map(|(i, rule)| match &rule.calico {
                        None => compiler.lower_rule(i as u32, direction, rule, &named_values),
                        Some(calico) => compiler.lower_calico_rule(
                            i as u32,
                            direction,
                            rule.action,
                            calico,
                            &policy.namespace,
                            &named_values,
                        ),
                    })
                    .collect()
            });
            compiler.fragments.push(lowered);
        }
        compiler
    }

    /// Every number each (named port, protocol) stands for on some pod.
    fn named_port_values(&self) -> HashMap<(String, Protocol), BTreeSet<u16>> {
        let mut values: HashMap<(String, Protocol), BTreeSet<u16>> = HashMap::new();
        for pod in self
            .cluster
            .inventory
            .pods
            .iter()
            .filter(|p| p.is_policy_endpoint())
        {
            for np in &pod.named_ports {
                values
                    .entry((np.name.clone(), np.protocol))
                    .or_default()
                    .insert(np.port);
            }
        }
        values
    }

    /// Fragments of one rule: each peer alternative (and each egress named-port value) with the
    /// rule's plain port terms.
    fn fragments_of(
        &mut self,
        base: &Fragment,
        peers: Vec<(PodPart, Option<Vec<AddressRange>>)>,
        ports: &RulePorts,
    ) -> Vec<Fragment> {
        let some_or_none =
            |terms: &Option<Vec<PortTerm>>| terms.as_ref().is_none_or(|t| !t.is_empty());
        let mut fragments = Vec::new();
        for (pods, addresses) in peers {
            if some_or_none(&ports.destination) && some_or_none(&ports.source) {
                fragments.push(Fragment {
                    pods: pods.clone(),
                    addresses: addresses.clone(),
                    ports: ports.destination.clone(),
                    source_ports: ports.source.clone(),
                    ..base.clone()
                });
            }
            for peer_port in &ports.peer_ports {
                let with = peer_port.with.map_or(pods.clone(), |atom| pods.and(atom));
                let pods = peer_port
                    .without
                    .iter()
                    .fold(with, |pods, &atom| pods.and_not(atom));
                let single = Some(vec![PortTerm::Range(peer_port.range)]);
                let (destination, source) = if ports.peer_is_source {
                    (ports.destination.clone(), single)
                } else {
                    (single, ports.source.clone())
                };
                fragments.push(Fragment {
                    pods,
                    addresses: addresses.clone(),
                    ports: destination,
                    source_ports: source,
                    ..base.clone()
                });
            }
        }
        fragments
    }

    /// The numbers a named port stands for on some pod (outside `excluded`), each with the atom
    /// of the pods where it does.
    fn named_on_peer(
        &mut self,
        name: &str,
        protocol: Protocol,
        excluded: &[(u16, u16)],
        named_values: &HashMap<(String, Protocol), BTreeSet<u16>>,
    ) -> Vec<(u16, u32)> {
        named_values
            .get(&(name.to_string(), protocol))
            .into_iter()
            .flatten()
            .filter(|&&value| !excluded.iter().any(|&(a, b)| (a..=b).contains(&value)))
            .map(|&value| {
                let atom = self.atoms.intern(Atom::NamedPort {
                    name: name.to_string(),
                    protocol,
                    port: value,
                });
                (value, atom)
            })
            .collect()
    }

    fn lower_rule(
        &mut self,
        rule: u32,
        direction: Direction,
        spec: &crate::netpol::Rule,
        named_values: &HashMap<(String, Protocol), BTreeSet<u16>>,
    ) -> Vec<Fragment> {
        let peers: Vec<(PodPart, Option<Vec<AddressRange>>)> = if spec.peers.is_empty() {
            vec![(PodPart::Any, None)]
        } else {
            spec.peers.iter().map(|p| self.lower_peer(p)).collect()
        };

        // Port alternatives: numeric ones share one fragment; each egress named-port value gets
        // its own, restricted to the pods where the name means that number.
        let mut plain: Vec<PortTerm> = Vec::new();
        let mut named: Vec<PeerPort> = Vec::new();
        for port in &spec.ports {
            match (&port.port, direction) {
                (PortSpec::Any, _) => plain.push(PortTerm::Range(PortRange {
                    protocol: port.protocol,
                    start: 0,
                    end: u16::MAX,
                })),
                (PortSpec::Range { start, end }, _) => plain.push(PortTerm::Range(PortRange {
                    protocol: port.protocol,
                    start: *start,
                    end: *end,
                })),
                (PortSpec::Named(name), Direction::Ingress) => plain.push(PortTerm::OnEndpoint {
                    port: CalicoPort::Named(name.clone()),
                    protocol: port.protocol,
                    excluded: Vec::new(),
                }),
                (PortSpec::Named(name), Direction::Egress) => {
                    let protocol = port.protocol;
                    named.extend(
                        self.named_on_peer(name, protocol, &[], named_values)
                            .into_iter()
                            .map(|(value, atom)| PeerPort {
                                with: Some(atom),
                                without: Vec::new(),
                                range: PortRange {
                                    protocol,
                                    start: value,
                                    end: value,
                                },
                            }),
                    );
                }
            }
        }
        let base = Fragment {
            rule,
            action: spec.action,
            pods: PodPart::Any,
            addresses: None,
            families: Families::BOTH,
            ports: None,
            source_ports: None,
            local: None,
        };
        let ports = RulePorts {
            destination: (!spec.ports.is_empty()).then_some(plain),
            source: None,
            peer_ports: named,
            peer_is_source: false,
        };
        self.fragments_of(&base, peers, &ports)
    }

    fn lower_calico_rule(
        &mut self,
        rule: u32,
        direction: Direction,
        action: Action,
        spec: &CalicoMatch,
        policy_namespace: &str,
        named_values: &HashMap<(String, Protocol), BTreeSet<u16>>,
    ) -> Vec<Fragment> {
        let full = |protocol, (start, end): (u16, u16)| {
            PortTerm::Range(PortRange {
                protocol,
                start,
                end,
            })
        };
        let destination = &spec.destination;
        let mut plain: Vec<PortTerm> = Vec::new();
        let mut named: Vec<PeerPort> = Vec::new();
        let has_port_condition = spec.protocol.is_some() || spec.not_protocol.is_some();
        match spec.protocol {
            Some(protocol) if spec.not_protocol == Some(protocol) => return Vec::new(),
            Some(protocol) if spec.icmp.is_some() || spec.not_icmp.is_some() => {
                let (start, end) = spec.icmp.map_or((0, u16::MAX), |m| m.range());
                let holes: Vec<(u16, u16)> = spec.not_icmp.map(|m| m.range()).into_iter().collect();
                for range in ports_minus(start, end, &holes) {
                    plain.push(full(protocol, range));
                }
            }
            Some(protocol) if has_ports(destination) => self.lower_side_ports(
                protocol,
                destination,
                direction == Direction::Egress,
                named_values,
                &mut plain,
                &mut named,
            ),
            Some(protocol) => plain.push(full(protocol, (0, u16::MAX))),
            None => {
                if let Some(except) = spec.not_protocol {
                    plain.push(PortTerm::AllBut(except));
                }
            }
        }
        let source = &spec.source;
        let mut source_terms: Option<Vec<PortTerm>> = None;
        if let Some(protocol) = spec.protocol.filter(|_| has_ports(source)) {
            let terms = source_terms.insert(Vec::new());
            self.lower_side_ports(
                protocol,
                source,
                direction == Direction::Ingress,
                named_values,
                terms,
                &mut named,
            );
        }
        // A side whose condition no port meets, for any peer, makes the rule match nothing.
        let peer_is_source = direction == Direction::Ingress;
        let destination_empty =
            has_port_condition && plain.is_empty() && (peer_is_source || named.is_empty());
        let source_empty = source_terms.as_ref().is_some_and(Vec::is_empty)
            && (!peer_is_source || named.is_empty());
        if destination_empty || source_empty {
            return Vec::new();
        }

        let families = match spec.ip_version {
            Some(4) => Families {
                v4: true,
                v6: false,
            },
            Some(6) => Families {
                v4: false,
                v6: true,
            },
            _ => Families::BOTH,
        };
        let peer = spec.peer(direction);
        let families = families.and(Families {
            v4: peer.applies_to_family(true),
            v6: peer.applies_to_family(false),
        });
        if families.is_empty() {
            return Vec::new();
        }
        let addresses = (!peer.nets.is_empty() || !peer.not_nets.is_empty())
            .then(|| nets_ranges(&peer.nets, &peer.not_nets, families));
        if addresses.as_ref().is_some_and(Vec::is_empty) {
            return Vec::new();
        }
        let pods = self.calico_pod_part(peer, policy_namespace);
        let local_side = spec.local(direction);
        let local = (local_side.has_selectors()
            || !local_side.nets.is_empty()
            || !local_side.not_nets.is_empty())
        .then(|| {
            self.locals
                .push((local_side.clone(), policy_namespace.to_string()));
            self.locals.len() as u32 - 1
        });
        let base = Fragment {
            rule,
            action,
            pods: PodPart::Any,
            addresses: None,
            families,
            ports: None,
            source_ports: None,
            local,
        };
        let ports = RulePorts {
            destination: has_port_condition.then_some(plain),
            source: source_terms,
            peer_ports: named,
            peer_is_source,
        };
        self.fragments_of(&base, vec![(pods, addresses)], &ports)
    }

    /// One side's `ports` and `notPorts` (every port when only `notPorts` is given), on the
    /// peer's side (`on_peer`) or on the endpoint's.
    fn lower_side_ports(
        &mut self,
        protocol: Protocol,
        side: &EntityMatch,
        on_peer: bool,
        named_values: &HashMap<(String, Protocol), BTreeSet<u16>>,
        plain: &mut Vec<PortTerm>,
        peer_ports: &mut Vec<PeerPort>,
    ) {
        let everything = [CalicoPort::Range(0, u16::MAX)];
        let included: &[CalicoPort] = if side.ports.is_empty() {
            &everything
        } else {
            &side.ports
        };
        if on_peer {
            self.lower_ports_on_peer(
                protocol,
                included,
                &side.not_ports,
                named_values,
                plain,
                peer_ports,
            );
        } else {
            lower_ports_on_endpoint(protocol, included, &side.not_ports, plain);
        }
    }

    /// The ports of the peer's side of a rule (the destination on egress, the source on
    /// ingress): its numbers hold for every peer, except a number that a port named in
    /// `notPorts` stands for on some pods, which holds for every peer but those pods. A named
    /// port holds for the pods where the name stands for the number.
    fn lower_ports_on_peer(
        &mut self,
        protocol: Protocol,
        included: &[CalicoPort],
        not_ports: &[CalicoPort],
        named_values: &HashMap<(String, Protocol), BTreeSet<u16>>,
        plain: &mut Vec<PortTerm>,
        peer_ports: &mut Vec<PeerPort>,
    ) {
        let numbers = numeric_ranges(not_ports);
        let mut holes: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
        for port in not_ports {
            if let CalicoPort::Named(name) = port {
                for (value, atom) in self.named_on_peer(name, protocol, &numbers, named_values) {
                    holes.entry(value).or_default().push(atom);
                }
            }
        }
        let single = |value: u16| PortRange {
            protocol,
            start: value,
            end: value,
        };
        for port in included {
            match port {
                CalicoPort::Range(start, end) => {
                    for (a, b) in ports_minus(*start, *end, &numbers) {
                        let inside: Vec<(u16, &Vec<u32>)> =
                            holes.range(a..=b).map(|(&v, atoms)| (v, atoms)).collect();
                        let points: Vec<(u16, u16)> = inside.iter().map(|&(v, _)| (v, v)).collect();
                        for (start, end) in ports_minus(a, b, &points) {
                            plain.push(PortTerm::Range(PortRange {
                                protocol,
                                start,
                                end,
                            }));
                        }
                        for (value, atoms) in inside {
                            peer_ports.push(PeerPort {
                                with: None,
                                without: atoms.clone(),
                                range: single(value),
                            });
                        }
                    }
                }
                CalicoPort::Named(name) => {
                    for (value, atom) in self.named_on_peer(name, protocol, &numbers, named_values)
                    {
                        peer_ports.push(PeerPort {
                            with: Some(atom),
                            without: holes.get(&value).cloned().unwrap_or_default(),
                            range: single(value),
                        });
                    }
                }
            }
        }
    }

    fn calico_pod_part(&mut self, peer: &EntityMatch, policy_namespace: &str) -> PodPart {
        let positive = peer
            .scoped_selector(policy_namespace)
            .map(|(scope, selector)| self.atoms.intern(Atom::Calico(scope, selector)));
        let negative = peer
            .not_selector
            .clone()
            .map(|selector| self.atoms.intern(Atom::Calico(Scope::Everywhere, selector)));
        if positive.is_none() && negative.is_none() {
            return PodPart::Any;
        }
        PodPart::Pods {
            all: positive.into_iter().collect(),
            none: negative.into_iter().collect(),
            external: positive.is_none(),
        }
    }

    fn lower_peer(&mut self, peer: &Peer) -> (PodPart, Option<Vec<AddressRange>>) {
        match peer {
            Peer::Block(block) => (PodPart::Any, Some(block_ranges(block.cidr, &block.except))),
            Peer::Pods {
                namespaces: NamespaceScope::Selected(ns),
                pods,
            } if ns.selects_everything() && pods.selects_everything() => (PodPart::AllPods, None),
            Peer::Pods { namespaces, pods } => {
                let atom = self
                    .atoms
                    .intern(Atom::Selector(namespaces.clone(), pods.clone()));
                (PodPart::atoms(vec![atom]), None)
            }
        }
    }

    /// Policy-endpoint pods in `scope` that `selector` matches (with Calico's extra labels),
    /// sorted. A global policy's `namespaceSelector` is such a scope too.
    fn calico_select(&self, scope: &Scope, selector: &Selector) -> Vec<PodId> {
        let inventory = &self.cluster.inventory;
        let namespaces: Vec<&str> = match scope {
            Scope::Namespace(own) => vec![own.as_str()],
            _ => self
                .index
                .by_namespace
                .keys()
                .copied()
                .filter(|&ns| inventory.namespace(ns).is_some_and(|n| scope.includes(n)))
                .collect(),
        };
        let mut pods: Vec<PodId> = namespaces
            .iter()
            .flat_map(|ns| self.index.by_namespace.get(ns).into_iter().flatten())
            .copied()
            .filter(|&id| selector.matches(&crate::calico::pod_labels(inventory.pod(id))))
            .collect();
        pods.sort_unstable();
        pods
    }

    /// Pods a policy applies to (either direction), sorted.
    fn selected_pods(&self, policy: usize) -> Vec<PodId> {
        let policy = &self.cluster.policies[policy];
        match &policy.endpoints {
            Endpoints::Kubernetes(selector) => self
                .index
                .select(&NamespaceScope::Same(policy.namespace.clone()), selector),
            Endpoints::Calico {
                selector,
                namespaces,
            } => self.calico_select(&Scope::of(namespaces.as_ref(), &policy.namespace), selector),
        }
    }

    fn finish(self, cluster_arc: Arc<Cluster>) -> Classifier {
        let cluster = self.cluster;
        let inventory = &cluster.inventory;
        let pod_count = inventory.pods.len();

        // Pods of each atom, then pod groups: pods satisfying the same atoms.
        let atom_pods: Vec<Vec<PodId>> = self
            .atoms
            .list
            .iter()
            .map(|atom| match atom {
                Atom::Selector(scope, sel) => self.index.select(scope, sel),
                Atom::Calico(scope, selector) => self.calico_select(scope, selector),
                Atom::NamedPort {
                    name,
                    protocol,
                    port,
                } => self.index.with_named_port(name, *protocol, *port),
            })
            .collect();
        let mut signatures: Vec<Vec<u32>> = vec![Vec::new(); pod_count];
        for (atom, pods) in atom_pods.iter().enumerate() {
            for &p in pods {
                signatures[p as usize].push(atom as u32);
            }
        }
        let mut group_ids: HashMap<Vec<u32>, u32> = HashMap::new();
        let mut group_signatures: Vec<Vec<u32>> = Vec::new();
        let mut group_of_pod = vec![0u32; pod_count];
        for (p, sig) in signatures.into_iter().enumerate() {
            let next = group_ids.len() as u32;
            let id = *group_ids.entry(sig.clone()).or_insert_with(|| {
                group_signatures.push(sig);
                next
            });
            group_of_pod[p] = id;
        }
        let mut atom_groups: Vec<Vec<u32>> = atom_pods
            .iter()
            .map(|pods| pods.iter().map(|&p| group_of_pod[p as usize]).collect())
            .collect();
        for groups in &mut atom_groups {
            groups.sort_unstable();
            groups.dedup();
        }

        let mut group_by_v4 = rustc_hash::FxHashMap::default();
        let mut group_by_v6 = rustc_hash::FxHashMap::default();
        for id in inventory.pod_ids() {
            let pod = inventory.pod(id);
            if pod.is_policy_endpoint() {
                let group = group_of_pod[id as usize];
                for ip in &pod.ips {
                    // The first pod listed keeps a shared address, as in the inventory.
                    match ip {
                        IpAddr::V4(a) => group_by_v4.entry(u32::from(*a)).or_insert(group),
                        IpAddr::V6(a) => group_by_v6.entry(u128::from(*a)).or_insert(group),
                    };
                }
            }
        }

        // Endpoint classes: pods selected by the same policies (and resolving the ingress named
        // ports of those policies to the same numbers, and satisfying the same local
        // conditions) share a chain of tables.
        let mut selected_by: Vec<[Vec<u32>; 2]> = vec![[Vec::new(), Vec::new()]; pod_count];
        for (pi, policy) in cluster.policies.iter().enumerate() {
            for pod in self.selected_pods(pi) {
                for direction in Direction::BOTH {
                    if policy.applies_to(direction) {
                        selected_by[pod as usize][direction.index()].push(pi as u32);
                    }
                }
            }
        }
        let builder = TableBuilder {
            options: self.options,
            fragments: &self.fragments,
            atom_groups: &atom_groups,
            group_signatures: &group_signatures,
            inventory,
        };
        let mut chain_ids: HashMap<EndpointClass, u32> = HashMap::new();
        let mut chains: Vec<Chain> = Vec::new();
        let mut chains_of_pod = vec![[NO_TABLE; 2]; pod_count];
        for (pod, by_direction) in selected_by.iter().enumerate() {
            let pod = pod as PodId;
            for direction in Direction::BOTH {
                let policies = &by_direction[direction.index()];
                if policies.is_empty() {
                    continue;
                }
                let names = builder.endpoint_named_ports(policies, direction);
                let resolved: Vec<Option<u16>> = names
                    .iter()
                    .map(|(n, proto)| inventory.pod(pod).resolve_named_port(n, *proto))
                    .collect();
                let locals = self.local_results(policies, direction, pod);
                let key = (direction, policies.clone(), resolved, locals.clone());
                let id = *chain_ids.entry(key).or_insert_with(|| {
                    chains.push(builder.chain(cluster, policies, direction, pod, &locals));
                    chains.len() as u32 - 1
                });
                chains_of_pod[pod as usize][direction.index()] = id;
            }
        }

        let has_staged_products = chains
            .iter()
            .flat_map(Chain::first_tier_products)
            .any(Product::is_staged);
        Classifier {
            cluster: cluster_arc,
            group_by_v4,
            group_by_v6,
            chains_of_pod,
            chains,
            pod_groups: group_signatures.len(),
            selector_terms: self.atoms.list.len(),
            has_staged_products,
        }
    }

    /// For every local condition of `policies`' rules in `direction`: the address families in
    /// which `pod` satisfies it.
    fn local_results(&self, policies: &[u32], direction: Direction, pod: PodId) -> LocalResults {
        let inventory = &self.cluster.inventory;
        let address_of = |ipv4: bool| {
            inventory
                .pod(pod)
                .ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == ipv4)
        };
        let mut results: LocalResults = policies
            .iter()
            .flat_map(|&p| &self.fragments[p as usize][direction.index()])
            .filter_map(|f| f.local)
            .map(|id| {
                let (entity, namespace) = &self.locals[id as usize];
                let holds =
                    |ipv4| entity.matches(inventory, namespace, address_of(ipv4), Some(pod));
                (
                    id,
                    Families {
                        v4: holds(true),
                        v6: holds(false),
                    },
                )
            })
            .collect();
        results.sort_unstable_by_key(|&(id, _)| id);
        results.dedup();
        results
    }
}

/// Each local condition (by id) with the families in which the endpoint satisfies it.
type LocalResults = Vec<(u32, Families)>;

/// What makes endpoints share a chain: the direction, the policies selecting them, the numbers
/// their own named ports resolve to, and how they fare with the rules' local conditions.
type EndpointClass = (Direction, Vec<u32>, Vec<Option<u16>>, LocalResults);

/// Which of a tier's fragments a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    /// Allow, Deny and Pass: the first match decides.
    Deciding,
    /// Log: asked for logging only.
    Logging,
}

struct TableBuilder<'a> {
    options: CompileOptions,
    fragments: &'a [[Vec<Fragment>; 2]],
    atom_groups: &'a [Vec<u32>],
    group_signatures: &'a [Vec<u32>],
    inventory: &'a Inventory,
}

impl TableBuilder<'_> {
    fn endpoint_named_ports(
        &self,
        policies: &[u32],
        direction: Direction,
    ) -> Vec<(String, Protocol)> {
        let mut names: Vec<(String, Protocol)> = policies
            .iter()
            .flat_map(|&p| &self.fragments[p as usize][direction.index()])
            .flat_map(|f| f.ports.iter().chain(&f.source_ports).flatten())
            .flat_map(|t| match t {
                PortTerm::OnEndpoint {
                    port,
                    protocol,
                    excluded,
                } => std::iter::once(port)
                    .chain(excluded)
                    .filter_map(|p| match p {
                        CalicoPort::Named(name) => Some((name.clone(), *protocol)),
                        CalicoPort::Range(..) => None,
                    })
                    .collect(),
                PortTerm::Range(_) | PortTerm::AllBut(_) => Vec::new(),
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The chain for endpoints selected by `policies` (in evaluation order, so grouped by tier).
    fn chain(
        &self,
        cluster: &Cluster,
        policies: &[u32],
        direction: Direction,
        representative: PodId,
        locals: &LocalResults,
    ) -> Chain {
        let mut tiers = Vec::new();
        let mut start = 0;
        while start < policies.len() {
            let tier = cluster.tier_of(policies[start] as usize);
            let end = start
                + policies[start..]
                    .iter()
                    .take_while(|&&p| cluster.tier_of(p as usize) == tier)
                    .count();
            let in_tier = &policies[start..end];
            let rules = self.build(
                in_tier,
                direction,
                representative,
                locals,
                TableKind::Deciding,
            );
            let logs = in_tier.iter().any(|&p| {
                self.fragments[p as usize][direction.index()]
                    .iter()
                    .any(|f| f.action == Action::Log)
            });
            let log = logs.then(|| {
                self.build(
                    in_tier,
                    direction,
                    representative,
                    locals,
                    TableKind::Logging,
                )
            });
            tiers.push(TierTables {
                tier: tier as u32,
                default_action: cluster.tiers[tier].default_action,
                rules,
                log,
            });
            start = end;
        }
        let needs_group = tiers
            .iter()
            .any(|t| t.rules.needs_group || t.log.as_ref().is_some_and(|l| l.needs_group));
        Chain {
            policies: policies.to_vec(),
            tiers,
            needs_group,
        }
    }

    /// The table of `kind` for endpoints selected by `policies` (of one tier), with
    /// `representative` resolving named ports and local conditions (every pod of the class
    /// resolves them alike). Both kinds number the same slots, so that a Log slot can be
    /// compared with a deciding one.
    fn build(
        &self,
        policies: &[u32],
        direction: Direction,
        representative: PodId,
        locals: &LocalResults,
        kind: TableKind,
    ) -> Table {
        let endpoint = self.inventory.pod(representative);
        let resolve = |terms: &Option<Vec<PortTerm>>| -> Option<Vec<PortTest>> {
            terms.as_ref().map(|terms| {
                terms
                    .iter()
                    .flat_map(|t| match t {
                        PortTerm::Range(r) => vec![PortTest::Range(*r)],
                        PortTerm::AllBut(p) => vec![PortTest::AllBut(*p)],
                        PortTerm::OnEndpoint {
                            port,
                            protocol,
                            excluded,
                        } => resolve_on_endpoint(endpoint, port, *protocol, excluded),
                    })
                    .collect()
            })
        };
        let mut slots: Vec<(RuleRef, Action)> = Vec::new();
        // Each slot's peer condition (None for mixed slots and slots of the other kind).
        let mut conditions: Vec<Option<PeerCondition>> = Vec::new();
        // The slots without a source-port condition, and those with one.
        let mut placed = Placed::default();
        let mut sourced: Vec<(Vec<PortRange>, Placed)> = Vec::new();
        for &policy in policies {
            for fragment in &self.fragments[policy as usize][direction.index()] {
                let ports = resolve(&fragment.ports);
                let source_ports = resolve(&fragment.source_ports);
                if ports.as_ref().is_some_and(Vec::is_empty)
                    || source_ports.as_ref().is_some_and(Vec::is_empty)
                {
                    continue; // only named ports this pod does not have, or all excluded
                }
                let families = match fragment.local {
                    None => fragment.families,
                    Some(id) => {
                        let local = locals
                            .iter()
                            .find(|&&(l, _)| l == id)
                            .map_or(Families::BOTH, |&(_, f)| f);
                        fragment.families.and(local)
                    }
                };
                if families.is_empty() {
                    continue; // the endpoint fails the rule's local side in every family
                }
                let addresses: Option<Vec<AddressRange>> = match &fragment.addresses {
                    Some(ranges) => Some(
                        ranges
                            .iter()
                            .copied()
                            .filter(|r| families.allows(matches!(r, AddressRange::V4(..))))
                            .collect(),
                    ),
                    None if families == Families::BOTH => None,
                    None => Some(nets_ranges(&[], &[], families)),
                };
                if addresses.as_ref().is_some_and(Vec::is_empty) {
                    continue;
                }
                let slot = slots.len() as u32;
                slots.push((
                    RuleRef {
                        policy,
                        direction,
                        rule: fragment.rule,
                    },
                    fragment.action,
                ));
                let wanted = match kind {
                    TableKind::Deciding => fragment.action != Action::Log,
                    TableKind::Logging => fragment.action == Action::Log,
                };
                if !wanted {
                    conditions.push(None);
                    continue;
                }
                let into = match source_ports {
                    None => &mut placed,
                    Some(tests) => {
                        let ranges = tests
                            .into_iter()
                            .filter_map(|t| match t {
                                PortTest::Range(r) => Some(r),
                                PortTest::AllBut(_) => None, // never a source-port term
                            })
                            .collect();
                        sourced.push((ranges, Placed::default()));
                        &mut sourced.last_mut().expect("just pushed").1
                    }
                };
                let pods: Option<(Option<Vec<u32>>, bool)> = match &fragment.pods {
                    PodPart::Any => None,
                    PodPart::AllPods => Some((None, false)),
                    PodPart::Pods {
                        all,
                        none,
                        external,
                    } => Some((self.groups_of(all, none), *external)),
                };
                let condition = match (pods, addresses) {
                    (None, None) => Some(PeerCondition::Any),
                    (Some((groups, external)), None) => {
                        Some(PeerCondition::Pods { groups, external })
                    }
                    (None, Some(ranges)) => Some(PeerCondition::Addresses(ranges)),
                    (Some((groups, external)), Some(ranges)) => {
                        let mut groups = match groups {
                            Some(groups) => groups,
                            None => (0..self.group_signatures.len() as u32).collect(),
                        };
                        groups.sort_unstable();
                        into.mixed.push(MixedSlot {
                            slot,
                            groups: groups.into(),
                            external,
                            ranges: ranges.into(),
                            ports: ports.clone().map(Into::into),
                        });
                        None
                    }
                };
                if condition.is_some() {
                    into.add(slot, ports);
                }
                conditions.push(condition);
            }
        }

        let mut lookup = self.layout(&conditions, &placed);
        let mut by_source = (!sourced.is_empty()).then(|| {
            let ranges: Vec<(PortRange, u32)> = sourced
                .iter()
                .enumerate()
                .flat_map(|(i, (ranges, _))| ranges.iter().map(move |&r| (r, i as u32)))
                .collect();
            let mut interner = ClassInterner::default();
            let map = PortMap::build(&ranges, &[], &mut interner);
            let lookups = interner
                .into_classes()
                .into_iter()
                .map(|members| {
                    (!members.is_empty()).then(|| {
                        let mut class = Placed::default();
                        for &i in &members {
                            class.extend(&sourced[i as usize].1);
                        }
                        self.layout(&conditions, &class)
                    })
                })
                .collect();
            SourcePorts {
                map,
                lookups,
                joint: None,
            }
        });
        self.attach_products(&mut lookup, by_source.as_mut(), conditions.len());
        Table::new(slots, lookup, by_source)
    }

    /// Gives `main` and its source-port classes' lookups a product each where it fits (see
    /// [`CompileOptions::product_budget`]), or all of them one joint product where that fits
    /// (see [`CompileOptions::joint_product_budget`]); a lookup a product answers for drops
    /// its layers.
    fn attach_products(
        &self,
        main: &mut Lookup,
        mut by_source: Option<&mut SourcePorts>,
        slots: usize,
    ) {
        let own_product = |lookup: &Lookup| {
            Product::build(
                lookup,
                slots,
                self.product_budgets(self.options.product_budget),
            )
            .map(|product| product.staged_from(self.options.staged_product_bytes))
        };
        main.product = own_product(main);
        if let Some(by_source) = by_source.as_deref_mut() {
            for class in by_source.lookups.iter_mut().flatten() {
                class.product = own_product(class);
            }
            by_source.joint = self.joint_product(main, by_source, slots);
        }
        let joint = by_source.as_ref().is_some_and(|s| s.joint.is_some());
        let classes = by_source
            .into_iter()
            .flat_map(|s| s.lookups.iter_mut().flatten());
        for lookup in std::iter::once(main).chain(classes) {
            if joint {
                lookup.product = None;
            }
            if joint || lookup.product.is_some() {
                lookup.drop_layers();
            }
        }
    }

    /// The budgets of a product of at most `bytes` in any shape.
    fn product_budgets(&self, bytes: usize) -> Budgets {
        Budgets {
            any: bytes,
            dense: self.options.dense_product_budget,
            steps: self.options.steps_product_budget,
            ranked_cells: self.options.ranked_cells_bytes,
        }
    }

    /// One product for `main` and the lookups of `by_source`, if each of them has a product
    /// of its own (so their slots look only at addresses and ports) and the joint one takes
    /// at most [`JOINT_GROWTH`] times their bytes, within the budgets.
    fn joint_product(
        &self,
        main: &Lookup,
        by_source: &SourcePorts,
        slots: usize,
    ) -> Option<JointProduct> {
        let separate: usize = std::iter::once(main)
            .chain(by_source.lookups.iter().flatten())
            .map(|lookup| lookup.product.as_ref().map(Product::table_bytes))
            .sum::<Option<usize>>()?;
        let budget = self
            .options
            .joint_product_budget
            .min(self.options.product_budget)
            .min(separate.saturating_mul(JOINT_GROWTH));
        let classes: Vec<Option<&Lookup>> = by_source.lookups.iter().map(Option::as_ref).collect();
        let (product, part_of_class) =
            Product::build_joint(main, &classes, slots, self.product_budgets(budget))?;
        Some(JointProduct {
            product: product.staged_from(self.options.staged_product_bytes),
            part_of_class,
        })
    }

    /// The lookup of the `placed` slots, without a product.
    fn layout(&self, conditions: &[Option<PeerCondition>], placed: &Placed) -> Lookup {
        // A slot matches every port of a protocol (no ports, a full range, or `notProtocol`), or
        // some ports. Every (protocol, port) falls in some port class (class 0 when no rule names
        // it), so the slots of the first kind can be folded into every class of their protocols:
        // a lookup is then one port search, one group lookup and one address search. Folding
        // copies those slots into each class, which costs little while the table is small, and
        // makes a large one too big for the caches: past a budget they keep a class per
        // protocol of their own, looked up beside the port class.
        let Placed {
            unported,
            with_ports,
            all_but,
            mixed,
        } = placed;
        let is_wide = |r: &PortRange| r.start == 0 && r.end == u16::MAX;
        let narrow: Vec<(PortRange, u32)> = with_ports
            .iter()
            .copied()
            .filter(|(r, _)| !is_wide(r))
            .collect();
        let wide_ranges: Vec<(Protocol, u32)> = with_ports
            .iter()
            .filter(|(r, _)| is_wide(r))
            .map(|&(r, slot)| (r.protocol, slot))
            .collect();
        let build_class = |mut slots: Vec<u32>| -> PortClass {
            let mut any_peer = NONE;
            let mut pods = GroupFirstBuilder::default();
            let mut addresses: Vec<(AddressRange, u32)> = Vec::new();
            // Ascending slot order: the group builder keeps the first slot per group.
            slots.sort_unstable();
            slots.dedup();
            for slot in slots {
                match conditions[slot as usize]
                    .as_ref()
                    .expect("mixed slots and slots of the other kind are not in classes")
                {
                    PeerCondition::Any => any_peer = any_peer.min(slot),
                    PeerCondition::Pods { groups, external } => {
                        pods.add(slot, groups.as_deref(), *external)
                    }
                    PeerCondition::Addresses(ranges) => {
                        addresses.extend(ranges.iter().map(|&r| (r, slot)))
                    }
                }
            }
            PortClass {
                any_peer,
                pods: pods.finish(),
                addresses: address_first(&addresses),
            }
        };

        // The wide slots' classes are few and small: they are built first, to measure what
        // folding would copy into the port classes (their ranges merged, as the copies would be).
        let mut interner = ClassInterner::default();
        let narrow_map = PortMap::build(&narrow, &[], &mut interner);
        let narrow_classes = interner.into_classes();
        let wide = (!wide_ranges.is_empty() || !all_but.is_empty() || !unported.is_empty())
            .then(|| wide_classes(&wide_ranges, all_but, unported, build_class));
        let copies = wide.as_ref().map_or(0, |w| w.copies(&narrow_map));
        let (map, port_classes, wide) = match wide {
            Some(_) if copies <= self.options.fold_budget => {
                let mut interner = ClassInterner::default();
                let map = PortMap::build(with_ports, all_but, &mut interner);
                let classes: Vec<PortClass> = interner
                    .into_classes()
                    .into_iter()
                    .map(|mut class| {
                        class.extend_from_slice(unported);
                        build_class(class)
                    })
                    .collect();
                (map, classes, None)
            }
            wide => {
                let classes = narrow_classes.into_iter().map(build_class).collect();
                (narrow_map, classes, wide)
            }
        };
        let mut mixed = mixed.clone();
        mixed.sort_by_key(|m| m.slot);
        let lowest = unported
            .iter()
            .chain(with_ports.iter().map(|(_, slot)| slot))
            .chain(all_but.iter().map(|(_, slot)| slot))
            .chain(mixed.iter().map(|m| &m.slot))
            .copied()
            .min()
            .unwrap_or(NONE);
        Lookup {
            ports: (map, port_classes),
            wide,
            mixed,
            lowest,
            product: None,
        }
    }

    /// The groups of pods satisfying every atom of `all` and none of `none` (every group when
    /// both are empty).
    fn groups_of(&self, all: &[u32], none: &[u32]) -> Option<Vec<u32>> {
        let excluded = |g: u32| {
            let signature = &self.group_signatures[g as usize];
            none.iter().any(|n| signature.binary_search(n).is_ok())
        };
        let groups: Vec<u32> = if all.is_empty() {
            (0..self.group_signatures.len() as u32)
                .filter(|&g| !excluded(g))
                .collect()
        } else {
            self.groups_satisfying(all)
                .filter(|&g| !excluded(g))
                .collect()
        };
        Some(groups)
    }

    /// Groups whose pods satisfy every atom.
    fn groups_satisfying(&self, atoms: &[u32]) -> impl Iterator<Item = u32> + '_ {
        let atoms = atoms.to_vec();
        let narrowest = atoms
            .iter()
            .min_by_key(|&&a| self.atom_groups[a as usize].len())
            .copied()
            .expect("a pod part names at least one atom");
        self.atom_groups[narrowest as usize]
            .iter()
            .copied()
            .filter(move |&g| {
                let sig = &self.group_signatures[g as usize];
                atoms.iter().all(|a| sig.binary_search(a).is_ok())
            })
    }
}

/// Slots sorted by their port condition, for one [`Lookup`].
#[derive(Debug, Clone, Default)]
struct Placed {
    /// No port condition.
    unported: Vec<u32>,
    with_ports: Vec<(PortRange, u32)>,
    all_but: Vec<(Protocol, u32)>,
    /// Slots with a pod condition and addresses, checked one by one.
    mixed: Vec<MixedSlot>,
}

impl Placed {
    fn add(&mut self, slot: u32, ports: Option<Vec<PortTest>>) {
        match ports {
            Some(ports) => {
                for test in ports {
                    match test {
                        PortTest::Range(r) => self.with_ports.push((r, slot)),
                        PortTest::AllBut(p) => self.all_but.push((p, slot)),
                    }
                }
            }
            None => self.unported.push(slot),
        }
    }

    fn extend(&mut self, other: &Placed) {
        self.unported.extend_from_slice(&other.unported);
        self.with_ports.extend_from_slice(&other.with_ports);
        self.all_but.extend_from_slice(&other.all_but);
        self.mixed.extend(other.mixed.iter().cloned());
    }
}

/// What a slot requires of the peer.
enum PeerCondition {
    Any,
    /// `groups` `None`: any pod; `Some`: pods of these groups. `external`: addresses of no pod
    /// satisfy it too.
    Pods {
        groups: Option<Vec<u32>>,
        external: bool,
    },
    Addresses(Vec<AddressRange>),
}

/// Collects, per pod group, the first slot the group satisfies.
#[derive(Default)]
struct GroupFirstBuilder {
    first: GroupFirst,
    any: bool,
}

impl GroupFirstBuilder {
    /// Slots must be added in increasing order; `groups` `None` means every pod; `external`
    /// that addresses of no pod satisfy the slot too.
    fn add(&mut self, slot: u32, groups: Option<&[u32]>, external: bool) {
        self.any = true;
        if external {
            self.first.external = self.first.external.min(slot);
        }
        match groups {
            None => self.first.all_pods = self.first.all_pods.min(slot),
            Some(groups) => {
                // A group already past an all-pods slot gains nothing from later slots.
                if slot > self.first.all_pods {
                    return;
                }
                for &g in groups {
                    self.first.by_group.entry(g).or_insert(slot);
                }
            }
        }
    }

    fn finish(self) -> Option<GroupFirst> {
        self.any.then_some(self.first)
    }
}

/// The classes of the slots that match every port of a protocol: `wide` (protocol, slot) pairs,
/// `all_but` slots matching every protocol but one, and `unported` slots matching every protocol.
fn wide_classes(
    wide: &[(Protocol, u32)],
    all_but: &[(Protocol, u32)],
    unported: &[u32],
    build_class: impl Fn(Vec<u32>) -> PortClass,
) -> WideClasses {
    let mut protocols: Vec<Protocol> = wide.iter().chain(all_but).map(|&(p, _)| p).collect();
    protocols.sort_unstable();
    protocols.dedup();
    let slots_for = |protocol: Option<Protocol>| -> Vec<u32> {
        let named = wide
            .iter()
            .filter(|&&(p, _)| Some(p) == protocol)
            .map(|&(_, slot)| slot);
        let all_but = all_but
            .iter()
            .filter(|&&(except, _)| Some(except) != protocol)
            .map(|&(_, slot)| slot);
        named
            .chain(all_but)
            .chain(unported.iter().copied())
            .collect()
    };
    let other = slots_for(None);
    WideClasses {
        by_protocol: protocols
            .into_iter()
            .map(|p| (p, build_class(slots_for(Some(p)))))
            .collect(),
        other: (!other.is_empty()).then(|| build_class(other)),
    }
}

/// The first slot for every address class of `ranges`, if there are any.
fn address_first(ranges: &[(AddressRange, u32)]) -> Option<AddressFirst> {
    (!ranges.is_empty()).then(|| AddressFirst {
        map: AddressMap::first_slots(ranges, NONE),
    })
}
