//! A rule list all the way to a classifier: convert, render the manifest, load it with
//! `policy::load` (the same path as `podwall check -f`), compile; each phase timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use policy::compile::CompileOptions;
use policy::{Classifier, Source};

use super::check::Target;
use super::convert::{convert, Conversion};
use super::manifest::{self, manifest, policy_name};
use super::parse::ClassBenchRule;

/// A compiled rule list and what it took.
#[derive(Debug)]
pub struct Built {
    pub conversion: Conversion,
    pub classifier: Classifier,
    pub target: Target,
    /// Size of the manifest text.
    pub manifest_bytes: usize,
    /// Converting and rendering the manifest.
    pub render: Duration,
    /// `policy::load` (YAML parsing and validation).
    pub load: Duration,
    /// `Classifier::compile`.
    pub compile: Duration,
}

/// Converts `rules` into the GlobalNetworkPolicy for list `list` (e.g. `acl1_1000`), loads it
/// with its Namespace and Pod, and compiles it.
pub fn build(list: &str, rules: &[ClassBenchRule]) -> Result<Built> {
    build_with(list, rules, CompileOptions::default())
}

/// [`build`] with the compiler's options given.
pub fn build_with(list: &str, rules: &[ClassBenchRule], options: CompileOptions) -> Result<Built> {
    let started = Instant::now();
    let conversion = convert(rules).with_context(|| format!("converting {list}"))?;
    let name = policy_name(list);
    let text = manifest(&name, &conversion.rules);
    let manifest_bytes = text.len();
    let render = started.elapsed();

    let started = Instant::now();
    let cluster = policy::load(&[Source::new(format!("{list}.yaml"), text)])
        .map_err(|rejected| anyhow!("loading the converted {list}:\n{rejected}"))?;
    let load = started.elapsed();
    let pod = cluster
        .inventory
        .pod_id(manifest::NAMESPACE, manifest::POD)
        .context("the loaded cluster has no target pod")?;
    let policy = cluster
        .policies
        .iter()
        .position(|p| p.name == name)
        .with_context(|| format!("the loaded cluster has no policy {name}"))?;
    let target = Target {
        pod,
        policy: policy as u32,
        tier: cluster.tier_of(policy) as u32,
    };

    let started = Instant::now();
    let classifier = Classifier::compile_with(Arc::new(cluster), options);
    let compile = started.elapsed();
    Ok(Built {
        conversion,
        classifier,
        target,
        manifest_bytes,
        render,
        load,
        compile,
    })
}
