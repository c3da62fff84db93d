//! The policy under test: N ingress rules that apply to the receiving pod, generated once and
//! rendered for every path. Every rule allows UDP from one source prefix to one port; the rules
//! before the last match neither the stream's sources nor its port, and the last one matches
//! the whole stream, so a linear evaluation walks all N rules for every packet (its worst
//! case).
//!
//! - [`RuleSet::manifests`]: Kubernetes NetworkPolicies for podwall, [`RULES_PER_POLICY`] rules
//!   per policy, all selecting the sink pod;
//! - [`RuleSet::iptables`]: what Calico renders for them (iptables-restore input): a
//!   connection-tracking accept for established flows, a jump to the pod's chain, in it one
//!   jump per policy into the policy's chain of mark-and-return rules, then a drop. The peers
//!   are single CIDRs, which Calico matches inline with `-s` (it uses ipsets for selectors);
//! - [`RuleSet::nft_sets`]: the strongest kernel form, one nftables set of
//!   (source prefix, protocol, port) elements looked up once per packet;
//! - [`RuleSet::first_match`]: the linear scan a userspace verdict program (NFQUEUE) runs.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// The receiving pod's address.
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
/// Where the stream comes from: the last rule allows all of it.
pub const SENDER_NET: Ipv4Network =
    Ipv4Network::new_checked(Ipv4Addr::new(10, 99, 0, 0), 16).expect("a /16 is a valid prefix");
/// The first of the stream's source addresses (the only one, except for new connections).
pub const SENDER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The stream's destination port.
pub const PORT: u16 = 9999;
pub const RULES_PER_POLICY: usize = 10;
const UDP: u8 = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub source: Ipv4Network,
    pub port: u16,
}

impl Rule {
    fn matches(&self, source: Ipv4Addr, protocol: u8, port: u16) -> bool {
        protocol == UDP && port == self.port && self.source.contains(source)
    }
}

#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// `count` rules (at least 1), the last one matching the stream.
    pub fn generate(count: usize) -> RuleSet {
        let count = count.max(1);
        let mut rules: Vec<Rule> = (0..count - 1).map(filler).collect();
        rules.push(Rule {
            source: SENDER_NET,
            port: PORT,
        });
        RuleSet { rules }
    }

    /// `count` rules of which none matches the stream: every filtering path must drop all of
    /// it (the check that each rendering enforces what it says).
    pub fn generate_denying(count: usize) -> RuleSet {
        RuleSet {
            rules: (0..count.max(1)).map(filler).collect(),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The index of the first rule allowing the packet, scanning in order.
    pub fn first_match(&self, source: Ipv4Addr, protocol: u8, port: u16) -> Option<usize> {
        self.rules
            .iter()
            .position(|rule| rule.matches(source, protocol, port))
    }

    fn policies(&self) -> impl Iterator<Item = (usize, &[Rule])> {
        self.rules.chunks(RULES_PER_POLICY).enumerate()
    }

    /// The namespace, the sink pod and the NetworkPolicies, as one multi-document YAML.
    pub fn manifests(&self) -> String {
        let mut out = String::with_capacity(self.rules.len() * 110 + 1024);
        out.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bench, labels: \
             {{kubernetes.io/metadata.name: bench}}}}\n---\napiVersion: v1\nkind: Pod\n\
             metadata: {{name: sink, namespace: bench, labels: {{app: sink}}}}\n\
             spec: {{containers: [{{name: c, image: x}}]}}\n\
             status: {{phase: Running, podIP: {SINK_IP}, podIPs: [{{ip: {SINK_IP}}}]}}\n"
        ));
        for (k, rules) in self.policies() {
            let _ = write!(
                out,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                 metadata: {{name: allow-{k}, namespace: bench}}\n\
                 spec:\n  podSelector: {{matchLabels: {{app: sink}}}}\n  \
                 policyTypes: [Ingress]\n  ingress:\n"
            );
            for rule in rules {
                let _ = writeln!(
                    out,
                    "  - from: [{{ipBlock: {{cidr: {}}}}}]\n    ports: [{{protocol: UDP, port: {}}}]",
                    rule.source, rule.port
                );
            }
        }
        out
    }

    /// iptables-restore input for the `filter` table, as Calico lays out a pod's ingress: the
    /// connection-tracking accept and invalid drop, the pod's chain clearing the accept mark and
    /// jumping into each policy's chain, returning as soon as one marked the packet; in a
    /// policy's chain every rule sets the mark on a match and is followed by a return if
    /// marked; the packet is accepted if marked, and dropped at the end of the pod's chain.
    pub fn iptables(&self) -> String {
        const MARK: &str = "0x10000/0x10000";
        let mut out = String::with_capacity(self.rules.len() * 160 + 1024);
        out.push_str("*filter\n:pw-tw-sink - [0:0]\n");
        for (k, _) in self.policies() {
            let _ = writeln!(out, ":pw-pi-allow-{k} - [0:0]");
        }
        out.push_str(
            "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A FORWARD -m conntrack --ctstate INVALID -j DROP\n",
        );
        let _ = writeln!(out, "-A FORWARD -d {SINK_IP}/32 -j pw-tw-sink");
        let _ = writeln!(out, "-A FORWARD -m mark --mark {MARK} -j ACCEPT");
        out.push_str("-A pw-tw-sink -j MARK --set-xmark 0x0/0x10000\n");
        for (k, rules) in self.policies() {
            let _ = writeln!(out, "-A pw-tw-sink -j pw-pi-allow-{k}");
            let _ = writeln!(out, "-A pw-tw-sink -m mark --mark {MARK} -j RETURN");
            for rule in rules {
                let _ = writeln!(
                    out,
                    "-A pw-pi-allow-{k} -s {} -p udp -m udp --dport {} -j MARK --set-xmark {MARK}",
                    rule.source, rule.port
                );
                let _ = writeln!(out, "-A pw-pi-allow-{k} -m mark --mark {MARK} -j RETURN");
            }
        }
        out.push_str("-A pw-tw-sink -j DROP\nCOMMIT\n");
        out
    }

    /// An `nft -f` script: a bridge-family table whose forward chain looks the packet's
    /// (source, protocol, port) up in one set of all the rules.
    pub fn nft_sets(&self) -> String {
        let mut out = String::with_capacity(self.rules.len() * 40 + 1024);
        out.push_str(
            "table bridge pw {\n  set allow-sink {\n    type ipv4_addr . inet_proto . inet_service\n    \
             flags interval\n    elements = {\n",
        );
        for (i, rule) in self.rules.iter().enumerate() {
            let separator = if i + 1 == self.rules.len() { "" } else { "," };
            let _ = writeln!(
                out,
                "      {} . udp . {}{separator}",
                rule.source, rule.port
            );
        }
        let _ = write!(
            out,
            "    }}\n  }}\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
             ip daddr {SINK_IP} ip saddr . meta l4proto . th dport @allow-sink accept\n    \
             ip daddr {SINK_IP} drop\n  }}\n}}\n"
        );
        out
    }
}

/// Rule `i` of those before the last: a /32 outside the stream's sources, and a port that is
/// not the stream's.
fn filler(i: usize) -> Rule {
    let address = Ipv4Addr::new(10, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
    let port = 10_000 + (i % 50_000) as u16;
    Rule {
        source: Ipv4Network::new(address, 32).expect("a /32 is a valid prefix"),
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::{Classifier, Decision, Direction, Protocol, Source};

    #[test]
    fn only_the_last_rule_matches_the_stream() {
        for count in [1, 10, 11, 1000] {
            let rules = RuleSet::generate(count);
            assert_eq!(rules.len(), count);
            assert_eq!(rules.first_match(SENDER_IP, UDP, PORT), Some(count - 1));
            assert_eq!(
                rules.first_match(Ipv4Addr::new(10, 99, 200, 7), UDP, PORT),
                Some(count - 1)
            );
            assert_eq!(rules.first_match(SENDER_IP, UDP, PORT + 1), None);
            assert_eq!(rules.first_match(SENDER_IP, 6, PORT), None);
            let denying = RuleSet::generate_denying(count);
            assert_eq!(denying.len(), count);
            assert_eq!(denying.first_match(SENDER_IP, UDP, PORT), None);
        }
        let rules = RuleSet::generate(300);
        let third = rules.rules()[3];
        assert_eq!(
            rules.first_match(third.source.ip(), UDP, third.port),
            Some(3)
        );
    }

    #[test]
    fn podwall_reads_the_manifests_as_the_same_rules() {
        let rules = RuleSet::generate(25);
        let cluster = policy::load(&[Source::new("rules.yaml", rules.manifests())])
            .expect("the generated manifests load");
        assert_eq!(cluster.policies.len(), 3);
        let classifier = Classifier::compile(std::sync::Arc::new(cluster));
        let sink = classifier
            .cluster()
            .inventory
            .pod_id("bench", "sink")
            .expect("the sink pod");
        let decide = |source: Ipv4Addr, port: u16| {
            let source_port = policy::probe::DEFAULT_SOURCE_PORT;
            classifier.decide(
                sink,
                Direction::Ingress,
                source.into(),
                Protocol(UDP),
                port,
                source_port,
            )
        };
        match decide(SENDER_IP, PORT) {
            Decision::Allowed(rule) => {
                assert_eq!(rule.policy, 2, "the last policy");
                assert_eq!(rule.rule, 4, "its last rule");
            }
            other => panic!("the stream is not allowed: {other:?}"),
        }
        // The classifier and the linear scan agree on every rule's own traffic and its near
        // misses.
        for rule in rules.rules() {
            for (source, port) in [
                (rule.source.ip(), rule.port),
                (rule.source.ip(), rule.port + 1),
                (SENDER_IP, rule.port),
                (rule.source.ip(), PORT),
            ] {
                assert_eq!(
                    decide(source, port).allows(),
                    rules.first_match(source, UDP, port).is_some(),
                    "{source} port {port}"
                );
            }
        }
        assert!(!decide(Ipv4Addr::new(192, 0, 2, 1), PORT).allows());
    }

    #[test]
    fn the_kernel_renderings_hold_every_rule_once() {
        let rules = RuleSet::generate(25);
        let iptables = rules.iptables();
        let marks = " -j MARK --set-xmark 0x10000/0x10000\n";
        assert_eq!(iptables.matches(marks).count(), 25);
        let returns = " -m mark --mark 0x10000/0x10000 -j RETURN\n";
        assert_eq!(iptables.matches(returns).count(), 25 + 3);
        assert_eq!(iptables.matches("-A pw-tw-sink -j pw-pi-allow-").count(), 3);
        assert!(iptables.contains(
            "-A pw-pi-allow-2 -s 10.99.0.0/16 -p udp -m udp --dport 9999 -j MARK --set-xmark \
             0x10000/0x10000\n-A pw-pi-allow-2 -m mark --mark 0x10000/0x10000 -j RETURN\n"
        ));
        assert!(iptables.contains("-A FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT\n"));
        assert!(iptables.ends_with("-A pw-tw-sink -j DROP\nCOMMIT\n"));
        let nft = rules.nft_sets();
        assert_eq!(nft.matches(" . udp . ").count(), 25);
        assert!(nft.contains("10.99.0.0/16 . udp . 9999\n"));
    }
}
