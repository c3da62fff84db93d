//! ClassBench's text formats: rule lists (`db_generator` output) and header traces
//! (`trace_generator` output). Text in, values out; errors name the 1-based line.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: u32,
    pub len: u8,
}

impl Prefix {
    /// The prefix of `addr` of length `len` (≤ 32); host bits are cleared.
    pub fn new(addr: u32, len: u8) -> Prefix {
        let mask = mask(len);
        Prefix {
            addr: addr & mask,
            len,
        }
    }

    pub fn mask(self) -> u32 {
        mask(self.len)
    }

    pub fn contains(self, addr: u32) -> bool {
        addr & self.mask() == self.addr
    }
}

fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        _ => u32::MAX << (32 - u32::from(len)),
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const FULL: PortRange = PortRange { lo: 0, hi: 65535 };

    pub fn is_full(self) -> bool {
        self == PortRange::FULL
    }

    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

/// `0xPP/0xMM`: mask `0xFF` is exactly protocol `value`, mask `0x00` any protocol (the only two
/// masks ClassBench generates; others are rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolMatch {
    pub value: u8,
    pub mask: u8,
}

impl ProtocolMatch {
    pub fn is_any(self) -> bool {
        self.mask == 0
    }
}

/// One line of a rule list. The flags column is not kept (podwall does not match TCP flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassBenchRule {
    pub src: Prefix,
    pub dst: Prefix,
    pub src_ports: PortRange,
    pub dst_ports: PortRange,
    pub protocol: ProtocolMatch,
}

/// One packet header of a trace (the flags and the rule it was drawn from are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

/// A line that is not in the expected format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a rule list: one rule per non-empty line, first line highest priority.
///
/// `@SRC/LEN <TAB> DST/LEN <TAB> SPLO : SPHI <TAB> DPLO : DPHI <TAB> 0xPP/0xMM <TAB> FLAGS/MASK`
pub fn parse_rules(text: &str) -> Result<Vec<ClassBenchRule>, ParseError> {
    numbered_lines(text)
        .map(|(line, text)| rule(text).map_err(|message| ParseError { line, message }))
        .collect()
}

/// Parses a trace: `SRC DST SPORT DPORT PROTO FLAGS RULE` per non-empty line (unsigned
/// integers; only the first five are used).
pub fn parse_trace(text: &str) -> Result<Vec<Header>, ParseError> {
    numbered_lines(text)
        .map(|(line, text)| header(text).map_err(|message| ParseError { line, message }))
        .collect()
}

fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

fn rule(line: &str) -> Result<ClassBenchRule, String> {
    let body = line
        .strip_prefix('@')
        .ok_or_else(|| format!("a rule starts with `@`: {line:?}"))?;
    let fields: Vec<&str> = body
        .split('\t')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let [src, dst, src_ports, dst_ports, protocol, ..] = fields[..] else {
        return Err(format!(
            "expected at least 5 tab-separated fields (SRC DST SPORTS DPORTS PROTO), got {}",
            fields.len()
        ));
    };
    Ok(ClassBenchRule {
        src: prefix(src)?,
        dst: prefix(dst)?,
        src_ports: port_range(src_ports)?,
        dst_ports: port_range(dst_ports)?,
        protocol: protocol_match(protocol)?,
    })
}

fn prefix(text: &str) -> Result<Prefix, String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| format!("prefix {text:?}: expected ADDRESS/LENGTH"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("prefix {text:?}: {addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|&l| l <= 32)
        .ok_or_else(|| format!("prefix {text:?}: length {len:?} is not 0–32"))?;
    Ok(Prefix::new(u32::from(addr), len))
}

fn port_range(text: &str) -> Result<PortRange, String> {
    let (lo, hi) = text
        .split_once(':')
        .ok_or_else(|| format!("port range {text:?}: expected LO : HI"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("port range {text:?}: {:?} is not a port 0–65535", p.trim()))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(format!("port range {text:?}: {lo} > {hi}"));
    }
    Ok(PortRange { lo, hi })
}

fn protocol_match(text: &str) -> Result<ProtocolMatch, String> {
    let hex = |h: &str| {
        h.strip_prefix("0x")
            .or_else(|| h.strip_prefix("0X"))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("protocol {text:?}: {h:?} is not a hex byte like 0x06"))
    };
    let (value, mask) = text
        .split_once('/')
        .ok_or_else(|| format!("protocol {text:?}: expected 0xPP/0xMM"))?;
    let (value, mask) = (hex(value)?, hex(mask)?);
    if mask != 0x00 && mask != 0xFF {
        return Err(format!(
            "protocol {text:?}: mask {mask:#04x} is neither 0x00 (any) nor 0xFF (exact)"
        ));
    }
    Ok(ProtocolMatch { value, mask })
}

fn header(line: &str) -> Result<Header, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [src, dst, src_port, dst_port, protocol, ..] = fields[..] else {
        return Err(format!(
            "expected at least 5 fields (SRC DST SPORT DPORT PROTO), got {}",
            fields.len()
        ));
    };
    fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
        text.parse()
            .map_err(|_| format!("{name} {text:?} is not an unsigned integer in range"))
    }
    Ok(Header {
        src: number("SRC", src)?,
        dst: number("DST", dst)?,
        src_port: number("SPORT", src_port)?,
        dst_port: number("DPORT", dst_port)?,
        protocol: number("PROTO", protocol)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str =
        "@156.72.145.221/32\t66.87.142.217/32\t0 : 65535\t1708 : 1708\t0x06/0xFF\t0x1000/0x1000\t";

    #[test]
    fn a_rule_line_parses_into_its_fields() {
        let rules = parse_rules(RULE).unwrap();
        assert_eq!(
            rules,
            [ClassBenchRule {
                src: Prefix::new(u32::from(Ipv4Addr::new(156, 72, 145, 221)), 32),
                dst: Prefix::new(u32::from(Ipv4Addr::new(66, 87, 142, 217)), 32),
                src_ports: PortRange::FULL,
                dst_ports: PortRange { lo: 1708, hi: 1708 },
                protocol: ProtocolMatch {
                    value: 6,
                    mask: 0xFF
                },
            }]
        );
    }

    #[test]
    fn host_bits_of_a_prefix_are_cleared() {
        let rules =
            parse_rules("@10.1.2.3/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t").unwrap();
        assert_eq!(rules[0].src.to_string(), "10.0.0.0/8");
        assert_eq!(rules[0].dst.to_string(), "0.0.0.0/0");
        assert!(rules[0].dst.contains(u32::MAX) && rules[0].src.contains(0x0aff_ffff));
        assert!(!rules[0].src.contains(0x0b00_0000));
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let text = format!("{RULE}\n\n@1.2.3.4/33\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\n");
        let err = parse_rules(&text).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("\"33\""), "{err}");

        let err = parse_rules("@1.2.3.4/32\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xF0\n").unwrap_err();
        assert!(err.to_string().starts_with("line 1: ") && err.message.contains("mask"));

        let err = parse_rules("@1.2.3.4/32\t0.0.0.0/0\t5 : 1\t0 : 1\t0x06/0xFF\n").unwrap_err();
        assert!(err.message.contains("5 > 1"), "{err}");
    }

    #[test]
    fn a_trace_line_parses_and_keeps_the_first_five_fields() {
        let text = "2622001603\t850450431\t65535\t135\t6\t268439552\t631\n";
        assert_eq!(
            parse_trace(text).unwrap(),
            [Header {
                src: 2622001603,
                dst: 850450431,
                src_port: 65535,
                dst_port: 135,
                protocol: 6
            }]
        );
        let err = parse_trace("1\t2\t3\t70000\t6\t0\t1\n").unwrap_err();
        assert!(err.message.contains("DPORT"), "{err}");
        assert_eq!(parse_trace("1 2 3\n").unwrap_err().line, 1);
    }
}
