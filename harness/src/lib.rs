//! Network-namespace and veth fixtures (cleaned up on drop and on panic), topologies built from
//! manifests, probe clients and servers, used by `netns-tests`, `podwall lab` and the benchmarks.
//!
//! Not built yet: this crate is filled by the datapath issue (#3).
