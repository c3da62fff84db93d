//! Connections through the filter, through both datapaths (AF_XDP on veth, and TUN): reply
//! traffic of an allowed connection, open connections across a policy change (strict and keep
//! mode), a bulk TCP transfer checked end to end, and UDP/SCTP over IPv6.
//!
//! Needs root (`PODWALL_SKIP_NETNS=1` skips) and `pw-probe` (`cargo test --workspace` builds
//! it).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use datapath::flow_table::ExistingConnections;
use datapath::node::DatapathKind;
use datapath::port::netns::NetnsGuard;
use harness::lab::{Lab, LabOptions};
use harness::probe::{transfer, ServeSpec};
use netns_tests::{
    attempt, lab_options, plan, publish_and_wait, require_probe_binary, run_case, start_lab, Case,
    DATAPATHS, PROBE_TIMEOUT,
};
use policy::Published;

/// One namespace, a client and a server pod, both dual-stack.
const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.30.0.1, podIPs: [{ip: 10.30.0.1}, {ip: "fd30::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {app: server}}
spec: {containers: [{name: c, image: x, ports: [{name: echo, containerPort: 7000}]}]}
status: {phase: Running, podIP: 10.30.0.2, podIPs: [{ip: 10.30.0.2}, {ip: "fd30::2"}]}
"#;

const CLIENT: &str = "app/client";
const SERVER: &str = "app/server";

fn server_address(family_v6: bool) -> IpAddr {
    if family_v6 {
        "fd30::2".parse().unwrap()
    } else {
        "10.30.0.2".parse().unwrap()
    }
}

fn setup() -> bool {
    if !harness::require_root_or_skip() {
        return false;
    }
    require_probe_binary();
    true
}

// ---------------------------------------------------------------------------------------------
// Reply traffic

/// The server is isolated for egress with no egress rule at all.
const SERVER_WITHOUT_EGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-no-egress, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Egress]
"#;

const REPLY_PROBES: &str = r#"
# The replies of connections the client opens pass the server's egress...
- {from: app/client, to: app/server, protocol: TCP, port: 7000, allowed: true}
- {from: app/client, to: app/server, protocol: TCP, port: 7000, allowed: true, ipFamily: IPv6}
- {from: app/client, to: app/server, protocol: UDP, port: 7000, allowed: true}
# ...but nothing the server starts does.
- {from: app/server, to: app/client, protocol: TCP, port: 7000, allowed: false}
- {from: app/server, to: app/client, protocol: TCP, port: 7000, allowed: false, ipFamily: IPv6}
- {from: app/server, to: app/client, protocol: UDP, port: 7000, allowed: false}
"#;

#[test]
fn a_pod_isolated_for_egress_answers_allowed_connections_but_starts_none() {
    if !setup() {
        return;
    }
    let case = Case::inline(
        "reply-traffic",
        &[PODS, SERVER_WITHOUT_EGRESS],
        REPLY_PROBES,
    );
    for datapath in DATAPATHS {
        let report = run_case(&case, datapath);
        report.assert_agrees();
        // The replies went out of the server without any egress connection being allowed by
        // policy: they passed as part of connections its ingress allowed.
        let (_, server) = report
            .counters
            .iter()
            .find(|(pod, _)| pod == SERVER)
            .expect("the server has an attachment");
        assert_eq!(
            server.allowed_egress, 0,
            "{datapath:?}: no egress connection of the server may be allowed: {server:?}"
        );
        assert!(
            server.allowed_ingress >= 3 && server.denied_egress >= 3,
            "{datapath:?}: the server's counters do not show the probes: {server:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Policy change while a connection is open

const ALLOW_ALL_TO_SERVER: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: [{}]
"#;

const DENY_INGRESS_TO_SERVER: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
"#;

const ECHO_PORT: u16 = 7000;

/// Opens a TCP connection from inside `pod`'s namespace; the socket stays there after this
/// thread leaves it again.
fn connect_from(lab: &Lab, pod: &str, to: SocketAddr) -> TcpStream {
    let path = lab
        .topology()
        .pod(pod)
        .unwrap_or_else(|| panic!("no pod {pod} in the lab"))
        .namespace()
        .path();
    let inside = NetnsGuard::enter_path(&path)
        .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2));
    drop(inside);
    stream.unwrap_or_else(|e| panic!("connecting from {pod} to {to}: {e}"))
}

/// What became of a line sent on an open connection.
enum Echo {
    /// It came back.
    Back,
    /// Nothing came back in time (the read timed out).
    Silence,
    /// Anything else: an error, a reset, other bytes.
    Other(String),
}

impl std::fmt::Display for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Echo::Back => write!(f, "the echo came back"),
            Echo::Silence => write!(f, "no echo before the read timed out"),
            Echo::Other(what) => write!(f, "{what}"),
        }
    }
}

/// Sends `line` and waits up to `wait` for it to come back.
fn echo(stream: &mut TcpStream, line: &str, wait: Duration) -> Echo {
    if let Err(e) = stream.set_read_timeout(Some(wait)) {
        return Echo::Other(format!("set_read_timeout: {e}"));
    }
    if let Err(e) = stream.write_all(line.as_bytes()) {
        return Echo::Other(format!("write: {e}"));
    }
    let mut back = vec![0u8; line.len()];
    match stream.read_exact(&mut back) {
        Ok(()) if back == line.as_bytes() => Echo::Back,
        Ok(()) => Echo::Other(format!("echoed {:?}", String::from_utf8_lossy(&back))),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Echo::Silence,
        Err(e) => Echo::Other(format!("read: {e} ({:?})", e.kind())),
    }
}

/// Opens a connection under an allow-all policy, publishes a policy denying ingress to the
/// server, and returns what became of the open connection's next line (waiting a second for
/// its echo). A new connection after the change must be blocked in any mode.
fn open_connection_across_a_policy_change(
    datapath: DatapathKind,
    existing: ExistingConnections,
) -> Echo {
    let before = Case::inline("before", &[PODS, ALLOW_ALL_TO_SERVER], "[]");
    let after = Case::inline("after", &[PODS, DENY_INGRESS_TO_SERVER], "[]");
    let probe = policy::probe::parse_probes(
        "new-connection.yaml",
        "- {from: app/client, to: app/server, protocol: TCP, port: 7000, allowed: false}",
    )
    .expect("the probe parses");

    let published = Arc::new(Published::new(before.compile()));
    let allowed_before = plan(&published.load().classifier, &probe);
    assert!(
        allowed_before[0].policy,
        "allow-all must allow the connection"
    );
    let defaults = LabOptions::default();
    let options = LabOptions {
        filter: defaults.filter.with_existing_connections(existing),
        ..lab_options(datapath)
    };
    // The probe makes the lab start a TCP echo server on the server pod.
    let lab = start_lab(
        Arc::clone(&published),
        &[allowed_before[0].resolved.clone()],
        options,
    );

    let to = SocketAddr::new(server_address(false), ECHO_PORT);
    let mut stream = connect_from(&lab, CLIENT, to);
    let first = echo(&mut stream, "before the change\n", Duration::from_secs(2));
    assert!(
        matches!(first, Echo::Back),
        "{datapath:?}: the connection does not echo before the change: {first}"
    );

    let denying = after.compile();
    let new_connection = plan(&denying, &probe);
    assert!(
        !new_connection[0].policy,
        "the new policy must deny the connection"
    );
    publish_and_wait(&lab, &published, denying);

    let open = echo(&mut stream, "after the change\n", Duration::from_secs(1));

    let (through, detail) = attempt(&lab, &new_connection[0].resolved, PROBE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{datapath:?}: the new connection could not be tried: {e}"));
    assert!(
        !through,
        "{datapath:?}, {existing:?}: a new connection after the change got through ({detail})"
    );
    open
}

#[test]
fn strict_mode_cuts_an_open_connection_the_new_policy_denies() {
    if !setup() {
        return;
    }
    for datapath in DATAPATHS {
        let open = open_connection_across_a_policy_change(datapath, ExistingConnections::Strict);
        assert!(
            matches!(open, Echo::Silence),
            "{datapath:?}, strict: after the policy changed to deny, the open connection's \
             next line must go unanswered; got: {open}"
        );
    }
}

#[test]
fn keep_mode_keeps_an_open_connection_the_new_policy_denies() {
    if !setup() {
        return;
    }
    for datapath in DATAPATHS {
        let open = open_connection_across_a_policy_change(datapath, ExistingConnections::Keep);
        assert!(
            matches!(open, Echo::Back),
            "{datapath:?}, keep: the open connection must keep working after the change; \
             got: {open}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bulk transfer

const SINK_PORT: u16 = 9000;
const TRANSFER_BYTES: u64 = 8_000_000;

/// Only the client may reach the server, and only on the sink port.
const ALLOW_SINK_FROM_CLIENT: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sink-from-client, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 9000}]
"#;

#[test]
fn eight_megabytes_arrive_intact_over_ipv4_and_ipv6() {
    if !setup() {
        return;
    }
    let case = Case::inline(
        "transfer",
        &[PODS, ALLOW_SINK_FROM_CLIENT],
        r#"
- {from: app/client, to: app/server, protocol: TCP, port: 9000, allowed: true}
- {from: app/client, to: app/server, protocol: TCP, port: 9000, allowed: true, ipFamily: IPv6}
"#,
    );
    let classifier = case.compile();
    let planned = plan(&classifier, &case.probes);
    assert!(
        planned.iter().all(|p| p.policy),
        "the policy allows the sink"
    );
    let published = Arc::new(Published::new(classifier));
    for datapath in DATAPATHS {
        // No probes: the sink is the only server (an echo server would take its port).
        let lab = start_lab(Arc::clone(&published), &[], lab_options(datapath));
        let _sink = lab
            .topology()
            .pod(SERVER)
            .expect("the server pod")
            .serve(&ServeSpec {
                sink: vec![SINK_PORT],
                ..ServeSpec::default()
            })
            .unwrap_or_else(|e| panic!("{datapath:?}: starting the sink: {e}"));
        let client = lab.topology().pod(CLIENT).expect("the client pod");
        for p in &planned {
            let to = p.resolved.to_address;
            let outcome = transfer(
                client.namespace(),
                to,
                SINK_PORT,
                TRANSFER_BYTES,
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("{datapath:?}: the transfer to {to} could not run: {e}"));
            assert!(
                outcome.ok,
                "{datapath:?}: {TRANSFER_BYTES} bytes to {to}: {outcome:?}"
            );
            eprintln!(
                "{datapath:?}: {TRANSFER_BYTES} bytes to {to} intact ({:.0} Mbit/s)",
                outcome.mbit_per_s
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// UDP and SCTP over IPv6

/// The server accepts UDP on any port, from anyone, and nothing else.
const UDP_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp-only, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - ports: [{protocol: UDP}]
"#;

#[test]
fn over_ipv6_a_udp_only_policy_lets_udp_through_and_blocks_sctp_and_tcp() {
    if !setup() {
        return;
    }
    let case = Case::inline(
        "ipv6-udp-only",
        &[PODS, UDP_ONLY],
        r#"
- {from: app/client, to: app/server, protocol: UDP, port: 5000, allowed: true, ipFamily: IPv6}
- {from: app/client, to: app/server, protocol: SCTP, port: 5000, allowed: false, ipFamily: IPv6}
- {from: app/client, to: app/server, protocol: TCP, port: 5000, allowed: false, ipFamily: IPv6}
"#,
    );
    for datapath in DATAPATHS {
        let report = run_case(&case, datapath);
        assert!(
            report.probes.iter().all(|p| p.to_address.is_ipv6()),
            "every probe goes over IPv6"
        );
        report.assert_agrees();
    }
}
