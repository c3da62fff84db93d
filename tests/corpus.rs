//! Runs `podwall test` on every case of the policy corpora under `tests/`: the upstream
//! Kubernetes e2e NetworkPolicy scenarios, the Kubernetes documentation examples and the Calico
//! documentation examples.

use std::path::{Path, PathBuf};
use std::process::Command;

struct CaseRun {
    case: PathBuf,
    passed: usize,
    failed: usize,
    output: String,
    success: bool,
}

fn cluster_file(corpus: &Path, case: &Path) -> PathBuf {
    let meta = std::fs::read_to_string(case.join("case.yaml")).unwrap_or_default();
    let cluster = meta
        .lines()
        .find_map(|l| l.strip_prefix("cluster:"))
        .map(|v| v.trim().trim_matches('"').to_string());
    match cluster {
        Some(rel) => corpus.join(rel),
        None if case.join("cluster.yaml").exists() => case.join("cluster.yaml"),
        None => corpus.join("cluster.yaml"),
    }
}

fn run_corpus(name: &str) -> Vec<CaseRun> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("probes.yaml").exists())
        .collect();
    cases.sort();
    cases
        .into_iter()
        .map(|case| {
            let out = Command::new(env!("CARGO_BIN_EXE_podwall"))
                .arg("test")
                .arg("-f")
                .arg(cluster_file(&corpus, &case))
                .arg("-f")
                .arg(case.join("policies.yaml"))
                .arg("--expect")
                .arg(case.join("probes.yaml"))
                .output()
                .expect("podwall runs");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let output = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
            let (passed, failed) = stdout
                .lines()
                .rev()
                .find_map(|l| {
                    let (p, rest) = l.split_once(" passed, ")?;
                    Some((p.parse().ok()?, rest.strip_suffix(" failed")?.parse().ok()?))
                })
                .unwrap_or((0, 0));
            CaseRun {
                case,
                passed,
                failed,
                output,
                success: out.status.success(),
            }
        })
        .collect()
}

fn assert_all_pass(name: &str, min_cases: usize, min_probes: usize) {
    let runs = run_corpus(name);
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| !r.success || r.failed > 0 || r.passed == 0)
        .map(|r| format!("== {}\n{}", r.case.display(), r.output))
        .collect();
    assert!(
        bad.is_empty(),
        "{} failing case(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
    let probes: usize = runs.iter().map(|r| r.passed).sum();
    assert!(
        runs.len() >= min_cases && probes >= min_probes,
        "{name}: only {} cases with {probes} probes ran",
        runs.len()
    );
}

#[test]
fn upstream_e2e_network_policy_scenarios_pass() {
    assert_all_pass("netpol-e2e", 60, 5000);
}

#[test]
fn kubernetes_documentation_examples_pass() {
    assert_all_pass("docs-examples", 8, 50);
}

#[test]
fn calico_documentation_examples_pass() {
    assert_all_pass("calico-examples", 8, 58);
}
