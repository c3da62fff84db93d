//! The peer-address dimension: IPv4 and IPv6 addresses to peer classes. CIDRs with their
//! `except` holes become disjoint ranges, so the longest-prefix answer is one binary search.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::intervals::Intervals;

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRange {
    V4(u32, u32),
    V6(u128, u128),
}

impl AddressRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (AddressRange::V4(lo, hi), IpAddr::V4(a)) => (lo..=hi).contains(&u32::from(a)),
            (AddressRange::V6(lo, hi), IpAddr::V6(a)) => (lo..=hi).contains(&u128::from(a)),
            _ => false,
        }
    }
}

fn range_of(net: IpNetwork) -> AddressRange {
    match net {
        IpNetwork::V4(n) => AddressRange::V4(n.network().into(), n.broadcast().into()),
        IpNetwork::V6(n) => {
            let lo: u128 = n.network().into();
            AddressRange::V6(lo, lo | mask(128 - u32::from(n.prefix())))
        }
    }
}

fn mask(host_bits: u32) -> u128 {
    if host_bits == 0 {
        0
    } else {
        u128::MAX >> (128 - host_bits)
    }
}

/// `cidr` minus every `except`, as disjoint ranges.
pub fn block_ranges(cidr: IpNetwork, except: &[IpNetwork]) -> Vec<AddressRange> {
    let holes: Vec<AddressRange> = except.iter().map(|e| range_of(*e)).collect();
    match range_of(cidr) {
        AddressRange::V4(lo, hi) => {
            let holes: Vec<(u128, u128)> = holes
                .iter()
                .filter_map(|h| match *h {
                    AddressRange::V4(a, b) => Some((a.into(), b.into())),
                    AddressRange::V6(..) => None,
                })
                .collect();
            subtract(lo.into(), hi.into(), holes)
                .into_iter()
                .map(|(a, b)| AddressRange::V4(a as u32, b as u32))
                .collect()
        }
        AddressRange::V6(lo, hi) => {
            let holes: Vec<(u128, u128)> = holes
                .iter()
                .filter_map(|h| match *h {
                    AddressRange::V6(a, b) => Some((a, b)),
                    AddressRange::V4(..) => None,
                })
                .collect();
            subtract(lo, hi, holes)
                .into_iter()
                .map(|(a, b)| AddressRange::V6(a, b))
                .collect()
        }
    }
}

/// Calico `nets` minus `notNets`, limited to the allowed families: `nets` empty means every
/// address (of the allowed families).
pub fn nets_ranges(
    nets: &[IpNetwork],
    not_nets: &[IpNetwork],
    families: Families,
) -> Vec<AddressRange> {
    let included: Vec<IpNetwork> = if nets.is_empty() {
        let mut all = Vec::new();
        if families.v4 {
            all.push("0.0.0.0/0".parse().expect("a valid network"));
        }
        if families.v6 {
            all.push("::/0".parse().expect("a valid network"));
        }
        all
    } else {
        nets.iter()
            .copied()
            .filter(|n| families.allows(n.is_ipv4()))
            .collect()
    };
    included
        .into_iter()
        .flat_map(|net| block_ranges(net, not_nets))
        .collect()
}

/// Which address families a condition admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const BOTH: Families = Families { v4: true, v6: true };

    pub fn allows(self, ipv4: bool) -> bool {
        if ipv4 {
            self.v4
        } else {
            self.v6
        }
    }

    pub fn and(self, other: Families) -> Families {
        Families {
            v4: self.v4 && other.v4,
            v6: self.v6 && other.v6,
        }
    }

    pub fn is_empty(self) -> bool {
        !self.v4 && !self.v6
    }
}

/// `lo..=hi` minus every hole, as disjoint ranges.
pub(crate) fn subtract(lo: u128, hi: u128, mut holes: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    holes.sort_unstable();
    let mut out = Vec::new();
    let mut next = Some(lo);
    for (a, b) in holes {
        let Some(start) = next else { break };
        if b < start || a > hi {
            continue;
        }
        if a > start {
            out.push((start, a - 1));
        }
        next = if b >= hi {
            None
        } else {
            Some(start.max(b + 1))
        };
    }
    if let Some(start) = next {
        out.push((start, hi));
    }
    out
}

/// Peer address → peer class, for both families.
#[derive(Debug, Clone, Default)]
pub struct AddressMap {
    v4: Intervals<u32>,
    v6: Intervals<u128>,
}

impl AddressMap {
    /// Peer address → the lowest slot whose ranges contain it (`none` if no range does).
    pub fn first_slots(ranges: &[(AddressRange, u32)], none: u32) -> Self {
        let v4: Vec<(u32, u32, u32)> = ranges
            .iter()
            .filter_map(|&(r, slot)| match r {
                AddressRange::V4(a, b) => Some((a, b, slot)),
                AddressRange::V6(..) => None,
            })
            .collect();
        let v6: Vec<(u128, u128, u32)> = ranges
            .iter()
            .filter_map(|&(r, slot)| match r {
                AddressRange::V6(a, b) => Some((a, b, slot)),
                AddressRange::V4(..) => None,
            })
            .collect();
        AddressMap {
            v4: Intervals::build_first(&v4, none),
            v6: Intervals::build_first(&v6, none),
        }
    }

    /// The IPv4 addresses' step function.
    pub fn v4(&self) -> &Intervals<u32> {
        &self.v4
    }

    /// The IPv6 addresses' step function.
    pub fn v6(&self) -> &Intervals<u128> {
        &self.v6
    }

    /// How many address intervals the map holds, in both families.
    pub fn intervals(&self) -> usize {
        self.v4.intervals() + self.v6.intervals()
    }

    #[inline]
    pub fn class_of(&self, ip: IpAddr) -> u32 {
        match ip {
            IpAddr::V4(a) => self.v4.class_of(a.into()),
            IpAddr::V6(a) => self.v6.class_of(a.into()),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn except_holes_are_cut_out_of_the_block() {
        let ranges = block_ranges(net("10.0.0.0/8"), &[net("10.1.0.0/16"), net("10.1.2.0/24")]);
        assert_eq!(
            ranges,
            vec![
                AddressRange::V4(0x0a00_0000, 0x0a00_ffff),
                AddressRange::V4(0x0a02_0000, 0x0aff_ffff)
            ]
        );
    }

    #[test]
    fn whole_address_spaces_are_representable() {
        assert_eq!(
            block_ranges(net("0.0.0.0/0"), &[]),
            vec![AddressRange::V4(0, u32::MAX)]
        );
        assert_eq!(
            block_ranges(net("::/0"), &[]),
            vec![AddressRange::V6(0, u128::MAX)]
        );
        assert_eq!(
            block_ranges(net("fd00::1/128"), &[]),
            vec![AddressRange::V6(0xfd00 << 112 | 1, 0xfd00 << 112 | 1)]
        );
    }

    #[test]
    fn address_map_finds_the_covering_blocks() {
        let mut ranges: Vec<(AddressRange, u32)> =
            block_ranges(net("10.0.0.0/8"), &[net("10.1.0.0/16")])
                .into_iter()
                .map(|r| (r, 0))
                .collect();
        ranges.extend(
            block_ranges(net("10.1.2.0/24"), &[])
                .into_iter()
                .map(|r| (r, 1)),
        );
        ranges.extend(
            block_ranges(net("fd00::/64"), &[])
                .into_iter()
                .map(|r| (r, 2)),
        );
        let map = AddressMap::first_slots(&ranges, u32::MAX);
        let of = |ip: &str| map.class_of(ip.parse().unwrap());
        assert_eq!(of("10.2.3.4"), 0);
        assert_eq!(of("10.1.3.4"), u32::MAX);
        assert_eq!(of("10.1.2.4"), 1);
        assert_eq!(of("fd00::5"), 2);
        assert_eq!(of("fd01::5"), u32::MAX);
    }
}
