//! The ICMP and ICMPv6 echo requests `pw-probe` pings with over raw sockets, and recognising
//! their replies among everything else a raw socket receives.

use etherparse::{Icmpv4Header, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Ipv4Slice};

/// Echo request and reply types: ICMP (RFC 792), ICMPv6 (RFC 4443).
pub const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
pub const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// One echo request: identifier, sequence number, code (a policy may match on it) and a
/// payload that tells its reply apart from other probes' in the same namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub v6: bool,
    pub id: u16,
    pub seq: u16,
    pub code: u8,
    pub payload: [u8; 16],
}

impl Echo {
    fn rest_of_header(&self) -> [u8; 4] {
        let [id_hi, id_lo] = self.id.to_be_bytes();
        let [seq_hi, seq_lo] = self.seq.to_be_bytes();
        [id_hi, id_lo, seq_hi, seq_lo]
    }

    /// The request as written to a raw socket. An ICMPv6 checksum covers the addresses of a
    /// pseudo-header, so it is left 0: the kernel fills it in on raw ICMPv6 sockets.
    pub fn request(&self) -> Vec<u8> {
        let mut bytes = if self.v6 {
            let mut header = vec![ECHO_REQUEST_V6, self.code, 0, 0];
            header.extend(self.rest_of_header());
            header
        } else {
            Icmpv4Header::with_checksum(
                Icmpv4Type::Unknown {
                    type_u8: ECHO_REQUEST_V4,
                    code_u8: self.code,
                    bytes5to8: self.rest_of_header(),
                },
                &self.payload,
            )
            .to_bytes()
            .to_vec()
        };
        bytes.extend(self.payload);
        bytes
    }

    /// Whether `received`, as read from a raw socket (ICMP: the IPv4 packet; ICMPv6: the
    /// message alone), is this request's reply.
    pub fn is_reply(&self, received: &[u8]) -> bool {
        let (kind, rest, payload) = if self.v6 {
            match Icmpv6Slice::from_slice(received) {
                Ok(icmp) => (icmp.type_u8(), icmp.bytes5to8(), icmp.payload()),
                Err(_) => return false,
            }
        } else {
            let Ok(ip) = Ipv4Slice::from_slice(received) else {
                return false;
            };
            match Icmpv4Slice::from_slice(ip.payload().payload) {
                Ok(icmp) => (icmp.type_u8(), icmp.bytes5to8(), icmp.payload()),
                Err(_) => return false,
            }
        };
        let reply = if self.v6 {
            ECHO_REPLY_V6
        } else {
            ECHO_REPLY_V4
        };
        kind == reply && rest == self.rest_of_header() && payload == self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn echo(v6: bool) -> Echo {
        Echo {
            v6,
            id: 0x1234,
            seq: 7,
            code: 1,
            payload: *b"pw-probe 0123456",
        }
    }

    /// An IPv4 packet carrying an ICMP message of `kind` with the request's rest of header.
    fn v4_packet(kind: u8, request: &Echo, payload: &[u8]) -> Vec<u8> {
        let builder =
            PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64).icmpv4(Icmpv4Type::Unknown {
                type_u8: kind,
                code_u8: request.code,
                bytes5to8: request.rest_of_header(),
            });
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn an_icmp_request_carries_its_code_and_a_valid_checksum() {
        let request = echo(false).request();
        let icmp = Icmpv4Slice::from_slice(&request).unwrap();
        assert_eq!((icmp.type_u8(), icmp.code_u8()), (8, 1));
        let recomputed = Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
        assert_eq!(icmp.checksum(), recomputed.checksum);
        assert_eq!(icmp.payload(), b"pw-probe 0123456");
    }

    #[test]
    fn only_the_matching_reply_is_recognised() {
        let request = echo(false);
        assert!(request.is_reply(&v4_packet(0, &request, &request.payload)));
        // The request itself, another probe's reply, another payload, a truncated packet.
        assert!(!request.is_reply(&v4_packet(8, &request, &request.payload)));
        let other = Echo { seq: 8, ..request };
        assert!(!request.is_reply(&v4_packet(0, &other, &request.payload)));
        assert!(!request.is_reply(&v4_packet(0, &request, b"someone else's")));
        assert!(!request.is_reply(&v4_packet(0, &request, &request.payload)[..24]));
    }

    #[test]
    fn icmpv6_replies_are_read_without_an_ip_header() {
        let request = echo(true);
        let bytes = request.request();
        assert_eq!(&bytes[..2], &[128, 1]);
        let mut reply = bytes.clone();
        reply[0] = 129;
        assert!(request.is_reply(&reply));
        assert!(!request.is_reply(&bytes));
        assert!(!request.is_reply(&reply[..6]));
    }
}
