//! `podwall run` as an operator runs it, in front of namespaces the test builds: it enforces,
//! reloads when the manifests change and on SIGHUP, rejects a bad change while the running
//! policy stays, prints counters on SIGUSR1, and stops on SIGTERM. Needs root.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use harness::probe::{probe, ServeSpec};
use harness::topology::{Topology, TopologyOptions};
use policy::{Protocol, Source};

const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: x}}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: x, labels: {app: client}}
  status: {podIP: 10.77.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: server, namespace: x, labels: {app: server}}
  status: {podIP: 10.77.0.2}
"#;

fn policy_allowing(port: u16) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: server, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]
    ports: [{{port: {port}}}]
"#
    )
}

const BROKEN_POLICY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/40}}]
"#;

/// `podwall run` with its stderr read line by line; killed by PID if still running on drop.
struct RunningPodwall {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl RunningPodwall {
    fn start(config: &Path) -> RunningPodwall {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podwall"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podwall starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RunningPodwall {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; panics with everything seen otherwise.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "podwall run never printed {needle:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for RunningPodwall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) {
    // Write aside and rename, as editors and config managers do, so a reload never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn run_enforces_reloads_rejects_bad_changes_and_reports_counters() {
    if !harness::require_root_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("podwall-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster_file = dir.join("cluster.yaml");
    let policy_file = dir.join("policy.yaml");
    write(&cluster_file, CLUSTER);
    write(&policy_file, &policy_allowing(80));

    let cluster = policy::load(&[Source::new("cluster.yaml", CLUSTER)]).unwrap();
    let topology = Topology::build(&cluster, TopologyOptions::default()).unwrap();
    let client = topology.pod("x/client").unwrap();
    let server = topology.pod("x/server").unwrap();
    let _server = server
        .serve(&ServeSpec {
            tcp: vec![80, 81],
            ..ServeSpec::default()
        })
        .unwrap();
    let server_ip = server.ipv4().unwrap();
    let ports = |e: &harness::Endpoint| e.filter_ports().unwrap().clone();
    let config: PathBuf = dir.join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "manifests: [cluster.yaml, policy.yaml]\ndatapath: xdp\nnetns: {}\nworkerPriority: 10\npods:\n- {{pod: x/client, podInterface: {}, nodeInterface: {}}}\n- {{pod: x/server, podInterface: {}, nodeInterface: {}}}\n",
            topology.node().name(),
            ports(client).pod_side,
            ports(client).bridge_side,
            ports(server).pod_side,
            ports(server).bridge_side,
        ),
    )
    .unwrap();

    let reach = |port: u16| {
        probe(
            client.namespace(),
            Protocol::TCP,
            server_ip,
            port,
            Duration::from_millis(700),
        )
        .unwrap()
    };

    let mut podwall = RunningPodwall::start(&config);
    podwall.wait_for("enforcing generation 0");
    assert!(reach(80), "port 80 is allowed by the first policy");
    assert!(!reach(81), "port 81 is not");

    write(&policy_file, &policy_allowing(81));
    podwall.wait_for("policy generation 1 in force");
    assert!(reach(81), "the reloaded policy allows 81");
    assert!(!reach(80), "and no longer 80");

    write(&policy_file, BROKEN_POLICY);
    let rejected = podwall.wait_for("change rejected");
    assert!(
        rejected.contains("generation 1 stays in force"),
        "{rejected}"
    );
    assert!(reach(81), "the running policy stays after a bad change");

    podwall.signal("HUP");
    podwall.wait_for("SIGHUP: change rejected");

    write(&policy_file, &policy_allowing(80));
    podwall.wait_for("policy generation 2 in force");
    assert!(reach(80));

    podwall.signal("USR1");
    let row = podwall.wait_for("x/server");
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert!(
        columns[1].parse::<u64>().unwrap() >= 3,
        "ingress allowed to x/server: {row}"
    );
    assert!(
        columns[2].parse::<u64>().unwrap() >= 2,
        "ingress denied to x/server: {row}"
    );

    podwall.signal("TERM");
    podwall.wait_for("podwall: stopped");
    let status = podwall.child.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(topology);
    let _ = std::fs::remove_dir_all(&dir);
}
