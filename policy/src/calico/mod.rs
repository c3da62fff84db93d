//! Calico `projectcalico.org/v3` policy support: the selector language ([`selector`]), rule
//! conditions ([`rule`]), tiers ([`tier`]) and loading ([`load`]).

pub mod load;
pub mod rule;
pub mod selector;
pub mod tier;

use crate::inventory::{Namespace, Pod};
use crate::selector::Labels;

/// The label Calico puts on every workload endpoint: its namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// The label Calico puts on every workload endpoint: its orchestrator.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// The label Calico gives every namespace (as a profile): its name.
pub const NAMESPACE_NAME_LABEL: &str = "projectcalico.org/name";

/// A pod's labels as Calico selectors see them: its own, plus the namespace and orchestrator.
pub fn pod_labels(pod: &Pod) -> Labels {
    let mut labels = pod.labels.clone();
    labels.insert(NAMESPACE_LABEL.to_string(), pod.namespace.clone());
    labels.insert(ORCHESTRATOR_LABEL.to_string(), "k8s".to_string());
    labels
}

/// A namespace's labels as Calico namespace selectors see them: its own, plus its name.
pub fn namespace_labels(namespace: &Namespace) -> Labels {
    let mut labels = namespace.labels.clone();
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.name.clone());
    labels
}
