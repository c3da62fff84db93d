//! Calico `projectcalico.org/v3` policy support.
//!
//! So far only the selector language ([`selector`]) is here: parsing with column-exact errors
//! and evaluation against labels. Loading Calico NetworkPolicy and GlobalNetworkPolicy objects,
//! their ordering, actions (Deny, Log, Pass) and enforcement are not built yet (issue #5).

pub mod selector;
