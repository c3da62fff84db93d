//! `podwall lab --expect` agrees with `podwall test` on every probe of every
//! `tests/netpol-e2e` case (the upstream Kubernetes NetworkPolicy e2e scenarios): for each
//! probe, what got through the filter == the classifier's verdict == the probe file.
//!
//! All cases use the same nine pods (three cases only relabel them), so each datapath builds
//! one lab and publishes the cases' classifiers one after another while the filter runs,
//! which is how the upstream test moves from one policy to the next anyway (its "stage1" and
//! "stage2" cases are policy and label updates). Strict mode re-decides any flow of an older
//! generation, and every probe is a new connection. A case that fails is run again in a lab
//! of its own, and the report says whether it fails there too.
//!
//! Needs root (`PODWALL_SKIP_NETNS=1` skips) and `pw-probe` (`cargo test --workspace` builds
//! it).

use std::time::Instant;

use datapath::node::DatapathKind;
use netns_tests::{lab_options, require_probe_binary, run_case, run_cases, Case};

/// Every case through `datapath`; reports every disagreeing probe of every case at the end.
fn every_case_agrees(datapath: DatapathKind) {
    if !harness::require_root_or_skip() {
        return;
    }
    require_probe_binary();
    let start = Instant::now();
    let cases: Vec<Case> = Case::netpol_e2e_names()
        .iter()
        .map(|name| Case::netpol_e2e(name))
        .collect();
    assert!(
        cases.len() > 60,
        "expected the ~63 netpol-e2e cases, found {}",
        cases.len()
    );
    let reports = run_cases(&cases, lab_options(datapath));
    let probes: usize = reports.iter().map(|r| r.probes.len()).sum();
    let mut failures = Vec::new();
    for (case, report) in cases.iter().zip(&reports) {
        eprintln!(
            "{} through {datapath:?}: {} probes, {} disagree, {:.2} s",
            report.case,
            report.probes.len(),
            report.failures().count(),
            report.elapsed.as_secs_f64()
        );
        if report.passed() {
            continue;
        }
        // Alone, in a fresh lab: tells a datapath bug apart from one in switching policies.
        let alone = run_case(case, datapath);
        failures.push(format!(
            "{}\n  in a lab of its own: {}\n",
            report.describe_failures(),
            if alone.passed() {
                "all probes agree".to_string()
            } else {
                alone.describe_failures()
            }
        ));
    }
    eprintln!(
        "netpol-e2e through {datapath:?}: {} cases, {probes} probes, {} failing cases, {:.1} s",
        cases.len(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} netpol-e2e cases disagree through {datapath:?}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_netpol_e2e_case_agrees_through_af_xdp() {
    every_case_agrees(DatapathKind::Xdp);
}

#[test]
fn every_netpol_e2e_case_agrees_through_tun() {
    every_case_agrees(DatapathKind::Tun);
}
