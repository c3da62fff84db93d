//! podwall's answer against the linear scan's, header by header and in both directions: the
//! same rule index and action, or both "no rule matched".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use policy::{Classifier, Decision, Direction, PodId, Protocol, Query, RuleRef};

use super::convert::{Action, CalicoRule};
use super::parse::Header;
use super::scan;

/// Where the converted policy sits in the loaded cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The pod the policy selects.
    pub pod: PodId,
    /// The policy's index in `Cluster::policies`.
    pub policy: u32,
    /// Its tier's index in `Cluster::tiers` (the tier that denies when no rule matches).
    pub tier: u32,
}

/// The classifier's question for `header`: the peer is its source for ingress, its
/// destination for egress; the port is its destination port for every protocol.
#[inline]
pub fn query(target: &Target, direction: Direction, header: &Header) -> Query {
    let peer = match direction {
        Direction::Ingress => header.src,
        Direction::Egress => header.dst,
    };
    Query {
        pod: target.pod,
        direction,
        peer: IpAddr::V4(Ipv4Addr::from(peer)),
        protocol: Protocol(header.protocol),
        port: header.dst_port,
        source_port: header.src_port,
    }
}

/// The classifier's decision for `header` (see [`query`]).
#[inline]
pub fn decide(
    classifier: &Classifier,
    target: &Target,
    direction: Direction,
    header: &Header,
) -> Decision {
    classifier.decide_query(&query(target, direction, header))
}

/// The decision the linear scan implies: the first matching rule's action with its index, or
/// the tier's default deny when no rule matches.
pub fn expected(
    rules: &[CalicoRule],
    target: &Target,
    direction: Direction,
    header: &Header,
) -> Decision {
    match scan::first_match(rules, direction, header) {
        Some(i) => {
            let rule = RuleRef {
                policy: target.policy,
                direction,
                rule: i as u32,
            };
            match rules[i].action {
                Action::Allow => Decision::Allowed(rule),
                Action::Deny => Decision::DeniedBy(rule),
            }
        }
        None => Decision::Denied { tier: target.tier },
    }
}

/// How the expected answers of one direction were spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub allowed: usize,
    pub denied_by_rule: usize,
    pub no_match: usize,
}

impl Tally {
    fn count(&mut self, decision: Decision) {
        match decision {
            Decision::Allowed(_) => self.allowed += 1,
            Decision::DeniedBy(_) => self.denied_by_rule += 1,
            _ => self.no_match += 1,
        }
    }
}

/// A header on which the classifier and the scan disagree.
#[derive(Debug, Clone, Copy)]
pub struct Mismatch {
    /// The header's index in the checked slice.
    pub index: usize,
    /// The classifier's call that answered: `decide`, or `decide_each` over all the headers.
    pub call: &'static str,
    pub direction: Direction,
    pub header: Header,
    pub expected: Decision,
    pub got: Decision,
}

/// The result of [`check`].
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub headers: usize,
    /// Per direction (`Direction::index`).
    pub tally: [Tally; 2],
    /// Wrong answers, counted per header, direction and call (`decide` and `decide_each`).
    pub mismatches: usize,
    /// The first few mismatches, for the message.
    pub examples: Vec<Mismatch>,
}

impl Checked {
    pub fn is_ok(&self) -> bool {
        self.mismatches == 0
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} headers", self.headers)?;
        for d in Direction::BOTH {
            let t = self.tally[d.index()];
            write!(
                f,
                "; {d:?}: {} allowed, {} denied by a rule, {} no match",
                t.allowed, t.denied_by_rule, t.no_match
            )?;
        }
        write!(f, "; {} mismatches", self.mismatches)?;
        for m in &self.examples {
            write!(
                f,
                "\n  header {} {:?} {:?}: expected {:?}, {} gave {:?}",
                m.index, m.direction, m.header, m.expected, m.call, m.got
            )?;
        }
        Ok(())
    }
}

/// How many mismatches [`Checked::examples`] keeps.
const EXAMPLES: usize = 10;

/// Compares the classifier with the linear scan on every header, in both directions, asked
/// one header at a time (`decide`) and all at once (`decide_each`).
pub fn check(
    classifier: &Classifier,
    target: &Target,
    rules: &[CalicoRule],
    headers: &[Header],
) -> Checked {
    let mut checked = Checked {
        headers: headers.len(),
        ..Checked::default()
    };
    let mut each = vec![Decision::NotIsolated; headers.len()];
    for direction in Direction::BOTH {
        let queries: Vec<Query> = headers
            .iter()
            .map(|h| query(target, direction, h))
            .collect();
        classifier.decide_each(&queries, &mut each);
        for (index, header) in headers.iter().enumerate() {
            let want = expected(rules, target, direction, header);
            checked.tally[direction.index()].count(want);
            let one = decide(classifier, target, direction, header);
            for (call, got) in [("decide", one), ("decide_each", each[index])] {
                if got != want {
                    checked.mismatches += 1;
                    if checked.examples.len() < EXAMPLES {
                        checked.examples.push(Mismatch {
                            index,
                            call,
                            direction,
                            header: *header,
                            expected: want,
                            got,
                        });
                    }
                }
            }
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::super::compiled::build;
    use super::super::headers::sample_headers;
    use super::super::parse::parse_rules;
    use super::*;

    const RULES: &str = "\
@10.0.0.0/8\t192.168.0.0/16\t0 : 65535\t80 : 80\t0x06/0xFF\t
@10.1.0.0/16\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x11/0xFF\t
@0.0.0.0/0\t192.168.1.0/24\t0 : 65535\t1000 : 2000\t0x00/0x00\t
@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x01/0xFF\t
@172.16.0.0/12\t0.0.0.0/0\t0 : 65535\t443 : 443\t0x06/0xFF\t
";

    #[test]
    fn the_classifier_agrees_with_the_scan_and_every_outcome_occurs() {
        let rules = parse_rules(RULES).unwrap();
        let built = build("unit", &rules).unwrap();
        let mut headers = sample_headers(&rules, 300, 3);
        headers.push(Header {
            src: 0x0808_0808,
            dst: 0x0808_0808,
            src_port: 1,
            dst_port: 1,
            protocol: 6,
        });
        let checked = check(
            &built.classifier,
            &built.target,
            &built.conversion.rules,
            &headers,
        );
        assert!(checked.is_ok(), "{checked}");
        for tally in checked.tally {
            assert!(tally.allowed > 0 && tally.denied_by_rule > 0 && tally.no_match > 0);
        }
    }

    #[test]
    fn a_wrong_answer_is_reported() {
        let rules = parse_rules(RULES).unwrap();
        let built = build("unit", &rules).unwrap();
        let headers = sample_headers(&rules, 300, 3);
        // The scan's rules differ from the compiled ones: rule 0 denies, and rule 4 is gone
        // (its headers become "no match" in the scan).
        let mut wrong = built.conversion.rules.clone();
        wrong[0].action = Action::Deny;
        let checked = check(&built.classifier, &built.target, &wrong, &headers);
        assert!(checked.mismatches > 0);
        assert!(checked
            .examples
            .iter()
            .all(|m| matches!(m.got, Decision::Allowed(r) if r.rule == 0)));
        wrong.truncate(4);
        wrong[0].action = Action::Allow;
        let checked = check(&built.classifier, &built.target, &wrong, &headers);
        assert!(checked.mismatches > 0);
        assert!(checked
            .examples
            .iter()
            .all(|m| matches!(m.expected, Decision::Denied { .. })));
        assert!(
            checked.to_string().contains("mismatches\n  header"),
            "{checked}"
        );
    }
}
