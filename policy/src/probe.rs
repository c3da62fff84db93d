//! Policy probes: "from A to B on protocol/port, allowed or not?". Parses PROBES.yaml, resolves
//! `namespace/pod` or IP endpoints to addresses of the right family, and runs probes against a
//! classifier.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

use crate::calico::rule::{icmp_port, CalicoPort};
use crate::classifier::Classifier;
use crate::decision::{ConnectionDecision, Party};
use crate::error::{Error, Location, Problem};
use crate::inventory::{Inventory, Protocol};
use crate::load::Cluster;
use crate::netpol::PortSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    fn of(ip: IpAddr) -> IpFamily {
        if ip.is_ipv4() {
            IpFamily::IPv4
        } else {
            IpFamily::IPv6
        }
    }
}

/// One line of PROBES.yaml.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    pub from: String,
    pub to: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Destination port: required for TCP, UDP, SCTP and UDPLite, absent for other protocols.
    #[serde(default)]
    pub port: u16,
    /// Source port, for TCP, UDP, SCTP and UDPLite only (default [`DEFAULT_SOURCE_PORT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// ICMP or ICMPv6 type (default: echo request, 8 or 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP or ICMPv6 code (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family: Option<IpFamily>,
}

fn default_protocol() -> String {
    "TCP".into()
}

/// The source port of a probe that gives none: the first port of Linux's default ephemeral
/// range (32768–60999), where a client's connections come from. It matters only to Calico
/// rules with `source` ports; a probe that needs another gives `sourcePort` (`--source-port`).
pub const DEFAULT_SOURCE_PORT: u16 = 32768;

impl Probe {
    /// The probe's protocol and the number its packets present to the classifier: the
    /// destination port, or for ICMP the type and code (see
    /// [`crate::calico::rule::icmp_port`]). An error names the field at fault.
    pub fn packet_port(&self) -> Result<(Protocol, u16), (&'static str, Problem)> {
        let protocol = Protocol::parse(&self.protocol).ok_or_else(|| {
            (
                "protocol",
                Problem::Unsupported {
                    value: self.protocol.clone(),
                    supported: "\"TCP\", \"UDP\", \"SCTP\", \"UDPLite\", \"ICMP\", \"ICMPv6\", or a number from 1 to 255",
                },
            )
        })?;
        let has_icmp = self.icmp_type.is_some() || self.icmp_code.is_some();
        if protocol.is_icmp() {
            if self.port != 0 {
                return Err((
                    "port",
                    Problem::Invalid {
                        value: self.port.to_string(),
                        reason: format!("{protocol} has no ports; give icmpType and icmpCode"),
                    },
                ));
            }
            let echo = if protocol == Protocol::ICMP { 8 } else { 128 };
            return Ok((
                protocol,
                crate::calico::rule::icmp_port(
                    self.icmp_type.unwrap_or(echo),
                    self.icmp_code.unwrap_or(0),
                ),
            ));
        }
        if has_icmp {
            return Err((
                "icmpType",
                Problem::Invalid {
                    value: self.protocol.clone(),
                    reason: "icmpType and icmpCode need protocol ICMP or ICMPv6".into(),
                },
            ));
        }
        let has_ports = protocol.has_ports() || protocol == Protocol::UDPLITE;
        match (has_ports, self.port) {
            (true, 0) => Err(("port", Problem::Required)),
            (false, port) if port != 0 => Err((
                "port",
                Problem::Invalid {
                    value: port.to_string(),
                    reason: format!("{protocol} has no ports"),
                },
            )),
            (_, port) => Ok((protocol, port)),
        }
    }

    /// The source port its packets carry: `sourcePort`, else [`DEFAULT_SOURCE_PORT`] for
    /// protocols with ports, and 0 for the others (which must not give one).
    pub fn packet_source_port(&self) -> Result<u16, (&'static str, Problem)> {
        let (protocol, _) = self.packet_port()?;
        let has_ports = protocol.has_ports() || protocol == Protocol::UDPLITE;
        match (has_ports, self.source_port) {
            (true, Some(0)) => Err((
                "sourcePort",
                Problem::Invalid {
                    value: "0".into(),
                    reason: "must be between 1 and 65535".into(),
                },
            )),
            (true, given) => Ok(given.unwrap_or(DEFAULT_SOURCE_PORT)),
            (false, Some(port)) => Err((
                "sourcePort",
                Problem::Invalid {
                    value: port.to_string(),
                    reason: format!("{protocol} has no ports"),
                },
            )),
            (false, None) => Ok(0),
        }
    }
}

/// Parses a PROBES.yaml list; errors name the file and the probe (`[3].port`).
pub fn parse_probes(file: &str, text: &str) -> Result<Vec<Probe>, Vec<Error>> {
    let at = Location::document(file, 0);
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        vec![Error::new(
            at.clone(),
            Problem::Yaml {
                message: e.to_string(),
            },
        )]
    })?;
    let probes: Vec<Probe> = serde_path_to_error::deserialize(value).map_err(|e| {
        vec![Error::new(
            at.at(e.path().to_string()),
            Problem::Schema {
                message: e.into_inner().to_string(),
            },
        )]
    })?;
    let errors: Vec<Error> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.packet_source_port()
                .err()
                .map(|(field, problem)| Error::new(at.at(format!("[{i}].{field}")), problem))
        })
        .collect();
    if errors.is_empty() {
        Ok(probes)
    } else {
        Err(errors)
    }
}

/// A connection to evaluate, with both ends resolved.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub from: Party,
    pub to: Party,
    pub protocol: Protocol,
    pub port: u16,
    pub source_port: u16,
}

/// Resolves `from` and `to` (each `namespace/pod` or an IP address) to addresses of one family:
/// the family of an IP given, else `family`, else IPv4 where both pods have it.
pub fn resolve(
    inventory: &Inventory,
    from: &str,
    to: &str,
    family: Option<IpFamily>,
) -> Result<(Party, Party), String> {
    let from_ip = IpAddr::from_str(from).ok();
    let to_ip = IpAddr::from_str(to).ok();
    if let (Some(a), Some(b)) = (from_ip, to_ip) {
        if a.is_ipv4() != b.is_ipv4() {
            return Err(format!("{from} and {to} are of different address families"));
        }
    }
    let family = from_ip
        .or(to_ip)
        .map(IpFamily::of)
        .or(family)
        .unwrap_or_else(|| {
            let v4 = [from, to].iter().all(|end| {
                pod_addresses(inventory, end).is_none_or(|ips| ips.iter().any(IpAddr::is_ipv4))
            });
            if v4 {
                IpFamily::IPv4
            } else {
                IpFamily::IPv6
            }
        });
    Ok((
        party(inventory, from, family)?,
        party(inventory, to, family)?,
    ))
}

fn pod_addresses<'a>(inventory: &'a Inventory, end: &str) -> Option<&'a [IpAddr]> {
    let (ns, name) = end.split_once('/')?;
    inventory
        .pod_id(ns, name)
        .map(|id| inventory.pod(id).ips.as_slice())
}

fn party(inventory: &Inventory, end: &str, family: IpFamily) -> Result<Party, String> {
    if let Ok(ip) = IpAddr::from_str(end) {
        return Ok(match inventory.pod_by_address(ip) {
            Some(pod) => Party::Pod { pod, address: ip },
            None => Party::External(ip),
        });
    }
    let Some((ns, name)) = end.split_once('/') else {
        return Err(format!(
            "{end:?} is neither an IP address nor namespace/pod"
        ));
    };
    let pod = inventory
        .pod_id(ns, name)
        .ok_or_else(|| format!("there is no pod {end} in the manifests"))?;
    let record = inventory.pod(pod);
    if record.host_network {
        return Err(format!(
            "pod {end} uses the host network; NetworkPolicy does not apply to it (use its node IP instead)"
        ));
    }
    let address = record
        .ips
        .iter()
        .copied()
        .find(|ip| IpFamily::of(*ip) == family)
        .ok_or_else(|| format!("pod {end} has no {family:?} address (status.podIPs)"))?;
    Ok(Party::Pod { pod, address })
}

/// The outcome of one probe.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub probe: Probe,
    pub connection: Connection,
    pub decision: ConnectionDecision,
}

impl ProbeOutcome {
    pub fn passed(&self) -> bool {
        self.decision.allowed() == self.probe.allowed
    }
}

/// Resolves a probe against the inventory.
pub fn connection_of(inventory: &Inventory, probe: &Probe) -> Result<Connection, String> {
    let field_error = |(field, problem): (&str, Problem)| format!("{field}: {problem}");
    let (protocol, port) = probe.packet_port().map_err(field_error)?;
    let source_port = probe.packet_source_port().map_err(field_error)?;
    // ICMP belongs to IPv4 and ICMPv6 to IPv6: the protocol picks the family of dual-stack pods.
    let family = match protocol {
        Protocol::ICMP => Some(IpFamily::IPv4),
        Protocol::ICMPV6 => Some(IpFamily::IPv6),
        _ => probe.ip_family,
    };
    if let (Some(wanted), Some(given)) = (family, probe.ip_family) {
        if wanted != given {
            return Err(format!("{protocol} is not carried over {given:?}"));
        }
    }
    let (from, to) = resolve(inventory, &probe.from, &probe.to, family)?;
    if protocol.is_icmp() && from.address().is_ipv4() != (protocol == Protocol::ICMP) {
        return Err(format!(
            "{protocol} is not carried between {} and {}",
            from.address(),
            to.address()
        ));
    }
    Ok(Connection {
        from,
        to,
        protocol,
        port,
        source_port,
    })
}

/// Runs every probe; a probe whose endpoints cannot be resolved is an error naming it.
pub fn run(
    classifier: &Classifier,
    file: &str,
    probes: &[Probe],
) -> Result<Vec<ProbeOutcome>, Vec<String>> {
    let inventory = &classifier.cluster().inventory;
    let mut outcomes = Vec::with_capacity(probes.len());
    let mut errors = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        match connection_of(inventory, probe) {
            Ok(connection) => outcomes.push(ProbeOutcome {
                probe: probe.clone(),
                decision: classifier.connection(
                    connection.from,
                    connection.to,
                    connection.protocol,
                    connection.port,
                    connection.source_port,
                ),
                connection,
            }),
            Err(e) => errors.push(format!("{file}: [{i}]: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(outcomes)
    } else {
        Err(errors)
    }
}

/// How a person reads a (protocol, number) pair: `TCP/80`, `ICMP type 8 code 0`, `protocol 47`.
pub fn packet_label(protocol: Protocol, port: u16) -> String {
    if protocol.is_icmp() {
        format!("{protocol} type {} code {}", port >> 8, port & 0xff)
    } else if protocol.has_ports() || protocol == Protocol::UDPLITE {
        format!("{protocol}/{port}")
    } else {
        protocol.to_string()
    }
}

/// Every (protocol, port) a policy names: numeric ports and both ends of ranges, the numbers
/// named ports stand for on the pods, and for ICMP rules the type and code (see
/// [`icmp_port`]). What `matrix` and `lab` probe when not told what to probe.
pub fn ports_named_by_policies(cluster: &Cluster) -> BTreeSet<(Protocol, u16)> {
    let mut ports = BTreeSet::new();
    let named = |ports: &mut BTreeSet<(Protocol, u16)>, name: &str, protocol: Protocol| {
        for pod in &cluster.inventory.pods {
            if let Some(n) = pod.resolve_named_port(name, protocol) {
                ports.insert((protocol, n));
            }
        }
    };
    for rule in cluster
        .policies
        .iter()
        .flat_map(|p| p.ingress.iter().chain(&p.egress))
    {
        for port in &rule.ports {
            match &port.port {
                PortSpec::Any => {}
                PortSpec::Range { start, end } => {
                    ports.insert((port.protocol, *start));
                    ports.insert((port.protocol, *end));
                }
                PortSpec::Named(name) => named(&mut ports, name, port.protocol),
            }
        }
        let Some(calico) = &rule.calico else {
            continue;
        };
        let Some(protocol) = calico.protocol else {
            continue;
        };
        if let Some(icmp) = calico.icmp {
            ports.insert((protocol, icmp_port(icmp.icmp_type, icmp.code.unwrap_or(0))));
        }
        for port in calico
            .destination
            .ports
            .iter()
            .chain(&calico.destination.not_ports)
        {
            match port {
                CalicoPort::Range(start, end) => {
                    ports.insert((protocol, *start));
                    ports.insert((protocol, *end));
                }
                CalicoPort::Named(name) => named(&mut ports, name, protocol),
            }
        }
    }
    ports
}
