//! `podwall lab` as a user runs it, on the Calico ICMP example: echo requests are sent (IPv4
//! and IPv6, any code), probes of other ICMP types are named as not sent, and the summary
//! counts them. Needs root and `pw-probe` (`cargo test --workspace` builds it).

use std::path::Path;
use std::process::Command;

#[test]
fn lab_pings_and_names_the_probes_it_cannot_send() {
    if !harness::require_root_or_skip() {
        return;
    }
    let probe_binary = harness::probe::binary().unwrap_or_else(|e| {
        panic!("{e}: build it with `cargo build -p podwall-harness --bin pw-probe`")
    });
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/calico-examples");
    let case = examples.join("allow-ping-in-cluster");
    let output = Command::new(env!("CARGO_BIN_EXE_podwall"))
        .env("PW_PROBE_BIN", &probe_binary)
        .args(["lab", "-f"])
        .arg(examples.join("cluster.yaml"))
        .arg("-f")
        .arg(case.join("policies.yaml"))
        .arg("--expect")
        .arg(case.join("probes.yaml"))
        .output()
        .expect("podwall runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "podwall lab failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("7 passed, 0 failed, 2 not sent"),
        "stdout:\n{stdout}"
    );
    for line in [
        "ICMPv6 type 128 code 0 allowed  allowed  allowed",
        "ICMP type 8 code 1   allowed  allowed  allowed",
    ] {
        assert!(stdout.contains(line), "no `{line}` in:\n{stdout}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("203.0.113.5")
            && l.contains("ICMP type 8 code 0   denied   denied   denied")),
        "an outside ping is denied, by policy and by packets:\n{stdout}"
    );
    for not_sent in [
        "probe [3] dev/frontend -> kube-system/coredns not sent: ICMPv6 type 8",
        "probe [4] production/frontend -> production/database not sent: ICMP type 13",
    ] {
        assert!(stderr.contains(not_sent), "no `{not_sent}` in:\n{stderr}");
    }
}
