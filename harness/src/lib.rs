//! Fixtures that move real packets through real network namespaces, used by `netns-tests`,
//! `podwall lab` and the benchmarks:
//!
//! - [`netns`]: uniquely named (`pw…`) namespaces and the processes started in them, removed on
//!   drop — also when a test panics;
//! - [`topology`]: the DESIGN.md datapath topology (pods, a node bridge, hosts outside the
//!   cluster) built from the same manifests the policy engine reads;
//! - [`probe`]: the library side of the `pw-probe` agent (servers and TCP/UDP/SCTP probes);
//! - [`lab`]: the topology with the real filter in front of every pod, servers and probes;
//! - [`sctp`]: the few SCTP packets `pw-probe` speaks over raw sockets, and CRC32c;
//! - [`icmp`]: the ICMP and ICMPv6 echo requests `pw-probe` pings with, and their replies.
//!
//! What this crate must not do: contain `unsafe` (all of it lives in `datapath`'s port modules),
//! touch namespaces or processes it did not create, or send traffic anywhere but between the
//! namespaces it made. Namespaces are driven by the `ip` command, and anything that has to run
//! inside one runs as a child process (`ip netns exec`).
#![forbid(unsafe_code)]

pub mod error;
pub mod icmp;
pub mod lab;
pub mod netns;
pub mod probe;
pub mod sctp;
pub mod topology;

pub use error::{Error, Result};
pub use netns::{require_root_or_skip, ChildGuard, Namespace};
pub use probe::{ProbeOutcome, ServeSpec, Server};
pub use topology::{Datapath, Endpoint, FilterPorts, Topology, TopologyOptions};
