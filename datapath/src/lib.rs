//! podwall's datapath: frame parsing, the connection-tracking flow table, AF_XDP and TUN ports
//! and the forwarding loop. All `unsafe` of the project lives in its port modules; everything
//! else here is safe and testable without root.

mod ahead;
pub mod checksum;
pub mod counters;
pub mod filter;
pub mod flow_table;
pub mod frame;
mod huge_slab;
pub mod node;
pub mod port;
pub mod process;
pub mod worker;
