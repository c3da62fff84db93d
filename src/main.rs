//! The `podwall` command: wiring only. Policy logic lives in the `policy` crate.

mod cluster;
mod commands;
mod input;
mod report;

use policy::probe::Probe;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// podwall — Kubernetes NetworkPolicy, compiled and explained.
///
/// Reads manifests exactly as `kubectl get -o yaml` writes them (Namespaces, Pods,
/// NetworkPolicies; multi-document files, `kind: List`, directories, `-` for stdin) and answers
/// what they allow, and why, before a cluster ever runs them.
#[derive(Parser)]
#[command(name = "podwall", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// For machines.
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Family {
    #[value(name = "IPv4", alias = "ipv4")]
    V4,
    #[value(name = "IPv6", alias = "ipv6")]
    V6,
}

impl From<Family> for policy::probe::IpFamily {
    fn from(f: Family) -> Self {
        match f {
            Family::V4 => policy::probe::IpFamily::IPv4,
            Family::V6 => policy::probe::IpFamily::IPv6,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DatapathArg {
    /// AF_XDP sockets on veth pairs.
    Xdp,
    /// TUN devices as the pods' interfaces.
    Tun,
}

impl From<DatapathArg> for datapath::node::DatapathKind {
    fn from(d: DatapathArg) -> Self {
        match d {
            DatapathArg::Xdp => datapath::node::DatapathKind::Xdp,
            DatapathArg::Tun => datapath::node::DatapathKind::Tun,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Load, validate and compile manifests; print a summary or every error.
    ///
    /// Exit status 1 when any manifest is invalid. Every error names the file, the YAML
    /// document, the object and the field.
    ///
    /// Example:
    ///   kubectl get pods,namespaces,networkpolicies -A -o yaml | podwall check -f -
    ///   podwall check -f cluster/ -f policies.yaml
    #[command(verbatim_doc_comment)]
    Check {
        /// Manifest file, directory, or `-` for standard input (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Explain the verdict for one connection: each side's policies and deciding rules.
    ///
    /// A connection is allowed when the source's egress and the destination's ingress both
    /// allow it. For an address that is not a pod, only the pod side applies.
    ///
    /// Example:
    ///   podwall explain -f cluster.yaml -f policies.yaml --from x/a --to y/b --port 80
    ///   podwall explain -f all.yaml --from 172.17.0.5 --to default/db --protocol TCP --port 5432
    ///   podwall explain -f all.yaml --from x/a --to y/b --protocol ICMP --icmp-type 8
    #[command(verbatim_doc_comment)]
    Explain {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Source: `namespace/pod` or an IP address.
        #[arg(long)]
        from: String,
        /// Destination: `namespace/pod` or an IP address.
        #[arg(long)]
        to: String,
        /// TCP, UDP, SCTP, UDPLite, ICMP, ICMPv6 or a protocol number.
        #[arg(long, default_value = "TCP")]
        protocol: String,
        /// Destination port (TCP, UDP, SCTP, UDPLite).
        #[arg(long)]
        port: Option<u16>,
        /// Source port (TCP, UDP, SCTP, UDPLite; default 32768, the first ephemeral port).
        /// Only Calico rules with `source` ports look at it.
        #[arg(long)]
        source_port: Option<u16>,
        /// ICMP or ICMPv6 type (default: echo request).
        #[arg(long)]
        icmp_type: Option<u8>,
        /// ICMP or ICMPv6 code (default 0).
        #[arg(long)]
        icmp_code: Option<u8>,
        /// Address family to use for dual-stack pods (default: IPv4 where both have it).
        #[arg(long, value_enum)]
        ip_family: Option<Family>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print the pod × pod reachability table ('.' allowed, 'X' denied; rows are sources).
    ///
    /// Without --port, one table for every port the policies name (80/TCP if none).
    ///
    /// Example:
    ///   podwall matrix -f cluster.yaml -f policies.yaml --port 80
    ///   podwall matrix -f all.yaml --protocol UDP --port 53 --output json
    #[command(verbatim_doc_comment)]
    Matrix {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        port: Option<u16>,
        /// TCP, UDP, SCTP, UDPLite, ICMP, ICMPv6 or a number (default TCP with --port).
        #[arg(long)]
        protocol: Option<String>,
        /// Source port of every connection (protocols with ports; default 32768, the first
        /// ephemeral port). Only Calico rules with `source` ports look at it.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        source_port: Option<u16>,
        #[arg(long, value_enum)]
        ip_family: Option<Family>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Policy unit tests: check expected verdicts; exit 1 on any mismatch.
    ///
    /// PROBES.yaml is a list of probes:
    ///   - {from: x/a, to: y/b, protocol: TCP, port: 80, allowed: false}
    ///   - {from: 10.0.0.7, to: y/b, port: 81, allowed: true, ipFamily: IPv4}
    ///   - {from: x/a, to: y/b, port: 53, sourcePort: 1000, allowed: false}
    ///
    /// Each mismatch is printed with its explanation, then `N passed, N failed`.
    ///
    /// Example:
    ///   podwall test -f cluster.yaml -f policies.yaml --expect probes.yaml
    #[command(verbatim_doc_comment)]
    Test {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// The probes file.
        #[arg(long)]
        expect: PathBuf,
        /// json: one object per probe on stdout; the summary line goes to stderr.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Build namespaces for the manifests, put the filter in front of every pod, send real
    /// packets for every probe, and print what got through next to what the policy says.
    ///
    /// Without -f: the embedded demo (the three-tier application with DNS). Without --expect:
    /// every ordered pod pair on every port the policies name. Exit status 1 when packets and
    /// policy disagree on any probe (or a probe's expectation is not met). Needs root.
    ///
    /// Example:
    ///   podwall lab
    ///   podwall lab -f cluster.yaml -f policies.yaml --expect probes.yaml --datapath tun
    #[command(verbatim_doc_comment)]
    Lab {
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        #[arg(long)]
        expect: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "xdp")]
        datapath: DatapathArg,
        #[arg(long, value_enum)]
        ip_family: Option<Family>,
    },
    /// Enforce the policies on existing interfaces (needs root).
    ///
    /// NODE.yaml names the manifest paths (watched; a change is compiled and swapped in without
    /// stopping traffic, and a change with errors is rejected while the running policy stays),
    /// the datapath, and for each local pod the interfaces in front of it:
    ///
    ///   manifests: [cluster/, policies.yaml]
    ///   datapath: xdp                    # or tun
    ///   existingConnections: strict      # or keep
    ///   pods:
    ///   - {pod: shop/frontend, podInterface: pw1a, nodeInterface: pw1b}
    ///
    /// SIGHUP reloads; SIGUSR1 prints counters (per pod, per verdict, per drop reason), as does
    /// exiting on SIGINT or SIGTERM.
    ///
    /// Example:
    ///   podwall run --config /etc/podwall/node.yaml
    #[command(verbatim_doc_comment)]
    Run {
        #[arg(long)]
        config: PathBuf,
        /// What happens to open connections when the policy changes: `strict` decides them
        /// again on their next packet, `keep` lets them keep their verdict. Overrides
        /// `existingConnections` in the config.
        #[arg(long, value_enum)]
        existing_connections: Option<commands::run::Existing>,
    },
}

fn main() -> ExitCode {
    datapath::process::exit_quietly_on_closed_pipe();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODWALL_LOG")
                .unwrap_or_else(|_| "warn,podwall::policy_log=info".into()),
        )
        .init();
    let result = match Cli::parse().command {
        Command::Check { files, output } => commands::check::run(&files, output),
        Command::Explain {
            files,
            from,
            to,
            protocol,
            port,
            source_port,
            icmp_type,
            icmp_code,
            ip_family,
            output,
        } => commands::explain::run(
            &files,
            Probe {
                from,
                to,
                protocol,
                port: port.unwrap_or(0),
                source_port,
                icmp_type,
                icmp_code,
                allowed: true,
                ip_family: ip_family.map(Into::into),
            },
            output,
        ),
        Command::Matrix {
            files,
            port,
            protocol,
            source_port,
            ip_family,
            output,
        } => commands::matrix::run(
            &files,
            port,
            protocol.as_deref(),
            source_port.unwrap_or(policy::probe::DEFAULT_SOURCE_PORT),
            ip_family.map(Into::into),
            output,
        ),
        Command::Test {
            files,
            expect,
            output,
        } => commands::test::run(&files, &expect, output),
        Command::Run {
            config,
            existing_connections,
        } => commands::run::run(&config, existing_connections),
        Command::Lab {
            files,
            expect,
            datapath,
            ip_family,
        } => commands::lab::run(
            &files,
            expect.as_deref(),
            datapath.into(),
            ip_family.map(Into::into),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<cluster::InvalidManifests>().is_none() {
                eprintln!("error: {e:#}");
            } else {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
