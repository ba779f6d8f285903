//! PROXY protocol (haproxy's `proxy-protocol.txt`, versions 1 and 2): recovering the real
//! client address of a connection relayed by a layer-4 load balancer.
//!
//! # Why
//!
//! In reverse-proxy mode the gateway sits behind an AWS Network Load Balancer. With client
//! IP preservation off (or across VPC endpoints / PrivateLink) the TCP peer we see is the
//! load balancer, not the client. Policy decisions, audit records and logs must name the
//! real client, so the NLB is configured to prepend a PROXY protocol header (AWS sends
//! version 2, possibly carrying TLVs such as the VPC endpoint id, type `0xEA`) and this module
//! reads it before the TLS handshake starts.
//!
//! # Where the header comes from
//!
//! The header is the very first thing on the connection, before any TLS bytes. The spec
//! forbids guessing whether it is present, so a listener is configured to require it (with an
//! [`Accept`] saying which versions) and refuses connections that do not start with one. Only
//! trusted load balancers must be able to reach such a listener: anyone else could claim any
//! address.
//!
//! # Behaviour worth knowing
//!
//! - v1 `UNKNOWN` and v2 `LOCAL` (health checks) yield a [`Header`] whose `source` is `None`:
//!   the caller uses the socket peer. v2 `PROXY` with an unspecified family or transport is
//!   treated the same way, as the spec asks.
//! - v2 `AF_UNIX` and v2 datagram (UDP) headers are **refused** with an error rather than
//!   falling back to the socket peer (which the spec would permit): a TCP listener cannot serve
//!   such a connection, so the sender is misconfigured, and attributing the traffic to the
//!   load balancer's address would put a wrong identity into policy and audit.
//! - v2 TLVs are framing-checked (every TLV must fit inside the declared length, as haproxy
//!   does) and skipped; their values, including any CRC32c, are not interpreted.
//! - v2 headers declaring more than [`V2_MAX_PAYLOAD`] bytes after the fixed part are refused,
//!   so the read buffer stays small.
//! - Addresses are reported exactly as sent: an IPv4-mapped IPv6 address in a v2 `AF_INET6`
//!   block stays IPv6 (use [`std::net::IpAddr::to_canonical`] where it matters).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

mod encode;
pub use encode::{encode_v1, encode_v2};

/// The 12-byte v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 line starts with "PROXY" and exactly one space.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line including CRLF ("PROXY UNKNOWN" with two full IPv6 addresses and ports).
const V1_MAX_LEN: usize = 107;
/// Fixed part of a v2 header: signature, version/command, family/transport, length.
const V2_FIXED_LEN: usize = 16;
/// Shortest complete header of either version: "PROXY UNKNOWN\r\n" (15 bytes); a v2 header is
/// at least 16. Reading this many bytes first can never consume data past a valid header.
const MIN_HEADER_LEN: usize = 15;

/// Most bytes accepted after the 16-byte fixed part of a v2 header (address block plus TLVs).
/// An IPv6 block is 36 bytes and AWS's TLVs add a few dozen; this leaves ample room for TLS and
/// unique-id TLVs from other senders while keeping the read buffer small.
pub const V2_MAX_PAYLOAD: usize = 2048;

const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const TRANSPORT_UNSPEC: u8 = 0x0;
const TRANSPORT_STREAM: u8 = 0x1;
const TRANSPORT_DGRAM: u8 = 0x2;
/// Address block length for TCP over IPv4: two addresses and two ports.
const INET_BLOCK_LEN: usize = 4 + 4 + 2 + 2;
/// Address block length for TCP over IPv6.
const INET6_BLOCK_LEN: usize = 16 + 16 + 2 + 2;

/// PROXY protocol version of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Human-readable text line ("PROXY TCP4 ...\r\n").
    V1,
    /// Binary header (what AWS NLB sends).
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// What the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only the v1 text header.
    V1,
    /// Only the v2 binary header.
    V2,
    /// Either version (the spec recommends v2 receivers also accept v1).
    Any,
}

impl Accept {
    /// Whether a header of `version` is acceptable.
    pub fn allows(self, version: Version) -> bool {
        matches!(
            (self, version),
            (Accept::Any, _) | (Accept::V1, Version::V1) | (Accept::V2, Version::V2)
        )
    }
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accept::V1 => "only v1",
            Accept::V2 => "only v2",
            Accept::Any => "v1 or v2",
        })
    }
}

/// A parsed PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Which version was on the wire.
    pub version: Version,
    /// The original client. `None` for LOCAL (v2) / UNKNOWN (v1) (and v2 with an unspecified
    /// family or transport): use the socket peer.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the load balancer's listener). `None` whenever
    /// `source` is.
    pub destination: Option<SocketAddr>,
}

impl Header {
    fn unknown(version: Version) -> Self {
        Header {
            version,
            source: None,
            destination: None,
        }
    }
}

/// Why a PROXY protocol header was refused. The connection must be closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProxyProtocolError {
    /// The first byte matches neither signature.
    #[error(
        "connection does not start with a PROXY protocol header (first byte {first_byte:#04x}{})",
        not_proxy_hint(*first_byte)
    )]
    NotProxyHeader {
        /// The first byte received.
        first_byte: u8,
    },
    /// The data started like a v1 or v2 signature but diverged from it.
    #[error("malformed PROXY protocol signature")]
    BadSignature,
    /// A well-formed signature of a version this listener is not configured for.
    #[error("PROXY protocol {got} header received, but this listener accepts {accepted}")]
    VersionNotAccepted {
        /// The version on the wire.
        got: Version,
        /// What the listener accepts.
        accepted: Accept,
    },
    /// v2 version nibble other than 2.
    #[error("unsupported PROXY protocol v2 version nibble {0:#x} (only 0x2 is defined)")]
    UnsupportedVersion(u8),
    /// v2 command other than LOCAL (0x0) or PROXY (0x1).
    #[error("unsupported PROXY protocol v2 command {0:#x} (only LOCAL 0x0 and PROXY 0x1 exist)")]
    UnsupportedCommand(u8),
    /// v2 address family that is invalid (above 0x3) or not supported here (AF_UNIX).
    #[error("unsupported PROXY protocol v2 address family {0:#x}{hint}", hint = family_hint(*.0))]
    UnsupportedFamily(u8),
    /// v2 transport that is invalid (above 0x2) or not supported here (DGRAM).
    #[error("unsupported PROXY protocol v2 transport {0:#x}{hint}", hint = transport_hint(*.0))]
    UnsupportedTransport(u8),
    /// v1 protocol other than TCP4, TCP6 or UNKNOWN.
    #[error("unsupported PROXY protocol v1 protocol {0:?} (expected TCP4, TCP6 or UNKNOWN)")]
    UnsupportedProtocol(String),
    /// v2 declared length cannot hold the address block of its family.
    #[error(
        "PROXY protocol v2 header declares {got} address bytes, but its address family needs {need}"
    )]
    AddressBlockTooShort {
        /// Bytes the family's address block needs.
        need: usize,
        /// Bytes declared by the header.
        got: usize,
    },
    /// v2 declared length above [`V2_MAX_PAYLOAD`].
    #[error("PROXY protocol v2 header declares {len} bytes after the fixed part (limit {max})")]
    TooLong {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A v2 TLV does not fit inside the header.
    #[error("PROXY protocol v2 TLV at byte {offset} overruns the header")]
    BadTlv {
        /// Offset of the TLV from the start of the header.
        offset: usize,
    },
    /// No CRLF within the first 107 bytes of a v1 line.
    #[error("PROXY protocol v1 line is not CRLF-terminated within {V1_MAX_LEN} bytes")]
    V1MissingCrlf,
    /// A lone CR or LF in a v1 line (only CRLF may end it).
    #[error("PROXY protocol v1 line has a bare CR or LF")]
    V1BadLineEnding,
    /// A byte that is not printable US-ASCII in a v1 line.
    #[error("PROXY protocol v1 line contains byte {0:#04x}, which is not printable US-ASCII")]
    V1BadCharacter(u8),
    /// A v1 line with the wrong number of fields (or doubled spaces).
    #[error("malformed PROXY protocol v1 line: expected 4 fields after the protocol, got {0}")]
    V1FieldCount(usize),
    /// A v1 address that is not canonical for its protocol family.
    #[error("bad address {0:?} in PROXY protocol v1 line")]
    BadAddress(String),
    /// A v1 port that is not a decimal in 0..=65535 without leading zeroes.
    #[error("bad port {0:?} in PROXY protocol v1 line")]
    BadPort(String),
    /// The peer closed the connection before a complete header arrived.
    #[error(
        "connection closed after {received} bytes, before the PROXY protocol header was complete"
    )]
    Truncated {
        /// Bytes received before end of stream.
        received: usize,
    },
    /// No complete header within the listener's timeout.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// Reading from the connection failed.
    #[error("reading the PROXY protocol header failed: {message}")]
    Io {
        /// The I/O error kind.
        kind: io::ErrorKind,
        /// The I/O error message.
        message: String,
    },
}

fn not_proxy_hint(first_byte: u8) -> &'static str {
    match first_byte {
        0x16 => {
            "; looks like a TLS handshake: is PROXY protocol enabled on the load balancer's target group?"
        }
        b'A'..=b'Z' => {
            "; looks like plain text such as HTTP: is PROXY protocol enabled on the load balancer's target group?"
        }
        _ => "",
    }
}

fn family_hint(family: u8) -> &'static str {
    match family {
        AF_UNIX => " (AF_UNIX: this listener needs a TCP client address)",
        _ => " (invalid)",
    }
}

fn transport_hint(transport: u8) -> &'static str {
    match transport {
        TRANSPORT_DGRAM => " (DGRAM: this listener serves TCP only)",
        _ => " (invalid)",
    }
}

/// Pure parser: parse a header at the start of `buf`. Ok(Some((header, consumed))) when
/// complete, Ok(None) when more bytes are needed (buf is a valid prefix), Err when malformed.
///
/// Signature, version acceptance and the v2 fixed part are checked as soon as their bytes are
/// present; v1 fields are decoded once the CRLF arrives (as the spec requires), though bad
/// characters, bare CR/LF and over-long lines are refused early.
pub fn parse(buf: &[u8], accept: Accept) -> Result<Option<(Header, usize)>, ProxyProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (version, signature): (Version, &[u8]) = if first == V2_SIGNATURE[0] {
        (Version::V2, &V2_SIGNATURE)
    } else if first == V1_PREFIX[0] {
        (Version::V1, V1_PREFIX)
    } else {
        return Err(ProxyProtocolError::NotProxyHeader { first_byte: first });
    };
    let seen = buf.len().min(signature.len());
    if buf[..seen] != signature[..seen] {
        return Err(ProxyProtocolError::BadSignature);
    }
    if seen < signature.len() {
        return Ok(None);
    }
    if !accept.allows(version) {
        return Err(ProxyProtocolError::VersionNotAccepted {
            got: version,
            accepted: accept,
        });
    }
    match version {
        Version::V1 => parse_v1(buf),
        Version::V2 => parse_v2(buf),
    }
}

/// `buf` starts with "PROXY ".
fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyProtocolError> {
    for (i, &b) in buf.iter().enumerate().take(V1_MAX_LEN) {
        match b {
            b'\r' => {
                // The LF must be within the first V1_MAX_LEN bytes too.
                if i + 1 >= V1_MAX_LEN {
                    return Err(ProxyProtocolError::V1MissingCrlf);
                }
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => decode_v1_line(&buf[..i]).map(|h| Some((h, i + 2))),
                    Some(_) => Err(ProxyProtocolError::V1BadLineEnding),
                };
            }
            b'\n' => return Err(ProxyProtocolError::V1BadLineEnding),
            0x20..=0x7e => {}
            other => return Err(ProxyProtocolError::V1BadCharacter(other)),
        }
    }
    if buf.len() >= V1_MAX_LEN {
        Err(ProxyProtocolError::V1MissingCrlf)
    } else {
        Ok(None)
    }
}

/// Decode a v1 line without its CRLF; every byte is printable ASCII.
fn decode_v1_line(line: &[u8]) -> Result<Header, ProxyProtocolError> {
    let rest = line
        .strip_prefix(V1_PREFIX)
        .ok_or(ProxyProtocolError::BadSignature)?;
    let rest = std::str::from_utf8(rest).map_err(|_| ProxyProtocolError::BadSignature)?;
    let mut fields = rest.split(' ');
    let protocol = fields.next().unwrap_or_default();
    let v6 = match protocol {
        // The spec: the receiver must ignore anything after UNKNOWN up to the CRLF.
        "UNKNOWN" => return Ok(Header::unknown(Version::V1)),
        "TCP4" => false,
        "TCP6" => true,
        other => return Err(ProxyProtocolError::UnsupportedProtocol(other.to_owned())),
    };
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields.as_slice() else {
        return Err(ProxyProtocolError::V1FieldCount(fields.len()));
    };
    let src = v1_addr(src, v6)?;
    let dst = v1_addr(dst, v6)?;
    let sport = v1_port(sport)?;
    let dport = v1_port(dport)?;
    Ok(Header {
        version: Version::V1,
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    })
}

/// An address of the line's family. The standard parser already refuses leading zeroes in
/// IPv4 octets (no octal ambiguity) and anything that does not decode to exactly 128 bits.
fn v1_addr(text: &str, v6: bool) -> Result<IpAddr, ProxyProtocolError> {
    let parsed = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    parsed.map_err(|_| ProxyProtocolError::BadAddress(text.to_owned()))
}

fn v1_port(text: &str) -> Result<u16, ProxyProtocolError> {
    let bad = || ProxyProtocolError::BadPort(text.to_owned());
    let digits_ok = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !digits_ok {
        return Err(bad());
    }
    text.parse::<u16>().map_err(|_| bad())
}

/// `buf` starts with the 12-byte v2 signature.
fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyProtocolError> {
    let [ver_cmd, fam, len_hi, len_lo] = match buf.get(V2_SIGNATURE.len()..V2_FIXED_LEN) {
        Some(&[a, b, c, d]) => [a, b, c, d],
        _ => return Ok(None),
    };
    let version = ver_cmd >> 4;
    let command = ver_cmd & 0x0f;
    if version != 0x2 {
        return Err(ProxyProtocolError::UnsupportedVersion(version));
    }
    if command != CMD_LOCAL && command != CMD_PROXY {
        return Err(ProxyProtocolError::UnsupportedCommand(command));
    }
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyProtocolError::TooLong {
            len,
            max: V2_MAX_PAYLOAD,
        });
    }

    // What the block holds. LOCAL: the spec says to discard the block, family included.
    let family = fam >> 4;
    let transport = fam & 0x0f;
    let block_len = if command == CMD_LOCAL {
        None
    } else {
        if family > AF_UNIX {
            return Err(ProxyProtocolError::UnsupportedFamily(family));
        }
        if transport > TRANSPORT_DGRAM {
            return Err(ProxyProtocolError::UnsupportedTransport(transport));
        }
        match (family, transport) {
            (AF_UNIX, _) => return Err(ProxyProtocolError::UnsupportedFamily(family)),
            (AF_INET | AF_INET6, TRANSPORT_DGRAM) => {
                return Err(ProxyProtocolError::UnsupportedTransport(transport));
            }
            // Unspecified: "the receiver should ignore address information".
            (AF_UNSPEC, _) | (_, TRANSPORT_UNSPEC) => None,
            (AF_INET, TRANSPORT_STREAM) => Some(INET_BLOCK_LEN),
            // Only (AF_INET6, TRANSPORT_STREAM) is left.
            (_, _) => Some(INET6_BLOCK_LEN),
        }
    };
    if let Some(need) = block_len
        && len < need
    {
        return Err(ProxyProtocolError::AddressBlockTooShort { need, got: len });
    }

    let total = V2_FIXED_LEN + len;
    let Some(payload) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(None);
    };
    let header = match block_len {
        None => Header::unknown(Version::V2),
        Some(block_len) => {
            let (block, tlvs) = payload.split_at(block_len);
            check_tlvs(tlvs, V2_FIXED_LEN + block_len)?;
            // Cannot fail: block_len is 12 or 36, checked against len above.
            let (source, destination) =
                decode_v2_block(block).ok_or(ProxyProtocolError::AddressBlockTooShort {
                    need: block_len,
                    got: len,
                })?;
            Header {
                version: Version::V2,
                source: Some(source),
                destination: Some(destination),
            }
        }
    };
    Ok(Some((header, total)))
}

/// Decode a TCP over IPv4 (12-byte) or IPv6 (36-byte) address block: source address,
/// destination address, source port, destination port, all in network byte order.
fn decode_v2_block(block: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let addr_len = block.len().checked_sub(4)? / 2;
    let (addrs, ports) = block.split_at(2 * addr_len);
    let (src, dst) = addrs.split_at(addr_len);
    let ip = |bytes: &[u8]| -> Option<IpAddr> {
        match addr_len {
            4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
            _ => None,
        }
    };
    let (sport, dport) = match ports {
        &[s0, s1, d0, d1] => (u16::from_be_bytes([s0, s1]), u16::from_be_bytes([d0, d1])),
        _ => return None,
    };
    Some((
        SocketAddr::new(ip(src)?, sport),
        SocketAddr::new(ip(dst)?, dport),
    ))
}

/// Walk the TLV chain: each TLV is a type byte, a big-endian u16 length and that many value
/// bytes, and must end inside the header. Values are skipped unread. `offset` is where `tlvs`
/// starts within the header, for the error message.
fn check_tlvs(mut tlvs: &[u8], mut offset: usize) -> Result<(), ProxyProtocolError> {
    while !tlvs.is_empty() {
        let value_len = match tlvs {
            [_type, hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return Err(ProxyProtocolError::BadTlv { offset }),
        };
        let Some(rest) = tlvs.get(3 + value_len..) else {
            return Err(ProxyProtocolError::BadTlv { offset });
        };
        offset += 3 + value_len;
        tlvs = rest;
    }
    Ok(())
}

/// A lower bound on how many more bytes the header in `buf` needs, given that [`parse`] just
/// returned `Ok(None)` for it. Reading no more than this never consumes data past the header.
fn still_needed(buf: &[u8]) -> usize {
    let needed = match buf.first() {
        None => MIN_HEADER_LEN,
        Some(&b) if b == V2_SIGNATURE[0] => match buf.get(14..16) {
            Some(&[hi, lo]) => V2_FIXED_LEN + usize::from(u16::from_be_bytes([hi, lo])),
            _ => V2_FIXED_LEN,
        }
        .saturating_sub(buf.len()),
        // v1: the line ends in CRLF, so unless the last byte is already the CR, at least two
        // more bytes are needed; and no line is shorter than MIN_HEADER_LEN.
        Some(_) => {
            let crlf = if buf.last() == Some(&b'\r') { 1 } else { 2 };
            MIN_HEADER_LEN.saturating_sub(buf.len()).max(crlf)
        }
    };
    needed.max(1)
}

/// Read exactly one header from `stream` without over-reading past it (read into a small
/// buffer: v1 is at most 107 bytes; for v2 read the 16-byte fixed part then exactly `len`
/// bytes), within `timeout`; return the header. Bytes after the header must remain unread in
/// the stream.
///
/// A v1 line is read in small steps (its end is only known at the CRLF), a v2 header in at
/// most three reads. End of stream before a complete header is
/// [`ProxyProtocolError::Truncated`]; running out of time is [`ProxyProtocolError::Timeout`].
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    accept: Accept,
    timeout: Duration,
) -> Result<Header, ProxyProtocolError> {
    match tokio::time::timeout(timeout, read_header_untimed(stream, accept)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProxyProtocolError::Timeout(timeout)),
    }
}

async fn read_header_untimed<S: AsyncRead + Unpin>(
    stream: &mut S,
    accept: Accept,
) -> Result<Header, ProxyProtocolError> {
    let mut buf: Vec<u8> = Vec::with_capacity(V1_MAX_LEN + 1);
    loop {
        if let Some((header, consumed)) = parse(&buf, accept)? {
            debug_assert_eq!(consumed, buf.len(), "read past the PROXY header");
            return Ok(header);
        }
        let filled = buf.len();
        let want = still_needed(&buf);
        // `parse` bounds both versions (107 bytes, 16 + V2_MAX_PAYLOAD), so this stays small.
        buf.resize(filled + want, 0);
        let read = stream
            .read(&mut buf[filled..])
            .await
            .map_err(|e| ProxyProtocolError::Io {
                kind: e.kind(),
                message: e.to_string(),
            })?;
        buf.truncate(filled + read);
        if read == 0 {
            return Err(ProxyProtocolError::Truncated { received: filled });
        }
    }
}

#[cfg(test)]
mod tests;
