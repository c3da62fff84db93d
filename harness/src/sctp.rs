//! The few SCTP packets `pw-probe` needs, built and read as bytes: INIT, INIT-ACK and ABORT
//! (RFC 9260), with the CRC32c checksum SCTP uses.
//!
//! This kernel has no SCTP module, so `pw-probe` speaks SCTP over raw sockets (protocol 132):
//! a probe counts as connected when an INIT is answered by an INIT-ACK, which is as far as a
//! packet filter's view of the association matters for policy. This module does no I/O and
//! must not grow into an SCTP stack: no association state, no data chunks.

use std::net::Ipv4Addr;

pub const PROTOCOL: i32 = 132;
pub const CHUNK_INIT: u8 = 1;
pub const CHUNK_INIT_ACK: u8 = 2;
pub const CHUNK_ABORT: u8 = 6;

const COMMON_HEADER_LEN: usize = 12;
/// INIT and INIT-ACK fixed part: chunk header (4) + tag, a_rwnd, streams, TSN (16).
const INIT_CHUNK_LEN: usize = 20;
const PARAM_STATE_COOKIE: u16 = 7;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Writes the checksum of a complete packet into its common header. SCTP sends the CRC32c in
/// little-endian byte order (what Linux's `sctp_end_cksum` and Wireshark agree on).
fn seal(mut packet: Vec<u8>) -> Vec<u8> {
    packet[8..12].fill(0);
    let crc = crc32c(&packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
    packet
}

fn common_header(src_port: u16, dst_port: u16, verification_tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&verification_tag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p
}

fn init_body(p: &mut Vec<u8>, kind: u8, length: usize, initiate_tag: u32, initial_tsn: u32) {
    p.push(kind);
    p.push(0);
    p.extend_from_slice(&(length as u16).to_be_bytes());
    p.extend_from_slice(&initiate_tag.to_be_bytes());
    p.extend_from_slice(&65_535u32.to_be_bytes()); // a_rwnd
    p.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&initial_tsn.to_be_bytes());
}

/// An INIT: verification tag 0, as RFC 9260 §8.5.1 requires of a packet carrying INIT.
/// `initiate_tag` must not be 0.
pub fn init(src_port: u16, dst_port: u16, initiate_tag: u32, initial_tsn: u32) -> Vec<u8> {
    let mut p = common_header(src_port, dst_port, 0);
    init_body(
        &mut p,
        CHUNK_INIT,
        INIT_CHUNK_LEN,
        initiate_tag,
        initial_tsn,
    );
    seal(p)
}

/// An INIT-ACK answering an INIT whose initiate tag was `peer_tag`: that tag goes in the
/// common header; the mandatory State Cookie parameter carries `cookie`.
pub fn init_ack(
    src_port: u16,
    dst_port: u16,
    peer_tag: u32,
    own_tag: u32,
    initial_tsn: u32,
    cookie: &[u8],
) -> Vec<u8> {
    let param_len = 4 + cookie.len();
    let padded = param_len.div_ceil(4) * 4;
    let mut p = common_header(src_port, dst_port, peer_tag);
    init_body(
        &mut p,
        CHUNK_INIT_ACK,
        INIT_CHUNK_LEN + param_len,
        own_tag,
        initial_tsn,
    );
    p.extend_from_slice(&PARAM_STATE_COOKIE.to_be_bytes());
    p.extend_from_slice(&(param_len as u16).to_be_bytes());
    p.extend_from_slice(cookie);
    p.resize(p.len() + padded - param_len, 0);
    seal(p)
}

/// An ABORT answering an INIT that cannot be accepted (no listener on that port): the
/// verification tag is the INIT's initiate tag and the T bit is clear (RFC 9260 §8.4).
pub fn abort(src_port: u16, dst_port: u16, peer_tag: u32) -> Vec<u8> {
    let mut p = common_header(src_port, dst_port, peer_tag);
    p.extend_from_slice(&[CHUNK_ABORT, 0, 0, 4]);
    seal(p)
}

/// The parts of a received SCTP packet a probe looks at: the common header and the first chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub verification_tag: u32,
    pub checksum_ok: bool,
    pub chunk_type: u8,
    /// The first chunk's value (after its 4-byte header), cut to its declared length.
    pub chunk_value: &'a [u8],
}

impl Packet<'_> {
    /// The initiate tag of an INIT or INIT-ACK chunk.
    pub fn initiate_tag(&self) -> Option<u32> {
        if !matches!(self.chunk_type, CHUNK_INIT | CHUNK_INIT_ACK) {
            return None;
        }
        let b = self.chunk_value.get(0..4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Reads an SCTP packet; `None` when it is too short to hold a common header and a chunk
/// header, or the first chunk's length is impossible. Never panics on any input.
pub fn parse(bytes: &[u8]) -> Option<Packet<'_>> {
    let header = bytes.get(..COMMON_HEADER_LEN + 4)?;
    let be16 = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let stored = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let mut zeroed = bytes.to_vec();
    zeroed[8..12].fill(0);
    let chunk_len = be16(14) as usize;
    if chunk_len < 4 {
        return None;
    }
    let chunk_value = bytes.get(COMMON_HEADER_LEN + 4..COMMON_HEADER_LEN + chunk_len)?;
    Some(Packet {
        src_port: be16(0),
        dst_port: be16(2),
        verification_tag: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
        checksum_ok: crc32c(&zeroed) == stored,
        chunk_type: header[12],
        chunk_value,
    })
}

/// Splits what an IPv4 raw socket returns (the IP header, then the payload) into source,
/// destination and payload. IPv6 raw sockets return the payload alone.
pub fn split_ipv4(datagram: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, &[u8])> {
    let first = *datagram.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = (first & 0x0f) as usize * 4;
    let header = datagram.get(..ihl.max(20))?;
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    Some((src, dst, datagram.get(ihl..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn init_is_32_bytes_with_a_zero_tag_and_a_valid_checksum() {
        let p = init(40000, 80, 0xdead_beef, 7);
        assert_eq!(p.len(), 32);
        let parsed = parse(&p).unwrap();
        assert!(parsed.checksum_ok);
        assert_eq!(parsed.verification_tag, 0);
        assert_eq!(parsed.chunk_type, CHUNK_INIT);
        assert_eq!((parsed.src_port, parsed.dst_port), (40000, 80));
        assert_eq!(parsed.initiate_tag(), Some(0xdead_beef));
    }

    #[test]
    fn init_ack_carries_the_peer_tag_and_a_padded_cookie() {
        let p = init_ack(80, 40000, 0xdead_beef, 0x1234_5678, 9, &[1, 2, 3, 4, 5]);
        assert_eq!(p.len() % 4, 0);
        let parsed = parse(&p).unwrap();
        assert!(parsed.checksum_ok);
        assert_eq!(parsed.verification_tag, 0xdead_beef);
        assert_eq!(parsed.chunk_type, CHUNK_INIT_ACK);
        assert_eq!(parsed.initiate_tag(), Some(0x1234_5678));
        // Chunk length covers the cookie parameter but not its padding.
        assert_eq!(u16::from_be_bytes([p[14], p[15]]), 20 + 4 + 5);
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut p = abort(80, 40000, 42);
        assert!(parse(&p).unwrap().checksum_ok);
        p[0] ^= 1;
        assert!(!parse(&p).unwrap().checksum_ok);
    }

    #[test]
    fn short_or_inconsistent_input_is_none_not_a_panic() {
        for len in 0..16 {
            assert_eq!(parse(&vec![0; len]), None);
        }
        let mut p = init(1, 2, 3, 4);
        p[15] = 200; // chunk longer than the packet
        assert_eq!(parse(&p), None);
        assert_eq!(split_ipv4(&[0x45, 0, 0]), None);
        assert_eq!(split_ipv4(&[0x60; 40]), None);
    }

    #[test]
    fn an_ipv4_header_is_split_off_by_its_length_field() {
        let mut d = vec![0u8; 24];
        d[0] = 0x46; // IHL 6: 24 bytes of header
        d[12..16].copy_from_slice(&[10, 0, 0, 1]);
        d[16..20].copy_from_slice(&[10, 0, 0, 2]);
        d.extend_from_slice(&[9, 9]);
        let (src, dst, payload) = split_ipv4(&d).unwrap();
        assert_eq!(src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(dst, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(payload, &[9, 9]);
    }
}
