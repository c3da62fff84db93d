//! The port dimension: (protocol, port) → port class. Numeric ports, `endPort` ranges and named
//! ports (already resolved to numbers by the compiler) become intervals per protocol; ICMP type
//! and code are numbers of the same dimension (see [`crate::calico::rule::icmp_port`]). Calico's
//! `notProtocol` is a term on every protocol but one.

use crate::inventory::Protocol;

use super::intervals::{ClassInterner, Interner, Intervals};

/// An inclusive port range of one protocol, owned by a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub protocol: Protocol,
    pub start: u16,
    pub end: u16,
}

/// Port → value in two loads and no branch: the port's high byte picks a block of 256 values,
/// its low byte the value. Blocks that are alike are stored once, so a protocol whose ports
/// fall in a few ranges takes a few blocks, not a value per port; a search among a few hundred
/// port intervals would be a chain of unpredictable branches instead.
#[derive(Debug, Clone)]
pub struct PortTable<T> {
    block_of_high_byte: Box<[u16; 256]>,
    blocks: Box<[[T; 256]]>,
}

impl<T: Copy + Default + Eq + std::hash::Hash> PortTable<T> {
    /// The table of a step function: `steps` start at port 0, in increasing order.
    pub fn new(steps: impl IntoIterator<Item = (u32, T)>) -> Self {
        // On the heap: 256 KiB of `u32` would be a large stack frame.
        let mut values: Box<[T]> = vec![T::default(); 1 << 16].into_boxed_slice();
        let mut steps = steps.into_iter().peekable();
        while let Some((start, value)) = steps.next() {
            let end = steps.peek().map_or(1 << 16, |&(next, _)| next as usize);
            values[start as usize..end].fill(value);
        }
        let mut blocks: Interner<[T; 256]> = Interner::default();
        let mut block_of_high_byte = Box::new([0u16; 256]);
        for (high, chunk) in values.chunks_exact(256).enumerate() {
            let block: [T; 256] = chunk.try_into().expect("chunks of 256");
            // At most 256 blocks.
            block_of_high_byte[high] = blocks.intern(block) as u16;
        }
        PortTable {
            block_of_high_byte,
            blocks: blocks.into_values().into_boxed_slice(),
        }
    }

    #[inline]
    pub fn get(&self, port: u16) -> T {
        let [high, low] = port.to_be_bytes();
        let block = self.block_of_high_byte[usize::from(high)];
        self.blocks[usize::from(block)][usize::from(low)]
    }

    /// How many distinct blocks of 256 ports it stores.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn heap_bytes(&self) -> usize {
        512 + std::mem::size_of_val(&*self.blocks)
    }
}

/// (protocol, port) → port class. Protocols no term names map to `other`: the class of the
/// slots that match every protocol but one (class 0, no slot, when there are none).
#[derive(Debug, Clone, Default)]
pub struct PortMap {
    by_protocol: Vec<ProtocolPorts>,
    other: u32,
}

/// One protocol's port classes.
#[derive(Debug, Clone)]
struct ProtocolPorts {
    protocol: Protocol,
    intervals: Intervals<u32>,
    /// The same as a table, for protocols with more than [`TABLE_FROM`] intervals: a search
    /// among a few intervals is a branch or two within one cache line, cheaper than the
    /// table's two loads and smaller than its 1.5 KiB.
    table: Option<PortTable<u32>>,
}

const TABLE_FROM: usize = 16;

impl PortMap {
    /// `ranges` are (protocol, port range) terms of slots; `all_but` are slots matching every
    /// port of every protocol except the one given.
    pub fn build(
        ranges: &[(PortRange, u32)],
        all_but: &[(Protocol, u32)],
        interner: &mut ClassInterner,
    ) -> Self {
        let mut protocols: Vec<Protocol> = ranges
            .iter()
            .map(|(r, _)| r.protocol)
            .chain(all_but.iter().map(|&(p, _)| p))
            .collect();
        protocols.sort_unstable();
        protocols.dedup();
        let by_protocol = protocols
            .into_iter()
            .map(|protocol| {
                let items: Vec<(u32, u32, u32)> = ranges
                    .iter()
                    .filter(|(r, _)| r.protocol == protocol)
                    .map(|&(r, slot)| (u32::from(r.start), u32::from(r.end), slot))
                    .chain(
                        all_but
                            .iter()
                            .filter(|&&(except, _)| except != protocol)
                            .map(|&(_, slot)| (0, u32::from(u16::MAX), slot)),
                    )
                    .collect();
                let intervals = Intervals::build(&items, interner);
                let table =
                    (intervals.intervals() > TABLE_FROM).then(|| PortTable::new(intervals.steps()));
                ProtocolPorts {
                    protocol,
                    intervals,
                    table,
                }
            })
            .collect();
        let mut other: Vec<u32> = all_but.iter().map(|&(_, slot)| slot).collect();
        other.sort_unstable();
        other.dedup();
        PortMap {
            by_protocol,
            other: interner.intern(other),
        }
    }

    #[inline]
    pub fn class_of(&self, protocol: Protocol, port: u16) -> u32 {
        self.by_protocol
            .iter()
            .find(|p| p.protocol == protocol)
            .map_or(self.other, |p| match &p.table {
                Some(table) => table.get(port),
                None => p.intervals.class_of(u32::from(port)),
            })
    }

    /// Each protocol with port intervals, and its map from port to class.
    pub fn protocols(&self) -> impl Iterator<Item = (Protocol, &Intervals<u32>)> + '_ {
        self.by_protocol.iter().map(|p| (p.protocol, &p.intervals))
    }

    /// The class of every protocol without port intervals.
    pub fn other(&self) -> u32 {
        self.other
    }

    /// Each protocol with port intervals, and how many distinct classes its ports fall in.
    pub fn classes_per_protocol(&self) -> impl Iterator<Item = (Protocol, usize)> + '_ {
        self.protocols().map(|(protocol, map)| {
            let mut classes: Vec<u32> = map.classes().collect();
            classes.sort_unstable();
            classes.dedup();
            (protocol, classes.len())
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.by_protocol
            .iter()
            .map(|p| {
                p.intervals.heap_bytes() + p.table.as_ref().map_or(0, PortTable::heap_bytes) + 64
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alike_port_blocks_are_stored_once() {
        // Port 80, ports 1000–2000 and the rest: three values.
        let table = PortTable::new([(0, 7u16), (80, 8), (81, 7), (1000, 9), (2001, 7)]);
        // Blocks 0 (ports 0–255), 3 (768–1023), 7 (1792–2047), 4–6 (all 1000–2000), the rest.
        assert_eq!(table.blocks(), 5);
        for (port, want) in [
            (0, 7),
            (79, 7),
            (80, 8),
            (81, 7),
            (999, 7),
            (1000, 9),
            (1500, 9),
            (2000, 9),
            (2001, 7),
            (65535, 7),
        ] {
            assert_eq!(table.get(port), want, "port {port}");
        }
    }

    #[test]
    fn port_maps_with_and_without_a_table_agree_with_their_intervals() {
        for rules in [3u16, 40] {
            let ranges: Vec<(PortRange, u32)> = (0..rules)
                .map(|i| {
                    let start = i * 1000 + i % 7;
                    let range = PortRange {
                        protocol: Protocol::TCP,
                        start,
                        end: start + i % 5 * 300,
                    };
                    (range, u32::from(i))
                })
                .collect();
            let map = PortMap::build(&ranges, &[], &mut ClassInterner::default());
            let tcp = &map.by_protocol[0];
            assert_eq!(
                tcp.table.is_some(),
                rules == 40,
                "a table only past {TABLE_FROM} intervals"
            );
            for port in (0..=u16::MAX).step_by(7).chain([u16::MAX]) {
                assert_eq!(
                    map.class_of(Protocol::TCP, port),
                    tcp.intervals.class_of(u32::from(port)),
                    "{rules} rules, port {port}"
                );
            }
        }
    }

    #[test]
    fn ranges_are_per_protocol() {
        let mut interner = ClassInterner::default();
        let tcp = |start, end| PortRange {
            protocol: Protocol::TCP,
            start,
            end,
        };
        let map = PortMap::build(
            &[(tcp(80, 80), 0), (tcp(32000, 32768), 1)],
            &[],
            &mut interner,
        );
        let classes = interner.into_classes();
        let of = |p, port| classes[map.class_of(p, port) as usize].clone();
        assert_eq!(of(Protocol::TCP, 80), vec![0]);
        assert_eq!(of(Protocol::UDP, 80), Vec::<u32>::new());
        assert_eq!(of(Protocol::TCP, 32768), vec![1]);
        assert_eq!(of(Protocol::TCP, 32769), Vec::<u32>::new());
        assert_eq!(of(Protocol::TCP, 31999), Vec::<u32>::new());
    }

    #[test]
    fn a_not_protocol_term_matches_every_other_protocol() {
        let mut interner = ClassInterner::default();
        let tcp80 = PortRange {
            protocol: Protocol::TCP,
            start: 80,
            end: 80,
        };
        let map = PortMap::build(&[(tcp80, 0)], &[(Protocol::UDP, 1)], &mut interner);
        let classes = interner.into_classes();
        let of = |p, port| classes[map.class_of(p, port) as usize].clone();
        assert_eq!(of(Protocol::TCP, 80), vec![0, 1]);
        assert_eq!(of(Protocol::TCP, 81), vec![1]);
        assert_eq!(of(Protocol::UDP, 80), Vec::<u32>::new());
        assert_eq!(of(Protocol::ICMP, 0), vec![1]);
    }
}
