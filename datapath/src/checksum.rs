//! Completing TCP and UDP checksums a pod's kernel left partial.
//!
//! With TX checksum offload on (the veth default), a pod's kernel sends TCP and UDP with only
//! the folded pseudo-header sum in the checksum field and the `CHECKSUM_PARTIAL` flag on the
//! skb, trusting a device to finish the job. AF_XDP hands over the bytes without the flag, so a
//! segment forwarded as it came is dropped by the receiver (`TcpInCsumErrors`). The filter
//! completes it instead. (A TUN device offers no offload, so the kernel completes what it
//! writes there itself.)
//!
//! Per packet and in place: no allocation, nothing written but the checksum field. ICMP and
//! ICMPv6 checksums are always computed in software and never partial. SCTP is left alone: its
//! CRC32c is offloaded only by a kernel that has SCTP, and this kernel has none (see
//! notes/datapath-facts.md), so SCTP here comes from raw sockets that write the whole packet
//! themselves. A kernel with SCTP on a veth would send it partial too, and then this module
//! needs a CRC32c completion as well.
//!
//! The pseudo-header uses the final destination. For IPv6 routing headers that is read from the
//! header; IPv4 source-route options are not looked at, since Linux drops source-routed IPv4 by
//! default (`accept_source_route = 0`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::Protocol;

use crate::frame::Packet;

/// Why a checksum was not completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ChecksumError {
    /// The packet was not parsed from this frame: its offsets fall outside it, or the IP
    /// version there is not the packet's.
    #[error("packet does not describe this frame")]
    FrameMismatch,
    /// A fragment: the checksum covers the whole datagram, which no single frame holds. The
    /// kernel resolves a partial checksum before it fragments, so forward the frame as it is.
    #[error("fragmented datagram")]
    Fragment,
    /// An IPv6 routing header with segments left whose final destination (which the
    /// pseudo-header uses) cannot be read: not type 0, 2 or 4 (segment routing).
    #[error("IPv6 routing header of an unsupported type")]
    UnsupportedRoutingHeader,
}

/// Recomputes the TCP/UDP checksum (IPv4 and IPv6 pseudo-header) of an IP packet inside `frame`
/// in place. It does not matter what the field held before; a UDP/IPv4 packet without a
/// checksum (field 0) keeps none. Other protocols are left as they are, with `Ok`.
///
/// This makes a corrupted packet look intact; on the forwarding path prefer
/// [`complete_partial_l4_checksum`], which only touches checksums that are partial.
pub fn complete_l4_checksum(frame: &mut [u8], packet: &Packet) -> Result<(), ChecksumError> {
    let Some(segment) = Segment::locate(frame, packet)? else {
        return Ok(());
    };
    if segment.has_no_checksum(frame) {
        return Ok(());
    }
    segment.write(frame);
    Ok(())
}

/// Completes the TCP/UDP checksum only if the field holds the partial form, the folded
/// pseudo-header sum that checksum offload leaves there. Returns whether it did. Costs a few
/// additions when the checksum is already complete; a wrong checksum stays wrong, so the
/// receiver still drops what was corrupted.
///
/// A complete checksum equal to the pseudo-header sum by chance (one in 65535) is recomputed,
/// which yields the same value if the packet is intact.
pub fn complete_partial_l4_checksum(
    frame: &mut [u8],
    packet: &Packet,
) -> Result<bool, ChecksumError> {
    let Some(segment) = Segment::locate(frame, packet)? else {
        return Ok(false);
    };
    if segment.has_no_checksum(frame) || segment.field_value(frame) != fold(segment.pseudo) {
        return Ok(false);
    }
    segment.write(frame);
    Ok(true)
}

/// Whether the TCP/UDP checksum of the packet verifies (a UDP/IPv4 packet without checksum
/// counts as valid). `false` for anything it cannot verify: other protocols, fragments, and
/// packets that do not fit the frame.
pub fn l4_checksum_is_valid(frame: &[u8], packet: &Packet) -> bool {
    let Ok(Some(segment)) = Segment::locate(frame, packet) else {
        return false;
    };
    if segment.has_no_checksum(frame) {
        return true;
    }
    let Some(bytes) = frame.get(segment.start..segment.end) else {
        return false;
    };
    fold(segment.pseudo + sum_words(bytes)) == 0xffff
}

/// Whether `bytes`, checksum field included, sum to ones'-complement zero, as an IPv4 header
/// must.
pub(crate) fn is_valid_internet_checksum(bytes: &[u8]) -> bool {
    fold(sum_words(bytes)) == 0xffff
}

/// The ones'-complement sum of `bytes` read as big-endian 16-bit words (an odd last byte padded
/// with zero), folded to 16 bits so it can be added to other sums.
///
/// It sums native-endian 32-bit words into a 64-bit accumulator and swaps once at the end: the
/// ones'-complement sum does not care about byte order (RFC 1071 §2(B)) or word width once
/// folded, no carry needs handling before 2^32 words, and the loop vectorises without a byte
/// swap per word, about twice as fast on a 1500-byte segment as swapping each word.
pub(crate) fn sum_words(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(4);
    let sum: u64 = words
        .by_ref()
        .map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    let tail = match *words.remainder() {
        [a] => [a, 0, 0, 0],
        [a, b] => [a, b, 0, 0],
        [a, b, c] => [a, b, c, 0],
        _ => [0; 4],
    };
    let folded = fold(sum + u64::from(u32::from_ne_bytes(tail)));
    u64::from(u16::from_be_bytes(folded.to_ne_bytes()))
}

/// Folds a sum to 16 bits with end-around carry. Nonzero input never folds to 0.
pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Where a TCP/UDP checksum lives and what it covers.
#[derive(Clone, Copy)]
struct Segment {
    /// The upper-layer segment in the frame.
    start: usize,
    end: usize,
    /// The checksum field, from the start of the segment.
    field: usize,
    /// Unfolded pseudo-header sum.
    pseudo: u64,
    /// UDP over IPv4, where a zero field means "no checksum".
    optional: bool,
    udp: bool,
}

impl Segment {
    /// `None` for protocols this module does not complete.
    // Inlined, like the methods below, so the segment stays in registers: kept in memory, it
    // was stored piecewise and loaded whole, a store-forwarding stall that cost more than the
    // check itself.
    #[inline(always)]
    fn locate(frame: &[u8], packet: &Packet) -> Result<Option<Segment>, ChecksumError> {
        let (field, min_len, udp) = match packet.protocol {
            Protocol::TCP => (16, 20, false),
            Protocol::UDP => (6, 8, true),
            _ => return Ok(None),
        };
        let l3 = usize::from(packet.l3_offset);
        let start = usize::from(packet.l4_offset);
        let len = usize::from(packet.l4_len);
        let end = start + len;
        if len < min_len || end > frame.len() || start <= l3 {
            return Err(ChecksumError::FrameMismatch);
        }
        // Protocol, then length: a 16-bit word and a 32-bit one in the v6 layout, but both add
        // up the same in a ones'-complement sum.
        let tail = u64::from(packet.protocol.0) + len as u64;
        let version = frame.get(l3).map(|byte| byte >> 4);
        let pseudo = match (packet.src, packet.dst, version) {
            (IpAddr::V4(src), IpAddr::V4(dst), Some(4)) => {
                ipv4_check_unfragmented(frame, l3)?;
                sum_v4(src) + sum_v4(dst) + tail
            }
            (IpAddr::V6(src), IpAddr::V6(dst), Some(6)) => {
                let destination = if start == l3 + IPV6_FIXED_HEADER_LEN {
                    dst
                } else {
                    ipv6_pseudo_destination(frame, l3, start, dst)?
                };
                sum_v6(src) + sum_v6(destination) + tail
            }
            _ => return Err(ChecksumError::FrameMismatch),
        };
        Ok(Some(Segment {
            start,
            end,
            field,
            pseudo,
            optional: udp && packet.src.is_ipv4(),
            udp,
        }))
    }

    #[inline(always)]
    fn field_value(self, frame: &[u8]) -> u16 {
        let at = self.start + self.field;
        match frame.get(at..at + 2) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }

    #[inline(always)]
    fn has_no_checksum(self, frame: &[u8]) -> bool {
        self.optional && self.field_value(frame) == 0
    }

    #[inline(always)]
    fn write(self, frame: &mut [u8]) {
        let Some(segment) = frame.get_mut(self.start..self.end) else {
            return;
        };
        let Some(field) = segment.get_mut(self.field..self.field + 2) else {
            return;
        };
        field.fill(0);
        let mut checksum = !fold(self.pseudo + sum_words(segment));
        // In UDP a zero field means "no checksum", and 0xffff is the same number in ones'
        // complement.
        if self.udp && checksum == 0 {
            checksum = 0xffff;
        }
        if let Some(field) = segment.get_mut(self.field..self.field + 2) {
            field.copy_from_slice(&checksum.to_be_bytes());
        }
    }
}

fn sum_v4(address: Ipv4Addr) -> u64 {
    u64::from(address.to_bits())
}

fn sum_v6(address: Ipv6Addr) -> u64 {
    let bits = address.to_bits();
    [96, 64, 32, 0]
        .into_iter()
        .map(|shift| u64::from((bits >> shift) as u32))
        .sum()
}

const IPV6_FIXED_HEADER_LEN: usize = 40;

fn ipv4_check_unfragmented(frame: &[u8], l3: usize) -> Result<(), ChecksumError> {
    let Some(&[_, _, _, _, _, _, flags_offset, offset]) =
        frame.get(l3..).and_then(|b| b.first_chunk::<8>())
    else {
        return Err(ChecksumError::FrameMismatch);
    };
    // The more-fragments bit (0x20), then the 13-bit offset.
    if flags_offset & 0x3f != 0 || offset != 0 {
        return Err(ChecksumError::Fragment);
    }
    Ok(())
}

/// The destination the pseudo-header uses: the final one (RFC 8200 §8.1), which differs from the
/// header's while a routing header has segments left. Refuses fragments on the way.
fn ipv6_pseudo_destination(
    frame: &[u8],
    l3: usize,
    l4: usize,
    dst: Ipv6Addr,
) -> Result<Ipv6Addr, ChecksumError> {
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const AUTH: u8 = 51;

    let headers = frame.get(l3..l4).ok_or(ChecksumError::FrameMismatch)?;
    let Some((fixed, mut rest)) = headers.split_first_chunk::<IPV6_FIXED_HEADER_LEN>() else {
        return Err(ChecksumError::FrameMismatch);
    };
    let mut next = fixed[6];
    let mut destination = dst;
    // Only headers `frame::parse` walked past lie between the fixed header and the L4 offset.
    while let Some(&[following, len_field, b2, b3, ..]) = rest.first_chunk::<8>() {
        let len = match next {
            FRAGMENT => {
                if u16::from_be_bytes([b2, b3]) & 0xfff9 != 0 {
                    return Err(ChecksumError::Fragment);
                }
                8
            }
            AUTH => (usize::from(len_field) + 2) * 4,
            _ => (usize::from(len_field) + 1) * 8,
        };
        let header = rest.get(..len).ok_or(ChecksumError::FrameMismatch)?;
        if next == ROUTING && b3 != 0 {
            destination = routing_final_destination(header, b2)?;
        }
        rest = rest.get(len..).unwrap_or_default();
        next = following;
    }
    if !rest.is_empty() {
        return Err(ChecksumError::FrameMismatch);
    }
    Ok(destination)
}

/// The last address a routing header sends the packet to.
fn routing_final_destination(header: &[u8], routing_type: u8) -> Result<Ipv6Addr, ChecksumError> {
    const ADDRESSES_START: usize = 8;
    let at = match routing_type {
        // Type 0 (deprecated, RFC 5095) lists the addresses in order; the last is final.
        0 => {
            let count = header.len().saturating_sub(ADDRESSES_START) / 16;
            ADDRESSES_START + 16 * count.saturating_sub(1)
        }
        // Type 2 (Mobile IPv6) holds one address; type 4 (segment routing, RFC 8754) lists
        // segments in reverse, the final one first.
        2 | 4 => ADDRESSES_START,
        _ => return Err(ChecksumError::UnsupportedRoutingHeader),
    };
    header
        .get(at..)
        .and_then(|b| b.first_chunk::<16>())
        .map(|octets| Ipv6Addr::from(*octets))
        .ok_or(ChecksumError::FrameMismatch)
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use etherparse::checksum::Sum16BitWords;
    use etherparse::{
        IpNumber, Ipv6Extensions, Ipv6RawExtHeader, Ipv6RoutingExtensions, TcpHeader, UdpHeader,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::frame::tests::{
        echo_request_v4, first_fragment_v4, first_fragment_v6, icmp_error_v4, ipv6_with, packet,
        routing_header, sctp_v4, tcp_v4, tcp_v6, udp_v4, udp_v6, Build, POD_V6, VALID,
    };
    use crate::frame::{parse, Frame};

    const FINAL_V6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0x09];

    fn field_range(packet: &Packet) -> Range<usize> {
        let start = usize::from(packet.l4_offset)
            + if packet.protocol == Protocol::TCP {
                16
            } else {
                6
            };
        start..start + 2
    }

    fn field(frame: &[u8], packet: &Packet) -> u16 {
        u16::from_be_bytes(frame[field_range(packet)].try_into().unwrap())
    }

    fn set_field(frame: &mut [u8], packet: &Packet, value: u16) {
        frame[field_range(packet)].copy_from_slice(&value.to_be_bytes());
    }

    /// What a pod's kernel with TX checksum offload leaves in the field: the folded pseudo-header
    /// sum, computed here with etherparse rather than with the code under test.
    fn make_partial(frame: &mut [u8], packet: &Packet, destination: Option<[u8; 16]>) {
        let proto = [0, packet.protocol.0];
        let mut words = Sum16BitWords::new();
        let words = match (packet.src, packet.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => words
                .add_4bytes(src.octets())
                .add_4bytes(dst.octets())
                .add_2bytes(proto)
                .add_2bytes(packet.l4_len.to_be_bytes()),
            (IpAddr::V6(src), IpAddr::V6(dst)) => words
                .add_16bytes(src.octets())
                .add_16bytes(destination.unwrap_or(dst.octets()))
                .add_4bytes(u32::from(packet.l4_len).to_be_bytes())
                .add_2bytes(proto),
            _ => unreachable!(),
        };
        set_field(frame, packet, !from_etherparse(words.ones_complement()));
    }

    /// etherparse sums in native byte order and leaves its result so.
    fn from_etherparse(checksum: u16) -> u16 {
        u16::from_be_bytes(checksum.to_ne_bytes())
    }

    /// etherparse's own checksum of the segment, for the header's destination or `destination`.
    fn etherparse_checksum(frame: &[u8], packet: &Packet, destination: Option<[u8; 16]>) -> u16 {
        let segment = &frame[usize::from(packet.l4_offset)..][..usize::from(packet.l4_len)];
        match (packet.protocol, packet.src, packet.dst) {
            (Protocol::TCP, IpAddr::V4(src), IpAddr::V4(dst)) => {
                let (header, payload) = TcpHeader::from_slice(segment).unwrap();
                header
                    .calc_checksum_ipv4_raw(src.octets(), dst.octets(), payload)
                    .unwrap()
            }
            (Protocol::TCP, IpAddr::V6(src), IpAddr::V6(dst)) => {
                let (header, payload) = TcpHeader::from_slice(segment).unwrap();
                let dst = destination.unwrap_or(dst.octets());
                header
                    .calc_checksum_ipv6_raw(src.octets(), dst, payload)
                    .unwrap()
            }
            (Protocol::UDP, IpAddr::V4(src), IpAddr::V4(dst)) => {
                let (header, payload) = UdpHeader::from_slice(segment).unwrap();
                header
                    .calc_checksum_ipv4_raw(src.octets(), dst.octets(), payload)
                    .unwrap()
            }
            (Protocol::UDP, IpAddr::V6(src), IpAddr::V6(dst)) => {
                let (header, payload) = UdpHeader::from_slice(segment).unwrap();
                let dst = destination.unwrap_or(dst.octets());
                header
                    .calc_checksum_ipv6_raw(src.octets(), dst, payload)
                    .unwrap()
            }
            other => panic!("no checksum for {other:?}"),
        }
    }

    const TCP_AND_UDP: [Build; 4] = [tcp_v4, tcp_v6, udp_v4, udp_v6];

    proptest! {
        #[test]
        fn sum_matches_etherparse_for_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let expected = Sum16BitWords::new().add_slice(&bytes).ones_complement();
            prop_assert_eq!(!fold(sum_words(&bytes)), from_etherparse(expected));
        }

        #[test]
        fn partial_checksums_are_completed_to_what_etherparse_computes(
            kind in 0..TCP_AND_UDP.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..301),
        ) {
            let built = TCP_AND_UDP[kind](&payload);
            let packet = packet(&built);
            prop_assert!(l4_checksum_is_valid(&built, &packet));

            let mut frame = built.clone();
            make_partial(&mut frame, &packet, None);
            let coincidence = frame == built;
            prop_assert_eq!(complete_partial_l4_checksum(&mut frame, &packet), Ok(true));
            prop_assert_eq!(&frame, &built);

            make_partial(&mut frame, &packet, None);
            prop_assert!(coincidence || !l4_checksum_is_valid(&frame, &packet));
            prop_assert_eq!(complete_l4_checksum(&mut frame, &packet), Ok(()));
            prop_assert_eq!(&frame, &built);
        }

        #[test]
        fn any_checksum_field_is_recomputed_to_what_etherparse_computes(
            kind in 0..TCP_AND_UDP.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..301),
            garbage in 1..=u16::MAX,
        ) {
            let mut frame = TCP_AND_UDP[kind](&payload);
            let packet = packet(&frame);
            set_field(&mut frame, &packet, garbage);
            complete_l4_checksum(&mut frame, &packet).unwrap();
            prop_assert_eq!(field(&frame, &packet), etherparse_checksum(&frame, &packet, None));
            prop_assert!(l4_checksum_is_valid(&frame, &packet));
        }

        #[test]
        fn complete_checksums_are_left_alone_by_partial_completion(
            kind in 0..TCP_AND_UDP.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flip in any::<prop::sample::Index>(),
        ) {
            // A corrupted payload byte keeps its now wrong checksum, so the receiver drops it.
            let mut frame = TCP_AND_UDP[kind](&payload);
            let packet = packet(&frame);
            let segment = usize::from(packet.l4_offset)..frame.len();
            let at = segment.start + flip.index(segment.len());
            prop_assume!(!field_range(&packet).contains(&at));
            let pseudo = Segment::locate(&frame, &packet).unwrap().unwrap().pseudo;
            prop_assume!(field(&frame, &packet) != fold(pseudo));
            frame[at] ^= 0x5a;
            let corrupted = frame.clone();
            let completed = complete_partial_l4_checksum(&mut frame, &packet).unwrap();
            prop_assert!(!completed);
            prop_assert_eq!(&frame, &corrupted);
            prop_assert!(!l4_checksum_is_valid(&frame, &packet));
        }

        #[test]
        fn checksum_functions_never_panic_on_parsed_mangled_frames(
            kind in 0..VALID.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..80),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut frame = VALID[kind](&payload);
            for (at, value) in flips {
                let at = at.index(frame.len());
                frame[at] = value;
            }
            if let Ok(Frame::Ip(packet)) = parse(&frame) {
                let _ = l4_checksum_is_valid(&frame, &packet);
                let _ = complete_partial_l4_checksum(&mut frame.clone(), &packet);
                let _ = complete_l4_checksum(&mut frame, &packet);
            }
        }

        #[test]
        fn checksum_functions_never_panic_on_packets_from_other_frames(
            kind in 0..VALID.len(),
            other in 0..VALID.len(),
            payload in proptest::collection::vec(any::<u8>(), 0..80),
            cut in any::<prop::sample::Index>(),
        ) {
            let source = VALID[kind](&payload);
            let mut frame = VALID[other](&[]);
            frame.truncate(cut.index(frame.len() + 1));
            if let Ok(Frame::Ip(packet)) = parse(&source) {
                let _ = l4_checksum_is_valid(&frame, &packet);
                let _ = complete_partial_l4_checksum(&mut frame.clone(), &packet);
                let _ = complete_l4_checksum(&mut frame, &packet);
            }
        }
    }

    #[test]
    fn bare_ip_packets_from_tun_are_completed_too() {
        for built in [tcp_v4(b"tun"), udp_v6(b"tun")] {
            let built = built[14..].to_vec();
            let Ok(Frame::Ip(packet)) = crate::frame::parse_ip(&built) else {
                panic!("expected an IP packet");
            };
            let mut frame = built.clone();
            make_partial(&mut frame, &packet, None);
            assert_eq!(complete_partial_l4_checksum(&mut frame, &packet), Ok(true));
            assert_eq!(frame, built);
        }
    }

    #[test]
    fn udp_over_ipv4_without_checksum_keeps_none() {
        let mut frame = udp_v4(b"no checksum");
        let packet = packet(&frame);
        set_field(&mut frame, &packet, 0);
        let before = frame.clone();
        assert!(l4_checksum_is_valid(&frame, &packet));
        assert_eq!(complete_l4_checksum(&mut frame, &packet), Ok(()));
        assert_eq!(complete_partial_l4_checksum(&mut frame, &packet), Ok(false));
        assert_eq!(frame, before);
    }

    #[test]
    fn udp_over_ipv6_without_checksum_is_invalid_and_gets_one() {
        let built = udp_v6(b"mandatory");
        let packet = packet(&built);
        let mut frame = built.clone();
        set_field(&mut frame, &packet, 0);
        assert!(!l4_checksum_is_valid(&frame, &packet));
        assert_eq!(complete_l4_checksum(&mut frame, &packet), Ok(()));
        assert_eq!(frame, built);
    }

    #[test]
    fn udp_checksum_computing_to_zero_is_sent_as_ffff() {
        // Two payload bytes equal to the checksum of the datagram with them zero bring its
        // ones'-complement sum to 0xffff, so the checksum computes to 0.
        let probe = udp_v4(&[0, 0]);
        let packet = packet(&probe);
        let payload = field(&probe, &packet).to_be_bytes();
        let mut frame = udp_v4(&payload);
        set_field(&mut frame, &packet, 0x1234);
        complete_l4_checksum(&mut frame, &packet).unwrap();
        assert_eq!(field(&frame, &packet), 0xffff);
        assert!(l4_checksum_is_valid(&frame, &packet));
    }

    #[test]
    fn fragments_are_refused_with_their_checksum_untouched() {
        for built in [first_fragment_v4(&[3; 64]), first_fragment_v6(&[3; 64])] {
            let packet = packet(&built);
            let mut frame = built.clone();
            assert_eq!(
                complete_l4_checksum(&mut frame, &packet),
                Err(ChecksumError::Fragment)
            );
            assert_eq!(
                complete_partial_l4_checksum(&mut frame, &packet),
                Err(ChecksumError::Fragment)
            );
            assert!(!l4_checksum_is_valid(&frame, &packet));
            assert_eq!(frame, built);
        }
    }

    fn udp_v6_routed(routing: Ipv6RawExtHeader, payload: &[u8]) -> Vec<u8> {
        let extensions = Ipv6Extensions {
            routing: Some(Ipv6RoutingExtensions {
                routing,
                final_destination_options: None,
            }),
            ..Default::default()
        };
        let mut frame = Vec::new();
        ipv6_with(extensions)
            .udp(1, 2)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    #[test]
    fn routed_ipv6_pseudo_header_uses_the_final_destination() {
        let built = udp_v6_routed(routing_header(FINAL_V6, 1), b"routed");
        let packet = packet(&built);
        let mut frame = built.clone();
        make_partial(&mut frame, &packet, Some(FINAL_V6));
        assert_eq!(complete_partial_l4_checksum(&mut frame, &packet), Ok(true));
        assert_eq!(
            field(&frame, &packet),
            etherparse_checksum(&frame, &packet, Some(FINAL_V6))
        );
        assert!(l4_checksum_is_valid(&frame, &packet));
    }

    #[test]
    fn routed_ipv6_at_its_last_segment_uses_the_header_destination() {
        let built = udp_v6_routed(routing_header(FINAL_V6, 0), b"arrived");
        let packet = packet(&built);
        assert!(l4_checksum_is_valid(&built, &packet));
    }

    #[test]
    fn segment_routing_final_destination_is_the_first_segment() {
        let mut srh = vec![4, 2, 1, 0, 0, 0];
        srh.extend_from_slice(&FINAL_V6);
        srh.extend_from_slice(&POD_V6);
        let built = udp_v6_routed(
            Ipv6RawExtHeader::new_raw(IpNumber::UDP, &srh).unwrap(),
            b"sr",
        );
        let packet = packet(&built);
        let mut frame = built.clone();
        set_field(&mut frame, &packet, 1);
        complete_l4_checksum(&mut frame, &packet).unwrap();
        assert_eq!(
            field(&frame, &packet),
            etherparse_checksum(&frame, &packet, Some(FINAL_V6))
        );
    }

    #[test]
    fn routing_header_of_unknown_type_with_segments_left_is_refused() {
        let mut rpl = vec![3, 1, 0, 0, 0, 0];
        rpl.extend_from_slice(&FINAL_V6);
        let built = udp_v6_routed(
            Ipv6RawExtHeader::new_raw(IpNumber::UDP, &rpl).unwrap(),
            b"x",
        );
        let packet = packet(&built);
        let mut frame = built.clone();
        assert_eq!(
            complete_l4_checksum(&mut frame, &packet),
            Err(ChecksumError::UnsupportedRoutingHeader)
        );
        assert_eq!(frame, built);
    }

    #[test]
    fn protocols_without_an_offloaded_checksum_are_left_alone() {
        for built in [
            sctp_v4(b"chunk"),
            echo_request_v4(b"ping"),
            icmp_error_v4(b""),
        ] {
            let packet = packet(&built);
            let mut frame = built.clone();
            assert_eq!(complete_l4_checksum(&mut frame, &packet), Ok(()));
            assert_eq!(complete_partial_l4_checksum(&mut frame, &packet), Ok(false));
            assert!(!l4_checksum_is_valid(&frame, &packet));
            assert_eq!(frame, built);
        }
    }

    #[test]
    fn packet_of_another_frame_is_out_of_bounds() {
        let long = packet(&tcp_v4(&[0; 100]));
        let mut short = tcp_v4(&[0; 10]);
        assert_eq!(
            complete_l4_checksum(&mut short, &long),
            Err(ChecksumError::FrameMismatch)
        );
        assert!(!l4_checksum_is_valid(&short, &long));

        let v6_packet = packet(&tcp_v6(&[]));
        let mut v4_frame = tcp_v4(&[0; 100]);
        assert_eq!(
            complete_l4_checksum(&mut v4_frame, &v6_packet),
            Err(ChecksumError::FrameMismatch)
        );
    }
}
