//! The harness against itself, in real namespaces (needs root; `PODWALL_SKIP_NETNS=1` skips).
//!
//! With `bypass` the probes must work everywhere (so a failing probe in a filter test means the
//! filter, not the probe); without a filter nothing may pass (the topology fails closed).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use harness::probe::{self, ServeSpec};
use harness::{require_root_or_skip, Datapath, Namespace, Topology, TopologyOptions};
use policy::{Protocol, Source};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: alpha, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: beta, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: alpha, labels: {app: web}}
spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]}
status: {podIP: 10.10.0.1, podIPs: [{ip: 10.10.0.1}, {ip: "fd10::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: alpha, labels: {app: api}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.10.0.2, podIPs: [{ip: 10.10.0.2}, {ip: "fd10::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: beta, labels: {app: db}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.20.0.3, podIPs: [{ip: 10.20.0.3}, {ip: "fd20::3"}]}
"#;

const PORT: u16 = 80;
const CLOSED_PORT: u16 = 81;
const SINK: u16 = 9000;
const PROTOCOLS: [Protocol; 3] = [Protocol::TCP, Protocol::UDP, Protocol::SCTP];

fn setup() -> bool {
    probe::set_binary(env!("CARGO_BIN_EXE_pw-probe"));
    require_root_or_skip()
}

fn cluster() -> policy::Cluster {
    policy::load(&[Source::new("test.yaml", MANIFESTS)]).expect("manifests load")
}

fn external_ips() -> [IpAddr; 2] {
    [
        "192.0.2.50".parse().unwrap(),
        "2001:db8::50".parse().unwrap(),
    ]
}

/// One probe to make: from which endpoint, to which address.
struct Case {
    from: String,
    to: IpAddr,
    protocol: Protocol,
    port: u16,
}

/// Every pod to every other endpoint (pods and external hosts), both families, all protocols.
fn all_pairs(topology: &Topology, port: u16) -> Vec<Case> {
    let mut cases = Vec::new();
    for from in topology.pods() {
        for to in topology.endpoints().filter(|e| e.key() != from.key()) {
            for &ip in to.ips() {
                for protocol in PROTOCOLS {
                    cases.push(Case {
                        from: from.key().to_string(),
                        to: ip,
                        protocol,
                        port,
                    });
                }
            }
        }
    }
    cases
}

/// Runs the probes concurrently (each is a process waiting on the network) and returns
/// `(case description, connected)` for each.
fn run(topology: &Topology, cases: &[Case], timeout: Duration) -> Vec<(String, bool)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let ns = topology.endpoint(&c.from).unwrap().namespace();
                    let ok = probe::probe(ns, c.protocol, c.to, c.port, timeout)
                        .unwrap_or_else(|e| panic!("probe could not run: {e}"));
                    (
                        format!("{} -> {} {}/{}", c.from, c.to, c.protocol, c.port),
                        ok,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn assert_gone(names: &[String]) {
    let left = harness::netns::list().unwrap();
    let remaining: Vec<_> = names.iter().filter(|n| left.contains(n)).collect();
    assert!(
        remaining.is_empty(),
        "namespaces left behind: {remaining:?}"
    );
}

#[test]
fn bypass_topology_carries_tcp_udp_and_sctp_over_both_families_and_cleans_up() {
    if !setup() {
        return;
    }
    let started = Instant::now();
    let options = TopologyOptions {
        bypass: true,
        ..TopologyOptions::default()
    };
    let mut topology = Topology::build(&cluster(), options).unwrap();
    topology.add_external_with(&external_ips()).unwrap();
    assert_eq!(topology.pods().len(), 3);
    assert!(topology.pods().iter().all(|p| p.filter_ports().is_none()));
    let built = started.elapsed();

    let _servers = topology
        .serve_all(&ServeSpec::ports(&[PORT]).with_sink(SINK))
        .unwrap();

    let cases = all_pairs(&topology, PORT);
    assert_eq!(cases.len(), 3 * 3 * 2 * 3);
    let failed: Vec<_> = run(&topology, &cases, Duration::from_secs(1))
        .into_iter()
        .filter(|(_, ok)| !ok)
        .collect();
    assert!(
        failed.is_empty(),
        "probes that should connect did not: {failed:#?}"
    );

    // Negative control: a port nobody serves is not reported as connected, so the probes can
    // tell a blocked connection from an open one.
    let closed: Vec<Case> = PROTOCOLS
        .iter()
        .flat_map(|&protocol| {
            external_ips().map(|to| Case {
                from: "alpha/web".into(),
                to,
                protocol,
                port: CLOSED_PORT,
            })
        })
        .collect();
    let connected: Vec<_> = run(&topology, &closed, Duration::from_millis(300))
        .into_iter()
        .filter(|(_, ok)| *ok)
        .collect();
    assert!(
        connected.is_empty(),
        "closed ports answered: {connected:#?}"
    );

    // A real TCP transfer of several MB, checked at the far end, on each family.
    let web = topology.pod("alpha/web").unwrap();
    let db = topology.pod("beta/db").unwrap();
    // Concurrently: a debug-build pw-probe hashes at roughly 30 MB/s, ~0.7 s per transfer.
    std::thread::scope(|s| {
        for to in [db.ipv4().unwrap(), db.ipv6().unwrap()] {
            s.spawn(move || {
                let outcome = probe::transfer(
                    web.namespace(),
                    to,
                    SINK,
                    8_000_000,
                    Duration::from_secs(20),
                )
                .unwrap();
                assert!(outcome.ok, "transfer to {to}: {outcome:?}");
                assert_eq!(outcome.far_sha256.as_deref(), Some(outcome.sha256.as_str()));
            });
        }
    });

    let names = topology.namespace_names();
    assert_eq!(names.len(), 1 + 3 + 1);
    drop(_servers);
    drop(topology);
    assert_gone(&names);
    eprintln!("built in {built:?}, everything in {:?}", started.elapsed());
}

#[test]
fn without_a_filter_nothing_connects_pw_a_and_pw_b_so_every_probe_fails() {
    if !setup() {
        return;
    }
    let mut topology = Topology::build(&cluster(), TopologyOptions::default()).unwrap();
    topology.add_external_with(&external_ips()).unwrap();
    for (k, pod) in topology.pods().iter().enumerate() {
        let ports = pod.filter_ports().expect("filter ports without bypass");
        assert_eq!(ports.pod_side, format!("pw{k}a"));
        assert_eq!(ports.bridge_side, format!("pw{k}b"));
        assert_eq!(pod.bridge_port(), Some(format!("pw{k}c").as_str()));
        // The filter's interfaces exist in the node namespace and are up.
        let link = topology
            .node()
            .run(["-o", "link", "show", &ports.pod_side])
            .unwrap();
        assert!(link.contains("state UP") || link.contains(",UP"), "{link}");
    }
    // The node namespace sends nothing of its own: no IPv6 at all, no IPv4 outside loopback.
    let v6 = topology.node().run(["-6", "addr", "show"]).unwrap();
    assert!(!v6.contains("inet6"), "{v6}");
    let v4 = topology.node().run(["-4", "addr", "show"]).unwrap();
    assert_eq!(v4.matches("inet ").count(), 1, "{v4}");
    assert!(v4.contains("127.0.0.1"), "{v4}");

    let _servers = topology.serve_all(&ServeSpec::ports(&[PORT])).unwrap();

    let cases = all_pairs(&topology, PORT);
    let connected: Vec<_> = run(&topology, &cases, Duration::from_millis(300))
        .into_iter()
        .filter(|(_, ok)| *ok)
        .collect();
    assert!(
        connected.is_empty(),
        "connected with no filter running: {connected:#?}"
    );

    // A pod can still reach itself (loopback, never through the filter).
    let web = topology.pod("alpha/web").unwrap();
    for ip in web.ips() {
        for protocol in PROTOCOLS {
            assert!(
                probe::probe(web.namespace(), protocol, *ip, PORT, Duration::from_secs(1)).unwrap(),
                "alpha/web to itself at {ip} over {protocol}"
            );
        }
    }
    let names = topology.namespace_names();
    drop(_servers);
    drop(topology);
    assert_gone(&names);
}

#[test]
fn a_namespace_is_removed_and_its_processes_killed_even_when_the_test_panics() {
    if !setup() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let ns = Namespace::create("panic").unwrap();
        let child = ns.spawn(["sleep", "30"]).unwrap();
        tx.send((ns.name().to_string(), child.pid())).unwrap();
        // Forget the guard on purpose: the namespace's drop alone must kill the process.
        std::mem::forget(child);
        panic!("on purpose");
    });
    assert!(result.is_err());
    let (name, pid) = rx.recv().unwrap();
    assert_gone(&[name]);
    // Killed and reaped by the namespace's drop although its guard was forgotten.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists"
    );
}

#[test]
fn a_failing_command_names_itself_and_carries_stderr() {
    if !setup() {
        return;
    }
    let ns = Namespace::create("err").unwrap();
    let err = ns.run(["link", "set", "nosuchdev", "up"]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("link set nosuchdev up"), "{message}");
    assert!(message.to_lowercase().contains("nosuchdev"), "{message}");
    assert!(message.contains("exit status"), "{message}");
}

/// A TUN device made with `ip tuntap` in this process's namespace, deleted if it is still here.
struct TunDevice(String);

impl Drop for TunDevice {
    fn drop(&mut self) {
        let exists = harness::netns::run_ip(["link", "show", "dev", &self.0]).is_ok();
        if exists {
            let _ = harness::netns::run_ip(["tuntap", "del", "dev", &self.0, "mode", "tun"]);
        }
    }
}

#[test]
fn adopt_tun_moves_the_device_into_the_pod_as_eth0_with_its_addresses() {
    if !setup() {
        return;
    }
    let options = TopologyOptions {
        datapath: Datapath::Tun,
        ..TopologyOptions::default()
    };
    let topology = Topology::build(&cluster(), options).unwrap();
    let api = topology.pod("alpha/api").unwrap();
    assert!(api.filter_ports().is_none() && api.bridge_port().is_none());

    let tun = TunDevice(format!("pwt{}", std::process::id()));
    harness::netns::run_ip(["tuntap", "add", "dev", &tun.0, "mode", "tun"]).unwrap();
    topology.adopt_tun("alpha/api", &tun.0).unwrap();

    let addrs = api
        .namespace()
        .run(["-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(addrs.contains("10.10.0.2/32"), "{addrs}");
    assert!(addrs.contains("fd10::2/128"), "{addrs}");
    let routes = api
        .namespace()
        .run(["-6", "route", "show", "default"])
        .unwrap();
    assert!(routes.contains("dev eth0"), "{routes}");
    // Gone from here: it lives in the pod now.
    assert!(harness::netns::run_ip(["link", "show", "dev", &tun.0]).is_err());
}

#[test]
fn namespaces_of_a_killed_process_are_deleted_and_a_live_ones_kept() {
    if !setup() {
        return;
    }
    // First, so that the sweep the first namespace of a process makes is done.
    let own = Namespace::create("kept").unwrap();
    // A PID that no process has any more: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let orphan = format!("pw{dead}x0orphan");
    let ip = harness::netns::ip_binary();
    let added = std::process::Command::new(ip)
        .args(["netns", "add", &orphan])
        .status()
        .unwrap();
    assert!(added.success(), "ip netns add {orphan}");

    let removed = harness::netns::remove_orphans().unwrap();

    let left = harness::netns::list().unwrap();
    if left.contains(&orphan) {
        // Delete it before failing, so the failure leaves nothing behind.
        let _ = std::process::Command::new(ip)
            .args(["netns", "del", &orphan])
            .status();
        panic!("{orphan} was not deleted (deleted: {removed:?})");
    }
    assert!(removed.contains(&orphan), "{removed:?}");
    assert!(left.iter().any(|n| n == own.name()), "{left:?}");
}
