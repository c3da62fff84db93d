//! The packet stream: 64-byte Ethernet frames (50-byte IP packets on TUN) of UDP from the
//! sender's addresses to the sink's port, in one of three shapes ([`Stream`]). Frames are
//! patched in place from one template: the source port and, for new connections, the source
//! address (with the IPv4 header checksum). The UDP checksum is zero, which IPv4 allows, so no
//! payload sum is needed per frame.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::rules::{PORT, SENDER_IP, SINK_IP};

/// Bytes of an Ethernet frame of the stream, without the frame check sequence.
pub const FRAME_BYTES: usize = 64;
const ETHERNET_HEADER: usize = 14;
const PAYLOAD: [u8; FRAME_BYTES - ETHERNET_HEADER - 20 - 8] = [0x5a; 22];
const FIRST_SOURCE_PORT: u16 = 1024;
const SOURCE_PORTS: u32 = 65_536 - FIRST_SOURCE_PORT as u32;
/// New connections cycle through this many source addresses × every source port: about a
/// million 5-tuples, four times what podwall's flow table holds, so every packet misses it.
const NEW_CONNECTION_SOURCES: u32 = 16;

pub const SENDER_MAC: [u8; 6] = [0x02, 0x70, 0x77, 0, 0, 0x01];
pub const SINK_MAC: [u8; 6] = [0x02, 0x70, 0x77, 0, 0, 0x02];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// One 5-tuple: after its first packet, an established flow everywhere.
    OneFlow,
    /// 1,000 source ports from one address, round robin.
    ThousandFlows,
    /// Every packet a 5-tuple not seen for about a million packets: each one a new connection
    /// (a flow-table miss in podwall; a new conntrack entry in the kernel).
    NewConnections,
}

impl Stream {
    pub const ALL: [Stream; 3] = [
        Stream::OneFlow,
        Stream::ThousandFlows,
        Stream::NewConnections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stream::OneFlow => "1 flow",
            Stream::ThousandFlows => "1000 flows",
            Stream::NewConnections => "new connections",
        }
    }

    /// For CSV and file names.
    pub fn key(self) -> &'static str {
        match self {
            Stream::OneFlow => "flow1",
            Stream::ThousandFlows => "flows1000",
            Stream::NewConnections => "new",
        }
    }

    pub fn parse(key: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.key() == key)
    }

    /// How many packets before the stream repeats a 5-tuple.
    fn period(self) -> u32 {
        match self {
            Stream::OneFlow => 1,
            Stream::ThousandFlows => 1000,
            Stream::NewConnections => NEW_CONNECTION_SOURCES * SOURCE_PORTS,
        }
    }
}

/// With or without the Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Ethernet,
    Ip,
}

/// Produces the stream's frames, in order, into caller-owned buffers.
#[derive(Debug, Clone)]
pub struct FrameSource {
    stream: Stream,
    template: Vec<u8>,
    ip: usize,
    next: u32,
}

impl FrameSource {
    pub fn new(stream: Stream, framing: Framing) -> FrameSource {
        let builder = PacketBuilder::ethernet2(SENDER_MAC, SINK_MAC)
            .ipv4(SENDER_IP.octets(), SINK_IP.octets(), 64)
            .udp(FIRST_SOURCE_PORT, PORT);
        let mut frame = Vec::with_capacity(FRAME_BYTES);
        builder
            .write(&mut frame, &PAYLOAD)
            .expect("writing to a Vec cannot fail");
        let ip = match framing {
            Framing::Ethernet => ETHERNET_HEADER,
            Framing::Ip => {
                frame.drain(..ETHERNET_HEADER);
                0
            }
        };
        // UDP checksum 0: none (IPv4).
        frame[ip + 26] = 0;
        frame[ip + 27] = 0;
        FrameSource {
            stream,
            template: frame,
            ip,
            next: 0,
        }
    }

    pub fn frame_len(&self) -> usize {
        self.template.len()
    }

    /// Writes the next frames of the stream into `frames` (each already [`frame_len`] long,
    /// e.g. from [`FrameSource::buffers`]).
    ///
    /// [`frame_len`]: FrameSource::frame_len
    pub fn fill(&mut self, frames: &mut [Vec<u8>]) {
        let period = self.stream.period();
        for frame in frames {
            let n = self.next;
            self.next = if n + 1 == period { 0 } else { n + 1 };
            let source_port = FIRST_SOURCE_PORT + (n % SOURCE_PORTS) as u16;
            let source = Ipv4Addr::from(u32::from(SENDER_IP) + n / SOURCE_PORTS);
            frame.copy_from_slice(&self.template);
            let ip = &mut frame[self.ip..];
            ip[12..16].copy_from_slice(&source.octets());
            ip[10] = 0;
            ip[11] = 0;
            let checksum = ipv4_header_checksum(&ip[..20]);
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            ip[20..22].copy_from_slice(&source_port.to_be_bytes());
        }
    }

    /// `count` buffers of the right length.
    pub fn buffers(&self, count: usize) -> Vec<Vec<u8>> {
        vec![self.template.clone(); count]
    }
}

fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use std::collections::HashSet;

    fn tuple(frame: &[u8], framing: Framing) -> (Ipv4Addr, u16) {
        let sliced = match framing {
            Framing::Ethernet => SlicedPacket::from_ethernet(frame),
            Framing::Ip => SlicedPacket::from_ip(frame),
        }
        .expect("a well-formed frame");
        let Some(NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not IPv4");
        };
        let header = ip.header();
        assert_eq!(
            header.to_header().calc_header_checksum(),
            header.header_checksum()
        );
        assert_eq!(header.destination_addr(), SINK_IP);
        let Some(TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("not UDP");
        };
        assert_eq!(udp.destination_port(), PORT);
        assert_eq!(udp.checksum(), 0);
        (header.source_addr(), udp.source_port())
    }

    #[test]
    fn frames_are_64_bytes_with_valid_headers() {
        for framing in [Framing::Ethernet, Framing::Ip] {
            let mut source = FrameSource::new(Stream::NewConnections, framing);
            let mut frames = source.buffers(8);
            source.fill(&mut frames);
            let expected = if framing == Framing::Ethernet { 64 } else { 50 };
            for frame in &frames {
                assert_eq!(frame.len(), expected);
                tuple(frame, framing);
            }
        }
    }

    #[test]
    fn each_stream_has_its_number_of_flows() {
        let distinct = |stream: Stream, packets: usize| {
            let mut source = FrameSource::new(stream, Framing::Ethernet);
            let mut frames = source.buffers(packets);
            source.fill(&mut frames);
            frames
                .iter()
                .map(|f| tuple(f, Framing::Ethernet))
                .collect::<HashSet<_>>()
                .len()
        };
        assert_eq!(distinct(Stream::OneFlow, 500), 1);
        assert_eq!(distinct(Stream::ThousandFlows, 5000), 1000);
        // 200k packets, each a tuple of its own, crossing into the second source address.
        assert_eq!(distinct(Stream::NewConnections, 200_000), 200_000);
    }
}
