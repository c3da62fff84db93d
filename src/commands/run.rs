//! `podwall run`: enforce on existing interfaces. Reloads the manifests when they change and on
//! SIGHUP (a bad change is rejected and the running policy stays); prints counters on SIGUSR1
//! and on exit (SIGINT, SIGTERM).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use datapath::filter::FilterConfig;
use datapath::flow_table::ExistingConnections;
use datapath::node::{Attachment, DatapathKind, Judging, NodeConfig, RunningNode};
use datapath::port::xdp::XdpConfig;
use policy::Published;
use serde::Deserialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::cluster::load_and_compile;
use crate::report::print_counters;

/// NODE.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFile {
    /// Manifest files or directories, watched for changes.
    pub manifests: Vec<PathBuf>,
    pub datapath: DatapathKind,
    /// The network namespace holding the interfaces (as `ip netns` names it); default: podwall's.
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub existing_connections: Existing,
    /// TUN only: a device in the node namespace for traffic to addresses that are not local pods.
    #[serde(default)]
    pub uplink: Option<String>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Pin the forwarding thread to this core (keep it off the cores of the pods' work).
    #[serde(default)]
    pub worker_cpu: Option<usize>,
    /// Run the forwarding thread under SCHED_FIFO at this priority (1–99), so that it is not kept
    /// waiting behind the kernel's packet processing on its core.
    #[serde(default)]
    pub worker_priority: Option<u8>,
    /// Decide a batch's new connections together before judging it, where the policy's tables
    /// outgrow the caches (the default); `false`: each when it is judged.
    #[serde(default = "default_decide_ahead")]
    pub decide_ahead: bool,
    pub pods: Vec<PodAttachment>,
}

fn default_decide_ahead() -> bool {
    true
}

fn default_mtu() -> u16 {
    1500
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Connections decided under an older policy are decided again on their next packet.
    #[default]
    Strict,
    /// They keep their verdict.
    Keep,
}

impl From<Existing> for ExistingConnections {
    fn from(e: Existing) -> Self {
        match e {
            Existing::Strict => ExistingConnections::Strict,
            Existing::Keep => ExistingConnections::Keep,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAttachment {
    /// `namespace/name`.
    pub pod: String,
    /// xdp: the interface towards the pod.
    #[serde(default)]
    pub pod_interface: Option<String>,
    /// xdp: the interface towards the node (bridge).
    #[serde(default)]
    pub node_interface: Option<String>,
    /// tun: the TUN device podwall creates for this pod.
    #[serde(default)]
    pub tun: Option<String>,
}

impl NodeFile {
    pub fn read(path: &Path) -> Result<NodeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read node config", path.display()))?;
        let value: serde_yaml::Value = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: invalid YAML", path.display()))?;
        let mut file: NodeFile = serde_path_to_error::deserialize(value)
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
        // Relative manifest paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        for m in &mut file.manifests {
            if m.is_relative() {
                *m = base.join(&*m);
            }
        }
        Ok(file)
    }

    pub fn attachments(&self, origin: &Path) -> Result<Vec<Attachment>> {
        let mut out = Vec::new();
        for (i, p) in self.pods.iter().enumerate() {
            let at = || format!("{}: pods[{i}]", origin.display());
            if p.pod.split_once('/').is_none() {
                bail!("{}.pod: {:?} is not namespace/name", at(), p.pod);
            }
            out.push(match self.datapath {
                DatapathKind::Xdp => match (&p.pod_interface, &p.node_interface, &p.tun) {
                    (Some(a), Some(b), None) => Attachment::Veth {
                        pod: p.pod.clone(),
                        pod_interface: a.clone(),
                        node_interface: b.clone(),
                    },
                    _ => bail!(
                        "{}: the xdp datapath needs podInterface and nodeInterface (and no tun)",
                        at()
                    ),
                },
                DatapathKind::Tun => match (&p.pod_interface, &p.node_interface, &p.tun) {
                    (None, None, Some(t)) => Attachment::Tun {
                        pod: p.pod.clone(),
                        device: t.clone(),
                    },
                    _ => bail!(
                        "{}: the tun datapath needs tun (and no podInterface/nodeInterface)",
                        at()
                    ),
                },
            });
        }
        if self.uplink.is_some() && self.datapath != DatapathKind::Tun {
            bail!("{}: uplink is for the tun datapath only", origin.display());
        }
        if let Some(priority) = self.worker_priority {
            if !datapath::port::cpu::REALTIME_PRIORITIES.contains(&priority) {
                bail!(
                    "{}: workerPriority: {priority} is not a SCHED_FIFO priority (1–99)",
                    origin.display()
                );
            }
        }
        Ok(out)
    }

    pub fn node_config(&self, origin: &Path) -> Result<NodeConfig> {
        Ok(NodeConfig {
            datapath: self.datapath,
            netns: self.netns.clone(),
            attachments: self.attachments(origin)?,
            uplink: self.uplink.clone(),
            tun_mtu: self.mtu,
            xdp: XdpConfig::default(),
            filter: FilterConfig {
                decide_ahead: self.decide_ahead,
                ..FilterConfig::default()
            }
            .with_existing_connections(self.existing_connections.into()),
            judging: Judging::Policy,
            worker_cpu: self.worker_cpu,
            worker_priority: self.worker_priority,
        })
    }
}

/// The newest modification time among the manifest paths (files, and files in directories).
fn newest_change(paths: &[PathBuf]) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if let Ok(m) = meta.modified() {
            *newest = Some(newest.map_or(m, |n: SystemTime| n.max(m)));
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    walk(&e.path(), newest);
                }
            }
        }
    }
    let mut newest = None;
    for p in paths {
        walk(p, &mut newest);
    }
    newest
}

fn reload(paths: &[PathBuf], published: &Published, why: &str) {
    match load_and_compile(paths) {
        Ok(compiled) => {
            let stats = compiled.classifier.stats();
            let generation = published.publish(compiled.classifier);
            eprintln!(
                "podwall: {why}: policy generation {generation} in force ({} rule slots, compiled in {:.1} ms)",
                stats.slots,
                compiled.compile_time.as_secs_f64() * 1e3
            );
        }
        Err(e) => eprintln!(
            "podwall: {why}: change rejected ({e}); generation {} stays in force",
            published.load().number
        ),
    }
}

pub fn run(config_path: &Path, existing: Option<Existing>) -> Result<ExitCode> {
    let mut file = NodeFile::read(config_path)?;
    if let Some(existing) = existing {
        file.existing_connections = existing;
    }
    let node_config = file.node_config(config_path)?;
    let compiled = load_and_compile(&file.manifests)?;
    let published = Arc::new(Published::new(compiled.classifier));
    let mut signals =
        Signals::new([SIGHUP, SIGUSR1, SIGINT, SIGTERM]).context("installing signal handlers")?;
    let node = RunningNode::start(node_config, Arc::clone(&published))?;
    for line in &node.ports.description {
        eprintln!("podwall: {line}");
    }
    eprintln!(
        "podwall: enforcing generation 0 on {} pod(s); SIGHUP reloads, SIGUSR1 prints counters",
        node.attachments().len()
    );
    let mut seen = newest_change(&file.manifests);
    loop {
        for signal in signals.pending() {
            match signal {
                SIGHUP => reload(&file.manifests, &published, "SIGHUP"),
                SIGUSR1 => print_counters(&node, &mut std::io::stderr())?,
                _ => {
                    print_counters(&node, &mut std::io::stderr())?;
                    let drops = node.stop()?;
                    eprintln!("podwall: stopped (port drops: {drops})");
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        let now = newest_change(&file.manifests);
        if now != seen {
            seen = now;
            reload(&file.manifests, &published, "manifests changed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_file(text: &str) -> Result<NodeFile> {
        let dir = std::env::temp_dir().join(format!(
            "podwall-node-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("NODE.yaml");
        std::fs::write(&path, text)?;
        let read = NodeFile::read(&path);
        std::fs::remove_dir_all(&dir)?;
        read
    }

    const NODE: &str = "manifests: []\ndatapath: tun\npods:\n- {pod: x/a, tun: pw0}\n";

    #[test]
    fn decide_ahead_is_on_unless_the_node_file_turns_it_off() -> Result<()> {
        let origin = Path::new("NODE.yaml");
        let default = node_file(NODE)?.node_config(origin)?;
        assert!(default.filter.decide_ahead);
        let off = node_file(&format!("{NODE}decideAhead: false\n"))?.node_config(origin)?;
        assert!(!off.filter.decide_ahead);
        let err = node_file(&format!("{NODE}decideAhead: sometimes\n")).expect_err("not a boolean");
        assert!(err.to_string().contains("decideAhead"), "{err}");
        Ok(())
    }
}
