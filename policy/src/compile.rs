//! Builds a [`Classifier`] from a [`Cluster`]: policies are lowered to slots, selectors are
//! resolved once to pod sets (through a label index), pods are grouped by the selector terms they
//! satisfy, and each endpoint class gets a table of dimension classes.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::classifier::intervals::ClassInterner;
use crate::classifier::lpm::{block_ranges, AddressMap, AddressRange};
use crate::classifier::ports::{PortMap, PortRange};
use crate::classifier::{
    AddressFirst, Classifier, GroupFirst, MixedSlot, PortClass, Table, NONE, NO_TABLE,
};
use crate::decision::RuleRef;
use crate::inventory::{Inventory, PodId, Protocol};
use crate::load::Cluster;
use crate::netpol::{Direction, NamespaceScope, Peer, PortSpec};
use crate::selector::LabelSelector;

/// A condition on the peer pod that selects a set of pods.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Atom {
    Selector(NamespaceScope, LabelSelector),
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
    /// Pods satisfying every atom.
    Atoms(Vec<u32>),
}

#[derive(Debug, Clone)]
enum PortTerm {
    Range(PortRange),
    /// Resolved against the selected pod when its table is built (ingress named ports).
    NamedOnEndpoint {
        name: String,
        protocol: Protocol,
    },
}

/// One slot-to-be: a rule restricted to one peer (and one named-port value).
#[derive(Debug, Clone)]
struct Fragment {
    rule: u32,
    pods: PodPart,
    addresses: Option<Vec<AddressRange>>,
    ports: Option<Vec<PortTerm>>,
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

/// Knobs of the compiler that trade memory for lookup speed.
#[derive(Debug, Clone, Copy)]
pub struct CompileOptions {
    /// How many folded entries (port classes × entries of rules without a port condition) a
    /// table may hold before those rules get a lookup of their own instead: one more group
    /// lookup and address search per packet, but no copies. The default (4M) folds the 100k-rule
    /// benchmark table for +1.5 MiB; it bounds a pathological table to tens of MiB.
    pub fold_budget: usize,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            fold_budget: 1 << 22,
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
}

impl<'a> Compiler<'a> {
    fn new(cluster: &'a Cluster, options: CompileOptions) -> Self {
        let mut compiler = Compiler {
            cluster,
            options,
            index: PodIndex::new(&cluster.inventory),
            atoms: Atoms::default(),
            fragments: Vec::with_capacity(cluster.policies.len()),
        };
        let named_values = compiler.named_port_values();
        for policy in &cluster.policies {
            let lowered = Direction::BOTH.map(|direction| {
                policy
                    .rules(direction)
                    .iter()
                    .enumerate()
                    .flat_map(|(i, rule)| {
                        compiler.lower_rule(i as u32, direction, rule, &named_values)
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
        let mut named: Vec<(u32, PortRange)> = Vec::new();
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
                (PortSpec::Named(name), Direction::Ingress) => {
                    plain.push(PortTerm::NamedOnEndpoint {
                        name: name.clone(),
                        protocol: port.protocol,
                    })
                }
                (PortSpec::Named(name), Direction::Egress) => {
                    for &value in named_values
                        .get(&(name.clone(), port.protocol))
                        .into_iter()
                        .flatten()
                    {
                        let atom = self.atoms.intern(Atom::NamedPort {
                            name: name.clone(),
                            protocol: port.protocol,
                            port: value,
                        });
                        named.push((
                            atom,
                            PortRange {
                                protocol: port.protocol,
                                start: value,
                                end: value,
                            },
                        ));
                    }
                }
            }
        }

        let mut fragments = Vec::new();
        for (pods, addresses) in peers {
            if spec.ports.is_empty() || !plain.is_empty() {
                fragments.push(Fragment {
                    rule,
                    pods: pods.clone(),
                    addresses: addresses.clone(),
                    ports: (!spec.ports.is_empty()).then(|| plain.clone()),
                });
            }
            for &(atom, range) in &named {
                let restricted = match &pods {
                    PodPart::Any | PodPart::AllPods => vec![atom],
                    PodPart::Atoms(atoms) => {
                        let mut all = atoms.clone();
                        all.push(atom);
                        all.sort_unstable();
                        all.dedup();
                        all
                    }
                };
                fragments.push(Fragment {
                    rule,
                    pods: PodPart::Atoms(restricted),
                    addresses: addresses.clone(),
                    ports: Some(vec![PortTerm::Range(range)]),
                });
            }
        }
        fragments
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
                (PodPart::Atoms(vec![atom]), None)
            }
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
        // ports of those policies to the same numbers) share a table.
        let mut selected_by: Vec<[Vec<u32>; 2]> = vec![[Vec::new(), Vec::new()]; pod_count];
        for (pi, policy) in cluster.policies.iter().enumerate() {
            let scope = NamespaceScope::Same(policy.namespace.clone());
            for pod in self.index.select(&scope, &policy.pod_selector) {
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
        let mut table_ids: HashMap<EndpointClass, u32> = HashMap::new();
        let mut tables: Vec<Table> = Vec::new();
        let mut tables_of_pod = vec![[NO_TABLE; 2]; pod_count];
        for (pod, by_direction) in selected_by.iter().enumerate() {
            for direction in Direction::BOTH {
                let policies = &by_direction[direction.index()];
                if policies.is_empty() {
                    continue;
                }
                let names = builder.endpoint_named_ports(policies, direction);
                let resolved: Vec<Option<u16>> = names
                    .iter()
                    .map(|(n, proto)| inventory.pod(pod as PodId).resolve_named_port(n, *proto))
                    .collect();
                let key = (direction, policies.clone(), resolved);
                let id = *table_ids.entry(key).or_insert_with(|| {
                    tables.push(builder.build(policies, direction, pod as PodId));
                    tables.len() as u32 - 1
                });
                tables_of_pod[pod][direction.index()] = id;
            }
        }

        Classifier {
            cluster: cluster_arc,
            group_by_v4,
            group_by_v6,
            tables_of_pod,
            tables,
            pod_groups: group_signatures.len(),
            selector_terms: self.atoms.list.len(),
        }
    }
}

/// What makes endpoints share a table: the direction, the policies selecting them, and the
/// numbers their own named ports resolve to.
type EndpointClass = (Direction, Vec<u32>, Vec<Option<u16>>);

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
            .flat_map(|f| f.ports.iter().flatten())
            .filter_map(|t| match t {
                PortTerm::NamedOnEndpoint { name, protocol } => Some((name.clone(), *protocol)),
                PortTerm::Range(_) => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The table for endpoints selected by `policies`, with `representative` resolving named
    /// ports (every pod of the class resolves them alike).
    fn build(&self, policies: &[u32], direction: Direction, representative: PodId) -> Table {
        let endpoint = self.inventory.pod(representative);
        let mut slots: Vec<RuleRef> = Vec::new();
        // Each slot's peer condition, and which slots have no port condition.
        let mut conditions: Vec<Option<PeerCondition>> = Vec::new();
        let mut unported: Vec<u32> = Vec::new();
        let mut with_ports: Vec<(PortRange, u32)> = Vec::new();
        let mut mixed: Vec<MixedSlot> = Vec::new();
        for &policy in policies {
            for fragment in &self.fragments[policy as usize][direction.index()] {
                let ports: Option<Vec<PortRange>> = fragment.ports.as_ref().map(|terms| {
                    terms
                        .iter()
                        .filter_map(|t| match t {
                            PortTerm::Range(r) => Some(*r),
                            PortTerm::NamedOnEndpoint { name, protocol } => endpoint
                                .resolve_named_port(name, *protocol)
                                .map(|port| PortRange {
                                    protocol: *protocol,
                                    start: port,
                                    end: port,
                                }),
                        })
                        .collect()
                });
                if ports.as_ref().is_some_and(Vec::is_empty) {
                    continue; // only named ports this pod does not have: matches nothing
                }
                let slot = slots.len() as u32;
                slots.push(RuleRef {
                    policy,
                    direction,
                    rule: fragment.rule,
                });
                let groups: Option<Option<Vec<u32>>> = match &fragment.pods {
                    PodPart::Any => None,
                    PodPart::AllPods => Some(None),
                    PodPart::Atoms(atoms) => Some(Some(self.groups_satisfying(atoms).collect())),
                };
                let condition = match (groups, &fragment.addresses) {
                    (None, None) => Some(PeerCondition::Any),
                    (Some(groups), None) => Some(PeerCondition::Pods(groups)),
                    (None, Some(ranges)) => Some(PeerCondition::Addresses(ranges.clone())),
                    (Some(groups), Some(ranges)) => {
                        let mut groups = match groups {
                            Some(groups) => groups,
                            None => (0..self.group_signatures.len() as u32).collect(),
                        };
                        groups.sort_unstable();
                        mixed.push(MixedSlot {
                            slot,
                            groups: groups.into(),
                            ranges: ranges.clone().into(),
                            ports: ports.clone().map(Into::into),
                        });
                        None
                    }
                };
                if condition.is_some() {
                    match ports {
                        Some(ports) => with_ports.extend(ports.into_iter().map(|r| (r, slot))),
                        None => unported.push(slot),
                    }
                }
                conditions.push(condition);
            }
        }

        // Every (protocol, port) falls in some port class (class 0 when no rule names it), so
        // slots without a port condition can be folded into every class: a lookup is then one
        // port search, one group lookup and one address search. Folding copies those slots into
        // each class, so it is done only while the copies stay within a budget.
        let mut interner = ClassInterner::default();
        let map = PortMap::build(&with_ports, &mut interner);
        let port_classes = interner.into_classes();
        let unported_size: usize = unported
            .iter()
            .map(|&s| match &conditions[s as usize] {
                Some(PeerCondition::Pods(Some(groups))) => groups.len(),
                Some(PeerCondition::Addresses(ranges)) => ranges.len(),
                _ => 1,
            })
            .sum();
        let fold = port_classes.len().saturating_mul(unported_size) <= self.options.fold_budget;
        let build_class = |ported: &[u32], extra: &[u32]| -> PortClass {
            let mut any_peer = NONE;
            let mut pods = GroupFirstBuilder::default();
            let mut addresses: Vec<(AddressRange, u32)> = Vec::new();
            // Ascending slot order: the group builder keeps the first slot per group.
            let mut merged: Vec<u32> = ported.iter().chain(extra).copied().collect();
            merged.sort_unstable();
            for slot in merged {
                match conditions[slot as usize]
                    .as_ref()
                    .expect("mixed slots are not in classes")
                {
                    PeerCondition::Any => any_peer = any_peer.min(slot),
                    PeerCondition::Pods(groups) => pods.add(slot, groups.as_deref()),
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
        let folded: &[u32] = if fold { &unported } else { &[] };
        let classes: Vec<PortClass> = port_classes
            .iter()
            .map(|class| build_class(class, folded))
            .collect();
        let unported_class = (!fold && !unported.is_empty()).then(|| build_class(&[], &unported));

        let needs_group = !mixed.is_empty()
            || classes.iter().any(|c| c.pods.is_some())
            || unported_class.as_ref().is_some_and(|c| c.pods.is_some());
        Table {
            policies: policies.to_vec(),
            slots,
            unported: unported_class,
            ports: (map, classes),
            mixed,
            needs_group,
        }
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

/// What a slot requires of the peer.
enum PeerCondition {
    Any,
    /// `None`: any pod; `Some`: pods of these groups.
    Pods(Option<Vec<u32>>),
    Addresses(Vec<AddressRange>),
}

/// Collects, per pod group, the first slot the group satisfies.
#[derive(Default)]
struct GroupFirstBuilder {
    first: GroupFirst,
    any: bool,
}

impl GroupFirstBuilder {
    /// Slots must be added in increasing order; `groups` `None` means every pod.
    fn add(&mut self, slot: u32, groups: Option<&[u32]>) {
        self.any = true;
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

/// The first slot for every address class of `ranges`, if there are any.
fn address_first(ranges: &[(AddressRange, u32)]) -> Option<AddressFirst> {
    if ranges.is_empty() {
        return None;
    }
    let mut interner = ClassInterner::default();
    let map = AddressMap::build(ranges, &mut interner);
    let first = interner
        .into_classes()
        .iter()
        .map(|class| class.first().copied().unwrap_or(NONE))
        .collect();
    Some(AddressFirst { map, first })
}
