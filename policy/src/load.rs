//! Reading manifest text: multi-document YAML, `kind: List` wrappers, kind dispatch, duplicate
//! detection. Takes text (the caller reads files); returns the cluster model or every error.

use std::collections::HashMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use crate::calico;
use crate::calico::tier::{by_order, Tier};
use crate::error::{Diagnostics, Error, Location, Problem, Warning};
use crate::inventory::{Inventory, Namespace, Pod};
use crate::k8s;
use crate::netpol::{NamespaceScope, NetworkPolicy, Peer, PolicyKind, DEFAULT_TIER};

/// One input text and the name it is reported under (a path, or `-`).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// A loaded, valid cluster: what the classifier is compiled from.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub inventory: Inventory,
    /// In evaluation order (Calico's: lower `order` first, missing last, then name); always
    /// holds the `default` tier.
    pub tiers: Vec<Tier>,
    /// In evaluation order: by tier, then `order` (Kubernetes policies have 1000, missing is
    /// last), then name (see [`NetworkPolicy::ordering_name`]).
    pub policies: Vec<NetworkPolicy>,
    pub warnings: Vec<Warning>,
}

impl Cluster {
    /// The index in [`Cluster::tiers`] of the tier of `policy`.
    pub fn tier_of(&self, policy: usize) -> usize {
        let name = &self.policies[policy].tier;
        self.tiers
            .iter()
            .position(|t| &t.name == name)
            .expect("the loader accepts only policies of loaded tiers")
    }
}

/// Loading failed: every error found, and the warnings.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub errors: Vec<Error>,
    pub warnings: Vec<Warning>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        write!(f, "{} error(s)", self.errors.len())
    }
}

impl std::error::Error for Rejected {}

/// Loads every source; all errors of all sources are reported together.
pub fn load(sources: &[Source]) -> Result<Cluster, Rejected> {
    let mut loader = Loader::default();
    for source in sources {
        loader.source(source);
    }
    loader.finish()
}

#[derive(Default)]
struct Loader {
    diags: Diagnostics,
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    policies: Vec<NetworkPolicy>,
    tiers: Vec<Tier>,
    seen: HashMap<(String, String, String), Location>,
}

impl Loader {
    fn source(&mut self, source: &Source) {
        for (index, document) in serde_yaml::Deserializer::from_str(&source.text).enumerate() {
            let at = Location::document(&source.name, index);
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => self.document(value, at),
                Err(e) => {
                    self.diags.error(
                        at,
                        Problem::Yaml {
                            message: e.to_string(),
                        },
                    );
                    // The parser cannot resynchronise after a syntax error.
                    return;
                }
            }
        }
    }

    fn document(&mut self, value: Value, at: Location) {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let is_list = kind == "List" || kind.ends_with("List") && value.get("items").is_some();
        if !is_list {
            self.object(value, at);
            return;
        }
        // Moved out, not copied: `kubectl get -o yaml` writes every object into one list.
        let items = match value {
            Value::Mapping(mut list) => list.remove("items"),
            _ => None,
        };
        let Some(Value::Sequence(items)) = items else {
            self.diags.error(at.at("items"), Problem::Required);
            return;
        };
        for (i, item) in items.into_iter().enumerate() {
            let item_at = Location {
                item: Some(i),
                ..at.clone()
            };
            self.object(item, item_at);
        }
    }

    fn object(&mut self, value: Value, mut at: Location) {
        if !value.is_mapping() {
            let found = match value {
                Value::Sequence(_) => "a list",
                Value::String(_) => "a string",
                _ => "a scalar",
            };
            self.diags.error(
                at,
                Problem::Schema {
                    message: format!(
                        "expected a Kubernetes object (a mapping with apiVersion and kind), found {found}"
                    ),
                },
            );
            return;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        at.object = Some(object_label(&kind, &value));
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => {
                if let Some(raw) = self.typed::<k8s::RawNamespace>(value, &at) {
                    let ns = k8s::namespace_from(raw, &at, &mut self.diags);
                    if self.first_definition("Namespace", "", &ns.name, &at) {
                        self.namespaces.push(ns);
                    }
                }
            }
            ("v1", "Pod") => {
                if let Some(raw) = self.typed::<k8s::RawPod>(value, &at) {
                    let pod = k8s::pod_from(raw, &at, &mut self.diags);
                    if self.first_definition("Pod", &pod.namespace, &pod.name, &at) {
                        self.pods.push(pod);
                    }
                }
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                if let Some(raw) = self.typed::<k8s::RawNetworkPolicy>(value, &at) {
                    let policy = k8s::network_policy_from(raw, &at, &mut self.diags);
                    if self.first_definition("NetworkPolicy", &policy.namespace, &policy.name, &at)
                    {
                        self.policies.push(policy);
                    }
                }
            }
            ("projectcalico.org/v3", "NetworkPolicy" | "GlobalNetworkPolicy") => {
                let policy_kind = if kind == "NetworkPolicy" {
                    PolicyKind::Calico
                } else {
                    PolicyKind::CalicoGlobal
                };
                if let Some(raw) = self.typed::<calico::load::RawCalicoPolicy>(value, &at) {
                    let policy = calico::load::policy_from(raw, policy_kind, &at, &mut self.diags);
                    if let Some(policy) = policy {
                        let key = format!("projectcalico.org/v3 {kind}");
                        if self.first_definition(&key, &policy.namespace, &policy.name, &at) {
                            self.policies.push(policy);
                        }
                    }
                }
            }
            ("projectcalico.org/v3", "Tier") => {
                if let Some(raw) = self.typed::<calico::load::RawTier>(value, &at) {
                    let tier = calico::load::tier_from(raw, &at, &mut self.diags);
                    if self.first_definition("Tier", "", &tier.name, &at) {
                        self.tiers.push(tier);
                    }
                }
            }
            ("", _) | (_, "") => self.diags.error(
                at.at(if api_version.is_empty() {
                    "apiVersion"
                } else {
                    "kind"
                }),
                Problem::Required,
            ),
            ("projectcalico.org/v3", "NetworkSet" | "GlobalNetworkSet") => self.diags.warn(
                at,
                format!(
                    "skipped: podwall does not support {kind} objects yet: Calico rule selectors match \
                     only pods here, so a rule that selects this set does not match its networks \
                     (write them as `nets` instead)"
                ),
            ),
            _ => self.diags.warn(
                at,
                format!("skipped: podwall does not use {api_version} {kind} objects"),
            ),
        }
    }

    /// Deserializes with the path of the failing field, so that type errors say where they are.
    fn typed<T: DeserializeOwned>(&mut self, value: Value, at: &Location) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." { String::new() } else { path };
                self.diags.error(
                    at.at(field),
                    Problem::Schema {
                        message: e.into_inner().to_string(),
                    },
                );
                None
            }
        }
    }

    fn first_definition(&mut self, kind: &str, namespace: &str, name: &str, at: &Location) -> bool {
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        if let Some(first) = self.seen.get(&key) {
            let what = if namespace.is_empty() {
                format!("{kind} {name}")
            } else {
                format!("{kind} {namespace}/{name}")
            };
            let first = first.to_string();
            self.diags
                .error(at.clone(), Problem::Duplicate { what, first });
            return false;
        }
        self.seen.insert(key, at.clone());
        true
    }

    fn finish(mut self) -> Result<Cluster, Rejected> {
        self.warn_about_shared_addresses();
        if !self.tiers.iter().any(|t| t.name == DEFAULT_TIER) {
            self.tiers.push(Tier::implicit_default());
        }
        for policy in &self.policies {
            if !self.tiers.iter().any(|t| t.name == policy.tier) {
                self.diags.error(
                    policy.origin.at("spec.tier"),
                    Problem::Invalid {
                        value: policy.tier.clone(),
                        reason: "no projectcalico.org/v3 Tier of that name was loaded".into(),
                    },
                );
            }
        }
        if !self.diags.errors.is_empty() {
            return Err(Rejected {
                errors: self.diags.errors,
                warnings: self.diags.warnings,
            });
        }
        let referenced: Vec<String> = self
            .policies
            .iter()
            .flat_map(|p| {
                let own = std::iter::once(p.namespace.clone()).filter(|n| !n.is_empty());
                let peers = p.ingress.iter().chain(&p.egress).flat_map(|r| &r.peers);
                own.chain(peers.filter_map(|peer| match peer {
                    Peer::Pods {
                        namespaces: NamespaceScope::Same(ns),
                        ..
                    } => Some(ns.clone()),
                    _ => None,
                }))
            })
            .collect();
        let mut tiers = self.tiers;
        let mut policies = self.policies;
        sort_for_evaluation(&mut tiers, &mut policies);
        Ok(Cluster {
            inventory: Inventory::new(self.namespaces, self.pods, referenced),
            tiers,
            policies,
            warnings: self.diags.warnings,
        })
    }

    fn warn_about_shared_addresses(&mut self) {
        let mut owners: HashMap<std::net::IpAddr, &Pod> = HashMap::new();
        for pod in self.pods.iter().filter(|p| p.is_policy_endpoint()) {
            for ip in &pod.ips {
                if let Some(first) = owners.insert(*ip, pod) {
                    self.diags.warnings.push(Warning {
                        location: pod.origin.at("status.podIPs"),
                        message: format!(
                            "address {ip} is also used by pod {}; podwall attributes it to {}",
                            first.key(),
                            first.key()
                        ),
                    });
                    owners.insert(*ip, first);
                }
            }
        }
    }
}

/// Puts tiers and policies in Calico's evaluation order (see [`Cluster`]). Every policy's tier
/// must be among `tiers`.
pub fn sort_for_evaluation(tiers: &mut [Tier], policies: &mut [NetworkPolicy]) {
    by_order(tiers, |t| (t.order, t.name.clone()));
    by_order(policies, |p| (p.order, p.ordering_name()));
    // Stable: keeps the order within each tier.
    policies.sort_by_key(|p| tiers.iter().position(|t| t.name == p.tier));
}

fn object_label(kind: &str, value: &Value) -> String {
    let kind = if kind.is_empty() { "object" } else { kind };
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_one(text: &str) -> Result<Cluster, Rejected> {
        load(&[Source::new("test.yaml", text)])
    }

    #[test]
    fn list_wrappers_and_multiple_documents_are_read() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: x}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {pod: a}}
  status: {podIP: 10.0.0.1}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
"#;
        let cluster = load_one(text).unwrap();
        assert_eq!(cluster.inventory.pods.len(), 1);
        assert_eq!(cluster.policies.len(), 1);
        assert_eq!(
            cluster.inventory.namespace_labels("x")["kubernetes.io/metadata.name"],
            "x"
        );
    }

    #[test]
    fn a_list_without_a_list_of_items_is_an_error_and_items_are_located() {
        for items in ["", "items: {a: 1}\n"] {
            let err = load_one(&format!("apiVersion: v1\nkind: List\n{items}")).unwrap_err();
            assert_eq!(
                err.errors[0].location.to_string(),
                "test.yaml: document 0: items"
            );
            assert_eq!(err.errors[0].problem, Problem::Required);
        }
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, \
                    metadata: {name: x}}\n- {apiVersion: networking.k8s.io/v1, kind: \
                    NetworkPolicy, metadata: {name: a, namespace: x}, spec: {bogus: 1}}\n";
        let err = load_one(text).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(
            err.errors[0]
                .location
                .to_string()
                .starts_with("test.yaml: document 0 items[1]: NetworkPolicy x/a: spec"),
            "{}",
            err.errors[0].location
        );
    }

    #[test]
    fn other_kinds_are_skipped_with_a_warning() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n";
        let cluster = load_one(text).unwrap();
        assert_eq!(cluster.warnings.len(), 1);
        assert!(cluster.warnings[0].message.contains("v1 Service"));
    }

    #[test]
    fn unknown_spec_fields_are_errors_with_their_path() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelecter: {}
"#;
        let err = load_one(text).unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(
            err.errors[0].location.field,
            "spec.ingress[0].from[0].podSelecter"
        );
        assert!(err.errors[0].to_string().contains("podSelecter"));
    }

    #[test]
    fn every_error_of_a_run_is_reported() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
    ports:
    - {port: 0}
    - {protocol: ICMP, port: 80}
"#;
        let err = load_one(text).unwrap_err();
        let fields: Vec<_> = err
            .errors
            .iter()
            .map(|e| e.location.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.ingress[0].from[0].ipBlock.cidr",
                "spec.ingress[0].ports[0].port",
                "spec.ingress[0].ports[1].protocol"
            ]
        );
    }

    #[test]
    fn a_missing_namespace_gets_only_the_automatic_label() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: ghost}\n";
        let cluster = load_one(text).unwrap();
        let ns = cluster.inventory.namespace("ghost").unwrap();
        assert!(ns.origin.is_none());
        assert_eq!(ns.labels.len(), 1);
    }

    #[test]
    fn a_shared_pod_address_belongs_to_the_first_pod_with_a_warning() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\nstatus: {podIP: 10.0.0.1}\n";
        let cluster = load_one(text).unwrap();
        let owner = cluster
            .inventory
            .pod_by_address("10.0.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(cluster.inventory.pod(owner).name, "a");
        assert!(cluster.warnings[0].message.contains("also used by pod x/a"));
    }

    #[test]
    fn duplicate_objects_are_errors() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n";
        let err = load_one(text).unwrap_err();
        assert!(matches!(err.errors[0].problem, Problem::Duplicate { .. }));
        assert_eq!(err.errors[0].location.document, 1);
    }

    #[test]
    fn a_document_that_is_not_an_object_is_an_error() {
        let err = load_one("- {from: x/a, to: y/b, port: 80, allowed: true}\n").unwrap_err();
        assert!(
            err.errors[0].to_string().contains("found a list"),
            "{}",
            err.errors[0]
        );
    }

    #[test]
    fn yaml_syntax_errors_name_the_document() {
        let err = load_one("a: [1, 2\n").unwrap_err();
        assert!(matches!(err.errors[0].problem, Problem::Yaml { .. }));
    }
}
