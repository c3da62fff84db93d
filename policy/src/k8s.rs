//! Kubernetes objects as `kubectl get -o yaml` writes them (Namespace, Pod, NetworkPolicy), and
//! their validation into podwall's model the way the API server validates them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::error::{Diagnostics, Location, Problem};
use crate::inventory::{NamedPort, Namespace, Pod, Protocol};
use crate::netpol::{
    Direction, Endpoints, IpBlock, NamespaceScope, NetworkPolicy, Peer, PolicyKind, PortMatch,
    PortSpec, Rule, DEFAULT_TIER, KUBERNETES_POLICY_ORDER,
};
use crate::selector::{dns_subdomain_error, validate_labels, validate_selector, RawLabelSelector};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawNamespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

#[derive(Debug, Deserialize)]
pub struct RawPod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RawPodSpec,
    #[serde(default)]
    pub status: RawPodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPodSpec {
    #[serde(default)]
    pub containers: Vec<RawContainer>,
    #[serde(default)]
    pub host_network: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawContainer {
    #[serde(default)]
    pub ports: Vec<RawContainerPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawContainerPort {
    pub name: Option<String>,
    pub container_port: i64,
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs", default)]
    pub pod_ips: Vec<RawPodIp>,
    pub phase: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPodIp {
    pub ip: String,
}

#[derive(Debug, Deserialize)]
pub struct RawNetworkPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RawNetworkPolicySpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawNetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: Option<RawLabelSelector>,
    #[serde(default)]
    pub ingress: Option<Vec<RawIngressRule>>,
    #[serde(default)]
    pub egress: Option<Vec<RawEgressRule>>,
    #[serde(default)]
    pub policy_types: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngressRule {
    #[serde(default)]
    pub from: Option<Vec<RawPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<RawPort>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgressRule {
    #[serde(default)]
    pub to: Option<Vec<RawPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<RawPort>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPeer {
    pub pod_selector: Option<RawLabelSelector>,
    pub namespace_selector: Option<RawLabelSelector>,
    pub ip_block: Option<RawIpBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpBlock {
    #[serde(default)]
    pub cidr: String,
    #[serde(default)]
    pub except: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPort {
    pub protocol: Option<String>,
    pub port: Option<IntOrString>,
    pub end_port: Option<i64>,
}

/// `metadata.name`, required and an RFC 1123 subdomain.
pub fn validate_name(meta: &ObjectMeta, at: &Location, diags: &mut Diagnostics) -> String {
    match &meta.name {
        None => {
            diags.error(at.at("metadata.name"), Problem::Required);
            String::new()
        }
        Some(name) => {
            if let Some(reason) = dns_subdomain_error(name) {
                diags.error(
                    at.at("metadata.name"),
                    Problem::InvalidName {
                        value: name.clone(),
                        reason,
                    },
                );
            }
            name.clone()
        }
    }
}

pub fn namespace_from(raw: RawNamespace, at: &Location, diags: &mut Diagnostics) -> Namespace {
    let name = validate_name(&raw.metadata, at, diags);
    let mut labels = raw.metadata.labels.unwrap_or_default();
    validate_labels(&labels, &at.at("metadata.labels"), diags);
    // The API server sets this label on every namespace; older dumps may lack it.
    labels
        .entry(crate::inventory::NAMESPACE_NAME_LABEL.to_string())
        .or_insert_with(|| name.clone());
    Namespace {
        name,
        labels,
        origin: Some(at.clone()),
    }
}

pub fn pod_from(raw: RawPod, at: &Location, diags: &mut Diagnostics) -> Pod {
    let name = validate_name(&raw.metadata, at, diags);
    let namespace = raw
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let labels = raw.metadata.labels.unwrap_or_default();
    validate_labels(&labels, &at.at("metadata.labels"), diags);

    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(ip) = &raw.status.pod_ip {
        match IpAddr::from_str(ip) {
            Ok(ip) => ips.push(ip),
            Err(_) => diags.error(
                at.at("status.podIP"),
                Problem::InvalidIp { value: ip.clone() },
            ),
        }
    }
    for (i, entry) in raw.status.pod_ips.iter().enumerate() {
        match IpAddr::from_str(&entry.ip) {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => diags.error(
                at.at(format!("status.podIPs[{i}].ip")),
                Problem::InvalidIp {
                    value: entry.ip.clone(),
                },
            ),
        }
    }
    // Finished pods keep their address in `kubectl get` output, but it may belong to a new pod now.
    let finished = matches!(raw.status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if finished {
        ips.clear();
    }

    let mut named_ports = Vec::new();
    for (c, container) in raw.spec.containers.iter().enumerate() {
        for (p, port) in container.ports.iter().enumerate() {
            let path = format!("spec.containers[{c}].ports[{p}]");
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let Some(protocol) = Protocol::from_kubernetes(protocol) else {
                diags.error(
                    at.at(format!("{path}.protocol")),
                    Problem::Unsupported {
                        value: protocol.to_string(),
                        supported: "\"SCTP\", \"TCP\", \"UDP\"",
                    },
                );
                continue;
            };
            let Ok(number) = u16::try_from(port.container_port) else {
                diags.error(
                    at.at(format!("{path}.containerPort")),
                    Problem::PortOutOfRange {
                        value: port.container_port,
                    },
                );
                continue;
            };
            if number == 0 {
                diags.error(
                    at.at(format!("{path}.containerPort")),
                    Problem::PortOutOfRange { value: 0 },
                );
                continue;
            }
            if let Some(name) = &port.name {
                named_ports.push(NamedPort {
                    name: name.clone(),
                    protocol,
                    port: number,
                });
            }
        }
    }
    Pod {
        namespace,
        name,
        labels,
        ips,
        named_ports,
        host_network: raw.spec.host_network,
        origin: at.clone(),
    }
}

pub fn network_policy_from(
    raw: RawNetworkPolicy,
    at: &Location,
    diags: &mut Diagnostics,
) -> NetworkPolicy {
    let name = validate_name(&raw.metadata, at, diags);
    let namespace = raw
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = raw.spec;
    let pod_selector = validate_selector(
        &spec.pod_selector.unwrap_or_default(),
        &at.at("spec.podSelector"),
        diags,
    );

    let ingress: Vec<Rule> = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            rule_from(
                &namespace,
                Direction::Ingress,
                i,
                r.from.as_deref(),
                r.ports.as_deref(),
                at,
                diags,
            )
        })
        .collect();
    let egress: Vec<Rule> = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            rule_from(
                &namespace,
                Direction::Egress,
                i,
                r.to.as_deref(),
                r.ports.as_deref(),
                at,
                diags,
            )
        })
        .collect();

    let types = match spec.policy_types.as_deref() {
        None | Some([]) => [true, !egress.is_empty()],
        Some(listed) => {
            let mut types = [false, false];
            if listed.len() > 2 {
                diags.error(
                    at.at("spec.policyTypes"),
                    Problem::Schema {
                        message: "Invalid value: may not specify more than two policyTypes".into(),
                    },
                );
            }
            for (i, t) in listed.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => types[0] = true,
                    "Egress" => types[1] = true,
                    other => diags.error(
                        at.at(format!("spec.policyTypes[{i}]")),
                        Problem::Unsupported {
                            value: other.to_string(),
                            supported: "\"Ingress\", \"Egress\"",
                        },
                    ),
                }
            }
            types
        }
    };

    NetworkPolicy {
        kind: PolicyKind::Kubernetes,
        namespace,
        name,
        origin: at.clone(),
        tier: DEFAULT_TIER.to_string(),
        order: Some(KUBERNETES_POLICY_ORDER),
        endpoints: Endpoints::Kubernetes(pod_selector),
        types,
        ingress,
        egress,
    }
}

fn rule_from(
    namespace: &str,
    direction: Direction,
    index: usize,
    peers: Option<&[RawPeer]>,
    ports: Option<&[RawPort]>,
    at: &Location,
    diags: &mut Diagnostics,
) -> Rule {
    let rule_path = format!("spec.{}[{index}]", direction.field());
    let peers = peers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(j, peer)| {
            let path = format!("{rule_path}.{}[{j}]", direction.peer_field());
            peer_from(namespace, peer, &at.at(path), diags)
        })
        .collect();
    let ports = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(j, port)| port_from(port, &at.at(format!("{rule_path}.ports[{j}]")), diags))
        .collect();
    Rule::kubernetes(peers, ports)
}

fn peer_from(
    namespace: &str,
    raw: &RawPeer,
    at: &Location,
    diags: &mut Diagnostics,
) -> Option<Peer> {
    let has_selector = raw.pod_selector.is_some() || raw.namespace_selector.is_some();
    match (&raw.ip_block, has_selector) {
        (None, false) => {
            diags.error(at.clone(), Problem::EmptyPeer);
            None
        }
        (Some(_), true) => {
            diags.error(at.clone(), Problem::IpBlockWithSelector);
            None
        }
        (Some(block), false) => {
            ip_block_from(block, &at.at(format!("{}.ipBlock", at.field)), diags).map(Peer::Block)
        }
        (None, true) => {
            let pods = validate_selector(
                &raw.pod_selector.clone().unwrap_or_default(),
                &at.at(format!("{}.podSelector", at.field)),
                diags,
            );
            let namespaces = match &raw.namespace_selector {
                None => NamespaceScope::Same(namespace.to_string()),
                Some(sel) => NamespaceScope::Selected(validate_selector(
                    sel,
                    &at.at(format!("{}.namespaceSelector", at.field)),
                    diags,
                )),
            };
            Some(Peer::Pods { namespaces, pods })
        }
    }
}

/// A CIDR as the API server reads it: an address, `/`, a prefix length; host bits are masked
/// (with a warning).
pub fn parse_cidr(value: &str, at: &Location, diags: &mut Diagnostics) -> Option<IpNetwork> {
    let invalid = |reason: &str, diags: &mut Diagnostics| {
        diags.error(
            at.clone(),
            Problem::InvalidCidr {
                value: value.to_string(),
                reason: reason.to_string(),
            },
        );
        None
    };
    if value.is_empty() {
        diags.error(at.clone(), Problem::Required);
        return None;
    }
    let Some((addr, prefix)) = value.split_once('/') else {
        return invalid("missing the prefix length (\"/N\")", diags);
    };
    let Ok(addr) = IpAddr::from_str(addr) else {
        return invalid("not an IP address", diags);
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix.parse::<u8>() {
        Ok(p) if p <= max && !prefix.starts_with('+') => p,
        _ => return invalid(&format!("prefix length must be 0 to {max}"), diags),
    };
    let network = IpNetwork::new(addr, prefix).expect("prefix checked against the family");
    let masked = IpNetwork::new(network.network(), prefix).expect("same prefix");
    if masked.ip() != addr {
        diags.warn(
            at.clone(),
            format!(
                "CIDR value {value:?} is ambiguous in this context (should be \"{masked}\" or \"{addr}/{max}\"?): it has host bits set, and like the API server podwall treats it as {masked}"
            ),
        );
    }
    Some(masked)
}

fn ip_block_from(raw: &RawIpBlock, at: &Location, diags: &mut Diagnostics) -> Option<IpBlock> {
    // Like the API server, an unparsable cidr ends the block's validation: its except entries
    // cannot be judged against it.
    let cidr = parse_cidr(&raw.cidr, &at.at(format!("{}.cidr", at.field)), diags)?;
    let mut except = Vec::new();
    for (k, e) in raw.except.iter().flatten().enumerate() {
        let here = at.at(format!("{}.except[{k}]", at.field));
        let Some(e_net) = parse_cidr(e, &here, diags) else {
            continue;
        };
        let inside = cidr.is_ipv4() == e_net.is_ipv4()
            && e_net.prefix() > cidr.prefix()
            && cidr.contains(e_net.network());
        if !inside {
            diags.error(
                here,
                Problem::ExceptNotInCidr {
                    except: e.clone(),
                    cidr: raw.cidr.clone(),
                },
            );
            continue;
        }
        except.push(e_net);
    }
    Some(IpBlock { cidr, except })
}

fn port_from(raw: &RawPort, at: &Location, diags: &mut Diagnostics) -> Option<PortMatch> {
    let mut ok = true;
    let protocol_name = raw.protocol.as_deref().unwrap_or("TCP");
    let protocol = Protocol::from_kubernetes(protocol_name).unwrap_or_else(|| {
        diags.error(
            at.at(format!("{}.protocol", at.field)),
            Problem::Unsupported {
                value: protocol_name.to_string(),
                supported: "\"SCTP\", \"TCP\", \"UDP\"",
            },
        );
        ok = false;
        Protocol::TCP
    });
    let port_at = at.at(format!("{}.port", at.field));
    let end_at = at.at(format!("{}.endPort", at.field));
    let port = match (&raw.port, raw.end_port) {
        (None, None) => PortSpec::Any,
        (None, Some(end_port)) => {
            diags.error(end_at, Problem::EndPortWithoutPort { end_port });
            return None;
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(reason) = port_name_error(name) {
                diags.error(
                    port_at,
                    Problem::InvalidName {
                        value: name.clone(),
                        reason,
                    },
                );
                ok = false;
            }
            if let Some(end_port) = end {
                diags.error(end_at, Problem::EndPortWithNamedPort { end_port });
                ok = false;
            }
            PortSpec::Named(name.clone())
        }
        (Some(IntOrString::Int(port)), end) => {
            let start = match u16::try_from(*port) {
                Ok(p) if p >= 1 => p,
                _ => {
                    diags.error(port_at, Problem::PortOutOfRange { value: *port });
                    return None;
                }
            };
            let end = match end {
                None => start,
                Some(end_port) => match u16::try_from(end_port) {
                    Ok(e) if e >= start => e,
                    Ok(_) => {
                        diags.error(
                            end_at,
                            Problem::EndPortBelowPort {
                                port: start,
                                end_port,
                            },
                        );
                        return None;
                    }
                    Err(_) => {
                        diags.error(end_at, Problem::PortOutOfRange { value: end_port });
                        return None;
                    }
                },
            };
            PortSpec::Range { start, end }
        }
    };
    ok.then_some(PortMatch { protocol, port })
}

/// IANA service name rules (RFC 6335), as the API server checks named ports.
pub fn port_name_error(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 15 {
        return Some("must be no more than 15 characters and non-empty".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
        );
    }
    if name.contains("--") {
        return Some("must not contain consecutive hyphens".into());
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must not begin or end with a hyphen".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> (Option<IpNetwork>, Diagnostics) {
        let mut diags = Diagnostics::default();
        let net = parse_cidr(value, &Location::default(), &mut diags);
        (net, diags)
    }

    #[test]
    fn cidr_with_host_bits_is_masked_with_a_warning() {
        let (net, diags) = parse("10.0.1.1/4");
        assert_eq!(net.unwrap().to_string(), "0.0.0.0/4");
        assert!(diags.errors.is_empty());
        assert!(diags.warnings[0].message.contains("host bits"));
    }

    #[test]
    fn cidr_needs_a_prefix_length() {
        let (net, diags) = parse("10.0.0.1");
        assert!(net.is_none());
        assert!(matches!(
            diags.errors[0].problem,
            Problem::InvalidCidr { .. }
        ));
    }

    #[test]
    fn cidr_prefix_beyond_the_family_is_invalid() {
        assert!(parse("10.0.0.0/33").0.is_none());
        assert!(parse("fd00::/129").0.is_none());
        assert!(parse("fd00::/128").0.is_some());
    }

    #[test]
    fn port_names_follow_iana_rules() {
        assert!(port_name_error("http").is_none());
        assert!(port_name_error("serve-80-tcp").is_none());
        assert!(port_name_error("8080").is_some());
        assert!(port_name_error("HTTP").is_some());
        assert!(port_name_error("a--b").is_some());
        assert!(port_name_error("way-too-long-port-name").is_some());
    }
}
