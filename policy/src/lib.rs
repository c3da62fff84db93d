//! podwall's policy engine: Kubernetes object models, loading and validation, label selectors,
//! the compiler and the compiled classifier, explanations and policy probes.
//!
//! Pure by design: it takes manifest text and returns values. It opens no files, starts no
//! threads, reads no clock and contains no `unsafe`.
#![forbid(unsafe_code)]

pub mod calico;
pub mod classifier;
pub mod compile;
pub mod decision;
pub mod error;
pub mod explain;
pub mod inventory;
pub mod k8s;
pub mod load;
pub mod netpol;
pub mod probe;
pub mod published;
pub mod reference;
pub mod selector;

pub use classifier::{Classifier, Query, Stats};
pub use decision::{ConnectionDecision, Decision, Party, RuleRef};
pub use error::{Error, Location, Problem, Warning};
pub use inventory::{Inventory, PodId, Protocol};
pub use load::{load, Cluster, Rejected, Source};
pub use netpol::Direction;
pub use published::Published;
