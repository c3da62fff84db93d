//! The NetworkPolicy guide scenarios with real packets, through both datapaths (AF_XDP on veth,
//! and TUN): for every probe, what got through the filter must equal what the policy says,
//! and that must equal what the probe file expects.
//!
//! Needs root (`PODWALL_SKIP_NETNS=1` skips) and `pw-probe` (`cargo test --workspace` builds
//! it).

use datapath::node::DatapathKind;
use netns_tests::{assert_case_agrees, lab_options, require_probe_binary, run_cases, Case};

/// Runs `case` through each datapath and asserts every probe agrees three ways.
fn scenario(case: Case) {
    if !harness::require_root_or_skip() {
        return;
    }
    assert_case_agrees(&case);
}

#[test]
fn default_deny_ingress_blocks_all_ingress_of_the_namespace_and_nothing_else() {
    scenario(Case::docs_example("default-deny-ingress"));
}

#[test]
fn default_deny_egress_blocks_all_egress_including_dns() {
    scenario(Case::docs_example("default-deny-egress"));
}

#[test]
fn default_deny_all_blocks_both_directions() {
    scenario(Case::docs_example("default-deny-all"));
}

#[test]
fn allow_all_ingress_wins_over_a_default_deny() {
    scenario(Case::docs_example("allow-all-ingress"));
}

#[test]
fn allow_all_egress_wins_over_a_default_deny() {
    scenario(Case::docs_example("allow-all-egress"));
}

#[test]
fn a_namespace_selected_by_name_is_the_only_one_let_in() {
    scenario(Case::docs_example("namespace-by-name"));
}

/// Frontend public on 80, backend reachable only from the frontend, `data/postgres` reachable
/// only from `shop/backend` on 5432, DNS to CoreDNS from every pod, nothing else (IPv4 and
/// IPv6, TCP and UDP, external hosts on both sides).
#[test]
fn three_tier_application_with_dns() {
    scenario(Case::three_tier());
}

/// The NetworkPolicy reference example: ipBlock 172.17.0.0/16 except 172.17.1.0/24, a
/// namespaceSelector and a podSelector, from external hosts on the edges of the blocks as well
/// as from pods.
#[test]
fn ip_block_with_except_from_hosts_outside_the_cluster() {
    scenario(Case::docs_example("test-network-policy"));
}

/// veth takes XDP programs in its driver, so the generic (skb) path, podwall's fallback where
/// native attach fails, is forced here to show it forwards and filters the same.
#[test]
fn the_three_tier_application_through_generic_mode_af_xdp() {
    if !harness::require_root_or_skip() {
        return;
    }
    require_probe_binary();
    let mut options = lab_options(DatapathKind::Xdp);
    options.xdp.force_generic = true;
    let report = run_cases(&[Case::three_tier()], options)
        .pop()
        .expect("one report");
    assert!(
        !report.ports.is_empty()
            && report
                .ports
                .iter()
                .all(|p| p.matches("(generic)").count() == 2),
        "every socket should be in generic mode: {:?}",
        report.ports
    );
    report.assert_agrees();
}
