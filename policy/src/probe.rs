//! Policy probes: "from A to B on protocol/port, allowed or not?". Parses PROBES.yaml, resolves
//! `namespace/pod` or IP endpoints to addresses of the right family, and runs probes against a
//! classifier.

use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

use crate::classifier::Classifier;
use crate::decision::{ConnectionDecision, Party};
use crate::error::{Error, Location, Problem};
use crate::inventory::{Inventory, Protocol};

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
    pub port: u16,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family: Option<IpFamily>,
}

fn default_protocol() -> String {
    "TCP".into()
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
        .filter(|(_, p)| Protocol::from_kubernetes(&p.protocol).is_none())
        .map(|(i, p)| {
            Error::new(
                at.at(format!("[{i}].protocol")),
                Problem::Unsupported {
                    value: p.protocol.clone(),
                    supported: "\"SCTP\", \"TCP\", \"UDP\"",
                },
            )
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
    let (from, to) = resolve(inventory, &probe.from, &probe.to, probe.ip_family)?;
    let protocol = Protocol::from_kubernetes(&probe.protocol)
        .ok_or_else(|| format!("unknown protocol {:?}", probe.protocol))?;
    Ok(Connection {
        from,
        to,
        protocol,
        port: probe.port,
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
