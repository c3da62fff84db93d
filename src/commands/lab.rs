//! `podwall lab`: real packets through real namespaces, next to what the policy says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use datapath::node::DatapathKind;
use harness::lab::{resolve, Lab, LabOptions, LabProbe};
use policy::probe::{IpFamily, Probe};
use policy::{Cluster, Protocol, Published, Source};

use crate::cluster::{compile_sources, parse_probes, Report};
use crate::input::read_sources;
use crate::report::print_counters;

/// The demo scenario `podwall lab` runs without `-f`: the three-tier application.
const DEMO: [(&str, &str); 2] = [
    (
        "demo/cluster.yaml",
        include_str!("../../examples/three-tier/manifests/cluster.yaml"),
    ),
    (
        "demo/policies.yaml",
        include_str!("../../examples/three-tier/manifests/policies.yaml"),
    ),
];
const DEMO_PROBES: &str = include_str!("../../examples/three-tier/probes.yaml");

/// The protocol and port of a probe (for ICMP the type and code as the classifier sees them),
/// or why the lab cannot send it (it sends TCP, UDP, SCTP, ICMP and ICMPv6 echo requests).
fn lab_packet(probe: &Probe) -> Result<std::result::Result<(Protocol, u16), String>> {
    let (protocol, port) = probe.packet_port().map_err(|(field, problem)| {
        anyhow!("probe {} -> {}: {field}: {problem}", probe.from, probe.to)
    })?;
    Ok(harness::probe::sendable(protocol, port).map(|()| (protocol, port)))
}

/// Without probes: every ordered pod pair on every (protocol, port) the policies name that the
/// lab can send (ICMP: the echo requests; ICMPv6 only with `--ip-family IPv6`).
fn matrix_probes(cluster: &Cluster, family: Option<IpFamily>) -> Vec<Probe> {
    let carried = |protocol: Protocol| match protocol {
        Protocol::ICMP => family != Some(IpFamily::IPv6),
        Protocol::ICMPV6 => family == Some(IpFamily::IPv6),
        _ => true,
    };
    let mut ports: BTreeSet<(Protocol, u16)> = policy::probe::ports_named_by_policies(cluster)
        .into_iter()
        .filter(|&(protocol, port)| {
            harness::probe::sendable(protocol, port).is_ok() && carried(protocol)
        })
        .collect();
    if ports.is_empty() {
        ports.insert((Protocol::TCP, 80));
    }
    let pods: Vec<String> = cluster
        .inventory
        .pods
        .iter()
        .filter(|p| p.is_policy_endpoint() && !p.ips.is_empty())
        .map(|p| p.key())
        .collect();
    let mut probes = Vec::new();
    for from in &pods {
        for to in &pods {
            for &(protocol, port) in &ports {
                let icmp = protocol.is_icmp();
                probes.push(Probe {
                    from: from.clone(),
                    to: to.clone(),
                    protocol: protocol.to_string(),
                    port: if icmp { 0 } else { port },
                    icmp_type: icmp.then_some((port >> 8) as u8),
                    icmp_code: icmp.then_some(port as u8),
                    source_port: None,
                    allowed: false,
                    ip_family: None,
                });
            }
        }
    }
    probes
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

pub fn run(
    files: &[PathBuf],
    expect: Option<&Path>,
    datapath: DatapathKind,
    family: Option<IpFamily>,
) -> Result<ExitCode> {
    harness::probe::binary().context(
        "podwall lab runs pw-probe inside the namespaces; build it with `cargo build --release -p podwall-harness --bin pw-probe`",
    )?;
    let (sources, probes_text, probes_name): (Vec<Source>, Option<String>, String) = if files
        .is_empty()
    {
        let demo = DEMO.iter().map(|(n, t)| Source::new(*n, *t)).collect();
        let (text, name) = match expect {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?,
                path.display().to_string(),
            ),
            None => (DEMO_PROBES.to_string(), "demo/probes.yaml".to_string()),
        };
        eprintln!("podwall lab: the embedded demo (examples/three-tier: frontend, backend, database, DNS)");
        (demo, Some(text), name)
    } else {
        let text = match expect {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?,
            ),
            None => None,
        };
        (
            read_sources(files)?,
            text,
            expect.map(|p| p.display().to_string()).unwrap_or_default(),
        )
    };
    let compiled = compile_sources(&sources, Report::Text)?;
    let cluster = Arc::clone(compiled.cluster());
    let (probes, expectations) = match &probes_text {
        Some(text) => (parse_probes(&probes_name, text)?, true),
        None => (matrix_probes(&cluster, family), false),
    };
    let rules_look_at_source_ports = compiled.classifier.matches_source_ports();
    // Probes the lab cannot send are named and left to `podwall test`.
    let mut sent: Vec<Probe> = Vec::new();
    let mut lab_probes: Vec<LabProbe> = Vec::new();
    let mut not_sent = 0usize;
    for (i, p) in probes.iter().enumerate() {
        match lab_packet(p)? {
            Ok((protocol, port)) => {
                lab_probes.push(LabProbe {
                    from: p.from.clone(),
                    to: p.to.clone(),
                    protocol,
                    port,
                    source_port: harness::lab::source_port_to_bind(
                        p.source_port,
                        p.packet_source_port().unwrap_or(0),
                        rules_look_at_source_ports,
                    ),
                    family: p.ip_family.or(family),
                });
                sent.push(p.clone());
            }
            Err(why) => {
                eprintln!(
                    "podwall lab: {probes_name}: probe [{i}] {} -> {} not sent: {why}",
                    p.from, p.to
                );
                not_sent += 1;
            }
        }
    }
    let probes = sent;

    let published = Arc::new(Published::new(compiled.classifier));
    let resolved = resolve(&published, &lab_probes)?;
    let start = Instant::now();
    let lab = Lab::start(
        Arc::clone(&published),
        &resolved,
        LabOptions {
            datapath,
            ..LabOptions::default()
        },
    )?;
    for line in &lab.node().ports.description {
        eprintln!("podwall lab: {line}");
    }
    eprintln!(
        "podwall lab: {} namespaces up in {:.1} s; sending {} probes",
        lab.topology().namespace_names().len(),
        start.elapsed().as_secs_f64(),
        resolved.len()
    );
    let results = lab.probe_all(&resolved);

    let generation = published.load();
    let classifier = &generation.classifier;
    let inventory = &classifier.cluster().inventory;
    println!(
        "{:<22} {:<22} {:<20} {:<8} {:<8} {}",
        "FROM",
        "TO",
        "PROTO/PORT",
        "POLICY",
        "PACKETS",
        if expectations { "EXPECTED" } else { "" }
    );
    let (mut passed, mut failed) = (0usize, 0usize);
    for ((probe, r), result) in probes.iter().zip(&resolved).zip(&results) {
        let connection = policy::probe::connection_of(
            inventory,
            &policy::probe::Probe {
                ip_family: r.probe.family,
                ..probe.clone()
            },
        )
        .map_err(|e| anyhow!(e))?;
        let policy_allows = classifier
            .connection(
                connection.from,
                connection.to,
                connection.protocol,
                connection.port,
                connection.source_port,
            )
            .allowed();
        let packets = match result {
            Ok(through) => *through,
            Err(e) => bail!("probe {} -> {} could not run: {e}", probe.from, probe.to),
        };
        let agree = packets == policy_allows && (!expectations || probe.allowed == policy_allows);
        if agree {
            passed += 1;
        } else {
            failed += 1;
        }
        println!(
            "{:<22} {:<22} {:<20} {:<8} {:<8} {}{}",
            probe.from,
            probe.to,
            match probe.source_port {
                Some(source) => format!(
                    "{} from {source}",
                    policy::probe::packet_label(connection.protocol, connection.port)
                ),
                None => policy::probe::packet_label(connection.protocol, connection.port),
            },
            verdict(policy_allows),
            verdict(packets),
            if expectations {
                verdict(probe.allowed)
            } else {
                ""
            },
            if agree { "" } else { "   <-- MISMATCH" }
        );
    }
    eprintln!();
    print_counters(lab.node(), &mut std::io::stderr())?;
    drop(lab);
    if not_sent > 0 {
        println!("{passed} passed, {failed} failed, {not_sent} not sent (see above)");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
