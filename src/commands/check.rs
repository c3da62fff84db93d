use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::cluster::{load_and_compile_reporting, Report};
use crate::Output;

pub fn run(files: &[PathBuf], output: Output) -> Result<ExitCode> {
    let report = match output {
        Output::Text => Report::Text,
        Output::Json => Report::Json,
    };
    let compiled = load_and_compile_reporting(files, report)?;
    let cluster = compiled.cluster();
    let stats = compiled.classifier.stats();
    let rules: usize = cluster
        .policies
        .iter()
        .map(|p| p.ingress.len() + p.egress.len())
        .sum();
    let loaded_namespaces = cluster
        .inventory
        .namespaces
        .iter()
        .filter(|n| n.origin.is_some())
        .count();
    let peak_rss = peak_rss_bytes();
    match output {
        Output::Json => {
            let summary = serde_json::json!({
                "valid": true,
                "namespaces": loaded_namespaces,
                "namespaces_referenced": cluster.inventory.namespaces.len(),
                "pods": cluster.inventory.pods.len(),
                "policies": cluster.policies.len(),
                "rules": rules,
                "warnings": cluster.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                "compile_seconds": compiled.compile_time.as_secs_f64(),
                "classifier": stats,
                "peak_rss_bytes": peak_rss,
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Output::Text => {
            println!(
                "ok: {} namespaces ({} referenced), {} pods, {} with {} rules, {} tier(s)",
                loaded_namespaces,
                cluster.inventory.namespaces.len(),
                cluster.inventory.pods.len(),
                policy_counts(cluster),
                rules,
                cluster.tiers.len()
            );
            println!(
                "compiled in {:.3} ms: {} endpoint tables, {} rule slots, {} pod groups, {} selector terms",
                compiled.compile_time.as_secs_f64() * 1e3,
                stats.tables,
                stats.slots,
                stats.pod_groups,
                stats.selector_terms
            );
            if stats.product_tables > 0 {
                // Rules on addresses and ports only: one address search, one port search and
                // one load per lookup (BENCHMARKS.md, ClassBench).
                println!(
                    "{} table(s) answer from one address × port table (their rules look only at \
                     addresses and ports)",
                    stats.product_tables
                );
            }
            if stats.chunked_product_tables > 0 {
                // Too many address classes × port classes for one flat table: chunks shared
                // between rows, one load more per lookup (BENCHMARKS.md, ClassBench).
                println!(
                    "{} of them chunked (too many address × port cells for one flat table)",
                    stats.chunked_product_tables
                );
            }
            if stats.steps_product_tables > 0 {
                // Too many cells for one flat table, but every row changes rule at most four
                // times over the ports: a row is one small record, one load per lookup
                // (BENCHMARKS.md, ClassBench, steps).
                println!(
                    "{} of them as steps (too many address × port cells for one flat table; \
                     each address class differs from its address block's in at most five port \
                     ranges)",
                    stats.steps_product_tables
                );
            }
            if stats.joint_product_tables > 0 {
                // Source-port rules and the others in one table: one lookup per packet instead
                // of two (BENCHMARKS.md, ClassBench, joint products).
                println!(
                    "{} of them joint (their source-port rules answered from the same table)",
                    stats.joint_product_tables
                );
            }
            if stats.apart_tables > 0 {
                // Too many rules over every port to copy into each port class: such a table
                // costs a second address search per lookup (BENCHMARKS.md, ClassBench).
                println!(
                    "{} table(s) keep their rules over every port of a protocol apart from the \
                     port classes (too many to copy into each)",
                    stats.apart_tables
                );
            }
            print!("classifier memory: {}", human_bytes(stats.heap_bytes));
            match peak_rss {
                Some(rss) => println!(" (process peak RSS {})", human_bytes(rss)),
                None => println!(),
            }
            if !cluster.warnings.is_empty() {
                println!("{} warning(s) (on stderr)", cluster.warnings.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `7 NetworkPolicies`, or by kind when Calico policies are there too:
/// `3 policies (1 NetworkPolicy, 2 GlobalNetworkPolicies)`.
fn policy_counts(cluster: &policy::Cluster) -> String {
    use policy::netpol::PolicyKind;
    let kinds = [
        (PolicyKind::Kubernetes, "NetworkPolicy", "NetworkPolicies"),
        (
            PolicyKind::Calico,
            "Calico NetworkPolicy",
            "Calico NetworkPolicies",
        ),
        (
            PolicyKind::CalicoGlobal,
            "GlobalNetworkPolicy",
            "GlobalNetworkPolicies",
        ),
    ];
    let counted: Vec<String> = kinds
        .iter()
        .filter_map(|&(kind, one, many)| {
            let n = cluster.policies.iter().filter(|p| p.kind == kind).count();
            (n > 0).then(|| format!("{n} {}", if n == 1 { one } else { many }))
        })
        .collect();
    match counted.as_slice() {
        [] => "0 NetworkPolicies".to_string(),
        [only]
            if cluster
                .policies
                .iter()
                .all(|p| p.kind == PolicyKind::Kubernetes) =>
        {
            only.clone()
        }
        _ => format!(
            "{} policies ({})",
            cluster.policies.len(),
            counted.join(", ")
        ),
    }
}

pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The process's peak resident memory (`VmHWM`), where the kernel reports it.
fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
