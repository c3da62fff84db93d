//! Headers drawn from a rule list, for lists without a trace (the 100k lists) and for comparing
//! sizes like with like: each header lies inside the prefixes, port ranges and protocol of one
//! rule chosen at random. Deterministic ([`Rng`]).

use super::parse::{ClassBenchRule, Header, PortRange, Prefix};
use crate::rng::Rng;

/// `count` headers, each inside a rule picked uniformly (with repetition) from `rules`.
/// Wildcard protocols become TCP, UDP or a uniformly random number, one third each.
///
/// Panics if `rules` is empty.
pub fn sample_headers(rules: &[ClassBenchRule], count: usize, seed: u64) -> Vec<Header> {
    assert!(!rules.is_empty(), "no rules to draw headers from");
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let rule = *rng.pick(rules);
            header_inside(&rule, &mut rng)
        })
        .collect()
}

/// A random header inside `rule`.
pub fn header_inside(rule: &ClassBenchRule, rng: &mut Rng) -> Header {
    let protocol = if rule.protocol.is_any() {
        match rng.below(3) {
            0 => 6,
            1 => 17,
            _ => rng.below(256) as u8,
        }
    } else {
        rule.protocol.value
    };
    Header {
        src: address_in(rule.src, rng),
        dst: address_in(rule.dst, rng),
        src_port: port_in(rule.src_ports, rng),
        dst_port: port_in(rule.dst_ports, rng),
        protocol,
    }
}

fn address_in(prefix: Prefix, rng: &mut Rng) -> u32 {
    prefix.addr | (rng.next_u64() as u32 & !prefix.mask())
}

fn port_in(range: PortRange, rng: &mut Rng) -> u16 {
    let span = usize::from(range.hi - range.lo) + 1;
    range.lo + rng.below(span) as u16
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_rules;
    use super::*;

    #[test]
    fn every_header_lies_inside_some_rule_and_runs_repeat() {
        let rules = parse_rules(
            "@10.1.0.0/16\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t\n\
             @192.168.7.0/24\t172.16.0.0/12\t1024 : 2047\t1000 : 1999\t0x00/0x00\t\n",
        )
        .unwrap();
        let headers = sample_headers(&rules, 500, 1);
        let inside = |r: &ClassBenchRule, h: &Header| {
            r.src.contains(h.src)
                && r.dst.contains(h.dst)
                && r.src_ports.contains(h.src_port)
                && r.dst_ports.contains(h.dst_port)
                && (r.protocol.is_any() || r.protocol.value == h.protocol)
        };
        assert!(headers.iter().all(|h| rules.iter().any(|r| inside(r, h))));
        assert!(headers.iter().any(|h| inside(&rules[0], h)));
        assert!(headers
            .iter()
            .any(|h| inside(&rules[1], h) && h.protocol == 17));
        assert_eq!(headers, sample_headers(&rules, 500, 1));
    }
}
