//! The Calico documentation examples with real packets, through both datapaths (AF_XDP on veth,
//! and TUN): explicit Deny rules, policy order against Kubernetes policies, tiers and Pass,
//! egress limits by network, Log lines counted by the filter, and ICMP echo requests
//! (`allow-ping-in-cluster`; its probes of other ICMP types are checked offline only, in
//! `tests/corpus.rs`, as no kernel answers them in a way that shows they got through).
//!
//! Needs root (`PODWALL_SKIP_NETNS=1` skips) and `pw-probe` (`cargo test --workspace` builds
//! it).

use netns_tests::{assert_case_agrees, Case};

#[test]
fn the_calico_reference_samples_scope_selectors_by_namespace() {
    if !harness::require_root_or_skip() {
        return;
    }
    assert_case_agrees(&Case::calico_example("reference-allow-tcp-6379"));
    assert_case_agrees(&Case::calico_example("reference-global-allow-tcp-6379"));
}

#[test]
fn a_lower_order_deny_beats_a_kubernetes_allow_and_a_higher_order_allow_still_decides() {
    if !harness::require_root_or_skip() {
        return;
    }
    assert_case_agrees(&Case::calico_example("order-deny-before-kubernetes-allow"));
}

#[test]
fn a_security_tier_denies_and_passes_to_the_default_tier() {
    if !harness::require_root_or_skip() {
        return;
    }
    assert_case_agrees(&Case::calico_example("tiers-pass-to-default"));
}

#[test]
fn egress_outside_private_ranges_is_denied() {
    if !harness::require_root_or_skip() {
        return;
    }
    assert_case_agrees(&Case::calico_example("deny-egress-outside-private"));
}

/// Every TCP connection to the database meets the Log rule first, allowed or denied; UDP and
/// other pods' traffic do not.
#[test]
fn log_rules_write_one_line_per_new_connection() {
    if !harness::require_root_or_skip() {
        return;
    }
    for report in assert_case_agrees(&Case::calico_example("log-then-deny")) {
        let logged = |pod: &str| {
            report
                .counters
                .iter()
                .find(|(attachment, _)| attachment == pod)
                .map_or(0, |(_, c)| c.logged)
        };
        let tcp_probes = report
            .probes
            .iter()
            .filter(|p| p.probe.to == "production/database" && p.probe.protocol == "TCP")
            .count() as u64;
        assert!(
            logged("production/database") >= tcp_probes && tcp_probes == 3,
            "{:?}: the database logged {} new connections for {tcp_probes} TCP probes",
            report.datapath,
            logged("production/database")
        );
        for (attachment, c) in &report.counters {
            if attachment != "production/database" {
                assert_eq!(c.logged, 0, "{attachment} has no Log rule");
            }
        }
    }
}

/// Pings between pods get through, over IPv4 and IPv6 and with any code; pings from outside
/// the cluster and TCP to the same pods do not; egress is not limited.
#[test]
fn pings_between_pods_get_through_and_nothing_else_does() {
    if !harness::require_root_or_skip() {
        return;
    }
    let case = Case::calico_example("allow-ping-in-cluster").sendable_only();
    assert_eq!(
        case.probes.len(),
        7,
        "the example's echo requests and its TCP probe: {:?}",
        case.probes
    );
    assert_case_agrees(&case);
}

/// Source ports through both datapaths: probes from fixed source ports (the database denies
/// privileged ones; CoreDNS may only send from its port named dns) and from an ephemeral one.
#[test]
fn source_ports_are_matched_on_real_packets() {
    if !harness::require_root_or_skip() {
        return;
    }
    assert_case_agrees(&Case::calico_example("source-ports"));
}

/// Where a rule looks at source ports, a probe without `sourcePort` is sent from the port the
/// policy answers for (32768), not from one the kernel picks: here only that port is denied.
#[test]
fn a_probe_without_a_source_port_is_sent_from_the_one_the_policy_answers_for() {
    if !harness::require_root_or_skip() {
        return;
    }
    let cluster = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/calico-examples/cluster.yaml"),
    )
    .expect("the Calico examples' cluster");
    let policy = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: not-from-32768}
spec:
  selector: role == 'database'
  ingress:
  - {action: Deny, protocol: TCP, source: {ports: [32768]}}
  - {action: Allow}
";
    let probes = "
- {from: production/backend, to: production/database, port: 6379, allowed: false}
- {from: production/backend, to: production/database, port: 6379, sourcePort: 32769, allowed: true}
";
    assert_case_agrees(&Case::inline(
        "default-source-port",
        &[&cluster, policy],
        probes,
    ));
}
