//! The port dimension: (protocol, port) → port class. Numeric ports, `endPort` ranges and named
//! ports (already resolved to numbers by the compiler) become intervals per protocol; ICMP type
//! and code are numbers of the same dimension (see [`crate::calico::rule::icmp_port`]). Calico's
//! `notProtocol` is a term on every protocol but one.

use crate::inventory::Protocol;

use super::intervals::{ClassInterner, Intervals};

/// An inclusive port range of one protocol, owned by a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub protocol: Protocol,
    pub start: u16,
    pub end: u16,
}

/// (protocol, port) → port class. Protocols no term names map to `other`: the class of the
/// slots that match every protocol but one (class 0, no slot, when there are none).
#[derive(Debug, Clone, Default)]
pub struct PortMap {
    by_protocol: Vec<(Protocol, Intervals<u32>)>,
    other: u32,
}

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
                (protocol, Intervals::build(&items, interner))
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
            .find(|(p, _)| *p == protocol)
            .map_or(self.other, |(_, map)| map.class_of(u32::from(port)))
    }

    /// Each protocol with port intervals, and how many distinct classes its ports fall in.
    pub fn classes_per_protocol(&self) -> impl Iterator<Item = (Protocol, usize)> + '_ {
        self.by_protocol.iter().map(|(protocol, map)| {
            let mut classes: Vec<u32> = map.classes().collect();
            classes.sort_unstable();
            classes.dedup();
            (*protocol, classes.len())
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.by_protocol
            .iter()
            .map(|(_, m)| m.heap_bytes() + 16)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
