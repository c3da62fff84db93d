//! Every manifest under `tests/invalid/` is rejected (or accepted with warnings) exactly as its
//! `.expect.yaml` says: the same (document, object, field) triples, no others, and messages that
//! contain the expected fragment. The cases follow the Kubernetes API server's validation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use policy::{load, Location, Source};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Expected {
    #[serde(default)]
    errors: Vec<Entry>,
    #[serde(default)]
    warnings: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    document: usize,
    object: String,
    field: String,
    contains: String,
}

/// `NetworkPolicy default/name` → `default/name`, as the expectations write objects.
fn object_of(location: &Location) -> String {
    location
        .object
        .as_deref()
        .and_then(|o| o.split_once(' ').map(|(_, name)| name.to_string()))
        .unwrap_or_default()
}

fn compare(case: &Path, kind: &str, expected: &[Entry], got: &[(Location, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let want: BTreeSet<(usize, String, String)> = expected
        .iter()
        .map(|e| (e.document, e.object.clone(), e.field.clone()))
        .collect();
    let have: BTreeSet<(usize, String, String)> = got
        .iter()
        .map(|(l, _)| (l.document, object_of(l), l.field.clone()))
        .collect();
    for missing in want.difference(&have) {
        problems.push(format!(
            "{}: {kind} {missing:?} not reported",
            case.display()
        ));
    }
    for extra in have.difference(&want) {
        let message = got
            .iter()
            .find(|(l, _)| (l.document, object_of(l), l.field.clone()) == *extra)
            .map(|(_, m)| m.as_str())
            .unwrap_or("");
        problems.push(format!(
            "{}: unexpected {kind} {extra:?}: {message}",
            case.display()
        ));
    }
    for e in expected {
        let matching = got.iter().any(|(l, message)| {
            (l.document, object_of(l), l.field.clone())
                == (e.document, e.object.clone(), e.field.clone())
                && message.to_lowercase().contains(&e.contains.to_lowercase())
        });
        if !matching && have.contains(&(e.document, e.object.clone(), e.field.clone())) {
            let messages: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
            problems.push(format!(
                "{}: {kind} at {} lacks {:?}: {messages:?}",
                case.display(),
                e.field,
                e.contains
            ));
        }
    }
    problems
}

#[test]
fn invalid_manifests_are_reported_like_the_api_server_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && !p.to_string_lossy().ends_with(".expect.yaml")
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 40,
        "only {} invalid cases found",
        cases.len()
    );
    let mut problems = Vec::new();
    for case in &cases {
        let expect_path = case.with_extension("expect.yaml");
        let expected: Expected =
            serde_yaml::from_str(&std::fs::read_to_string(&expect_path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
        let text = std::fs::read_to_string(case).unwrap();
        let (errors, warnings) = match load(&[Source::new(case.display().to_string(), text)]) {
            Ok(cluster) => (Vec::new(), cluster.warnings),
            Err(rejected) => (rejected.errors, rejected.warnings),
        };
        let errors: Vec<(Location, String)> = errors
            .iter()
            .map(|e| (e.location.clone(), e.to_string()))
            .collect();
        let warnings: Vec<(Location, String)> = warnings
            .iter()
            .map(|w| (w.location.clone(), w.to_string()))
            .collect();
        if expected.errors.is_empty() && !errors.is_empty() {
            problems.push(format!("{}: should be accepted", case.display()));
        }
        problems.extend(compare(case, "error", &expected.errors, &errors));
        problems.extend(compare(case, "warning", &expected.warnings, &warnings));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
