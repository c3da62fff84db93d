//! A [`Lookup`] flattened into one table of first slots, indexed by address class and port
//! class, for lookups whose slots constrain only the peer address and the port (ipBlocks,
//! Calico `nets`, ClassBench rule lists).
//!
//! The layered lookup searches the address map of the packet's port class, and a second map
//! when the rules over every port of a protocol are kept apart. Here the address space is cut
//! once, at every boundary of any of those maps, into *rows* (address intervals whose first
//! slot is the same in every port class), and the ports into *columns* (port classes whose
//! first slot is the same in every row). A lookup is then one address search, one port search
//! and one load, however many maps the layered lookup has. Rows × columns can grow with the
//! product of the two, so the table is built only within a budget of bytes; past it the
//! layered lookup answers alone.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::inventory::Protocol;

use super::intervals::{Interner, Intervals, Key};
use super::ports::PortTable;
use super::{Lookup, PortClass, NONE};

/// The first slot of every (row, column).
#[derive(Debug)]
enum Cells {
    /// Every slot below `u16::MAX`, which stands for `NONE`: half the bytes.
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Product {
    v4_rows: Intervals<u32>,
    v6_rows: Intervals<u128>,
    /// Per protocol with a column of its own: port → column.
    columns_by_protocol: Vec<(Protocol, PortTable<u16>)>,
    /// The column of every other protocol.
    other_column: u32,
    columns: usize,
    cells: Cells,
}

impl Product {
    /// The product of `lookup`, if its slots (numbered below `slots`) constrain nothing but the
    /// peer address and the ports, and its cells fit in `budget` bytes.
    pub(crate) fn build(lookup: &Lookup, slots: usize, budget: usize) -> Option<Product> {
        let (port_map, port_classes) = &lookup.ports;
        let wide: Vec<&PortClass> = lookup.wide.iter().flat_map(|w| w.classes()).collect();
        if !lookup.mixed.is_empty()
            || port_classes
                .iter()
                .chain(wide.iter().copied())
                .any(|c| c.pods.is_some())
        {
            return None;
        }
        let cell_bytes = if slots < usize::from(u16::MAX) { 2 } else { 4 };

        // Provisional columns: a port class with the wide class of its protocol, if any.
        let wide_of = |protocol: Option<Protocol>| -> Option<usize> {
            let by_protocol = lookup.wide.as_ref()?;
            protocol
                .and_then(|p| by_protocol.by_protocol.iter().position(|(q, _)| *q == p))
                .or(by_protocol
                    .other
                    .as_ref()
                    .map(|_| by_protocol.by_protocol.len()))
        };
        let mut keys: Interner<(u32, Option<usize>)> = Interner::default();
        let mut protocols: Vec<Protocol> = port_map
            .protocols()
            .map(|(p, _)| p)
            .chain(
                lookup
                    .wide
                    .iter()
                    .flat_map(|w| w.by_protocol.iter().map(|(p, _)| *p)),
            )
            .collect();
        protocols.sort_unstable();
        protocols.dedup();
        let port_keys: Vec<(Protocol, Vec<(u32, u32)>)> = protocols
            .into_iter()
            .map(|protocol| {
                let w = wide_of(Some(protocol));
                let steps = match port_map.protocols().find(|(p, _)| *p == protocol) {
                    Some((_, ports)) => ports
                        .steps()
                        .map(|(start, class)| (start, keys.intern((class, w))))
                        .collect(),
                    None => vec![(0, keys.intern((port_map.other(), w)))],
                };
                (protocol, steps)
            })
            .collect();
        let other_key = keys.intern((port_map.other(), wide_of(None)));

        // A key's first slot at an address is the lower of its two classes' first slots there.
        let class_of_source = |source: usize| -> &PortClass {
            port_classes
                .get(source)
                .unwrap_or_else(|| wide[source - port_classes.len()])
        };
        let columns: Vec<Column> = keys
            .values()
            .iter()
            .map(|&(class, w)| {
                let b = w.map(|w| port_classes.len() + w);
                let any_peer = std::iter::once(class as usize)
                    .chain(b)
                    .map(|s| class_of_source(s).any_peer)
                    .min()
                    .unwrap_or(NONE);
                Column {
                    sources: [Some(class as usize), b],
                    any_peer,
                }
            })
            .collect();
        let source_count = port_classes.len() + wide.len();
        let mut rows = Rows {
            width: columns.len(),
            cells: Vec::new(),
            ids: HashMap::new(),
            limit: budget / cell_bytes,
        };
        let maps = |source: usize| class_of_source(source).addresses.as_ref().map(|a| &a.map);
        let v4_rows = rows.cut(
            &(0..source_count)
                .map(|s| maps(s).map(|m| m.v4()))
                .collect::<Vec<_>>(),
            &columns,
        )?;
        let v6_rows = rows.cut(
            &(0..source_count)
                .map(|s| maps(s).map(|m| m.v6()))
                .collect::<Vec<_>>(),
            &columns,
        )?;

        // Merge provisional columns that agree on every row.
        let row_count = rows.cells.len() / columns.len();
        let mut merged: Interner<Vec<u32>> = Interner::default();
        let column_of_key: Vec<u32> = (0..columns.len())
            .map(|k| {
                merged.intern(
                    (0..row_count)
                        .map(|r| rows.cells[r * columns.len() + k])
                        .collect(),
                )
            })
            .collect();
        let width = merged.values().len();
        if width > usize::from(u16::MAX) {
            // Port tables hold `u16` columns; so many port classes are past any budget anyway.
            return None;
        }
        let cells =
            (0..row_count).flat_map(|r| merged.values().iter().map(move |column| column[r]));
        let cells = if cell_bytes == 2 {
            Cells::Narrow(
                cells
                    .map(|slot| u16::try_from(slot).unwrap_or(u16::MAX))
                    .collect(),
            )
        } else {
            Cells::Wide(cells.collect())
        };
        Some(Product {
            v4_rows,
            v6_rows,
            columns_by_protocol: port_keys
                .into_iter()
                .map(|(protocol, steps)| {
                    let columns = steps.into_iter().map(|(start, key)| {
                        let column = column_of_key[key as usize];
                        (
                            start,
                            u16::try_from(column).expect("at most u16::MAX columns, checked above"),
                        )
                    });
                    (protocol, PortTable::new(columns))
                })
                .collect(),
            other_column: column_of_key[other_key as usize],
            columns: width,
            cells,
        })
    }

    /// The first slot matching `peer` and the port, or `NONE`.
    #[inline]
    pub(crate) fn first(&self, peer: IpAddr, protocol: Protocol, port: u16) -> u32 {
        let row = match peer {
            IpAddr::V4(a) => self.v4_rows.class_of(a.into()),
            IpAddr::V6(a) => self.v6_rows.class_of(a.into()),
        };
        let column = self
            .columns_by_protocol
            .iter()
            .find(|(p, _)| *p == protocol)
            .map_or(self.other_column, |(_, ports)| u32::from(ports.get(port)));
        let at = row as usize * self.columns + column as usize;
        match &self.cells {
            Cells::Narrow(cells) => match cells[at] {
                u16::MAX => NONE,
                slot => u32::from(slot),
            },
            Cells::Wide(cells) => cells[at],
        }
    }

    /// Rows and columns of the table.
    #[cfg(test)]
    fn shape(&self) -> (usize, usize) {
        let cells = match &self.cells {
            Cells::Narrow(c) => c.len(),
            Cells::Wide(c) => c.len(),
        };
        (cells / self.columns.max(1), self.columns)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let cells = match &self.cells {
            Cells::Narrow(c) => c.len() * 2,
            Cells::Wide(c) => c.len() * 4,
        };
        cells
            + self.v4_rows.heap_bytes()
            + self.v6_rows.heap_bytes()
            + self
                .columns_by_protocol
                .iter()
                .map(|(_, m)| m.heap_bytes() + 16)
                .sum::<usize>()
    }
}

/// A provisional column: the first slot at an address is the lowest of its sources' (port
/// classes') first slots there and `any_peer`.
struct Column {
    sources: [Option<usize>; 2],
    any_peer: u32,
}

/// Distinct rows, each a first slot per provisional column, kept flat.
struct Rows {
    width: usize,
    cells: Vec<u32>,
    ids: HashMap<Box<[u32]>, u32>,
    /// Most cells the budget allows.
    limit: usize,
}

impl Rows {
    /// Address → row for one family, given each source's address map of that family (`None`:
    /// the source has no address condition, so it contributes only its `any_peer`). `None` if
    /// the rows outgrow the budget.
    fn cut<K: Key>(
        &mut self,
        maps: &[Option<&Intervals<K>>],
        columns: &[Column],
    ) -> Option<Intervals<K>> {
        let steps: Vec<Vec<(K, u32)>> = maps
            .iter()
            .map(|m| m.map_or_else(Vec::new, |m| m.steps().collect()))
            .collect();
        let mut starts: Vec<K> = std::iter::once(K::MIN)
            .chain(steps.iter().flatten().map(|&(start, _)| start))
            .collect();
        starts.sort_unstable();
        starts.dedup();

        let mut at = vec![0usize; steps.len()];
        let mut value = vec![NONE; steps.len()];
        let mut row = vec![NONE; self.width];
        let mut row_steps = Vec::with_capacity(starts.len());
        for &start in &starts {
            for (source, steps) in steps.iter().enumerate() {
                if steps.is_empty() {
                    continue;
                }
                while at[source] + 1 < steps.len() && steps[at[source] + 1].0 <= start {
                    at[source] += 1;
                }
                value[source] = steps[at[source]].1;
            }
            for (cell, column) in row.iter_mut().zip(columns) {
                *cell = column
                    .sources
                    .iter()
                    .flatten()
                    .map(|&s| value[s])
                    .fold(column.any_peer, u32::min);
            }
            let id = match self.ids.get(row.as_slice()) {
                Some(&id) => id,
                None => {
                    if self.cells.len() + self.width > self.limit {
                        return None;
                    }
                    let id = (self.cells.len() / self.width.max(1)) as u32;
                    self.cells.extend_from_slice(&row);
                    self.ids.insert(row.clone().into_boxed_slice(), id);
                    id
                }
            };
            row_steps.push((start, id));
        }
        Some(Intervals::from_steps(row_steps))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compile::CompileOptions;
    use crate::Classifier;

    /// Rules on ports, ranges, whole protocols, `notProtocol` and every protocol, over nested
    /// IPv4 and IPv6 nets, in an order where later rules are shadowed in places.
    const POLICY: &str = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: all()
  types: [Ingress]
  ingress:
  - {action: Deny, protocol: TCP, source: {nets: ["10.1.2.0/24", "fd00::/120"]}, destination: {ports: [80]}}
  - {action: Allow, protocol: TCP, source: {nets: ["10.1.0.0/16"]}, destination: {ports: ["1000:2000", 443]}}
  - {action: Allow, protocol: UDP, source: {nets: ["10.1.2.128/25", "fd00::80/121"]}, destination: {ports: [53]}}
  - {action: Deny, protocol: TCP, source: {nets: ["10.0.0.0/8"]}}
  - {action: Allow, notProtocol: UDP, source: {nets: ["192.168.0.0/16", "fd00::/64"]}}
  - {action: Allow, protocol: ICMP, source: {nets: ["0.0.0.0/0"]}}
  - {action: Allow, protocol: TCP, destination: {ports: [22]}}
  - {action: Deny, source: {nets: ["10.1.2.3/32", "::/0"]}}
---
apiVersion: v1
kind: Namespace
metadata: {name: n}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: n}
status: {podIP: 10.0.0.1}
"#;

    /// The layered lookup of the pod's ingress table, compiled without a product.
    fn layered(fold_budget: usize) -> Classifier {
        let cluster =
            Arc::new(crate::load(&[crate::Source::new("p.yaml", POLICY)]).expect("valid"));
        Classifier::compile_with(
            cluster,
            CompileOptions {
                fold_budget,
                product_budget: 0,
            },
        )
    }

    fn lookup(classifier: &Classifier) -> &Lookup {
        let chain = classifier
            .chain(0, crate::Direction::Ingress)
            .expect("a chain");
        &chain.tiers[0].rules.lookup
    }

    fn probes() -> Vec<(IpAddr, Protocol, u16)> {
        let peers = [
            "10.1.2.3",
            "10.1.2.4",
            "10.1.2.200",
            "10.1.9.9",
            "10.9.9.9",
            "192.168.3.3",
            "8.8.8.8",
            "0.0.0.0",
            "255.255.255.255",
            "fd00::1",
            "fd00::90",
            "fd00::1:0",
            "2001:db8::1",
            "::",
        ];
        let mut probes = Vec::new();
        for peer in peers {
            for protocol in [
                Protocol::TCP,
                Protocol::UDP,
                Protocol::ICMP,
                Protocol::SCTP,
                Protocol(47),
            ] {
                for port in [
                    0, 22, 53, 79, 80, 81, 443, 999, 1000, 1500, 2000, 2001, 65535,
                ] {
                    probes.push((peer.parse().expect("an address"), protocol, port));
                }
            }
        }
        probes
    }

    #[test]
    fn the_product_answers_like_the_layered_lookup_in_both_cell_widths() {
        for fold_budget in [0, usize::MAX] {
            let classifier = layered(fold_budget);
            let lookup = lookup(&classifier);
            assert!(lookup.product.is_none());
            let narrow = Product::build(lookup, 8, usize::MAX).expect("addresses and ports only");
            let wide =
                Product::build(lookup, 70_000, usize::MAX).expect("addresses and ports only");
            assert!(matches!(narrow.cells, Cells::Narrow(_)));
            assert!(matches!(wide.cells, Cells::Wide(_)));
            let mut matched = 0;
            for (peer, protocol, port) in probes() {
                let want = lookup.first(None, peer, protocol, port);
                matched += usize::from(want != NONE);
                let context = format!("fold {fold_budget} {peer} {protocol:?} {port}");
                assert_eq!(narrow.first(peer, protocol, port), want, "{context}");
                assert_eq!(wide.first(peer, protocol, port), want, "{context}");
            }
            assert!(matched > 100, "the probes hit rules ({matched})");
        }
    }

    #[test]
    fn no_product_is_built_past_the_budget() {
        let classifier = layered(0);
        let lookup = lookup(&classifier);
        let built = Product::build(lookup, 8, usize::MAX).expect("within an unlimited budget");
        let (rows, columns) = built.shape();
        assert!(rows > 1 && columns > 1);
        assert!(Product::build(lookup, 8, rows * columns * 2).is_some());
        assert!(Product::build(lookup, 8, rows * columns * 2 - 1).is_none());
    }
}
