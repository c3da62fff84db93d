//! Loading and compiling for the offline commands, reporting errors and warnings on stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use policy::{Classifier, Cluster};

use crate::input::read_sources;

/// A loaded and compiled cluster, and how long compiling took.
pub struct Compiled {
    pub classifier: Classifier,
    pub compile_time: Duration,
}

impl Compiled {
    pub fn cluster(&self) -> &Arc<Cluster> {
        self.classifier.cluster()
    }
}

/// The error a command exits with after loading failed; the details are already printed.
#[derive(Debug)]
pub struct InvalidManifests {
    pub errors: usize,
}

impl std::fmt::Display for InvalidManifests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} error(s) in the manifests; nothing was compiled",
            self.errors
        )
    }
}

impl std::error::Error for InvalidManifests {}

/// How load problems are reported: as text lines on stderr, or as one JSON document on stdout.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Text,
    Json,
}

pub fn load_and_compile(paths: &[PathBuf]) -> Result<Compiled> {
    load_and_compile_reporting(paths, Report::Text)
}

pub fn load_and_compile_reporting(paths: &[PathBuf], report: Report) -> Result<Compiled> {
    compile_sources(&read_sources(paths)?, report)
}

/// Loads and compiles manifest texts, reporting problems as `report` says.
pub fn compile_sources(sources: &[policy::Source], report: Report) -> Result<Compiled> {
    let cluster = match policy::load(sources) {
        Ok(cluster) => cluster,
        Err(rejected) => {
            match report {
                Report::Text => {
                    for w in &rejected.warnings {
                        eprintln!("warning: {w}");
                    }
                    for e in &rejected.errors {
                        eprintln!("error: {e}");
                    }
                }
                Report::Json => {
                    let entry = |location: &policy::Location, message: String| serde_json::json!({"location": location, "message": message});
                    let doc = serde_json::json!({
                        "valid": false,
                        "errors": rejected.errors.iter().map(|e| entry(&e.location, e.problem.to_string())).collect::<Vec<_>>(),
                        "warnings": rejected.warnings.iter().map(|w| entry(&w.location, w.message.clone())).collect::<Vec<_>>(),
                    });
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                }
            }
            return Err(InvalidManifests {
                errors: rejected.errors.len(),
            }
            .into());
        }
    };
    if report == Report::Text {
        for w in &cluster.warnings {
            eprintln!("warning: {w}");
        }
    }
    let start = Instant::now();
    let classifier = Classifier::compile(Arc::new(cluster));
    Ok(Compiled {
        classifier,
        compile_time: start.elapsed(),
    })
}

/// Parses a PROBES.yaml text; every error names the file and the probe.
pub fn parse_probes(name: &str, text: &str) -> Result<Vec<policy::probe::Probe>> {
    policy::probe::parse_probes(name, text).map_err(|errors| {
        anyhow::anyhow!(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    })
}
