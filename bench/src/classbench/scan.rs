//! The reference answer: a plain linear scan over the converted rules, in order, with the same
//! meaning the Calico rules have (protocol as converted, source and destination ports only where
//! they were written, the peer's prefix on the side the direction looks at). Deliberately naive.

use policy::Direction;

use super::convert::CalicoRule;
use super::parse::Header;

/// The index of the first rule matching `header` in `direction` (ingress: the peer is the
/// source; egress: the destination), or `None`.
pub fn first_match(rules: &[CalicoRule], direction: Direction, header: &Header) -> Option<usize> {
    rules.iter().position(|r| matches(r, direction, header))
}

/// Whether one converted rule matches.
pub fn matches(rule: &CalicoRule, direction: Direction, header: &Header) -> bool {
    let peer = match direction {
        Direction::Ingress => rule.src.contains(header.src),
        Direction::Egress => rule.dst.contains(header.dst),
    };
    peer && rule.protocol.is_none_or(|p| p.0 == header.protocol)
        && rule.dst_ports.is_none_or(|r| r.contains(header.dst_port))
        && rule.src_ports.is_none_or(|r| r.contains(header.src_port))
}

#[cfg(test)]
mod tests {
    use super::super::convert::convert;
    use super::super::parse::parse_rules;
    use super::*;

    const RULES: &str = "\
@10.0.0.0/8\t192.168.0.0/16\t0 : 65535\t80 : 80\t0x06/0xFF\t
@10.1.0.0/16\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x11/0xFF\t
@0.0.0.0/0\t192.168.1.0/24\t0 : 65535\t1000 : 2000\t0x00/0x00\t
";

    fn header(src: [u8; 4], dst: [u8; 4], protocol: u8, dst_port: u16) -> Header {
        Header {
            src: u32::from_be_bytes(src),
            dst: u32::from_be_bytes(dst),
            src_port: 1234,
            dst_port,
            protocol,
        }
    }

    #[test]
    fn the_first_matching_rule_wins_on_the_directions_side() {
        let rules = convert(&parse_rules(RULES).unwrap()).unwrap().rules;
        let h = header([10, 1, 2, 3], [192, 168, 1, 1], 6, 80);
        assert_eq!(first_match(&rules, Direction::Ingress, &h), Some(0));
        assert_eq!(first_match(&rules, Direction::Egress, &h), Some(0));
        // UDP from outside 10.1/16: rule 1 only by destination (any), and rule 2 became TCP
        // only, so ingress matches nothing.
        let h = header([8, 8, 8, 8], [192, 168, 1, 1], 17, 1500);
        assert_eq!(first_match(&rules, Direction::Ingress, &h), None);
        assert_eq!(first_match(&rules, Direction::Egress, &h), Some(1));
        // Egress looks at the destination only: any source.
        let h = header([8, 8, 8, 8], [192, 168, 1, 1], 6, 1500);
        assert_eq!(first_match(&rules, Direction::Egress, &h), Some(2));
        assert_eq!(first_match(&rules, Direction::Ingress, &h), Some(2));
        let h = header([8, 8, 8, 8], [192, 168, 2, 1], 6, 1500);
        assert_eq!(first_match(&rules, Direction::Egress, &h), None);
    }
}
