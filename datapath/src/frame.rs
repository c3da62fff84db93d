//! Parsing one Ethernet frame (or bare IP packet, from TUN) into what the filter needs: the
//! addresses, protocol and ports that key a flow, TCP flags, ICMP details, and where the L4
//! segment lies for checksum completion.
//!
//! It runs once per frame on the hot path, so it must not allocate, format, log or panic on any
//! input: a frame it will not pass to policy is a [`DropReason`], a `Copy` value the caller
//! counts. It decides nothing about policy. It refuses what policy could not judge (a
//! non-initial fragment, a VLAN tag, an IPv6 extension header it cannot skip) rather than guess.

use std::fmt;
use std::net::IpAddr;
use std::ops::{BitAnd, BitOr, BitOrAssign};

use etherparse::err::{ip_auth, ipv4, ipv6, tcp};
use etherparse::{
    ArpPacketSlice, EtherType, Ethernet2Header, Ethernet2Slice, IpAuthHeaderSlice, IpNumber,
    Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6Header, Ipv6HeaderSlice, Ipv6RawExtHeaderSlice,
    TcpSlice, UdpHeader, UdpHeaderSlice,
};
use policy::Protocol;

use crate::checksum;

/// What a frame is, as far as the filter cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An IP packet for policy to judge.
    Ip(Packet),
    /// ARP, which passes without policy: pods must resolve their neighbours.
    Arp,
    /// ICMPv6 router/neighbour solicitation/advertisement or redirect (types 133..=137) with hop
    /// limit 255 and no fragmentation, which passes without policy like ARP. Those types with
    /// any other hop limit come as [`Frame::Ip`]: RFC 4861 has receivers discard them, so they
    /// get no free pass either.
    NeighborDiscovery,
}

/// The parts of an IP packet the flow table and the classifier need, extracted once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol, after any IPv6 extension headers and IPsec AH.
    pub protocol: Protocol,
    /// TCP, UDP and SCTP ports. For ICMP and ICMPv6 echo, both carry the echo identifier, so a
    /// request and its reply key the flow like a port pair; 0 for everything else.
    pub src_port: u16,
    pub dst_port: u16,
    /// Empty unless the protocol is TCP.
    pub tcp_flags: TcpFlags,
    /// Set exactly when the protocol is ICMP over IPv4 or ICMPv6 over IPv6.
    pub icmp: Option<Icmp>,
    /// Where the IP header starts in the frame (0 from [`parse_ip`]).
    pub l3_offset: u16,
    /// Where the upper-layer header starts in the frame.
    pub l4_offset: u16,
    /// Bytes of the upper-layer segment as its checksum covers them: the UDP length field for
    /// UDP, else up to the end the IP length gives. For the first fragment of a fragmented
    /// datagram, only what this fragment carries.
    pub l4_len: u16,
}

impl Packet {
    /// What the classifier matches ports against: the destination port, or for ICMP and ICMPv6
    /// the type and code ([`policy::calico::rule::icmp_port`]), never the echo identifier.
    pub fn classifier_port(&self) -> u16 {
        let v4 = self.src.is_ipv4();
        let port = policy::calico::rule::icmp_port;
        match self.icmp {
            None => self.dst_port,
            Some(Icmp::EchoRequest { code, .. }) => port(if v4 { 8 } else { 128 }, code),
            Some(Icmp::EchoReply { code, .. }) => port(if v4 { 0 } else { 129 }, code),
            Some(Icmp::Error {
                kind_type, code, ..
            })
            | Some(Icmp::Other { kind_type, code }) => port(kind_type, code),
        }
    }

    /// The source port the classifier matches Calico `source` ports against: 0 for ICMP and
    /// ICMPv6, whose echo identifier is no port.
    pub fn classifier_source_port(&self) -> u16 {
        match self.icmp {
            None => self.src_port,
            Some(_) => 0,
        }
    }
}

/// TCP header flags the flow table tracks (SYN, ACK, FIN, RST); the others are masked off so
/// that comparisons do not depend on PSH, URG or ECN bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const NONE: TcpFlags = TcpFlags(0);
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    const TRACKED: u8 = 0x17;

    /// From the flags byte of a TCP header (byte 13), keeping only the tracked flags.
    pub const fn from_wire(byte: u8) -> TcpFlags {
        TcpFlags(byte & Self::TRACKED)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("TcpFlags(NONE)");
        }
        f.write_str("TcpFlags(")?;
        let mut first = true;
        for (flag, name) in [
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::RST, "RST"),
        ] {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// ICMP or ICMPv6 details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmp {
    EchoRequest {
        id: u16,
        code: u8,
    },
    EchoReply {
        id: u16,
        code: u8,
    },
    /// Destination unreachable, source quench, redirect, time exceeded, parameter problem
    /// (ICMPv4 3, 4, 5, 11, 12); destination unreachable, packet too big, time exceeded,
    /// parameter problem (ICMPv6 1..=4). Such an error belongs to the flow of `embedded`.
    Error {
        kind_type: u8,
        code: u8,
        embedded: Embedded,
    },
    Other {
        kind_type: u8,
        code: u8,
    },
}

/// The header of the packet an ICMP error is about, as that packet was sent (so `src` is the
/// receiver of the error), enough to find its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Embedded {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// Ports as in [`Packet`]: TCP, UDP, SCTP ports, the identifier twice for an echo, else 0.
    pub src_port: u16,
    pub dst_port: u16,
}

/// The header a frame ended inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Ethernet,
    Arp,
    /// The IPv4 header with its options, or the fixed IPv6 header.
    Ip,
    /// An IPv6 extension header, or IPsec AH in either version.
    IpExtension,
    /// The TCP, UDP, SCTP or ICMP header.
    Transport,
    /// The IP header plus first 8 bytes of the packet an ICMP error quotes.
    IcmpEmbedded,
}

impl Layer {
    const COUNT: usize = 6;

    pub const fn as_str(self) -> &'static str {
        match self {
            Layer::Ethernet => "ethernet",
            Layer::Arp => "arp",
            Layer::Ip => "ip",
            Layer::IpExtension => "ip-extension",
            Layer::Transport => "transport",
            Layer::IcmpEmbedded => "icmp-embedded",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame is dropped before policy sees it. Counted per reason, never formatted per frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// The bytes end inside a header.
    #[error("frame ends inside the {layer} header")]
    Truncated { layer: Layer },
    /// Longer than 65535 bytes: offsets would not fit a `u16`, and no link here carries one.
    #[error("frame is longer than 65535 bytes")]
    Oversized,
    /// IEEE 802.3 framing (a length where the EtherType belongs), e.g. STP BPDUs.
    #[error("802.3 frame, not Ethernet II")]
    NotEthernetII,
    /// 802.1Q / 802.1ad tags: pod links are untagged, so a tag is counted, not looked through.
    #[error("VLAN-tagged frame")]
    VlanTagged,
    #[error("EtherType is neither IPv4, IPv6 nor ARP")]
    UnknownEtherType,
    /// Wrong IP version for the EtherType, IPv4 header length below 20, IPv6 hop-by-hop options
    /// not first, IPsec AH with a zero length.
    #[error("malformed IP header")]
    BadIpHeader,
    /// The kernel on the receiving side would drop it too; it must not create flows here.
    #[error("wrong IPv4 header checksum")]
    BadIpv4Checksum,
    /// The IP length field claims more bytes than the frame holds, or fewer than its header.
    #[error("IP length field disagrees with the frame")]
    IpLengthMismatch,
    /// A non-initial fragment carries no L4 header, so policy cannot judge it.
    #[error("non-initial IP fragment")]
    Fragment,
    /// Mobility, HIP, Shim6 or experimental (253, 254) headers, which may hide the L4 header.
    #[error("IPv6 extension header that cannot be skipped")]
    UnknownIpv6Extension,
    /// TCP data offset below 5 words, or a UDP length field outside 8..=the IP payload length.
    #[error("malformed TCP or UDP header")]
    BadTransportHeader,
    /// The packet an ICMP error quotes cannot be identified: not of the error's IP version, a
    /// malformed header, a non-initial fragment, or an IPv6 extension header not skipped.
    #[error("ICMP error quotes no identifiable packet")]
    BadIcmpEmbedded,
}

impl DropReason {
    /// Every reason, in [`DropReason::index`] order, so counters can be plain arrays.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated {
            layer: Layer::Ethernet,
        },
        DropReason::Truncated { layer: Layer::Arp },
        DropReason::Truncated { layer: Layer::Ip },
        DropReason::Truncated {
            layer: Layer::IpExtension,
        },
        DropReason::Truncated {
            layer: Layer::Transport,
        },
        DropReason::Truncated {
            layer: Layer::IcmpEmbedded,
        },
        DropReason::Oversized,
        DropReason::NotEthernetII,
        DropReason::VlanTagged,
        DropReason::UnknownEtherType,
        DropReason::BadIpHeader,
        DropReason::BadIpv4Checksum,
        DropReason::IpLengthMismatch,
        DropReason::Fragment,
        DropReason::UnknownIpv6Extension,
        DropReason::BadTransportHeader,
        DropReason::BadIcmpEmbedded,
    ];

    /// Position in [`DropReason::ALL`].
    pub const fn index(self) -> usize {
        match self {
            DropReason::Truncated { layer } => layer as usize,
            DropReason::Oversized => Layer::COUNT,
            DropReason::NotEthernetII => Layer::COUNT + 1,
            DropReason::VlanTagged => Layer::COUNT + 2,
            DropReason::UnknownEtherType => Layer::COUNT + 3,
            DropReason::BadIpHeader => Layer::COUNT + 4,
            DropReason::BadIpv4Checksum => Layer::COUNT + 5,
            DropReason::IpLengthMismatch => Layer::COUNT + 6,
            DropReason::Fragment => Layer::COUNT + 7,
            DropReason::UnknownIpv6Extension => Layer::COUNT + 8,
            DropReason::BadTransportHeader => Layer::COUNT + 9,
            DropReason::BadIcmpEmbedded => Layer::COUNT + 10,
        }
    }

    /// A stable kebab-case name for counters and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated { layer } => match layer {
                Layer::Ethernet => "truncated-ethernet",
                Layer::Arp => "truncated-arp",
                Layer::Ip => "truncated-ip",
                Layer::IpExtension => "truncated-ip-extension",
                Layer::Transport => "truncated-transport",
                Layer::IcmpEmbedded => "truncated-icmp-embedded",
            },
            DropReason::Oversized => "oversized",
            DropReason::NotEthernetII => "not-ethernet-ii",
            DropReason::VlanTagged => "vlan-tagged",
            DropReason::UnknownEtherType => "unknown-ether-type",
            DropReason::BadIpHeader => "bad-ip-header",
            DropReason::BadIpv4Checksum => "bad-ipv4-checksum",
            DropReason::IpLengthMismatch => "ip-length-mismatch",
            DropReason::Fragment => "fragment",
            DropReason::UnknownIpv6Extension => "unknown-ipv6-extension",
            DropReason::BadTransportHeader => "bad-transport-header",
            DropReason::BadIcmpEmbedded => "bad-icmp-embedded",
        }
    }
}

const fn truncated(layer: Layer) -> DropReason {
    DropReason::Truncated { layer }
}

/// IP protocol numbers and ICMP types the parser branches on.
mod number {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const DESTINATION_OPTIONS: u8 = 60;
    pub const SCTP: u8 = 132;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
    pub const EXPERIMENT_1: u8 = 253;
    pub const EXPERIMENT_2: u8 = 254;

    pub const ICMPV4_ECHO_REPLY: u8 = 0;
    pub const ICMPV4_ECHO_REQUEST: u8 = 8;
    pub const ICMPV6_ECHO_REQUEST: u8 = 128;
    pub const ICMPV6_ECHO_REPLY: u8 = 129;
}

/// EtherType values below this are 802.3 length fields.
const MIN_ETHER_TYPE: u16 = 0x0600;
const SCTP_COMMON_HEADER_LEN: usize = 12;
const ICMP_HEADER_LEN: usize = 8;
/// RFC 792 and RFC 4443 promise the quoted IP header plus at least this much of what follows.
const EMBEDDED_L4_LEN: usize = 8;
const ND_HOP_LIMIT: u8 = 255;

/// Parses one Ethernet II frame (without FCS, as AF_XDP and TAP deliver it). Trailing bytes
/// beyond the IP length (Ethernet padding) are ignored; a frame shorter than its IP length is
/// dropped, so a truncated frame never yields a different [`Packet`] than the whole one.
pub fn parse(frame: &[u8]) -> Result<Frame, DropReason> {
    if frame.len() > usize::from(u16::MAX) {
        return Err(DropReason::Oversized);
    }
    let ethernet =
        Ethernet2Slice::from_slice_without_fcs(frame).map_err(|_| truncated(Layer::Ethernet))?;
    let l3 = ethernet.payload_slice();
    match ethernet.ether_type() {
        EtherType::IPV4 => ip_frame(l3, Ethernet2Header::LEN, Family::V4),
        EtherType::IPV6 => ip_frame(l3, Ethernet2Header::LEN, Family::V6),
        EtherType::ARP => match ArpPacketSlice::from_slice(l3) {
            Ok(_) => Ok(Frame::Arp),
            Err(_) => Err(truncated(Layer::Arp)),
        },
        EtherType::VLAN_TAGGED_FRAME
        | EtherType::PROVIDER_BRIDGING
        | EtherType::VLAN_DOUBLE_TAGGED_FRAME => Err(DropReason::VlanTagged),
        EtherType(value) if value < MIN_ETHER_TYPE => Err(DropReason::NotEthernetII),
        EtherType(_) => Err(DropReason::UnknownEtherType),
    }
}

/// Parses one bare IP packet, as a TUN device opened with `IFF_NO_PI` delivers it: the version
/// nibble says IPv4 or IPv6, and offsets in the [`Packet`] count from the IP header (so
/// `l3_offset` is 0). Never yields [`Frame::Arp`].
pub fn parse_ip(packet: &[u8]) -> Result<Frame, DropReason> {
    if packet.len() > usize::from(u16::MAX) {
        return Err(DropReason::Oversized);
    }
    match packet.first() {
        None => Err(truncated(Layer::Ip)),
        Some(byte) if byte >> 4 == 4 => ip_frame(packet, 0, Family::V4),
        Some(byte) if byte >> 4 == 6 => ip_frame(packet, 0, Family::V6),
        Some(_) => Err(DropReason::BadIpHeader),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The packet that came in.
    Wire,
    /// The packet an ICMP error quotes: cut short, so its IP length cannot be held to the
    /// bytes, and only used to find a flow, so its header checksum is not checked (NAT on the
    /// way may have rewritten the quoted addresses without fixing it).
    Quoted,
}

/// The network layer of a packet, up to where the upper-layer header starts.
struct Network<'a> {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    /// From the start of the IP header.
    l4_start: usize,
    /// Up to the end the IP length gives (in [`Mode::Quoted`], up to what is there).
    l4: &'a [u8],
    hop_limit: u8,
    /// The first fragment of a fragmented datagram (non-initial ones are refused earlier).
    first_fragment: bool,
}

struct Transport {
    src_port: u16,
    dst_port: u16,
    tcp_flags: TcpFlags,
    icmp: Option<Icmp>,
    len: usize,
}

/// `l3_offset`: where `l3` starts in the buffer the caller holds.
fn ip_frame(l3: &[u8], l3_offset: usize, family: Family) -> Result<Frame, DropReason> {
    let network = match family {
        Family::V4 => ipv4(l3, Mode::Wire)?,
        Family::V6 => ipv6(l3, Mode::Wire)?,
    };
    let transport = transport(&network, family)?;
    if let Some(Icmp::Other {
        kind_type: 133..=137,
        ..
    }) = transport.icmp
    {
        if family == Family::V6 && network.hop_limit == ND_HOP_LIMIT && !network.first_fragment {
            return Ok(Frame::NeighborDiscovery);
        }
    }
    let l4_offset = l3_offset + network.l4_start;
    // All three lie within a frame already known to be at most u16::MAX bytes long.
    let (Ok(l3_offset), Ok(l4_offset), Ok(l4_len)) = (
        u16::try_from(l3_offset),
        u16::try_from(l4_offset),
        u16::try_from(transport.len),
    ) else {
        return Err(DropReason::Oversized);
    };
    Ok(Frame::Ip(Packet {
        src: network.src,
        dst: network.dst,
        protocol: Protocol(network.protocol),
        src_port: transport.src_port,
        dst_port: transport.dst_port,
        tcp_flags: transport.tcp_flags,
        icmp: transport.icmp,
        l3_offset,
        l4_offset,
        l4_len,
    }))
}

fn ipv4(bytes: &[u8], mode: Mode) -> Result<Network<'_>, DropReason> {
    let header = Ipv4HeaderSlice::from_slice(bytes).map_err(|error| match error {
        ipv4::HeaderSliceError::Len(_) => truncated(Layer::Ip),
        ipv4::HeaderSliceError::Content(_) => DropReason::BadIpHeader,
    })?;
    let header_len = header.slice().len();
    // The receiver's kernel would drop a wrong checksum; a corrupted header must not make flows.
    if mode == Mode::Wire && !checksum::is_valid_internet_checksum(header.slice()) {
        return Err(DropReason::BadIpv4Checksum);
    }
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        return Err(DropReason::IpLengthMismatch);
    }
    let end = match mode {
        Mode::Wire if total_len > bytes.len() => return Err(DropReason::IpLengthMismatch),
        Mode::Wire => total_len,
        Mode::Quoted => total_len.min(bytes.len()),
    };
    if header.fragments_offset().value() != 0 {
        return Err(DropReason::Fragment);
    }
    let payload = bytes
        .get(header_len..end)
        .ok_or(DropReason::IpLengthMismatch)?;
    let (protocol, extension_len) = if header.protocol() == IpNumber::AUTHENTICATION_HEADER {
        let auth = IpAuthHeaderSlice::from_slice(payload).map_err(auth_error)?;
        (auth.next_header().0, auth.slice().len())
    } else {
        (header.protocol().0, 0)
    };
    Ok(Network {
        src: IpAddr::V4(header.source_addr()),
        dst: IpAddr::V4(header.destination_addr()),
        protocol,
        l4_start: header_len + extension_len,
        l4: payload.get(extension_len..).unwrap_or_default(),
        hop_limit: header.ttl(),
        first_fragment: header.more_fragments(),
    })
}

fn ipv6(bytes: &[u8], mode: Mode) -> Result<Network<'_>, DropReason> {
    let header = Ipv6HeaderSlice::from_slice(bytes).map_err(|error| match error {
        ipv6::HeaderSliceError::Len(_) => truncated(Layer::Ip),
        ipv6::HeaderSliceError::Content(_) => DropReason::BadIpHeader,
    })?;
    // A payload length of 0 is taken literally: jumbograms (RFC 2675) cannot cross these links.
    let total_len = Ipv6Header::LEN + usize::from(header.payload_length());
    let end = match mode {
        Mode::Wire if total_len > bytes.len() => return Err(DropReason::IpLengthMismatch),
        Mode::Wire => total_len,
        Mode::Quoted => total_len.min(bytes.len()),
    };
    let payload = bytes
        .get(Ipv6Header::LEN..end)
        .ok_or(DropReason::IpLengthMismatch)?;
    let extensions = ipv6_extensions(header.next_header().0, payload)?;
    Ok(Network {
        src: IpAddr::V6(header.source_addr()),
        dst: IpAddr::V6(header.destination_addr()),
        protocol: extensions.protocol,
        l4_start: Ipv6Header::LEN + extensions.len,
        l4: payload.get(extensions.len..).unwrap_or_default(),
        hop_limit: header.hop_limit(),
        first_fragment: extensions.first_fragment,
    })
}

struct ExtensionWalk {
    protocol: u8,
    len: usize,
    first_fragment: bool,
}

/// Walks the extension headers by hand rather than through `Ipv6Slice`: a non-initial fragment
/// must stop the walk at its fragment header (what follows is payload, not headers), and the
/// headers etherparse cannot skip must be refused rather than taken for the upper layer.
fn ipv6_extensions(first: u8, payload: &[u8]) -> Result<ExtensionWalk, DropReason> {
    let mut next = first;
    let mut offset = 0;
    let mut first_fragment = false;
    loop {
        let rest = payload.get(offset..).unwrap_or_default();
        let (following, len) = match next {
            number::HOP_BY_HOP if offset != 0 => return Err(DropReason::BadIpHeader),
            number::HOP_BY_HOP | number::DESTINATION_OPTIONS | number::ROUTING => {
                let header = Ipv6RawExtHeaderSlice::from_slice(rest)
                    .map_err(|_| truncated(Layer::IpExtension))?;
                (header.next_header().0, header.slice().len())
            }
            number::FRAGMENT => {
                let header = Ipv6FragmentHeaderSlice::from_slice(rest)
                    .map_err(|_| truncated(Layer::IpExtension))?;
                if header.fragment_offset().value() != 0 {
                    return Err(DropReason::Fragment);
                }
                first_fragment |= header.more_fragments();
                (header.next_header().0, header.slice().len())
            }
            number::AUTH => {
                let header = IpAuthHeaderSlice::from_slice(rest).map_err(auth_error)?;
                (header.next_header().0, header.slice().len())
            }
            number::MOBILITY
            | number::HIP
            | number::SHIM6
            | number::EXPERIMENT_1
            | number::EXPERIMENT_2 => return Err(DropReason::UnknownIpv6Extension),
            protocol => {
                return Ok(ExtensionWalk {
                    protocol,
                    len: offset,
                    first_fragment,
                })
            }
        };
        next = following;
        offset += len;
    }
}

fn auth_error(error: ip_auth::HeaderSliceError) -> DropReason {
    match error {
        ip_auth::HeaderSliceError::Len(_) => truncated(Layer::IpExtension),
        ip_auth::HeaderSliceError::Content(_) => DropReason::BadIpHeader,
    }
}

fn transport(network: &Network<'_>, family: Family) -> Result<Transport, DropReason> {
    let l4 = network.l4;
    let mut parsed = Transport {
        src_port: 0,
        dst_port: 0,
        tcp_flags: TcpFlags::NONE,
        icmp: None,
        len: l4.len(),
    };
    match (network.protocol, family) {
        (number::TCP, _) => {
            let tcp = TcpSlice::from_slice(l4).map_err(|error| match error {
                tcp::HeaderSliceError::Len(_) => truncated(Layer::Transport),
                tcp::HeaderSliceError::Content(_) => DropReason::BadTransportHeader,
            })?;
            parsed.src_port = tcp.source_port();
            parsed.dst_port = tcp.destination_port();
            for (set, flag) in [
                (tcp.fin(), TcpFlags::FIN),
                (tcp.syn(), TcpFlags::SYN),
                (tcp.rst(), TcpFlags::RST),
                (tcp.ack(), TcpFlags::ACK),
            ] {
                if set {
                    parsed.tcp_flags |= flag;
                }
            }
        }
        (number::UDP, _) => {
            let udp = UdpHeaderSlice::from_slice(l4).map_err(|_| truncated(Layer::Transport))?;
            parsed.src_port = udp.source_port();
            parsed.dst_port = udp.destination_port();
            // The UDP length of a first fragment covers the whole datagram, not this fragment.
            if !network.first_fragment {
                let len = usize::from(udp.length());
                if len < UdpHeader::LEN || len > l4.len() {
                    return Err(DropReason::BadTransportHeader);
                }
                parsed.len = len;
            }
        }
        (number::SCTP, _) => {
            // etherparse has no SCTP; the common header starts with the two ports.
            let Some(&[s0, s1, d0, d1, ..]) = l4.first_chunk::<SCTP_COMMON_HEADER_LEN>() else {
                return Err(truncated(Layer::Transport));
            };
            parsed.src_port = u16::from_be_bytes([s0, s1]);
            parsed.dst_port = u16::from_be_bytes([d0, d1]);
        }
        (number::ICMP, Family::V4) | (number::ICMPV6, Family::V6) => {
            let Some((&[kind_type, code, _, _, id0, id1, _, _], body)) =
                l4.split_first_chunk::<ICMP_HEADER_LEN>()
            else {
                return Err(truncated(Layer::Transport));
            };
            let id = u16::from_be_bytes([id0, id1]);
            let icmp = icmp(family, kind_type, code, id, body)?;
            if let Icmp::EchoRequest { id, .. } | Icmp::EchoReply { id, .. } = icmp {
                parsed.src_port = id;
                parsed.dst_port = id;
            }
            parsed.icmp = Some(icmp);
        }
        _ => {}
    }
    Ok(parsed)
}

fn icmp(family: Family, kind_type: u8, code: u8, id: u16, body: &[u8]) -> Result<Icmp, DropReason> {
    let is_error = match family {
        Family::V4 => match kind_type {
            number::ICMPV4_ECHO_REQUEST => return Ok(Icmp::EchoRequest { id, code }),
            number::ICMPV4_ECHO_REPLY => return Ok(Icmp::EchoReply { id, code }),
            _ => matches!(kind_type, 3 | 4 | 5 | 11 | 12),
        },
        Family::V6 => match kind_type {
            number::ICMPV6_ECHO_REQUEST => return Ok(Icmp::EchoRequest { id, code }),
            number::ICMPV6_ECHO_REPLY => return Ok(Icmp::EchoReply { id, code }),
            _ => matches!(kind_type, 1..=4),
        },
    };
    if !is_error {
        return Ok(Icmp::Other { kind_type, code });
    }
    Ok(Icmp::Error {
        kind_type,
        code,
        embedded: embedded(body, family)?,
    })
}

fn embedded(quoted: &[u8], family: Family) -> Result<Embedded, DropReason> {
    let network = match family {
        Family::V4 => ipv4(quoted, Mode::Quoted),
        Family::V6 => ipv6(quoted, Mode::Quoted),
    }
    .map_err(|reason| match reason {
        DropReason::Truncated { .. } => truncated(Layer::IcmpEmbedded),
        _ => DropReason::BadIcmpEmbedded,
    })?;
    let Some(&[b0, b1, b2, b3, b4, b5, _, _]) = network.l4.first_chunk::<EMBEDDED_L4_LEN>() else {
        return Err(truncated(Layer::IcmpEmbedded));
    };
    let (src_port, dst_port) = match (network.protocol, family, b0) {
        (number::TCP | number::UDP | number::SCTP, _, _) => {
            (u16::from_be_bytes([b0, b1]), u16::from_be_bytes([b2, b3]))
        }
        (number::ICMP, Family::V4, number::ICMPV4_ECHO_REQUEST | number::ICMPV4_ECHO_REPLY)
        | (number::ICMPV6, Family::V6, number::ICMPV6_ECHO_REQUEST | number::ICMPV6_ECHO_REPLY) => {
            let id = u16::from_be_bytes([b4, b5]);
            (id, id)
        }
        _ => (0, 0),
    };
    Ok(Embedded {
        src: network.src,
        dst: network.dst,
        protocol: Protocol(network.protocol),
        src_port,
        dst_port,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{
        ArpEthIpv4Packet, ArpOperation, ArpPacket, IpAuthHeader, IpFragOffset, IpHeaders,
        Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FragmentHeader, Ipv6RawExtHeader,
        Ipv6RoutingExtensions, PacketBuilder, PacketBuilderStep, VlanId,
    };
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::*;

    pub(crate) const MAC_POD: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    pub(crate) const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    pub(crate) const POD_V4: [u8; 4] = [10, 0, 0, 1];
    pub(crate) const PEER_V4: [u8; 4] = [10, 0, 1, 2];
    const ROUTER_V4: [u8; 4] = [10, 0, 0, 254];
    pub(crate) const POD_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
    pub(crate) const PEER_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x02];
    const ROUTER_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];
    const POD_PORT: u16 = 40000;
    const PEER_PORT: u16 = 8080;

    fn v4(octets: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(octets))
    }

    fn v6(octets: [u8; 16]) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(octets))
    }

    pub(crate) fn ipv4() -> PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2(MAC_POD, MAC_PEER).ipv4(POD_V4, PEER_V4, 64)
    }

    pub(crate) fn ipv6() -> PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2(MAC_POD, MAC_PEER).ipv6(POD_V6, PEER_V6, 64)
    }

    pub(crate) fn ipv6_with(extensions: Ipv6Extensions) -> PacketBuilderStep<IpHeaders> {
        let header = Ipv6Header {
            source: POD_V6,
            destination: PEER_V6,
            hop_limit: 64,
            ..Default::default()
        };
        PacketBuilder::ethernet2(MAC_POD, MAC_PEER).ip(IpHeaders::Ipv6(header, extensions))
    }

    /// An IPv6 option header holding nothing but padding (PadN).
    fn padding_options() -> Ipv6RawExtHeader {
        Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[1, 4, 0, 0, 0, 0]).unwrap()
    }

    /// A type 2 routing header naming `final_destination`, with `segments_left` to go.
    pub(crate) fn routing_header(
        final_destination: [u8; 16],
        segments_left: u8,
    ) -> Ipv6RawExtHeader {
        let mut payload = vec![2, segments_left, 0, 0, 0, 0];
        payload.extend_from_slice(&final_destination);
        Ipv6RawExtHeader::new_raw(IpNumber::UDP, &payload).unwrap()
    }

    fn sctp_segment(payload: &[u8]) -> Vec<u8> {
        let mut segment = Vec::new();
        segment.extend_from_slice(&POD_PORT.to_be_bytes());
        segment.extend_from_slice(&PEER_PORT.to_be_bytes());
        segment.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        segment.extend_from_slice(payload);
        segment
    }

    pub(crate) fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv4()
            .tcp(POD_PORT, PEER_PORT, 1, 4096)
            .syn()
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    pub(crate) fn tcp_v6(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv6()
            .tcp(POD_PORT, PEER_PORT, 1, 4096)
            .ack(7)
            .fin()
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    pub(crate) fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv4()
            .udp(POD_PORT, PEER_PORT)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    pub(crate) fn udp_v6(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv6()
            .udp(POD_PORT, PEER_PORT)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    pub(crate) fn sctp_v4(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv4()
            .write(&mut frame, IpNumber(number::SCTP), &sctp_segment(payload))
            .unwrap();
        frame
    }

    pub(crate) fn sctp_v6(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv6()
            .write(&mut frame, IpNumber(number::SCTP), &sctp_segment(payload))
            .unwrap();
        frame
    }

    pub(crate) fn echo_request_v4(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv4()
            .icmpv4_echo_request(0x4242, 1)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    fn echo_reply_v6(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        ipv6()
            .icmpv6_echo_reply(0x4242, 1)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    /// `frame` without its Ethernet header, as an ICMP error quotes it.
    fn ip_part(frame: &[u8]) -> &[u8] {
        &frame[Ethernet2Header::LEN..]
    }

    /// A router's "port unreachable" to the pod about a TCP segment the pod sent.
    pub(crate) fn icmp_error_v4(payload: &[u8]) -> Vec<u8> {
        let quoted = tcp_v4(payload);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_PEER, MAC_POD)
            .ipv4(ROUTER_V4, POD_V4, 64)
            .icmpv4_raw(3, 3, [0; 4])
            .write(&mut frame, ip_part(&quoted))
            .unwrap();
        frame
    }

    /// A router's "packet too big" to the pod about a UDP datagram the pod sent.
    fn icmp_error_v6(payload: &[u8]) -> Vec<u8> {
        let quoted = udp_v6(payload);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_PEER, MAC_POD)
            .ipv6(ROUTER_V6, POD_V6, 64)
            .icmpv6_raw(2, 0, 1280u32.to_be_bytes())
            .write(&mut frame, ip_part(&quoted))
            .unwrap();
        frame
    }

    fn arp(_payload: &[u8]) -> Vec<u8> {
        let request = ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: MAC_POD,
            sender_ipv4: POD_V4,
            target_mac: [0; 6],
            target_ipv4: PEER_V4,
        };
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_POD, [0xff; 6])
            .arp(ArpPacket::from(request))
            .write(&mut frame)
            .unwrap();
        frame
    }

    fn neighbor_solicitation_with_hop_limit(hop_limit: u8) -> Vec<u8> {
        let solicited_node = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0x02];
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_POD, [0x33, 0x33, 0xff, 0, 0, 0x02])
            .ipv6(POD_V6, solicited_node, hop_limit)
            .icmpv6_raw(135, 0, [0; 4])
            .write(&mut frame, &PEER_V6)
            .unwrap();
        frame
    }

    fn neighbor_solicitation(_payload: &[u8]) -> Vec<u8> {
        neighbor_solicitation_with_hop_limit(255)
    }

    fn neighbor_solicitation_from_off_link(_payload: &[u8]) -> Vec<u8> {
        neighbor_solicitation_with_hop_limit(64)
    }

    fn tcp_v6_behind_extensions(payload: &[u8]) -> Vec<u8> {
        let extensions = Ipv6Extensions {
            hop_by_hop_options: Some(padding_options()),
            destination_options: Some(padding_options()),
            routing: Some(Ipv6RoutingExtensions {
                routing: routing_header(PEER_V6, 0),
                final_destination_options: Some(padding_options()),
            }),
            ..Default::default()
        };
        let mut frame = Vec::new();
        ipv6_with(extensions)
            .tcp(POD_PORT, PEER_PORT, 1, 4096)
            .syn()
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    fn udp_v4_behind_auth_header(payload: &[u8]) -> Vec<u8> {
        let header = Ipv4Header::new(0, 64, IpNumber::UDP, POD_V4, PEER_V4).unwrap();
        let extensions = Ipv4Extensions {
            auth: Some(IpAuthHeader::new(IpNumber::UDP, 0x100, 1, &[0; 12]).unwrap()),
        };
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_POD, MAC_PEER)
            .ip(IpHeaders::Ipv4(header, extensions))
            .udp(POD_PORT, PEER_PORT)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    /// Rewrites the IPv4 header of `frame` through `change`, fixing its checksum and cutting the
    /// frame to the new total length if that still holds the header.
    fn rewrite_ipv4_header(frame: &mut Vec<u8>, change: impl FnOnce(&mut Ipv4Header)) {
        let (mut header, _) = Ipv4Header::from_slice(ip_part(frame)).unwrap();
        change(&mut header);
        header.header_checksum = header.calc_header_checksum();
        let bytes = header.to_bytes();
        frame[Ethernet2Header::LEN..Ethernet2Header::LEN + bytes.len()].copy_from_slice(&bytes);
        if usize::from(header.total_len) >= bytes.len() {
            frame.truncate(Ethernet2Header::LEN + usize::from(header.total_len));
        }
    }

    /// The first fragment of a UDP datagram: the UDP header and 16 bytes of its payload.
    pub(crate) fn first_fragment_v4(payload: &[u8]) -> Vec<u8> {
        let mut datagram = payload.to_vec();
        datagram.resize(payload.len().max(32), 0xaa);
        let mut frame = udp_v4(&datagram);
        rewrite_ipv4_header(&mut frame, |header| {
            header.more_fragments = true;
            header.total_len = 20 + 8 + 16;
        });
        frame
    }

    fn fragment_v6(offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
        let extensions = Ipv6Extensions {
            fragment: Some(Ipv6FragmentHeader::new(
                IpNumber::UDP,
                IpFragOffset::try_new(offset).unwrap(),
                more,
                0x1234,
            )),
            ..Default::default()
        };
        let mut frame = Vec::new();
        ipv6_with(extensions)
            .udp(POD_PORT, PEER_PORT)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    pub(crate) fn first_fragment_v6(payload: &[u8]) -> Vec<u8> {
        fragment_v6(0, true, payload)
    }

    /// Builds a frame around a payload.
    pub(crate) type Build = fn(&[u8]) -> Vec<u8>;

    /// Every kind of frame `parse` passes.
    pub(crate) const VALID: [Build; 18] = [
        tcp_v4,
        tcp_v6,
        udp_v4,
        udp_v6,
        sctp_v4,
        sctp_v6,
        echo_request_v4,
        echo_reply_v6,
        icmp_error_v4,
        icmp_error_v6,
        arp,
        neighbor_solicitation,
        tcp_v6_behind_extensions,
        udp_v4_behind_auth_header,
        first_fragment_v4,
        first_fragment_v6,
        // A UDP datagram of which nothing is fragmented but the header is there (atomic).
        |payload| fragment_v6(0, false, payload),
        neighbor_solicitation_from_off_link,
    ];

    pub(crate) fn packet(frame: &[u8]) -> Packet {
        match parse(frame) {
            Ok(Frame::Ip(packet)) => packet,
            other => panic!("expected an IP packet, got {other:?}"),
        }
    }

    #[test]
    fn tcp_over_ipv4_yields_addresses_ports_flags_and_offsets() {
        let frame = tcp_v4(b"hello");
        assert_eq!(
            parse(&frame),
            Ok(Frame::Ip(Packet {
                src: v4(POD_V4),
                dst: v4(PEER_V4),
                protocol: Protocol::TCP,
                src_port: POD_PORT,
                dst_port: PEER_PORT,
                tcp_flags: TcpFlags::SYN,
                icmp: None,
                l3_offset: 14,
                l4_offset: 34,
                l4_len: 25,
            }))
        );
    }

    #[test]
    fn tcp_over_ipv6_yields_addresses_ports_flags_and_offsets() {
        let packet = packet(&tcp_v6(b"hello"));
        assert_eq!((packet.src, packet.dst), (v6(POD_V6), v6(PEER_V6)));
        assert_eq!(packet.protocol, Protocol::TCP);
        assert_eq!((packet.src_port, packet.dst_port), (POD_PORT, PEER_PORT));
        assert_eq!(packet.tcp_flags, TcpFlags::ACK | TcpFlags::FIN);
        assert_eq!(
            (packet.l3_offset, packet.l4_offset, packet.l4_len),
            (14, 54, 25)
        );
    }

    #[test]
    fn tcp_flags_keep_only_syn_ack_fin_rst() {
        let flags = TcpFlags::from_wire(0xff);
        assert_eq!(
            flags,
            TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN | TcpFlags::RST
        );
        assert!(flags.contains(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!TcpFlags::SYN.contains(TcpFlags::SYN | TcpFlags::ACK));
        assert!(TcpFlags::SYN.intersects(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!(
            format!("{:?}", TcpFlags::SYN | TcpFlags::ACK),
            "TcpFlags(SYN|ACK)"
        );
    }

    #[test]
    fn udp_over_ipv4_and_ipv6_yields_ports_and_udp_length() {
        for frame in [udp_v4(&[7; 11]), udp_v6(&[7; 11])] {
            let packet = packet(&frame);
            assert_eq!(packet.protocol, Protocol::UDP);
            assert_eq!((packet.src_port, packet.dst_port), (POD_PORT, PEER_PORT));
            assert_eq!(packet.tcp_flags, TcpFlags::NONE);
            assert_eq!(packet.l4_len, 19);
        }
    }

    #[test]
    fn sctp_over_ipv4_and_ipv6_yields_ports_from_the_common_header() {
        for frame in [sctp_v4(b"chunk"), sctp_v6(b"chunk")] {
            let packet = packet(&frame);
            assert_eq!(packet.protocol, Protocol::SCTP);
            assert_eq!((packet.src_port, packet.dst_port), (POD_PORT, PEER_PORT));
            assert_eq!(packet.icmp, None);
        }
    }

    #[test]
    fn sctp_shorter_than_its_common_header_is_truncated() {
        let mut frame = Vec::new();
        ipv4()
            .write(&mut frame, IpNumber(number::SCTP), &sctp_segment(&[])[..11])
            .unwrap();
        assert_eq!(parse(&frame), Err(truncated(Layer::Transport)));
    }

    #[test]
    fn icmp_echo_carries_its_identifier_in_both_ports() {
        let request = packet(&echo_request_v4(b"ping"));
        assert_eq!(request.protocol, Protocol::ICMP);
        assert_eq!(
            request.icmp,
            Some(Icmp::EchoRequest {
                id: 0x4242,
                code: 0
            })
        );
        assert_eq!(request.classifier_port(), 8 << 8);
        assert_eq!((request.src_port, request.dst_port), (0x4242, 0x4242));

        let reply = packet(&echo_reply_v6(b"pong"));
        assert_eq!(reply.protocol, Protocol::ICMPV6);
        assert_eq!(
            reply.icmp,
            Some(Icmp::EchoReply {
                id: 0x4242,
                code: 0
            })
        );
        assert_eq!(reply.classifier_port(), 129 << 8);
        assert_eq!((reply.src_port, reply.dst_port), (0x4242, 0x4242));
    }

    #[test]
    fn icmpv4_error_names_the_tcp_flow_it_is_about() {
        let packet = packet(&icmp_error_v4(b"data"));
        assert_eq!((packet.src, packet.dst), (v4(ROUTER_V4), v4(POD_V4)));
        assert_eq!(packet.protocol, Protocol::ICMP);
        assert_eq!((packet.src_port, packet.dst_port), (0, 0));
        assert_eq!(
            packet.icmp,
            Some(Icmp::Error {
                kind_type: 3,
                code: 3,
                embedded: Embedded {
                    src: v4(POD_V4),
                    dst: v4(PEER_V4),
                    protocol: Protocol::TCP,
                    src_port: POD_PORT,
                    dst_port: PEER_PORT,
                },
            })
        );
    }

    #[test]
    fn icmpv6_error_names_the_udp_flow_it_is_about() {
        let packet = packet(&icmp_error_v6(&[1; 100]));
        assert_eq!(
            packet.icmp,
            Some(Icmp::Error {
                kind_type: 2,
                code: 0,
                embedded: Embedded {
                    src: v6(POD_V6),
                    dst: v6(PEER_V6),
                    protocol: Protocol::UDP,
                    src_port: POD_PORT,
                    dst_port: PEER_PORT,
                },
            })
        );
    }

    #[test]
    fn icmp_error_about_an_echo_names_the_echo_identifier() {
        let quoted = echo_request_v4(b"ping");
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_PEER, MAC_POD)
            .ipv4(ROUTER_V4, POD_V4, 64)
            .icmpv4_raw(11, 0, [0; 4])
            .write(&mut frame, &ip_part(&quoted)[..28])
            .unwrap();
        let Some(Icmp::Error { embedded, .. }) = packet(&frame).icmp else {
            panic!("expected an ICMP error");
        };
        assert_eq!(embedded.protocol, Protocol::ICMP);
        assert_eq!((embedded.src_port, embedded.dst_port), (0x4242, 0x4242));
    }

    #[test]
    fn icmp_error_quoting_less_than_eight_bytes_of_l4_is_truncated() {
        let quoted = tcp_v4(b"");
        for quoted_len in [0, 10, 20, 24, 27] {
            let mut frame = Vec::new();
            PacketBuilder::ethernet2(MAC_PEER, MAC_POD)
                .ipv4(ROUTER_V4, POD_V4, 64)
                .icmpv4_raw(3, 1, [0; 4])
                .write(&mut frame, &ip_part(&quoted)[..quoted_len])
                .unwrap();
            assert_eq!(
                parse(&frame),
                Err(truncated(Layer::IcmpEmbedded)),
                "{quoted_len}"
            );
        }
    }

    #[test]
    fn icmpv4_error_quoting_an_ipv6_packet_is_dropped() {
        let quoted = udp_v6(b"");
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_PEER, MAC_POD)
            .ipv4(ROUTER_V4, POD_V4, 64)
            .icmpv4_raw(3, 1, [0; 4])
            .write(&mut frame, ip_part(&quoted))
            .unwrap();
        assert_eq!(parse(&frame), Err(DropReason::BadIcmpEmbedded));
    }

    #[test]
    fn arp_passes_as_arp_and_a_cut_arp_is_truncated() {
        let frame = arp(&[]);
        assert_eq!(parse(&frame), Ok(Frame::Arp));
        assert_eq!(parse(&frame[..40]), Err(truncated(Layer::Arp)));
    }

    #[test]
    fn neighbor_discovery_with_hop_limit_255_is_recognised() {
        assert_eq!(
            parse(&neighbor_solicitation(&[])),
            Ok(Frame::NeighborDiscovery)
        );
        for kind_type in 133..=137 {
            let mut frame = Vec::new();
            PacketBuilder::ethernet2(MAC_POD, MAC_PEER)
                .ipv6(POD_V6, PEER_V6, 255)
                .icmpv6_raw(kind_type, 0, [0; 4])
                .write(&mut frame, &[])
                .unwrap();
            assert_eq!(
                parse(&frame),
                Ok(Frame::NeighborDiscovery),
                "type {kind_type}"
            );
        }
    }

    #[test]
    fn neighbor_discovery_from_off_link_goes_to_policy() {
        let packet = packet(&neighbor_solicitation_with_hop_limit(64));
        assert_eq!(packet.protocol, Protocol::ICMPV6);
        assert_eq!(
            packet.icmp,
            Some(Icmp::Other {
                kind_type: 135,
                code: 0
            })
        );
    }

    #[test]
    fn icmpv4_types_133_to_137_are_not_neighbor_discovery() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_POD, MAC_PEER)
            .ipv4(POD_V4, PEER_V4, 255)
            .icmpv4_raw(135, 0, [0; 4])
            .write(&mut frame, &[])
            .unwrap();
        assert_eq!(
            packet(&frame).icmp,
            Some(Icmp::Other {
                kind_type: 135,
                code: 0
            })
        );
    }

    #[test]
    fn vlan_tagged_frames_are_counted_not_looked_through() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_POD, MAC_PEER)
            .single_vlan(VlanId::try_new(10).unwrap())
            .ipv4(POD_V4, PEER_V4, 64)
            .udp(POD_PORT, PEER_PORT)
            .write(&mut frame, b"x")
            .unwrap();
        assert_eq!(parse(&frame), Err(DropReason::VlanTagged));
    }

    #[test]
    fn other_link_layers_are_dropped_by_kind() {
        let mut frame = udp_v4(b"x");
        frame[12..14].copy_from_slice(&0x0026u16.to_be_bytes());
        assert_eq!(parse(&frame), Err(DropReason::NotEthernetII));
        frame[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(parse(&frame), Err(DropReason::UnknownEtherType));
        assert_eq!(parse(&frame[..13]), Err(truncated(Layer::Ethernet)));
        assert_eq!(parse(&vec![0; 70_000]), Err(DropReason::Oversized));
    }

    #[test]
    fn ipv6_hop_by_hop_destination_and_routing_headers_are_skipped() {
        let frame = tcp_v6_behind_extensions(b"hello");
        let packet = packet(&frame);
        assert_eq!(packet.protocol, Protocol::TCP);
        assert_eq!((packet.src_port, packet.dst_port), (POD_PORT, PEER_PORT));
        // Hop-by-hop 8, destination options 8, routing 24, final destination options 8.
        assert_eq!(packet.l4_offset, 14 + 40 + 48);
        assert_eq!(packet.l4_len, 25);
    }

    #[test]
    fn ipsec_auth_header_is_skipped() {
        let packet = packet(&udp_v4_behind_auth_header(b"hello"));
        assert_eq!(packet.protocol, Protocol::UDP);
        assert_eq!((packet.src_port, packet.dst_port), (POD_PORT, PEER_PORT));
        assert_eq!(packet.l4_offset, 14 + 20 + 24);
    }

    #[test]
    fn ipv6_headers_that_cannot_be_skipped_are_refused() {
        for header in [135, 139, 140, 253, 254] {
            let mut frame = Vec::new();
            ipv6()
                .write(&mut frame, IpNumber(header), &[0; 16])
                .unwrap();
            assert_eq!(
                parse(&frame),
                Err(DropReason::UnknownIpv6Extension),
                "{header}"
            );
        }
    }

    #[test]
    fn hop_by_hop_options_after_another_header_are_malformed() {
        // Destination options pointing at hop-by-hop options pointing at "no next header".
        let headers = [0, 0, 1, 4, 0, 0, 0, 0, 59, 0, 1, 4, 0, 0, 0, 0];
        let mut frame = Vec::new();
        ipv6()
            .write(&mut frame, IpNumber(number::DESTINATION_OPTIONS), &headers)
            .unwrap();
        assert_eq!(parse(&frame), Err(DropReason::BadIpHeader));
    }

    #[test]
    fn ipv6_extension_header_cut_by_the_payload_length_is_truncated() {
        let mut frame = Vec::new();
        ipv6()
            .write(
                &mut frame,
                IpNumber(number::DESTINATION_OPTIONS),
                &[6, 1, 0, 0, 0, 0, 0, 0],
            )
            .unwrap();
        assert_eq!(parse(&frame), Err(truncated(Layer::IpExtension)));
    }

    #[test]
    fn initial_ipv4_fragment_is_parsed_although_udp_length_covers_the_whole_datagram() {
        let frame = first_fragment_v4(&[0; 100]);
        let packet = packet(&frame);
        assert_eq!(packet.protocol, Protocol::UDP);
        assert_eq!((packet.src_port, packet.dst_port), (POD_PORT, PEER_PORT));
        assert_eq!(packet.l4_len, 24);
    }

    #[test]
    fn non_initial_ipv4_fragment_is_dropped() {
        let mut frame = udp_v4(&[0; 64]);
        rewrite_ipv4_header(&mut frame, |header| {
            header.fragment_offset = IpFragOffset::try_new(185).unwrap();
        });
        assert_eq!(parse(&frame), Err(DropReason::Fragment));
    }

    #[test]
    fn initial_fragment_without_a_whole_l4_header_is_truncated() {
        let mut frame = tcp_v4(&[0; 64]);
        rewrite_ipv4_header(&mut frame, |header| {
            header.more_fragments = true;
            header.total_len = 20 + 16;
        });
        assert_eq!(parse(&frame), Err(truncated(Layer::Transport)));
    }

    #[test]
    fn ipv6_fragments_are_parsed_when_initial_and_dropped_otherwise() {
        let first = packet(&first_fragment_v6(&[0; 40]));
        assert_eq!((first.protocol, first.dst_port), (Protocol::UDP, PEER_PORT));
        assert_eq!(first.l4_offset, 14 + 40 + 8);
        assert_eq!(
            parse(&fragment_v6(100, true, &[0; 40])),
            Err(DropReason::Fragment)
        );
        assert_eq!(
            parse(&fragment_v6(100, false, &[0; 40])),
            Err(DropReason::Fragment)
        );
    }

    #[test]
    fn non_initial_ipv6_fragment_stops_the_walk_at_its_fragment_header() {
        // The fragment header names destination options, but what follows it is the middle of
        // the datagram, too short to be one.
        let fragment = Ipv6FragmentHeader::new(
            IpNumber(number::DESTINATION_OPTIONS),
            IpFragOffset::try_new(3).unwrap(),
            true,
            1,
        );
        let mut frame = Vec::new();
        ipv6()
            .write(&mut frame, IpNumber(number::FRAGMENT), &fragment.to_bytes())
            .unwrap();
        assert_eq!(parse(&frame), Err(DropReason::Fragment));
    }

    #[test]
    fn ipv4_header_with_a_wrong_checksum_is_dropped() {
        let mut frame = udp_v4(b"x");
        frame[14 + 10] ^= 0x01;
        assert_eq!(parse(&frame), Err(DropReason::BadIpv4Checksum));
    }

    #[test]
    fn ip_length_beyond_the_frame_or_below_the_header_is_a_mismatch() {
        let mut long = udp_v4(b"x");
        rewrite_ipv4_header(&mut long, |header| header.total_len = 200);
        assert_eq!(parse(&long), Err(DropReason::IpLengthMismatch));

        let mut short = udp_v4(b"x");
        rewrite_ipv4_header(&mut short, |header| header.total_len = 19);
        short.resize(60, 0);
        assert_eq!(parse(&short), Err(DropReason::IpLengthMismatch));

        let mut v6 = udp_v6(b"x");
        v6[18..20].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(parse(&v6), Err(DropReason::IpLengthMismatch));
    }

    #[test]
    fn wrong_ip_version_for_the_ether_type_is_malformed() {
        let mut frame = udp_v6(b"x");
        frame[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
        assert_eq!(parse(&frame), Err(DropReason::BadIpHeader));
        let mut frame = udp_v4(&[0; 40]);
        frame[12..14].copy_from_slice(&EtherType::IPV6.0.to_be_bytes());
        assert_eq!(parse(&frame), Err(DropReason::BadIpHeader));
    }

    #[test]
    fn ethernet_padding_after_the_ip_packet_is_ignored() {
        let frame = udp_v4(&[]);
        let mut padded = frame.clone();
        padded.resize(60, 0);
        assert_eq!(parse(&padded), parse(&frame));
        assert_eq!(packet(&padded).l4_len, 8);
    }

    #[test]
    fn malformed_tcp_and_udp_headers_are_dropped() {
        let mut tcp = tcp_v4(b"x");
        tcp[14 + 20 + 12] = 0x40;
        assert_eq!(parse(&tcp), Err(DropReason::BadTransportHeader));

        for udp_len in [7u16, 10] {
            let mut udp = udp_v4(b"x");
            udp[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&udp_len.to_be_bytes());
            assert_eq!(
                parse(&udp),
                Err(DropReason::BadTransportHeader),
                "{udp_len}"
            );
        }

        let mut short_tcp = Vec::new();
        ipv4()
            .write(&mut short_tcp, IpNumber::TCP, &[0; 19])
            .unwrap();
        assert_eq!(parse(&short_tcp), Err(truncated(Layer::Transport)));
    }

    #[test]
    fn udp_length_below_the_ip_payload_bounds_the_segment() {
        let mut frame = udp_v4(&[0; 10]);
        frame[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(packet(&frame).l4_len, 12);
    }

    #[test]
    fn other_ip_protocols_pass_with_no_ports() {
        let mut frame = Vec::new();
        ipv4().write(&mut frame, IpNumber(47), &[0; 4]).unwrap();
        let packet = packet(&frame);
        assert_eq!(packet.protocol, Protocol(47));
        assert_eq!(
            (packet.src_port, packet.dst_port, packet.icmp),
            (0, 0, None)
        );
        assert_eq!(packet.l4_len, 4);
    }

    #[test]
    fn bare_ip_packets_parse_like_frames_with_offsets_from_the_ip_header() {
        for frame in [tcp_v4(b"tun"), udp_v6(b"tun"), icmp_error_v4(b"tun")] {
            let in_frame = packet(&frame);
            let Ok(Frame::Ip(bare)) = parse_ip(ip_part(&frame)) else {
                panic!("expected an IP packet");
            };
            assert_eq!(bare.l3_offset, 0);
            assert_eq!(bare.l4_offset, in_frame.l4_offset - 14);
            assert_eq!(
                Packet {
                    l3_offset: in_frame.l3_offset,
                    l4_offset: in_frame.l4_offset,
                    ..bare
                },
                in_frame
            );
        }
        assert_eq!(
            parse_ip(ip_part(&neighbor_solicitation(&[]))),
            Ok(Frame::NeighborDiscovery)
        );
        assert_eq!(parse_ip(&[]), Err(truncated(Layer::Ip)));
        assert_eq!(parse_ip(&[0x50; 40]), Err(DropReason::BadIpHeader));
    }

    #[test]
    fn drop_reasons_index_all_in_order_with_unique_kebab_case_names() {
        for (position, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position, "{reason:?}");
            let name = reason.as_str();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
        assert_eq!(
            truncated(Layer::IpExtension).to_string(),
            "frame ends inside the ip-extension header"
        );
    }

    /// Every prefix of `frame` shorter than `whole_len` (the frame before padding) must be
    /// refused, and every longer one must parse exactly as the whole frame does.
    fn check_truncations(frame: &[u8], whole_len: usize) -> Result<(), TestCaseError> {
        let whole = parse(frame);
        prop_assert!(whole.is_ok(), "{whole:?}");
        for len in 0..frame.len() {
            let cut = parse(&frame[..len]);
            if len < whole_len {
                prop_assert!(cut.is_err(), "prefix of {len} bytes parsed: {cut:?}");
            } else {
                prop_assert_eq!(cut, whole, "prefix of {} bytes", len);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn random_bytes_behind_an_ip_ether_type_never_panic(
            ether_type in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806)],
            version in 0u8..16,
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut frame = vec![0; 12];
            frame.extend_from_slice(&ether_type.to_be_bytes());
            frame.push(version << 4 | 5);
            frame.extend_from_slice(&bytes);
            let _ = parse(&frame);
        }

        #[test]
        fn truncated_frames_are_refused_or_parse_as_the_whole_frame(
            kind in 0..VALID.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..80),
            padding in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut frame = VALID[kind](&payload);
            let whole_len = frame.len();
            frame.extend_from_slice(&padding);
            check_truncations(&frame, whole_len)?;
        }

        #[test]
        fn truncated_bare_ip_packets_are_refused_or_parse_as_the_whole_packet(
            kind in 0..VALID.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let frame = VALID[kind](&payload);
            let whole = parse_ip(ip_part(&frame));
            prop_assume!(frame[12..14] != EtherType::ARP.0.to_be_bytes());
            prop_assert!(whole.is_ok(), "{:?}", whole);
            for len in 0..frame.len() - 14 {
                prop_assert!(parse_ip(&ip_part(&frame)[..len]).is_err());
            }
        }

        #[test]
        fn frames_with_flipped_bytes_never_panic(
            kind in 0..VALID.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..80),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut frame = VALID[kind](&payload);
            for (at, value) in flips {
                let at = at.index(frame.len());
                frame[at] = value;
            }
            let _ = parse(&frame);
            let _ = parse_ip(ip_part(&frame));
        }
    }
}
