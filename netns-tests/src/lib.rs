//! Scenario helpers for the network-namespace tests in `tests/` (they need root; see
//! [`harness::require_root_or_skip`]).
//!
//! A [`Case`] is manifests plus probes (`{from, to, protocol, port, allowed}`). [`run_case`]
//! loads and compiles it, builds a [`Lab`] (the topology of the manifests with the real filter
//! in front of every pod), sends every probe as real packets, and returns a [`CaseReport`] that
//! puts three answers side by side for each probe:
//!
//! - **policy**: `Classifier::connection(..)`, what `podwall test` computes;
//! - **packets**: whether the probe got through the filter, what `podwall lab` shows;
//! - **expected**: the `allowed` of the probe file.
//!
//! A test then asserts that all three agree ([`CaseReport::assert_agrees`]); a disagreement
//! between packets and policy is a datapath bug, one between policy and expectation a policy
//! (or test data) bug, and the report names the probe, the addresses, what `pw-probe` saw, and
//! what the filter counted for the pods involved.
//!
//! [`run_cases`] runs many cases over one lab per distinct topology, publishing each case's
//! classifier in turn (as a policy update while the filter runs), so that a suite of cases on
//! the same cluster pays for namespaces once.
//!
//! Every lab's namespaces are removed when it drops, also while a failing test unwinds.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use datapath::counters::Snapshot;
use datapath::node::DatapathKind;
use harness::lab::{Lab, LabOptions, LabProbe, Resolved};
use harness::probe::{probe_with, Probe as Attempt};
use policy::probe::Probe;
use policy::{Classifier, Published, Source};

/// How long a probe waits before it counts as blocked.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Probes in flight at once. Most of a blocked probe's time is waiting, so this is well above
/// the number of cores; it is kept moderate so that starting `pw-probe` processes does not
/// starve the filter's worker thread.
pub const PARALLEL: usize = 48;
/// How long the filter's worker may take to adopt a newly published classifier (it checks
/// between batches, and at least every 20 ms when idle); tests wait for the generation itself.
pub const ADOPT: Duration = Duration::from_secs(5);

/// Publishes `classifier` and waits until the lab's filter enforces it.
pub fn publish_and_wait(lab: &Lab, published: &Published, classifier: Classifier) {
    let generation = published.publish(classifier);
    assert!(
        lab.node().wait_for_generation(generation, ADOPT),
        "the filter did not adopt policy generation {generation} within {ADOPT:?}"
    );
}

/// Both datapaths, for tests that go through each.
pub const DATAPATHS: [DatapathKind; 2] = [DatapathKind::Xdp, DatapathKind::Tun];

/// The workspace root (where `tests/` and `examples/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("netns-tests lives inside the workspace")
        .to_path_buf()
}

/// Fails the test with instructions when `pw-probe` cannot be found. Call it after
/// [`harness::require_root_or_skip`].
pub fn require_probe_binary() {
    if let Err(e) = harness::probe::binary() {
        panic!(
            "{e}\nThe network-namespace tests run pw-probe inside the namespaces. \
             `cargo test --workspace` builds it; testing this crate alone needs \
             `cargo build -p podwall-harness --bin pw-probe` first."
        );
    }
}

/// The lab options of these tests: short probe timeouts, many probes at once, the lab's small
/// flow table, strict handling of existing connections.
pub fn lab_options(datapath: DatapathKind) -> LabOptions {
    LabOptions {
        datapath,
        probe_timeout: PROBE_TIMEOUT,
        parallel: PARALLEL,
        ..LabOptions::default()
    }
}

/// Manifests and the probes to run against them.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub sources: Vec<Source>,
    pub probes: Vec<Probe>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_probes(file: &str, text: &str) -> Vec<Probe> {
    policy::probe::parse_probes(file, text).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

impl Case {
    /// A case from texts: manifests (any number of multi-document YAML texts) and a
    /// PROBES.yaml list.
    pub fn inline(name: &str, manifests: &[&str], probes: &str) -> Case {
        Case {
            name: name.to_string(),
            sources: manifests
                .iter()
                .enumerate()
                .map(|(i, text)| Source::new(format!("{name}/manifests-{i}.yaml"), *text))
                .collect(),
            probes: parse_probes(&format!("{name}/probes.yaml"), probes),
        }
    }

    /// A case from files; paths are reported as given.
    pub fn from_files(name: &str, manifests: &[PathBuf], probes: &Path) -> Case {
        Case {
            name: name.to_string(),
            sources: manifests
                .iter()
                .map(|p| Source::new(p.display().to_string(), read(p)))
                .collect(),
            probes: parse_probes(&probes.display().to_string(), &read(probes)),
        }
    }

    /// `tests/docs-examples/<case>`: `cluster.yaml`, `policies.yaml`, `probes.yaml`.
    pub fn docs_example(case: &str) -> Case {
        let dir = workspace_root().join("tests/docs-examples").join(case);
        Case::from_files(
            &format!("docs-examples/{case}"),
            &[dir.join("cluster.yaml"), dir.join("policies.yaml")],
            &dir.join("probes.yaml"),
        )
    }

    /// `tests/calico-examples/<case>`: the shared `cluster.yaml`, the case's `policies.yaml`
    /// and `probes.yaml`.
    pub fn calico_example(case: &str) -> Case {
        let base = workspace_root().join("tests/calico-examples");
        let dir = base.join(case);
        Case::from_files(
            &format!("calico-examples/{case}"),
            &[base.join("cluster.yaml"), dir.join("policies.yaml")],
            &dir.join("probes.yaml"),
        )
    }

    /// `examples/three-tier`: frontend, backend, PostgreSQL in its own namespace, CoreDNS.
    pub fn three_tier() -> Case {
        let dir = workspace_root().join("examples/three-tier");
        Case::from_files(
            "examples/three-tier",
            &[
                dir.join("manifests/cluster.yaml"),
                dir.join("manifests/policies.yaml"),
            ],
            &dir.join("probes.yaml"),
        )
    }

    /// `tests/netpol-e2e/<case>`: the cluster its `case.yaml` names (relative to
    /// `tests/netpol-e2e`), its `policies.yaml` and `probes.yaml`.
    pub fn netpol_e2e(case: &str) -> Case {
        let base = workspace_root().join("tests/netpol-e2e");
        let dir = base.join(case);
        let case_yaml = dir.join("case.yaml");
        let cluster = read(&case_yaml)
            .lines()
            .find_map(|line| line.strip_prefix("cluster:"))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{}: no `cluster:` line", case_yaml.display()));
        Case::from_files(
            &format!("netpol-e2e/{case}"),
            &[base.join(cluster), dir.join("policies.yaml")],
            &dir.join("probes.yaml"),
        )
    }

    /// The names of every `tests/netpol-e2e` case (directories with a `case.yaml`), sorted.
    pub fn netpol_e2e_names() -> Vec<String> {
        let base = workspace_root().join("tests/netpol-e2e");
        let mut names: Vec<String> = std::fs::read_dir(&base)
            .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                path.join("case.yaml").is_file().then(|| {
                    path.file_name()
                        .expect("a directory entry has a name")
                        .to_string_lossy()
                        .into_owned()
                })
            })
            .collect();
        names.sort();
        names
    }

    /// The same case with only the probes the lab can send (see
    /// [`harness::probe::sendable`]); the others are checked offline (`tests/corpus.rs`).
    pub fn sendable_only(mut self) -> Case {
        self.probes.retain(|probe| {
            probe
                .packet_port()
                .is_ok_and(|(protocol, port)| harness::probe::sendable(protocol, port).is_ok())
        });
        self
    }

    /// Loads and compiles the manifests; panics with every load error.
    pub fn compile(&self) -> Classifier {
        let cluster = policy::load(&self.sources).unwrap_or_else(|rejected| {
            panic!("{}: the manifests do not load:\n{rejected}", self.name)
        });
        Classifier::compile(Arc::new(cluster))
    }
}

/// A probe resolved against a classifier: the lab's form of it and the policy's verdict.
#[derive(Debug, Clone)]
pub struct Planned {
    pub probe: Probe,
    pub resolved: Resolved,
    /// `classifier.connection(..).allowed()`.
    pub policy: bool,
}

/// Resolves every probe against `classifier`'s inventory and asks it for the verdict.
pub fn plan(classifier: &Classifier, probes: &[Probe]) -> Vec<Planned> {
    let inventory = &classifier.cluster().inventory;
    probes
        .iter()
        .enumerate()
        .map(|(i, probe)| {
            let connection = policy::probe::connection_of(inventory, probe)
                .unwrap_or_else(|e| panic!("probe [{i}] {} -> {}: {e}", probe.from, probe.to));
            let policy = classifier
                .connection(
                    connection.from,
                    connection.to,
                    connection.protocol,
                    connection.port,
                    connection.source_port,
                )
                .allowed();
            Planned {
                probe: probe.clone(),
                resolved: Resolved {
                    probe: LabProbe {
                        from: probe.from.clone(),
                        to: probe.to.clone(),
                        protocol: connection.protocol,
                        port: connection.port,
                        source_port: harness::lab::source_port_to_bind(
                            probe.source_port,
                            connection.source_port,
                            classifier.matches_source_ports(),
                        ),
                        family: probe.ip_family,
                    },
                    from_address: connection.from.address(),
                    to_address: connection.to.address(),
                },
                policy,
            }
        })
        .collect()
}

/// [`Lab::start`], panicking with the reason when it fails.
pub fn start_lab(published: Arc<Published>, probes: &[Resolved], options: LabOptions) -> Lab {
    Lab::start(published, probes, options)
        .unwrap_or_else(|e| panic!("starting the {:?} lab: {e}", options.datapath))
}

/// What one probe did: `Ok((got through, pw-probe's words))`, or why it could not run.
pub type Outcome = Result<(bool, String), String>;

/// Sends one probe from its source's namespace, as `Lab::probe` does, keeping `pw-probe`'s
/// description of what happened.
pub fn attempt(lab: &Lab, probe: &Resolved, timeout: Duration) -> Outcome {
    let from = lab
        .topology()
        .endpoint_by_ip(probe.from_address)
        .ok_or_else(|| format!("no endpoint has the address {}", probe.from_address))?;
    probe_with(
        from.namespace(),
        &Attempt {
            protocol: probe.probe.protocol,
            from: None,
            to: probe.to_address,
            port: probe.probe.port,
            source_port: probe.probe.source_port,
            timeout,
        },
    )
    .map(|o| (o.ok, o.detail))
    .map_err(|e| e.to_string())
}

/// Sends every probe, `parallel` at a time from a shared queue (a slow blocked probe does not
/// hold back the others); results in input order.
pub fn probe_all(
    lab: &Lab,
    probes: &[Resolved],
    timeout: Duration,
    parallel: usize,
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Outcome>>> = probes.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, probes.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(probe) = probes.get(i) else {
                    break;
                };
                let outcome = attempt(lab, probe, timeout);
                *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or_else(|| Err("the probe thread panicked".into()))
        })
        .collect()
}

/// The filter's counters per attachment (a pod's `namespace/name`, or an external host's
/// address under TUN).
pub fn counters(lab: &Lab) -> Vec<(String, Snapshot)> {
    lab.node()
        .attachments()
        .iter()
        .zip(lab.node().counters())
        .map(|(a, c)| (a.pod().to_string(), c.snapshot()))
        .collect()
}

/// One probe's three answers.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Position in the probe file.
    pub index: usize,
    pub probe: Probe,
    pub from_address: IpAddr,
    pub to_address: IpAddr,
    /// What the classifier says (`podwall test`).
    pub policy: bool,
    /// What the packets did (`podwall lab`), or why the probe could not run.
    pub packets: Result<bool, String>,
    /// `pw-probe`'s description of what happened.
    pub detail: String,
}

impl ProbeReport {
    pub fn expected(&self) -> bool {
        self.probe.allowed
    }

    /// Packets, policy and expectation all agree.
    pub fn agrees(&self) -> bool {
        self.packets == Ok(self.policy) && self.policy == self.probe.allowed
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.probe;
        write!(
            f,
            "[{}] {} -> {} {}/{} ({} -> {}): expected {}, policy {}, packets {}",
            self.index,
            p.from,
            p.to,
            p.protocol,
            p.port,
            self.from_address,
            self.to_address,
            verdict(p.allowed),
            verdict(self.policy),
            match &self.packets {
                Ok(through) => verdict(*through).to_string(),
                Err(e) => format!("not measured ({e})"),
            },
        )?;
        if !self.detail.is_empty() {
            write!(f, " [pw-probe: {}]", self.detail)?;
        }
        Ok(())
    }
}

/// Every probe of one case through one datapath.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub case: String,
    pub datapath: DatapathKind,
    pub probes: Vec<ProbeReport>,
    /// What the filter counted while this case's probes ran, per attachment.
    pub counters: Vec<(String, Snapshot)>,
    /// How the filter's ports were opened (datapath and, for AF_XDP, native or generic mode).
    pub ports: Vec<String>,
    /// The probes' wall time (the lab's start-up excluded).
    pub elapsed: Duration,
}

impl CaseReport {
    pub fn failures(&self) -> impl Iterator<Item = &ProbeReport> {
        self.probes.iter().filter(|p| !p.agrees())
    }

    pub fn passed(&self) -> bool {
        self.probes.iter().all(ProbeReport::agrees)
    }

    /// The failing probes, then the counters of the endpoints they involve.
    pub fn describe_failures(&self) -> String {
        let mut out = format!(
            "{} through {:?}: {} of {} probes disagree\n",
            self.case,
            self.datapath,
            self.failures().count(),
            self.probes.len()
        );
        let mut involved: Vec<&str> = Vec::new();
        for p in self.failures() {
            out.push_str(&format!("  {p}\n"));
            for end in [&p.probe.from, &p.probe.to] {
                if !involved.contains(&end.as_str()) {
                    involved.push(end);
                }
            }
        }
        out.push_str("  filter counters while this case ran (endpoints involved):\n");
        for (attachment, c) in &self.counters {
            let named = involved.contains(&attachment.as_str())
                || attachment.parse::<IpAddr>().is_ok_and(|ip| {
                    self.failures()
                        .any(|p| p.from_address == ip || p.to_address == ip)
                });
            if named {
                out.push_str(&format!("    {attachment}: {c:?}\n"));
            }
        }
        out
    }

    /// Panics, listing every probe that disagrees, unless all agree.
    pub fn assert_agrees(&self) {
        assert!(self.passed(), "{}", self.describe_failures());
        eprintln!(
            "{} through {:?}: {} probes agree ({:.1} s)",
            self.case,
            self.datapath,
            self.probes.len(),
            self.elapsed.as_secs_f64()
        );
    }
}

/// Runs `case` through each datapath and asserts that every probe agrees three ways; returns
/// the reports. Both datapaths run before anything is asserted, so a failure reports both.
/// Call it after [`harness::require_root_or_skip`].
pub fn assert_case_agrees(case: &Case) -> Vec<CaseReport> {
    require_probe_binary();
    let reports: Vec<_> = DATAPATHS.iter().map(|&d| run_case(case, d)).collect();
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.describe_failures())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    for report in &reports {
        report.assert_agrees();
    }
    reports
}

/// Runs one case in a lab of its own with [`lab_options`].
pub fn run_case(case: &Case, datapath: DatapathKind) -> CaseReport {
    run_cases(std::slice::from_ref(case), lab_options(datapath))
        .pop()
        .expect("one report per case")
}

/// The pods a topology is built from, `(namespace/name, addresses)`, sorted: the same list
/// means the same namespaces and addresses.
type TopologyKey = Vec<(String, Vec<IpAddr>)>;

fn topology_key(classifier: &Classifier) -> TopologyKey {
    let mut pods: TopologyKey = classifier
        .cluster()
        .inventory
        .pods
        .iter()
        .filter(|p| p.is_policy_endpoint())
        .map(|p| (p.key(), p.ips.clone()))
        .collect();
    pods.sort();
    pods
}

/// Runs cases, one lab per distinct topology: cases whose manifests have the same pods with
/// the same addresses share a lab (built with servers for all of their probes), and each
/// case's classifier is published in turn while the filter runs, before that case's probes
/// are sent. Reports come back in input order.
pub fn run_cases(cases: &[Case], options: LabOptions) -> Vec<CaseReport> {
    let mut classifiers: Vec<Option<Classifier>> = Vec::new();
    let mut plans: Vec<Vec<Planned>> = Vec::new();
    let mut groups: Vec<(TopologyKey, Vec<usize>)> = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let classifier = case.compile();
        plans.push(plan(&classifier, &case.probes));
        let key = topology_key(&classifier);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
        classifiers.push(Some(classifier));
    }

    let mut reports: Vec<Option<CaseReport>> = cases.iter().map(|_| None).collect();
    for (_, members) in groups {
        let everything: Vec<Resolved> = members
            .iter()
            .flat_map(|&i| plans[i].iter().map(|p| p.resolved.clone()))
            .collect();
        let first = classifiers[members[0]].take().expect("each case once");
        let published = Arc::new(Published::new(first));
        let lab = start_lab(Arc::clone(&published), &everything, options);
        for (n, &i) in members.iter().enumerate() {
            if n > 0 {
                publish_and_wait(
                    &lab,
                    &published,
                    classifiers[i].take().expect("each case once"),
                );
            }
            // Probes the policy denies go first: they wait out the timeout, and the allowed
            // ones finish meanwhile.
            let mut order: Vec<usize> = (0..plans[i].len()).collect();
            order.sort_by_key(|&k| plans[i][k].policy);
            let resolved: Vec<Resolved> = order
                .iter()
                .map(|&k| plans[i][k].resolved.clone())
                .collect();
            let before = counters(&lab);
            let start = Instant::now();
            let mut outcomes: Vec<Option<Outcome>> = plans[i].iter().map(|_| None).collect();
            for (k, outcome) in order.into_iter().zip(probe_all(
                &lab,
                &resolved,
                options.probe_timeout,
                options.parallel,
            )) {
                outcomes[k] = Some(outcome);
            }
            let elapsed = start.elapsed();
            let after = counters(&lab);
            let probes = plans[i]
                .iter()
                .zip(outcomes)
                .enumerate()
                .map(|(index, (planned, outcome))| {
                    let (packets, detail) = match outcome.expect("every probe ran") {
                        Ok((through, detail)) => (Ok(through), detail),
                        Err(e) => (Err(e), String::new()),
                    };
                    ProbeReport {
                        index,
                        probe: planned.probe.clone(),
                        from_address: planned.resolved.from_address,
                        to_address: planned.resolved.to_address,
                        policy: planned.policy,
                        packets,
                        detail,
                    }
                })
                .collect();
            reports[i] = Some(CaseReport {
                case: cases[i].name.clone(),
                datapath: options.datapath,
                probes,
                counters: after
                    .iter()
                    .zip(&before)
                    .map(|((name, a), (_, b))| (name.clone(), a.since(b)))
                    .collect(),
                ports: lab.node().ports.description.clone(),
                elapsed,
            });
        }
    }
    reports
        .into_iter()
        .map(|r| r.expect("every case ran"))
        .collect()
}
