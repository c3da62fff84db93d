//! ClassBench rules → Calico rule conditions, one for one (see the module documentation of
//! [`super`] for the mapping and what it has to approximate).

use std::fmt;

use policy::Protocol;

use super::parse::{ClassBenchRule, PortRange, Prefix};

/// What a converted rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    /// Rule `index` (0-based): every third rule denies, so the list has ordered Allow and Deny.
    pub fn of(index: usize) -> Action {
        if index % 3 == 2 {
            Action::Deny
        } else {
            Action::Allow
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
        }
    }
}

/// One ClassBench rule as a Calico rule: ingress rule *i* matches `src` (the peer is the
/// source), egress rule *i* matches `dst`; both match `protocol`, `dst_ports` and `src_ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalicoRule {
    pub action: Action,
    /// `None`: any protocol.
    pub protocol: Option<Protocol>,
    /// `None`: any port (no `ports` field).
    pub dst_ports: Option<PortRange>,
    /// `None`: any source port (no `source.ports` field).
    pub src_ports: Option<PortRange>,
    pub src: Prefix,
    pub dst: Prefix,
}

/// The converted list and how much of it differs from ClassBench's meaning.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// Rule *i* comes from ClassBench rule *i*.
    pub rules: Vec<CalicoRule>,
    /// A port range on a protocol without ports (e.g. ICMP) was dropped.
    pub approximated: usize,
    /// Any protocol with a partial source or destination port range became TCP only.
    pub narrowed: usize,
    /// Rules with a partial source port range (written as `source.ports`).
    pub with_source_ports: usize,
}

/// A rule that has no Calico form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    /// 0-based, as in the converted policy (the rule list's line number is `rule + 1`).
    pub rule: usize,
    pub reason: String,
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {} (line {}): {}",
            self.rule,
            self.rule + 1,
            self.reason
        )
    }
}

impl std::error::Error for ConvertError {}

/// Converts every rule, keeping the order (see [`super`] for the mapping).
pub fn convert(rules: &[ClassBenchRule]) -> Result<Conversion, ConvertError> {
    let mut out = Conversion {
        rules: Vec::with_capacity(rules.len()),
        ..Conversion::default()
    };
    for (i, rule) in rules.iter().enumerate() {
        let partial = |range: PortRange| (!range.is_full()).then_some(range);
        let ports = (partial(rule.dst_ports), partial(rule.src_ports));
        let any_ports = ports.0.is_some() || ports.1.is_some();
        let (protocol, (dst_ports, src_ports)) = if rule.protocol.is_any() {
            if any_ports {
                out.narrowed += 1;
                (Some(Protocol::TCP), ports)
            } else {
                (None, (None, None))
            }
        } else {
            let protocol = Protocol(rule.protocol.value);
            if protocol.0 == 0 {
                return Err(ConvertError {
                    rule: i,
                    reason: "protocol 0x00/0xFF: Calico protocol numbers are 1–255".into(),
                });
            }
            if any_ports && !matches!(protocol.0, 6 | 17 | 132) {
                out.approximated += 1;
                (Some(protocol), (None, None))
            } else {
                (Some(protocol), ports)
            }
        };
        out.with_source_ports += usize::from(src_ports.is_some());
        out.rules.push(CalicoRule {
            action: Action::of(i),
            protocol,
            dst_ports,
            src_ports,
            src: rule.src,
            dst: rule.dst,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse_rules, ProtocolMatch};
    use super::*;

    fn rule(protocol: (u8, u8), dst_ports: (u16, u16)) -> ClassBenchRule {
        ClassBenchRule {
            src: Prefix::new(0x0a00_0000, 8),
            dst: Prefix::new(0, 0),
            src_ports: PortRange::FULL,
            dst_ports: PortRange {
                lo: dst_ports.0,
                hi: dst_ports.1,
            },
            protocol: ProtocolMatch {
                value: protocol.0,
                mask: protocol.1,
            },
        }
    }

    #[test]
    fn every_third_rule_denies() {
        let actions: Vec<Action> = (0..6).map(Action::of).collect();
        use Action::{Allow, Deny};
        assert_eq!(actions, [Allow, Allow, Deny, Allow, Allow, Deny]);
    }

    /// A converted rule's protocol number and destination port range.
    type Shape = (Option<u8>, Option<(u16, u16)>);

    #[test]
    fn protocols_and_ports_convert_as_documented() {
        let rules = [
            rule((6, 0xFF), (80, 80)),     // TCP port 80
            rule((17, 0xFF), (0, 65535)),  // UDP, any port: no ports
            rule((1, 0xFF), (0, 10)),      // ICMP with ports: approximated
            rule((0, 0x00), (0, 65535)),   // anything
            rule((0, 0x00), (1000, 2000)), // any protocol, some ports: narrowed to TCP
            rule((132, 0xFF), (5, 6)),     // SCTP keeps ports
            rule((47, 0xFF), (0, 65535)),  // GRE
        ];
        let c = convert(&rules).unwrap();
        let got: Vec<Shape> = c
            .rules
            .iter()
            .map(|r| (r.protocol.map(|p| p.0), r.dst_ports.map(|p| (p.lo, p.hi))))
            .collect();
        assert_eq!(
            got,
            [
                (Some(6), Some((80, 80))),
                (Some(17), None),
                (Some(1), None),
                (None, None),
                (Some(6), Some((1000, 2000))),
                (Some(132), Some((5, 6))),
                (Some(47), None),
            ]
        );
        assert_eq!((c.approximated, c.narrowed), (1, 1));
        assert_eq!(c.rules[2].action, Action::Deny);
    }

    #[test]
    fn source_ports_convert_like_destination_ports() {
        let text = "\
@0.0.0.0/0\t0.0.0.0/0\t1 : 2\t0 : 65535\t0x06/0xFF\t
@0.0.0.0/0\t0.0.0.0/0\t1 : 2\t0 : 65535\t0x00/0x00\t
@0.0.0.0/0\t0.0.0.0/0\t1 : 2\t0 : 65535\t0x01/0xFF\t
";
        let c = convert(&parse_rules(text).unwrap()).unwrap();
        let shapes: Vec<(Option<u8>, Option<PortRange>, Option<PortRange>)> = c
            .rules
            .iter()
            .map(|r| (r.protocol.map(|p| p.0), r.src_ports, r.dst_ports))
            .collect();
        let one_two = Some(PortRange { lo: 1, hi: 2 });
        assert_eq!(
            shapes,
            [
                (Some(6), one_two, None),
                (Some(6), one_two, None),
                (Some(1), None, None)
            ]
        );
        assert_eq!((c.with_source_ports, c.narrowed, c.approximated), (2, 1, 1));
    }

    #[test]
    fn protocol_zero_is_an_error_naming_the_rule() {
        let err = convert(&[rule((6, 0xFF), (1, 1)), rule((0, 0xFF), (1, 1))]).unwrap_err();
        assert_eq!(err.rule, 1);
        assert!(err.to_string().starts_with("rule 1 (line 2)"), "{err}");
    }
}
