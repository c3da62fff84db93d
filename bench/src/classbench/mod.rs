//! ClassBench (Taylor and Turner's packet-classification benchmark) as Calico policy: rule lists
//! and header traces read from the shared data directory, converted into one ordered
//! `projectcalico.org/v3` GlobalNetworkPolicy, and a plain linear scan over the converted rules
//! that podwall's classifier is checked against. Used by `benches/classbench.rs`,
//! `tests/classbench.rs` and the `classbench_to_calico` and `classbench_report` binaries.
//!
//! # The conversion
//!
//! ClassBench rule *i* (0-based, in file order; the first line has the highest priority)
//! becomes ingress rule *i* **and** egress rule *i* of the GlobalNetworkPolicy
//! `classbench-<list>` (`selector: all()`, `types: [Ingress, Egress]`, `order: 100`), which
//! selects one pod, `bench/target` (198.18.0.1), in a namespace `bench`. The mapping is one to
//! one, so "first ClassBench rule that matches" is "Calico rule with the same index".
//!
//! - **Action:** `Deny` when `i % 3 == 2`, else `Allow` (ClassBench rules have no action; this
//!   gives an ordered mix of both).
//! - **Ingress rule:** `source: {nets: [SRC], ports: [SPORTS]}`,
//!   `destination: {ports: [DPORTS]}`, `protocol`. **Egress rule:** `source: {ports: [SPORTS]}`,
//!   `destination: {nets: [DST], ports: [DPORTS]}`, the same `protocol`. So ingress matches the
//!   source prefix and egress the destination prefix; neither looks at the other address. Both
//!   match the header's source and destination ports (on egress the source is the pod itself,
//!   and `source.ports` its own port).
//! - **Protocol** mask `0xFF`: `protocol: <number>`. Source and destination ports are written
//!   only for 6, 17 and 132 and a range other than `0:65535` (`"lo:hi"`, or a number when
//!   `lo == hi`). A partial range on a protocol without ports (ICMP, GRE, …) is dropped:
//!   *approximated* ([`Conversion::approximated`]). Protocol 0 with mask `0xFF` has no Calico
//!   form: an error.
//! - **Protocol** mask `0x00` (any): with full port ranges, no `protocol` field. With a partial
//!   range it cannot be one Calico rule (ports need a protocol), so it becomes `protocol: 6`
//!   with the ports: *narrowed to TCP* ([`Conversion::narrowed`]). Narrowing rather than
//!   splitting keeps rule *i* at index *i*.
//! - **Prefixes** are written as they are (`0.0.0.0/0` included); host bits, if any, are
//!   cleared when parsing.
//!
//! [`scan`] implements exactly these converted semantics, not ClassBench's own: it is the
//! reference for what the Calico policy means, and the approximations above are reported, not
//! hidden.
//!
//! Nothing here is timed; [`compiled::build`] only records how long each phase took.

pub mod check;
pub mod compiled;
pub mod convert;
pub mod data;
pub mod headers;
pub mod manifest;
pub mod parse;
pub mod scan;

pub use check::{check, Checked, Target};
pub use compiled::{build, build_with, Built};
pub use convert::{convert, Action, CalicoRule, Conversion};
pub use headers::sample_headers;
pub use parse::{ClassBenchRule, Header};
