//! podwall's datapath: frame parsing, the connection-tracking flow table, AF_XDP and TUN ports
//! and the forwarding loop. All `unsafe` of the project lives in its port modules.
//!
//! Not built yet: this crate is filled by the datapath issue (#3). It holds no code until then,
//! so that nothing here pretends to filter packets.
