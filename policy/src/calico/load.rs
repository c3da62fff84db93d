//! Calico `projectcalico.org/v3` NetworkPolicy, GlobalNetworkPolicy and Tier as written in YAML,
//! and their validation into podwall's model, following Calico's reference: defaults for
//! `types`, `tier` and `selector`, protocols by name or number, ports and ranges, ICMP type and
//! code, `ipVersion` consistency. Fields that only matter to host endpoints are reported as not
//! applying to pods; fields podwall cannot enforce are errors, never silently dropped.

use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_yaml::Value;

use crate::calico::rule::{CalicoMatch, CalicoPort, EntityMatch, IcmpMatch};
use crate::calico::selector::{self, Selector};
use crate::calico::tier::{Tier, TierDefault};
use crate::error::{Diagnostics, Location, Problem};
use crate::inventory::Protocol;
use crate::k8s::{parse_cidr, port_name_error, validate_name, IntOrString, ObjectMeta};
use crate::netpol::{Action, Direction, Endpoints, NetworkPolicy, PolicyKind, Rule, DEFAULT_TIER};

#[derive(Debug, Deserialize)]
pub struct RawCalicoPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RawPolicySpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPolicySpec {
    pub tier: Option<String>,
    pub order: Option<f64>,
    pub selector: Option<String>,
    /// GlobalNetworkPolicy only.
    pub namespace_selector: Option<String>,
    pub service_account_selector: Option<String>,
    pub types: Option<Vec<String>>,
    pub ingress: Option<Vec<RawRule>>,
    pub egress: Option<Vec<RawRule>>,
    /// GlobalNetworkPolicy only; these three concern host endpoints.
    pub do_not_track: Option<bool>,
    #[serde(rename = "preDNAT")]
    pub pre_dnat: Option<bool>,
    pub apply_on_forward: Option<bool>,
    /// Hints for Calico's dataplane; no effect on what is allowed.
    pub performance_hints: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRule {
    pub action: Option<String>,
    pub protocol: Option<IntOrString>,
    pub not_protocol: Option<IntOrString>,
    pub icmp: Option<RawIcmp>,
    #[serde(rename = "notICMP")]
    pub not_icmp: Option<RawIcmp>,
    pub ip_version: Option<i64>,
    pub source: Option<RawEntity>,
    pub destination: Option<RawEntity>,
    pub http: Option<Value>,
    /// Annotations for people; no effect on matching.
    pub metadata: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIcmp {
    #[serde(rename = "type")]
    pub icmp_type: Option<i64>,
    pub code: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawEntity {
    pub nets: Option<Vec<String>>,
    pub not_nets: Option<Vec<String>>,
    pub selector: Option<String>,
    pub not_selector: Option<String>,
    pub namespace_selector: Option<String>,
    pub ports: Option<Vec<IntOrString>>,
    pub not_ports: Option<Vec<IntOrString>>,
    pub service_accounts: Option<Value>,
    pub services: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct RawTier {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RawTierSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTierSpec {
    pub order: Option<f64>,
    pub default_action: Option<String>,
}

/// A validated policy, or `None` when it cannot apply to pods at all (a host-endpoint-only
/// policy, reported as a warning).
pub fn policy_from(
    raw: RawCalicoPolicy,
    kind: PolicyKind,
    at: &Location,
    diags: &mut Diagnostics,
) -> Option<NetworkPolicy> {
    let name = validate_name(&raw.metadata, at, diags);
    let global = kind == PolicyKind::CalicoGlobal;
    let namespace = if global {
        if raw.metadata.namespace.is_some() {
            diags.error(
                at.at("metadata.namespace"),
                Problem::Invalid {
                    value: raw.metadata.namespace.clone().unwrap_or_default(),
                    reason: "a GlobalNetworkPolicy is not namespaced".into(),
                },
            );
        }
        String::new()
    } else {
        raw.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    };
    let spec = raw.spec;
    let tier = spec
        .tier
        .clone()
        .unwrap_or_else(|| DEFAULT_TIER.to_string());
    if let Some(order) = spec.order {
        if !order.is_finite() {
            diags.error(
                at.at("spec.order"),
                Problem::Invalid {
                    value: order.to_string(),
                    reason: "must be a finite number".into(),
                },
            );
        }
    }
    let selector = parse_selector(spec.selector.as_deref(), &at.at("spec.selector"), diags);
    let namespaces = match (&spec.namespace_selector, global) {
        (None, _) => None,
        (Some(text), true) => Some(parse_selector(
            Some(text),
            &at.at("spec.namespaceSelector"),
            diags,
        )),
        (Some(_), false) => {
            unknown_field(at, "spec.namespaceSelector", "NetworkPolicy", diags);
            None
        }
    };
    if spec
        .service_account_selector
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty())
    {
        not_supported(
            at.at("spec.serviceAccountSelector"),
            "selecting endpoints by service account (pods' service accounts are not loaded)",
            diags,
        );
    }
    let host_only = [
        ("doNotTrack", spec.do_not_track),
        ("preDNAT", spec.pre_dnat),
        ("applyOnForward", spec.apply_on_forward),
    ];
    for (field, value) in host_only {
        if value.is_some() && !global {
            unknown_field(at, &format!("spec.{field}"), "NetworkPolicy", diags);
        }
    }
    let rules = |direction: Direction, raw: &Option<Vec<RawRule>>, diags: &mut Diagnostics| {
        raw.iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, r)| {
                let rule_at = at.at(format!("spec.{}[{i}]", direction.field()));
                rule_from(r, &rule_at, diags)
            })
            .collect::<Vec<Rule>>()
    };
    let ingress = rules(Direction::Ingress, &spec.ingress, diags);
    let egress = rules(Direction::Egress, &spec.egress, diags);
    let types = match spec.types.as_deref() {
        // Calico's default: Ingress unless there are only egress rules; Egress with egress rules.
        None | Some([]) => [
            spec.ingress.as_ref().is_some_and(|r| !r.is_empty())
                || spec.egress.as_ref().is_none_or(Vec::is_empty),
            spec.egress.as_ref().is_some_and(|r| !r.is_empty()),
        ],
        Some(listed) => {
            let mut types = [false, false];
            for (i, t) in listed.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => types[0] = true,
                    "Egress" => types[1] = true,
                    other => diags.error(
                        at.at(format!("spec.types[{i}]")),
                        Problem::Unsupported {
                            value: other.to_string(),
                            supported: "\"Ingress\", \"Egress\"",
                        },
                    ),
                }
            }
            for (direction, listed) in Direction::BOTH.into_iter().zip(types) {
                let has_rules = match direction {
                    Direction::Ingress => !ingress.is_empty(),
                    Direction::Egress => !egress.is_empty(),
                };
                if has_rules && !listed {
                    diags.error(
                        at.at(format!("spec.{}", direction.field())),
                        Problem::Invalid {
                            value: format!("{} rule(s)", direction.field()),
                            reason: format!(
                                "rules given but `types` does not include {}",
                                match direction {
                                    Direction::Ingress => "Ingress",
                                    Direction::Egress => "Egress",
                                }
                            ),
                        },
                    );
                }
            }
            types
        }
    };
    if host_only.iter().any(|(_, v)| *v == Some(true)) {
        diags.warn(
            at.clone(),
            "skipped: doNotTrack, preDNAT and applyOnForward policies apply to host endpoints, \
             never to pods",
        );
        return None;
    }
    Some(NetworkPolicy {
        kind,
        namespace,
        name,
        origin: at.clone(),
        tier,
        order: spec.order,
        endpoints: Endpoints::Calico {
            selector,
            namespaces,
        },
        types,
        ingress,
        egress,
    })
}

pub fn tier_from(raw: RawTier, at: &Location, diags: &mut Diagnostics) -> Tier {
    let name = validate_name(&raw.metadata, at, diags);
    if raw.metadata.namespace.is_some() {
        diags.error(
            at.at("metadata.namespace"),
            Problem::Invalid {
                value: raw.metadata.namespace.clone().unwrap_or_default(),
                reason: "a Tier is not namespaced".into(),
            },
        );
    }
    let default_action = match raw.spec.default_action.as_deref() {
        None | Some("Deny") => TierDefault::Deny,
        Some("Pass") => TierDefault::Pass,
        Some(other) => {
            diags.error(
                at.at("spec.defaultAction"),
                Problem::Unsupported {
                    value: other.to_string(),
                    supported: "\"Deny\", \"Pass\"",
                },
            );
            TierDefault::Deny
        }
    };
    if let Some(order) = raw.spec.order {
        if !order.is_finite() {
            diags.error(
                at.at("spec.order"),
                Problem::Invalid {
                    value: order.to_string(),
                    reason: "must be a finite number".into(),
                },
            );
        }
    }
    Tier {
        name,
        order: raw.spec.order,
        default_action,
        origin: Some(at.clone()),
    }
}

fn unknown_field(at: &Location, field: &str, kind: &str, diags: &mut Diagnostics) {
    diags.error(
        at.at(field),
        Problem::Schema {
            message: format!("unknown field for a Calico {kind} (only GlobalNetworkPolicy has it)"),
        },
    );
}

fn not_supported(at: Location, what: &str, diags: &mut Diagnostics) {
    diags.error(
        at,
        Problem::NotSupported {
            what: what.to_string(),
        },
    );
}

/// A selector field; absent or blank is `all()`.
fn parse_selector(text: Option<&str>, at: &Location, diags: &mut Diagnostics) -> Selector {
    let text = text.unwrap_or("");
    match selector::parse(text) {
        Ok(selector) => selector,
        Err(e) => {
            diags.error(
                at.clone(),
                Problem::InvalidSelector {
                    value: text.to_string(),
                    column: e.column,
                    message: e.message,
                },
            );
            Selector::All
        }
    }
}

fn rule_from(raw: &RawRule, at: &Location, diags: &mut Diagnostics) -> Option<Rule> {
    let errors_before = diags.errors.len();
    let field = |name: &str| at.at(format!("{}.{name}", at.field));
    let action = match raw.action.as_deref() {
        Some("Allow") => Action::Allow,
        Some("Deny") => Action::Deny,
        Some("Log") => Action::Log,
        Some("Pass") => Action::Pass,
        None => {
            diags.error(field("action"), Problem::Required);
            Action::Deny
        }
        Some(other) => {
            diags.error(
                field("action"),
                Problem::Unsupported {
                    value: other.to_string(),
                    supported: "\"Allow\", \"Deny\", \"Log\", \"Pass\"",
                },
            );
            Action::Deny
        }
    };
    if raw.http.is_some() {
        not_supported(field("http"), "HTTP match criteria (layer 7)", diags);
    }
    let protocol = raw
        .protocol
        .as_ref()
        .and_then(|p| protocol_from(p, &field("protocol"), diags));
    let not_protocol = raw
        .not_protocol
        .as_ref()
        .and_then(|p| protocol_from(p, &field("notProtocol"), diags));
    let ip_version = match raw.ip_version {
        None => None,
        Some(v @ (4 | 6)) => Some(v as u8),
        Some(other) => {
            diags.error(
                field("ipVersion"),
                Problem::Unsupported {
                    value: other.to_string(),
                    supported: "4, 6",
                },
            );
            None
        }
    };
    let icmp = raw
        .icmp
        .as_ref()
        .and_then(|m| icmp_from(m, protocol, &field("icmp"), diags));
    let not_icmp = raw
        .not_icmp
        .as_ref()
        .and_then(|m| icmp_from(m, protocol, &field("notICMP"), diags));
    if let (Some(p @ (Protocol::ICMP | Protocol::ICMPV6)), Some(v)) = (protocol, ip_version) {
        if (p == Protocol::ICMP) != (v == 4) {
            diags.error(
                field("ipVersion"),
                Problem::Invalid {
                    value: v.to_string(),
                    reason: format!("protocol {p} is not used with IP version {v}"),
                },
            );
        }
    }
    let default_entity = RawEntity::default();
    let source = entity_from(
        raw.source.as_ref().unwrap_or(&default_entity),
        protocol,
        ip_version,
        &field("source"),
        diags,
    );
    let destination = entity_from(
        raw.destination.as_ref().unwrap_or(&default_entity),
        protocol,
        ip_version,
        &field("destination"),
        diags,
    );
    (diags.errors.len() == errors_before).then(|| Rule {
        action,
        peers: Vec::new(),
        ports: Vec::new(),
        calico: Some(Box::new(CalicoMatch {
            protocol,
            not_protocol,
            icmp,
            not_icmp,
            ip_version,
            source,
            destination,
        })),
    })
}

/// Calico's protocol names (in its two accepted spellings) or a number 1–255.
fn protocol_from(raw: &IntOrString, at: &Location, diags: &mut Diagnostics) -> Option<Protocol> {
    let protocol = match raw {
        IntOrString::Int(n) => u8::try_from(*n).ok().filter(|&n| n >= 1).map(Protocol),
        IntOrString::String(name) => Protocol::parse(name).filter(|_| name.parse::<u8>().is_err()),
    };
    if protocol.is_none() {
        diags.error(
            at.clone(),
            Problem::Unsupported {
                value: match raw {
                    IntOrString::Int(n) => n.to_string(),
                    IntOrString::String(s) => s.clone(),
                },
                supported: "\"TCP\", \"UDP\", \"ICMP\", \"ICMPv6\", \"SCTP\", \"UDPLite\", or a number from 1 to 255",
            },
        );
    }
    protocol
}

fn icmp_from(
    raw: &RawIcmp,
    protocol: Option<Protocol>,
    at: &Location,
    diags: &mut Diagnostics,
) -> Option<IcmpMatch> {
    if !matches!(protocol, Some(Protocol::ICMP | Protocol::ICMPV6)) {
        diags.error(
            at.clone(),
            Problem::Invalid {
                value: "icmp".into(),
                reason: "ICMP type and code need `protocol: ICMP` or `protocol: ICMPv6`".into(),
            },
        );
        return None;
    }
    let Some(icmp_type) = raw.icmp_type else {
        if raw.code.is_some() {
            diags.error(
                at.at(format!("{}.type", at.field)),
                Problem::Invalid {
                    value: String::new(),
                    reason: "a code needs a type".into(),
                },
            );
        }
        return None;
    };
    let icmp_type = match u8::try_from(icmp_type) {
        Ok(t) if t <= 254 => t,
        _ => {
            diags.error(
                at.at(format!("{}.type", at.field)),
                Problem::Invalid {
                    value: icmp_type.to_string(),
                    reason: "must be between 0 and 254".into(),
                },
            );
            return None;
        }
    };
    let code = match raw.code {
        None => None,
        Some(code) => match u8::try_from(code) {
            Ok(c) => Some(c),
            Err(_) => {
                diags.error(
                    at.at(format!("{}.code", at.field)),
                    Problem::Invalid {
                        value: code.to_string(),
                        reason: "must be between 0 and 255".into(),
                    },
                );
                return None;
            }
        },
    };
    Some(IcmpMatch { icmp_type, code })
}

fn entity_from(
    raw: &RawEntity,
    protocol: Option<Protocol>,
    ip_version: Option<u8>,
    at: &Location,
    diags: &mut Diagnostics,
) -> EntityMatch {
    let field = |name: &str| at.at(format!("{}.{name}", at.field));
    if raw.service_accounts.is_some() {
        not_supported(
            field("serviceAccounts"),
            "matching by service account (pods' service accounts are not loaded)",
            diags,
        );
    }
    if raw.services.is_some() {
        not_supported(
            field("services"),
            "matching Kubernetes Services (Services and their endpoints are not loaded)",
            diags,
        );
    }
    let nets = |name: &str, list: &Option<Vec<String>>, diags: &mut Diagnostics| {
        list.iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, text)| {
                net_from(text, ip_version, &field(&format!("{name}[{i}]")), diags)
            })
            .collect::<Vec<IpNetwork>>()
    };
    let selector = |name: &str, text: &Option<String>, diags: &mut Diagnostics| {
        text.as_deref()
            .map(|text| parse_selector(Some(text), &field(name), diags))
    };
    let ports = |name: &str, list: &Option<Vec<IntOrString>>, diags: &mut Diagnostics| {
        let list = list.as_deref().unwrap_or_default();
        if list.is_empty() {
            return Vec::new();
        }
        if !protocol.is_some_and(|p| p.has_ports() || p == Protocol::UDPLITE) {
            diags.error(
                field(name),
                Problem::Invalid {
                    value: name.to_string(),
                    reason: "ports need `protocol` TCP, UDP, SCTP or UDPLite".into(),
                },
            );
            return Vec::new();
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, p)| port_from(p, &field(&format!("{name}[{i}]")), diags))
            .collect::<Vec<CalicoPort>>()
    };
    EntityMatch {
        nets: nets("nets", &raw.nets, diags),
        not_nets: nets("notNets", &raw.not_nets, diags),
        selector: selector("selector", &raw.selector, diags),
        not_selector: selector("notSelector", &raw.not_selector, diags),
        namespace_selector: selector("namespaceSelector", &raw.namespace_selector, diags),
        ports: ports("ports", &raw.ports, diags),
        not_ports: ports("notPorts", &raw.not_ports, diags),
    }
}

/// A CIDR, or an address meaning just itself (Calico accepts both).
fn net_from(
    text: &str,
    ip_version: Option<u8>,
    at: &Location,
    diags: &mut Diagnostics,
) -> Option<IpNetwork> {
    let net = match IpAddr::from_str(text) {
        Ok(ip) => Some(IpNetwork::from(ip)),
        Err(_) => parse_cidr(text, at, diags),
    }?;
    let version = if net.is_ipv4() { 4 } else { 6 };
    if ip_version.is_some_and(|v| v != version) {
        diags.error(
            at.clone(),
            Problem::Invalid {
                value: text.to_string(),
                reason: format!(
                    "an IPv{version} network in a rule with ipVersion {}",
                    ip_version.unwrap_or(0)
                ),
            },
        );
        return None;
    }
    Some(net)
}

/// `80`, `"80"`, `"1000:2000"` or a port name.
fn port_from(raw: &IntOrString, at: &Location, diags: &mut Diagnostics) -> Option<CalicoPort> {
    let number = |text: &str| text.parse::<u16>().ok();
    let invalid = |value: String, reason: &str, diags: &mut Diagnostics| {
        diags.error(
            at.clone(),
            Problem::Invalid {
                value,
                reason: reason.to_string(),
            },
        );
        None
    };
    match raw {
        IntOrString::Int(n) => match u16::try_from(*n) {
            Ok(p) => Some(CalicoPort::Range(p, p)),
            Err(_) => invalid(n.to_string(), "must be between 0 and 65535", diags),
        },
        IntOrString::String(text) => {
            if let Some((start, end)) = text.split_once(':') {
                return match (number(start), number(end)) {
                    (Some(s), Some(e)) if s <= e => Some(CalicoPort::Range(s, e)),
                    (Some(_), Some(_)) => {
                        invalid(text.clone(), "the range's start is above its end", diags)
                    }
                    _ => invalid(
                        text.clone(),
                        "a range is two numbers 0–65535 joined by ':'",
                        diags,
                    ),
                };
            }
            if let Some(p) = number(text) {
                return Some(CalicoPort::Range(p, p));
            }
            if let Some(reason) = port_name_error(text) {
                return invalid(
                    text.clone(),
                    &format!("not a port, a range or a valid port name: {reason}"),
                    diags,
                );
            }
            Some(CalicoPort::Named(text.clone()))
        }
    }
}
