//! The `podwall` command as a user runs it: exit codes, what goes to stdout and stderr, JSON
//! shapes, standard input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/three-tier")
        .join(rel)
}

fn podwall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podwall"))
        .args(args)
        .output()
        .expect("podwall runs")
}

fn podwall_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_podwall"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podwall runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The `pods` of one table of `matrix --output json`.
fn pod_names(table: &serde_json::Value) -> Vec<&str> {
    table["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn manifests() -> String {
    example("manifests").display().to_string()
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podwall-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn check_summarises_a_valid_cluster() {
    let out = podwall(&["check", "-f", &manifests()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("4 pods, 7 NetworkPolicies with 7 rules, 1 tier(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("compiled in"), "{stdout}");
    assert!(stdout.contains("classifier memory"), "{stdout}");
}

/// A namespace and one pod in it, for the policies of a test to select.
const ONE_POD: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n---\n\
    apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: n\nstatus:\n  podIP: 10.0.0.1\n";

/// A GlobalNetworkPolicy with rules on 200 single TCP ports, then 2,000 rules over every TCP
/// port (each from its own /32): folding those into each of the ~400 port classes would copy
/// about 800k address intervals, past the compiler's budget. With `pod_rule`, a last rule on
/// the peer's labels keeps the table from an address × port product.
fn wide_rules_manifest(pod_rule: bool) -> String {
    let mut text = String::from(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: wide\n\
         spec:\n  selector: all()\n  types: [Ingress]\n  ingress:\n",
    );
    for port in 0..200 {
        text += &format!(
            "  - action: Allow\n    protocol: TCP\n    destination: {{ports: [{}]}}\n",
            10_000 + 2 * port
        );
    }
    for i in 0..2000 {
        text += &format!(
            "  - action: Deny\n    protocol: TCP\n    source: {{nets: [\"10.9.{}.{}/32\"]}}\n",
            i / 250,
            i % 250
        );
    }
    if pod_rule {
        text += "  - action: Allow\n    source: {selector: \"app == 'db'\"}\n";
    }
    text + ONE_POD
}

#[test]
fn check_says_when_a_table_keeps_rules_over_every_port_apart() {
    let path = temp_file("wide.yaml", &wide_rules_manifest(true));
    let path = path.to_str().unwrap();
    let out = podwall(&["check", "-f", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1 table(s) keep their rules over every port of a protocol apart"),
        "{stdout}"
    );
    assert!(!stdout.contains("address × port"), "{stdout}");
    let out = podwall(&["check", "-f", path, "--output", "json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["classifier"]["apart_tables"], 1);
    assert_eq!(summary["classifier"]["product_tables"], 0);

    // The three-tier example is small: its tables fold, and check says nothing of it.
    let out = podwall(&["check", "-f", &manifests()]);
    assert!(
        !text(&out.stdout).contains("apart"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_says_when_a_table_answers_from_an_address_by_port_product() {
    // Without the rule on labels, every rule looks only at addresses and ports.
    let path = temp_file("wide-nets.yaml", &wide_rules_manifest(false));
    let path = path.to_str().unwrap();
    let out = podwall(&["check", "-f", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1 table(s) answer from one address × port table"),
        "{stdout}"
    );
    assert!(!stdout.contains("apart"), "{stdout}");
    let out = podwall(&["check", "-f", path, "--output", "json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["classifier"]["product_tables"], 1);
    assert_eq!(summary["classifier"]["apart_tables"], 0);
}

#[test]
fn check_says_when_a_table_answers_source_ports_from_a_joint_product() {
    let manifest = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: dns-and-web}
spec:
  selector: all()
  types: [Ingress]
  ingress:
  - {action: Allow, protocol: UDP, source: {nets: [10.1.0.0/16], ports: [53]}}
  - {action: Deny, protocol: TCP, source: {nets: [10.2.0.0/16]}, destination: {ports: [80]}}
  - {action: Allow, protocol: TCP, source: {ports: ["1024:65535"]}, destination: {ports: [443]}}
"#;
    let path = temp_file("joint.yaml", &format!("{manifest}{ONE_POD}"));
    let path = path.to_str().unwrap();
    let out = podwall(&["check", "-f", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1 of them joint"), "{stdout}");
    let out = podwall(&["check", "-f", path, "--output", "json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["classifier"]["joint_product_tables"], 1);
    assert_eq!(summary["classifier"]["product_tables"], 1);
}

#[test]
fn check_reads_kubectl_output_from_standard_input() {
    let mut all = std::fs::read_to_string(example("manifests/cluster.yaml")).unwrap();
    all.push_str("\n---\n");
    all.push_str(&std::fs::read_to_string(example("manifests/policies.yaml")).unwrap());
    let out = podwall_with_stdin(&["check", "-f", "-", "--output", "json"], &all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["pods"], 4);
    assert_eq!(summary["policies"], 7);
    assert!(summary["classifier"]["heap_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn check_reports_every_error_with_its_location_and_fails() {
    let bad = temp_file(
        "bad.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}\n    ports:\n    - {port: 80, endPort: 70}\n",
    );
    let out = podwall(&["check", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "bad.yaml: document 0: NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.except[0]"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.ingress[0].ports[0].endPort: Invalid value: 70"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

#[test]
fn check_json_reports_errors_as_data() {
    let bad = temp_file(
        "bad-json.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: tcp}\n",
    );
    let out = podwall(&["check", "-f", bad.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    let error = &doc["errors"][0];
    assert_eq!(
        error["location"]["field"],
        "spec.ingress[0].ports[0].protocol"
    );
    assert_eq!(error["location"]["object"], "NetworkPolicy x/p");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Unsupported value: \"tcp\""));
}

#[test]
fn other_kinds_are_skipped_with_one_line_each() {
    let file = temp_file(
        "service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n",
    );
    let out = podwall(&["check", "-f", file.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.contains("skipped")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("Service shop/web"), "{stderr}");
}

#[test]
fn explain_names_the_deciding_policy_and_rule() {
    let out = podwall(&[
        "explain",
        "-f",
        &manifests(),
        "--from",
        "203.0.113.7",
        "--to",
        "shop/frontend",
        "--port",
        "80",
    ]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ALLOWED"), "{stdout}");
    assert!(
        stdout.contains("allowed by NetworkPolicy shop/frontend")
            && stdout.contains("rule spec.ingress[0]"),
        "{stdout}"
    );
    assert!(stdout.contains("not a pod"), "{stdout}");
}

#[test]
fn explain_json_lists_the_isolating_policies_of_a_deny() {
    let out = podwall(&[
        "explain",
        "-f",
        &manifests(),
        "--from",
        "shop/frontend",
        "--to",
        "data/postgres",
        "--port",
        "5432",
        "--output",
        "json",
    ]);
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["allowed"], false);
    assert_eq!(e["ingress"]["reason"], "no-rule-matched");
    let isolating: Vec<&str> = e["ingress"]["isolated_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(isolating, ["data/default-deny", "data/postgres"]);
}

#[test]
fn explain_rejects_an_unknown_pod_by_name() {
    let out = podwall(&[
        "explain",
        "-f",
        &manifests(),
        "--from",
        "shop/nope",
        "--to",
        "data/postgres",
        "--port",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("there is no pod shop/nope"));
}

#[test]
fn matrix_json_is_the_pod_by_pod_table() {
    let out = podwall(&[
        "matrix",
        "-f",
        &manifests(),
        "--port",
        "5432",
        "--output",
        "json",
    ]);
    assert!(out.status.success());
    let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &tables[0];
    let pods = pod_names(table);
    assert_eq!(
        pods,
        [
            "data/postgres",
            "kube-system/coredns",
            "shop/backend",
            "shop/frontend"
        ]
    );
    let allowed = |from: usize, to: usize| table["allowed"][from][to].as_bool().unwrap();
    assert!(allowed(2, 0), "backend reaches postgres");
    assert!(!allowed(3, 0), "frontend does not reach postgres");
    assert!(allowed(0, 0), "a pod reaches itself");
}

#[test]
fn matrix_text_marks_allowed_and_denied() {
    let out = podwall(&["matrix", "-f", &manifests(), "--port", "8080"]);
    let stdout = text(&out.stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("shop/frontend"))
        .unwrap();
    let marks: Vec<&str> = row.split_whitespace().skip(1).collect();
    assert_eq!(marks, ["X", "X", ".", "."], "{stdout}");
}

#[test]
fn test_passes_the_example_probes() {
    let out = podwall(&[
        "test",
        "-f",
        &manifests(),
        "--expect",
        example("probes.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout).trim(), "18 passed, 0 failed");
}

#[test]
fn test_prints_each_mismatch_with_its_explanation_and_fails() {
    let probes = temp_file(
        "wrong.yaml",
        "- {from: shop/frontend, to: data/postgres, protocol: TCP, port: 5432, allowed: true}\n- {from: shop/backend, to: data/postgres, port: 5432, allowed: true}\n",
    );
    let out = podwall(&[
        "test",
        "-f",
        &manifests(),
        "--expect",
        probes.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("MISMATCH shop/frontend -> data/postgres TCP/5432: expected allowed, policy says denied"), "{stdout}");
    assert!(
        stdout.contains("isolated for ingress by NetworkPolicy data/default-deny"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("1 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn test_json_has_one_object_per_probe() {
    let out = podwall(&[
        "test",
        "-f",
        &manifests(),
        "--expect",
        example("probes.yaml").to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 18);
    let backend_to_db = lines
        .iter()
        .find(|l| l["probe"]["from"] == "shop/backend" && l["probe"]["to"] == "data/postgres")
        .unwrap();
    assert_eq!(backend_to_db["expected"], true);
    assert_eq!(backend_to_db["actual"], true);
    assert_eq!(
        backend_to_db["deciding_policies"],
        serde_json::json!(["shop/backend", "data/postgres"])
    );
    assert_eq!(text(&out.stderr).trim(), "18 passed, 0 failed");
}

#[test]
fn probes_that_name_unknown_pods_are_errors_naming_the_probe() {
    let probes = temp_file(
        "unknown.yaml",
        "- {from: shop/frontend, to: y/b, port: 80, allowed: true}\n",
    );
    let out = podwall(&[
        "test",
        "-f",
        &manifests(),
        "--expect",
        probes.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown.yaml: [0]: there is no pod y/b"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_and_matrix_take_a_source_port_and_show_it_where_a_rule_looks_at_it() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/calico-examples");
    let cluster = examples.join("cluster.yaml");
    let policies = examples.join("source-ports/policies.yaml");
    let (cluster, policies) = (cluster.to_str().unwrap(), policies.to_str().unwrap());
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "-f",
            cluster,
            "-f",
            policies,
            "--from",
            "production/backend",
            "--to",
            "production/database",
        ];
        args.extend_from_slice(extra);
        podwall(&args)
    };
    let out = explain(&["--port", "6379", "--source-port", "1000"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("TCP/6379 from port 1000: DENIED")
            && stdout.contains("spec.ingress[0] (Deny)"),
        "{stdout}"
    );
    let stdout = text(&explain(&["--port", "6379"]).stdout);
    assert!(
        stdout.contains("TCP/6379 from port 32768: ALLOWED"),
        "{stdout}"
    );
    let out = explain(&["--protocol", "ICMP", "--source-port", "1000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--source-port: Invalid value: \"1000\": ICMP has no ports"),
        "{}",
        text(&out.stderr)
    );

    let matrix = |source_port: &str| {
        let out = podwall(&[
            "matrix",
            "-f",
            cluster,
            "-f",
            policies,
            "--port",
            "6379",
            "--source-port",
            source_port,
            "--output",
            "json",
        ]);
        let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let table = &tables[0];
        let pods = pod_names(table);
        let at = |name: &str| pods.iter().position(|p| *p == name).unwrap();
        assert_eq!(table["sourcePort"], source_port.parse::<u16>().unwrap());
        table["allowed"][at("production/backend")][at("production/database")].clone()
    };
    assert_eq!(matrix("40000"), true);
    assert_eq!(matrix("1000"), false);
}

#[test]
fn run_refuses_a_worker_priority_outside_sched_fifo_s_range() {
    let dir = std::env::temp_dir().join(format!("podwall-cli-priority-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.yaml");
    std::fs::write(
        &config,
        "manifests: []\ndatapath: xdp\nworkerPriority: 120\npods:\n\
         - {pod: x/a, podInterface: pa, nodeInterface: na}\n",
    )
    .unwrap();
    let out = podwall(&["run", "--config", config.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("workerPriority: 120 is not a SCHED_FIFO priority (1–99)"),
        "{}",
        text(&out.stderr)
    );
}
