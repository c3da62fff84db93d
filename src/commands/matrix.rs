use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use policy::decision::Party;
use policy::inventory::Protocol;
use policy::probe::IpFamily;
use policy::{Classifier, Cluster, ConnectionDecision};

use crate::cluster::load_and_compile;
use crate::Output;

pub fn run(
    files: &[PathBuf],
    port: Option<u16>,
    protocol: Option<&str>,
    source_port: u16,
    family: Option<IpFamily>,
    output: Output,
) -> Result<ExitCode> {
    let protocol = protocol
        .map(|p| {
            Protocol::parse(p).ok_or_else(|| {
                anyhow!("--protocol {p:?}: supported values: TCP, UDP, SCTP, UDPLite, ICMP, ICMPv6, or a number from 1 to 255")
            })
        })
        .transpose()?;
    if let (Some(protocol), Some(_)) = (protocol, port) {
        if protocol.is_icmp() {
            return Err(anyhow!(
                "--port: {protocol} has no ports; without --port the matrix covers the ICMP types and codes the policies name"
            ));
        }
    }
    let compiled = load_and_compile(files)?;
    let classifier = &compiled.classifier;
    let cluster = classifier.cluster();
    let family = family.unwrap_or(IpFamily::IPv4);
    let ports: Vec<(Protocol, u16)> = match port {
        Some(port) => vec![(protocol.unwrap_or(Protocol::TCP), port)],
        None => ports_named_by_policies(cluster, protocol),
    };
    // ICMP is carried over IPv4 only, ICMPv6 over IPv6 only.
    let other_icmp = match family {
        IpFamily::IPv4 => Protocol::ICMPV6,
        IpFamily::IPv6 => Protocol::ICMP,
    };
    let ports: Vec<(Protocol, u16)> = ports
        .into_iter()
        .filter(|(p, _)| *p != other_icmp)
        .collect();
    if ports.is_empty() {
        return Err(anyhow!(
            "{other_icmp} is not carried over {family:?}: use --ip-family {}",
            match family {
                IpFamily::IPv4 => "ipv6",
                IpFamily::IPv6 => "ipv4",
            }
        ));
    }
    let pods = pods_of_family(cluster, family);
    if pods.is_empty() {
        return Err(anyhow!(
            "no pod in the manifests has an {family:?} address (status.podIPs)"
        ));
    }
    let tables: Vec<Table> = ports
        .iter()
        .map(|&(protocol, port)| {
            let has_ports = protocol.has_ports() || protocol == Protocol::UDPLITE;
            let source_port = if has_ports { source_port } else { 0 };
            Table::compute(classifier, &pods, protocol, port, source_port)
        })
        .collect();
    match output {
        Output::Text => {
            for (i, table) in tables.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", table.render(cluster, &pods, family));
            }
        }
        Output::Json => {
            let json: Vec<serde_json::Value> = tables
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "protocol": t.protocol.to_string(),
                        "port": t.port,
                        "sourcePort": t.source_port,
                        "ipFamily": family,
                        "pods": pods.iter().map(|&(id, _)| cluster.inventory.pod(id).key()).collect::<Vec<_>>(),
                        "allowed": t.allowed,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every (protocol, port) a policy names (of protocol `only`, if given).
fn ports_named_by_policies(cluster: &Cluster, only: Option<Protocol>) -> Vec<(Protocol, u16)> {
    let mut ports: Vec<_> = policy::probe::ports_named_by_policies(cluster)
        .into_iter()
        .filter(|(p, _)| only.is_none_or(|o| o == *p))
        .collect();
    if ports.is_empty() {
        ports.push((only.unwrap_or(Protocol::TCP), 80));
    }
    ports
}

fn pods_of_family(cluster: &Cluster, family: IpFamily) -> Vec<(u32, std::net::IpAddr)> {
    let mut pods: Vec<(u32, std::net::IpAddr)> = cluster
        .inventory
        .pod_ids()
        .filter(|&id| cluster.inventory.pod(id).is_policy_endpoint())
        .filter_map(|id| {
            let ip = cluster
                .inventory
                .pod(id)
                .ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == (family == IpFamily::IPv4))?;
            Some((id, ip))
        })
        .collect();
    pods.sort_by_key(|&(id, _)| cluster.inventory.pod(id).key());
    pods
}

struct Table {
    protocol: Protocol,
    port: u16,
    source_port: u16,
    /// Whether some rule looks at the source port (Calico `source` ports).
    source_port_matters: bool,
    allowed: Vec<Vec<bool>>,
}

impl Table {
    fn compute(
        classifier: &Classifier,
        pods: &[(u32, std::net::IpAddr)],
        protocol: Protocol,
        port: u16,
        source_port: u16,
    ) -> Table {
        let party = |&(pod, address): &(u32, std::net::IpAddr)| Party::Pod { pod, address };
        // One row at a time: a row is plenty to interleave lookups, and the whole matrix's
        // questions at once would hold pods² of them.
        let allowed = pods
            .iter()
            .map(|from| {
                let row: Vec<(Party, Party)> =
                    pods.iter().map(|to| (party(from), party(to))).collect();
                classifier
                    .connection_each(&row, protocol, port, source_port)
                    .iter()
                    .map(ConnectionDecision::allowed)
                    .collect()
            })
            .collect();
        Table {
            protocol,
            port,
            source_port,
            source_port_matters: classifier.matches_source_ports(),
            allowed,
        }
    }

    fn render(
        &self,
        cluster: &Cluster,
        pods: &[(u32, std::net::IpAddr)],
        family: IpFamily,
    ) -> String {
        let names: Vec<String> = pods
            .iter()
            .map(|&(id, _)| cluster.inventory.pod(id).key())
            .collect();
        let width = names.iter().map(String::len).max().unwrap_or(1).max(1);
        let denied: usize = self.allowed.iter().flatten().filter(|a| !**a).count();
        let source_port = if self.source_port_matters && self.source_port != 0 {
            format!(" from port {}", self.source_port)
        } else {
            String::new()
        };
        let mut out = format!(
            "{}{source_port} ({family:?}): {} of {} connections denied ('.' allowed, 'X' denied; rows: from, columns: to)\n",
            policy::probe::packet_label(self.protocol, self.port),
            denied,
            names.len() * names.len()
        );
        out.push_str(&format!("{:width$}", "-"));
        for name in &names {
            out.push_str(&format!(" {name:>width$}"));
        }
        out.push('\n');
        for (name, row) in names.iter().zip(&self.allowed) {
            out.push_str(&format!("{name:width$}"));
            for &allowed in row {
                out.push_str(&format!(" {:>width$}", if allowed { "." } else { "X" }));
            }
            out.push('\n');
        }
        out
    }
}
