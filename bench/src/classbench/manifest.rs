//! Converted rules as manifest text: one GlobalNetworkPolicy, and the Namespace and Pod it
//! selects, ready for `policy::load` or `podwall check -f`.

use std::fmt::Write;

use super::convert::CalicoRule;
use super::parse::PortRange;

/// The namespace of the pod the policy selects.
pub const NAMESPACE: &str = "bench";
/// The pod the policy selects.
pub const POD: &str = "target";
/// Its address: from 198.18.0.0/15 (benchmarking, RFC 2544), unlikely to be a ClassBench peer.
pub const POD_IP: &str = "198.18.0.1";
/// The policy's `order`.
pub const ORDER: u32 = 100;

/// The GlobalNetworkPolicy name for a list name such as `acl1_1000` (`classbench-acl1-1000`):
/// lower case, characters other than letters, digits and `-` become `-`.
pub fn policy_name(list: &str) -> String {
    let list: String = list
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    format!("classbench-{}", list.trim_matches('-'))
}

/// The policy, then the Namespace and the Pod, as one multi-document YAML text.
pub fn manifest(policy_name: &str, rules: &[CalicoRule]) -> String {
    let mut text = policy(policy_name, rules);
    text.push_str(&cluster());
    text
}

/// The GlobalNetworkPolicy alone: rule *i* of `rules` is `ingress[i]` and `egress[i]`.
pub fn policy(name: &str, rules: &[CalicoRule]) -> String {
    // About 100 bytes per ingress rule and as many per egress rule.
    let mut text = String::with_capacity(256 + rules.len() * 220);
    text.push_str("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n");
    let _ = write!(
        text,
        "metadata:\n  name: {name}\nspec:\n  order: {ORDER}\n  selector: all()\n  \
         types: [Ingress, Egress]\n"
    );
    text.push_str("  ingress:\n");
    for rule in rules {
        rule_yaml(&mut text, rule, Side::Source);
    }
    text.push_str("  egress:\n");
    for rule in rules {
        rule_yaml(&mut text, rule, Side::Destination);
    }
    text
}

/// The Namespace and the Pod, each preceded by a document separator.
pub fn cluster() -> String {
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {POD}\n  namespace: {NAMESPACE}\n\
         status:\n  podIP: {POD_IP}\n"
    )
}

/// The side of a rule that holds the peer's `nets`.
#[derive(Clone, Copy)]
enum Side {
    /// Ingress: the peer is the source.
    Source,
    /// Egress: the peer is the destination.
    Destination,
}

/// One rule: the peer's `nets` on its side, destination ports on `destination`, source ports
/// on `source`.
fn rule_yaml(text: &mut String, rule: &CalicoRule, peer: Side) {
    let _ = writeln!(text, "  - action: {}", rule.action.name());
    if let Some(protocol) = rule.protocol {
        let _ = writeln!(text, "    protocol: {}", protocol.0);
    }
    let mut source: Vec<String> = Vec::new();
    let mut destination: Vec<String> = Vec::new();
    match peer {
        Side::Source => source.push(format!("nets: [\"{}\"]", rule.src)),
        Side::Destination => destination.push(format!("nets: [\"{}\"]", rule.dst)),
    }
    if let Some(ports) = rule.src_ports {
        source.push(format!("ports: [{}]", ports_yaml(ports)));
    }
    if let Some(ports) = rule.dst_ports {
        destination.push(format!("ports: [{}]", ports_yaml(ports)));
    }
    for (side, fields) in [("source", source), ("destination", destination)] {
        if !fields.is_empty() {
            let _ = writeln!(text, "    {side}: {{{}}}", fields.join(", "));
        }
    }
}

/// A single port as a number, a range as Calico's `"lo:hi"` string.
fn ports_yaml(range: PortRange) -> String {
    if range.lo == range.hi {
        range.lo.to_string()
    } else {
        format!("\"{}:{}\"", range.lo, range.hi)
    }
}

#[cfg(test)]
mod tests {
    use super::super::convert::Action;
    use super::super::parse::Prefix;
    use super::*;
    use ipnetwork::IpNetwork;
    use policy::calico::rule::{CalicoMatch, CalicoPort};
    use policy::netpol::{self, PolicyKind};
    use policy::{Direction, Protocol, Source};

    #[test]
    fn list_names_become_valid_policy_names() {
        assert_eq!(policy_name("acl1_1000"), "classbench-acl1-1000");
        assert_eq!(policy_name("FW1.rules"), "classbench-fw1-rules");
    }

    #[test]
    fn the_manifest_loads_with_one_rule_per_classbench_rule_in_order() {
        let rules = [
            CalicoRule {
                action: Action::Allow,
                protocol: Some(Protocol::TCP),
                dst_ports: Some(PortRange { lo: 80, hi: 80 }),
                src_ports: Some(PortRange {
                    lo: 1024,
                    hi: 65535,
                }),
                src: Prefix::new(0x0a00_0000, 8),
                dst: Prefix::new(0xc0a8_0100, 24),
            },
            CalicoRule {
                action: Action::Allow,
                protocol: Some(Protocol::UDP),
                dst_ports: Some(PortRange { lo: 1000, hi: 2000 }),
                src_ports: None,
                src: Prefix::new(0, 0),
                dst: Prefix::new(0x0101_0101, 32),
            },
            CalicoRule {
                action: Action::Deny,
                protocol: None,
                dst_ports: None,
                src_ports: None,
                src: Prefix::new(0, 0),
                dst: Prefix::new(0, 0),
            },
        ];
        let text = manifest("classbench-test", &rules);
        let cluster =
            policy::load(&[Source::new("test.yaml", text)]).unwrap_or_else(|e| panic!("{e}"));
        let pod = cluster.inventory.pod_id(NAMESPACE, POD).expect("the pod");
        assert_eq!(
            cluster.inventory.pod(pod).ips,
            [POD_IP.parse::<std::net::IpAddr>().unwrap()]
        );
        let [p] = &cluster.policies[..] else {
            panic!("one policy, got {}", cluster.policies.len())
        };
        assert_eq!(p.name, "classbench-test");
        assert_eq!(p.kind, PolicyKind::CalicoGlobal);
        assert!(p.applies_to(Direction::Ingress) && p.applies_to(Direction::Egress));
        assert_eq!((p.ingress.len(), p.egress.len()), (3, 3));

        let net = |text: &str| text.parse::<IpNetwork>().unwrap();
        let calico = |rule: &netpol::Rule| -> CalicoMatch { *rule.calico.clone().unwrap() };
        let ingress = calico(&p.ingress[1]);
        assert_eq!(ingress.protocol, Some(Protocol::UDP));
        assert_eq!(ingress.source.nets, [net("0.0.0.0/0")]);
        assert_eq!(ingress.destination.ports, [CalicoPort::Range(1000, 2000)]);
        assert!(ingress.destination.nets.is_empty());
        let egress = calico(&p.egress[0]);
        assert_eq!(egress.destination.nets, [net("192.168.1.0/24")]);
        assert_eq!(egress.destination.ports, [CalicoPort::Range(80, 80)]);
        assert_eq!(egress.source.ports, [CalicoPort::Range(1024, 65535)]);
        assert!(egress.source.nets.is_empty());
        let first = calico(&p.ingress[0]);
        assert_eq!(first.source.nets, [net("10.0.0.0/8")]);
        assert_eq!(first.source.ports, [CalicoPort::Range(1024, 65535)]);
        assert_eq!(calico(&p.ingress[2]).protocol, None);
        assert_eq!(p.egress[2].action, netpol::Action::Deny);
        assert_eq!(p.ingress[0].action, netpol::Action::Allow);
    }
}
