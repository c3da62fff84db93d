//! Kubernetes label selectors (`matchLabels`, `matchExpressions`), validated like the API server
//! validates them, and label syntax checks shared by the loader.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Diagnostics, Location, Problem};

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One `matchExpressions` entry (and each `matchLabels` pair, as `In` with one value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A validated label selector: the conjunction of its requirements. Empty selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector `{}`.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort();
        requirements.dedup();
        LabelSelector { requirements }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn selects_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The values a pod must carry for `key` (from an `In` requirement or a `matchLabels` pair),
    /// used to look candidates up in a label index instead of scanning every pod.
    pub fn required_values(&self) -> Option<(&str, &BTreeSet<String>)> {
        self.requirements
            .iter()
            .filter_map(|r| match r {
                Requirement::In(k, v) => Some((k.as_str(), v)),
                _ => None,
            })
            .min_by_key(|(_, v)| v.len())
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.requirements.is_empty() {
            return write!(f, "{{}}");
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::In(k, v) if v.len() == 1 => {
                    format!("{k}={}", v.iter().next().expect("one value"))
                }
                Requirement::In(k, v) => format!("{k} in ({})", join(v)),
                Requirement::NotIn(k, v) => format!("{k} notin ({})", join(v)),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

fn join(values: &BTreeSet<String>) -> String {
    values.iter().cloned().collect::<Vec<_>>().join(",")
}

/// The `LabelSelector` as it is written in YAML.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLabelSelector {
    #[serde(default)]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub match_expressions: Option<Vec<RawRequirement>>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub operator: String,
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

/// Validates a selector as the API server does; problems go to `diags` at `at.field`.
pub fn validate_selector(
    raw: &RawLabelSelector,
    at: &Location,
    diags: &mut Diagnostics,
) -> LabelSelector {
    let mut requirements = Vec::new();
    for (key, value) in raw.match_labels.iter().flatten() {
        // The API server reports both key and value problems on `matchLabels` itself.
        let path = at.at(format!("{}.matchLabels", at.field));
        check_label_key(key, &path, diags);
        check_label_value(value, &path, diags);
        requirements.push(Requirement::In(
            key.clone(),
            BTreeSet::from([value.clone()]),
        ));
    }
    for (i, expr) in raw.match_expressions.iter().flatten().enumerate() {
        let path = format!("{}.matchExpressions[{i}]", at.field);
        check_label_key(&expr.key, &at.at(format!("{path}.key")), diags);
        let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
        for (j, v) in expr.values.iter().flatten().enumerate() {
            check_label_value(v, &at.at(format!("{path}.values[{j}]")), diags);
        }
        let values_at = at.at(format!("{path}.values"));
        let key = expr.key.clone();
        let requirement = match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    diags.error(
                        values_at,
                        Problem::Schema {
                            message: "Required value: must be specified when `operator` is 'In' or 'NotIn'".into(),
                        },
                    );
                }
                if expr.operator == "In" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    diags.error(
                        values_at,
                        Problem::Schema {
                            message: "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".into(),
                        },
                    );
                }
                if expr.operator == "Exists" {
                    Requirement::Exists(key)
                } else {
                    Requirement::DoesNotExist(key)
                }
            }
            other => {
                diags.error(
                    at.at(format!("{path}.operator")),
                    Problem::InvalidName {
                        value: other.to_string(),
                        reason: "not a valid selector operator (In, NotIn, Exists, DoesNotExist)"
                            .into(),
                    },
                );
                continue;
            }
        };
        requirements.push(requirement);
    }
    LabelSelector::from_requirements(requirements)
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn qualified_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    let ok_chars = name
        .chars()
        .all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.');
    let ok_ends = name.starts_with(is_alnum) && name.ends_with(is_alnum);
    if !ok_chars || !ok_ends {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    None
}

/// RFC 1123 subdomain: lowercase alphanumerics, '-' and '.', at most 253 characters.
pub fn dns_subdomain_error(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 253 {
        return Some("must be no more than 253 characters and non-empty".into());
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if !labels_ok {
        return Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
    }
    None
}

fn check_label_key(key: &str, at: &Location, diags: &mut Diagnostics) {
    let reason = match key.split_once('/') {
        Some((prefix, name)) => dns_subdomain_error(prefix)
            .map(|r| format!("prefix part {r}"))
            .or_else(|| qualified_name_error(name)),
        None => qualified_name_error(key),
    };
    if let Some(reason) = reason {
        diags.error(
            at.clone(),
            Problem::InvalidName {
                value: key.to_string(),
                reason,
            },
        );
    }
}

fn check_label_value(value: &str, at: &Location, diags: &mut Diagnostics) {
    if value.is_empty() {
        return;
    }
    if let Some(reason) = qualified_name_error(value) {
        diags.error(
            at.clone(),
            Problem::InvalidName {
                value: value.to_string(),
                reason: reason.replace("name part", "a valid label value"),
            },
        );
    }
}

/// Checks labels found on pods and namespaces.
pub fn validate_labels(labels: &Labels, at: &Location, diags: &mut Diagnostics) {
    for (key, value) in labels {
        check_label_key(key, at, diags);
        check_label_value(value, &at.at(format!("{}[{key}]", at.field)), diags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn not_in_matches_pods_without_the_key() {
        let r = Requirement::NotIn("tier".into(), set(&["db"]));
        assert!(r.matches(&labels(&[])));
        assert!(r.matches(&labels(&[("tier", "web")])));
        assert!(!r.matches(&labels(&[("tier", "db")])));
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::everything().matches(&labels(&[("a", "b")])));
        assert!(LabelSelector::everything().matches(&labels(&[])));
    }

    #[test]
    fn in_with_no_values_is_rejected() {
        let raw = RawLabelSelector {
            match_labels: None,
            match_expressions: Some(vec![RawRequirement {
                key: "app".into(),
                operator: "In".into(),
                values: None,
            }]),
        };
        let mut diags = Diagnostics::default();
        validate_selector(
            &raw,
            &Location::default().at("spec.podSelector"),
            &mut diags,
        );
        assert_eq!(diags.errors.len(), 1);
        assert_eq!(
            diags.errors[0].location.field,
            "spec.podSelector.matchExpressions[0].values"
        );
    }

    #[test]
    fn label_keys_with_prefixes_are_checked() {
        let mut diags = Diagnostics::default();
        check_label_key(
            "kubernetes.io/metadata.name",
            &Location::default(),
            &mut diags,
        );
        check_label_key("Bad_Prefix/x", &Location::default(), &mut diags);
        check_label_key("-x", &Location::default(), &mut diags);
        assert_eq!(diags.errors.len(), 2);
    }
}
