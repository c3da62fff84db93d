//! The compiled classifier: immutable, `Send + Sync`, answering `decide` with a few lookups whose
//! cost does not grow with the number of policies in the cluster.
//!
//! For each endpoint class (pods selected by the same policies) and direction there is a
//! [`Table`]. Its rules are numbered *slots* in evaluation order. Each slot constrains up to three
//! dimensions — the peer pod (through its label group), the peer address (CIDR ranges) and the
//! port — and a lookup maps the packet to one class per dimension. The answer is the lowest slot
//! present in the classes of every dimension the slot constrains.

pub mod bitset;
pub mod intervals;
pub mod lpm;
pub mod ports;

use std::net::IpAddr;
use std::sync::Arc;

use crate::decision::{ConnectionDecision, Decision, Party, RuleRef};
use crate::inventory::{PodId, Protocol};
use crate::load::Cluster;
use crate::netpol::Direction;

use bitset::{first_common, SlotSet};
use lpm::AddressMap;
use ports::PortMap;

/// Dimension bits of a slot's family: which dimensions the slot constrains.
pub(crate) const POD: u8 = 1;
pub(crate) const ADDRESS: u8 = 2;
pub(crate) const PORT: u8 = 4;

/// A family's index among the four families that contain `dimension`.
#[inline]
pub(crate) fn rank(family: u8, dimension: u8) -> usize {
    let others = 7 & !dimension;
    let low = others & others.wrapping_neg();
    let high = others & !low;
    usize::from(family & low != 0) | usize::from(family & high != 0) << 1
}

/// A table's per-class slot sets, one for each family containing the dimension.
pub(crate) type ClassSets = [SlotSet; 4];

pub(crate) const NO_TABLE: u32 = u32::MAX;

/// The rules that apply to one endpoint class in one direction, compiled.
#[derive(Debug)]
pub struct Table {
    /// The policies selecting these endpoints for `direction`, in evaluation order.
    pub(crate) policies: Vec<u32>,
    /// Slot → the rule it came from.
    pub(crate) slots: Vec<RuleRef>,
    /// Slots that constrain nothing (a rule with no peers and no ports).
    pub(crate) always: Option<u32>,
    /// Bit `f` set when family `f` (1..8) has any slot.
    pub(crate) families: u8,
    pub(crate) pod_class_by_group: ahash::AHashMap<u32, u32>,
    /// Class of a pod whose group no slot names.
    pub(crate) default_pod_class: u32,
    /// Class of an address that is not a pod.
    pub(crate) non_pod_class: u32,
    pub(crate) pod_classes: Vec<ClassSets>,
    pub(crate) addresses: AddressMap,
    pub(crate) address_classes: Vec<ClassSets>,
    pub(crate) ports: PortMap,
    pub(crate) port_classes: Vec<ClassSets>,
}

impl Table {
    /// The first slot matching the peer (its pod group, if it is a pod) and the port.
    #[inline]
    fn first_match(
        &self,
        peer_group: Option<u32>,
        peer: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> Option<u32> {
        let mut best = self.always.unwrap_or(self.slots.len() as u32);
        if self.families == 0 || best == 0 {
            return (best < self.slots.len() as u32).then_some(best);
        }
        let pod_class = match peer_group {
            None => self.non_pod_class,
            Some(g) => *self
                .pod_class_by_group
                .get(&g)
                .unwrap_or(&self.default_pod_class),
        } as usize;
        let address_class = if self.families & 0b1100_1100 != 0 {
            self.addresses.class_of(peer) as usize
        } else {
            0
        };
        let port_class = if self.families & 0b1111_0000 != 0 {
            self.ports.class_of(protocol, port) as usize
        } else {
            0
        };
        for family in 1..8u8 {
            if self.families & (1 << family) == 0 {
                continue;
            }
            let mut sets: [&SlotSet; 3] = [&SlotSet::Empty; 3];
            let mut n = 0;
            if family & POD != 0 {
                sets[n] = &self.pod_classes[pod_class][rank(family, POD)];
                n += 1;
            }
            if family & ADDRESS != 0 {
                sets[n] = &self.address_classes[address_class][rank(family, ADDRESS)];
                n += 1;
            }
            if family & PORT != 0 {
                sets[n] = &self.port_classes[port_class][rank(family, PORT)];
                n += 1;
            }
            if let Some(slot) = first_common(&sets[..n], 0, best) {
                best = slot;
            }
        }
        (best < self.slots.len() as u32).then_some(best)
    }

    fn heap_bytes(&self) -> usize {
        let sets = |classes: &Vec<ClassSets>| -> usize {
            classes
                .iter()
                .flat_map(|c| c.iter())
                .map(|s| s.heap_bytes() + std::mem::size_of::<SlotSet>())
                .sum()
        };
        self.policies.len() * 4
            + self.slots.len() * std::mem::size_of::<RuleRef>()
            + self.pod_class_by_group.len() * 12
            + sets(&self.pod_classes)
            + self.addresses.heap_bytes()
            + sets(&self.address_classes)
            + self.ports.heap_bytes()
            + sets(&self.port_classes)
    }
}

/// Numbers describing a compiled classifier.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub tables: usize,
    pub slots: usize,
    pub pod_groups: usize,
    pub selector_terms: usize,
    pub heap_bytes: usize,
}

/// The compiled form of a [`Cluster`]'s policies. Build it with [`Classifier::compile`].
#[derive(Debug)]
pub struct Classifier {
    pub(crate) cluster: Arc<Cluster>,
    /// Address of a policy endpoint → its pod group.
    pub(crate) group_by_address: ahash::AHashMap<IpAddr, u32>,
    /// Pod → table per direction (`NO_TABLE`: not isolated).
    pub(crate) tables_of_pod: Vec<[u32; 2]>,
    pub(crate) tables: Vec<Table>,
    pub(crate) pod_groups: usize,
    pub(crate) selector_terms: usize,
}

impl Classifier {
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The verdict for traffic of `pod` in `direction` with `peer` (the source for ingress, the
    /// destination for egress), `protocol` and `port` (the destination port; 0 for protocols
    /// without ports).
    #[inline]
    pub fn decide(
        &self,
        pod: PodId,
        direction: Direction,
        peer: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> Decision {
        let table = self.tables_of_pod[pod as usize][direction.index()];
        if table == NO_TABLE {
            return Decision::NotIsolated;
        }
        let table = &self.tables[table as usize];
        let group = self.group_by_address.get(&peer).copied();
        match table.first_match(group, peer, protocol, port) {
            Some(slot) => Decision::Allowed(table.slots[slot as usize]),
            None => Decision::Denied,
        }
    }

    /// Whether `pod` is isolated in `direction` and, if so, by which policies.
    pub fn selecting_policies(&self, pod: PodId, direction: Direction) -> &[u32] {
        match self.tables_of_pod[pod as usize][direction.index()] {
            NO_TABLE => &[],
            t => &self.tables[t as usize].policies,
        }
    }

    /// A connection from `from` to `to`: the source's egress and the destination's ingress.
    pub fn connection(
        &self,
        from: Party,
        to: Party,
        protocol: Protocol,
        port: u16,
    ) -> ConnectionDecision {
        let same_pod = from.pod().is_some() && from.pod() == to.pod();
        let egress = from
            .pod()
            .map(|p| self.decide(p, Direction::Egress, to.address(), protocol, port));
        let ingress = to
            .pod()
            .map(|p| self.decide(p, Direction::Ingress, from.address(), protocol, port));
        ConnectionDecision {
            egress,
            ingress,
            same_pod,
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            tables: self.tables.len(),
            slots: self.tables.iter().map(|t| t.slots.len()).sum(),
            pod_groups: self.pod_groups,
            selector_terms: self.selector_terms,
            heap_bytes: self.heap_bytes(),
        }
    }

    /// Approximate heap memory of the compiled structures (not of the cluster model).
    pub fn heap_bytes(&self) -> usize {
        self.group_by_address.len() * 24
            + self.tables_of_pod.len() * 8
            + self.tables.iter().map(Table::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_number_the_four_families_of_each_dimension() {
        for dimension in [POD, ADDRESS, PORT] {
            let mut ranks: Vec<usize> = (0..8u8)
                .filter(|f| f & dimension != 0)
                .map(|f| rank(f, dimension))
                .collect();
            ranks.sort_unstable();
            assert_eq!(ranks, vec![0, 1, 2, 3]);
        }
    }

    #[test]
    fn classifier_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Classifier>();
    }
}
