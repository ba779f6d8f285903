//! The audit line, written by hand: the same bytes `serde_json::to_writer` writes for an
//! [`AuditRecord`] (a property test holds the two equal), at a fraction of the cost.
//!
//! Every flow writes one line of about 900 bytes, most of it strings that need no escaping
//! (the data versions alone are 250 bytes). Through serde, each string goes byte by byte
//! through the escaper and each address through `fmt`; together that was a sixth of the
//! instructions of a small reverse request. Here a string that needs no escaping is copied
//! whole, integers go through `itoa`, IPv4 addresses are written digit by digit, and anything
//! unusual (a string with a quote or a control character, a float) takes serde_json's own
//! writer, so the output cannot drift from it.

use std::net::{IpAddr, SocketAddr};

use crate::label::Label;

use super::{AuditAddr, AuditRecord};

/// `,"name":` as one literal, copied in one go (names are fixed ASCII with nothing to escape).
macro_rules! key {
    ($out:expr, $name:literal) => {
        $out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes())
    };
}

/// Append `rec` as one JSON object (no newline) to `out`.
pub(crate) fn write_record(out: &mut Vec<u8>, rec: &AuditRecord) {
    out.reserve(1024);
    out.extend_from_slice(b"{\"ts\":");
    string(out, &rec.ts);
    key!(out, "listener");
    string(out, &rec.listener);
    key!(out, "client.addr");
    opt(out, rec.client_addr.as_ref(), socket_addr);
    key!(out, "intent");
    string(out, rec.intent.as_str());
    key!(out, "dest.host");
    opt_string(out, rec.dest_host.as_deref());
    key!(out, "dest.port");
    opt(out, rec.dest_port, integer);
    key!(out, "dest.claimed");
    opt_string(out, rec.dest_claimed.as_deref());
    key!(out, "dest.verified");
    opt(out, rec.dest_verified, boolean);
    key!(out, "dest.addrs");
    out.push(b'[');
    for (i, a) in rec.dest_addrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        addr(out, a);
    }
    out.push(b']');
    key!(out, "dialed.ip");
    opt(out, rec.dialed_ip.as_ref(), quoted_ip);
    key!(out, "decision");
    string(out, rec.decision.as_str());
    key!(out, "mode");
    string(out, rec.mode.as_str());
    key!(out, "would_deny");
    boolean(out, rec.would_deny);
    key!(out, "reason");
    string(out, rec.reason.as_str());
    key!(out, "rule");
    opt_string(out, rec.rule.as_deref());
    key!(out, "profile");
    string(out, &rec.profile);
    key!(out, "db.version");
    string(out, &rec.db_version);
    key!(out, "data.versions");
    string(out, &rec.data_versions);
    key!(out, "bytes.up");
    integer(out, rec.bytes_up);
    key!(out, "bytes.down");
    integer(out, rec.bytes_down);
    key!(out, "duration_ms");
    float(out, rec.duration_ms);
    key!(out, "status");
    opt(out, rec.status, integer);
    key!(out, "error.side");
    opt_string(out, rec.error_side.map(Label::as_str));
    key!(out, "error");
    opt_string(out, rec.error.as_deref());
    key!(out, "closed_by");
    opt_string(out, rec.closed_by.map(Label::as_str));
    out.push(b'}');
}

fn addr(out: &mut Vec<u8>, a: &AuditAddr) {
    out.extend_from_slice(b"{\"ip\":");
    quoted_ip(out, &a.ip);
    key!(out, "jurisdiction");
    string(out, &a.jurisdiction);
    key!(out, "class");
    string(out, &a.class);
    key!(out, "source");
    string(out, &a.source);
    key!(out, "prefix");
    string(out, &a.prefix);
    out.push(b'}');
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn integer<I: itoa::Integer>(out: &mut Vec<u8>, i: I) {
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

fn float(out: &mut Vec<u8>, f: f64) {
    // serde_json's own float formatting (and `null` for a non-finite value).
    if serde_json::to_writer(&mut *out, &f).is_err() {
        null(out);
    }
}

/// `value` written by `write`, or `null`.
fn opt<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(v) => write(out, v),
        None => null(out),
    }
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    opt(out, s, string);
}

/// A JSON string: copied whole when nothing in it needs escaping, else serde_json's escaper.
fn string(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing to a Vec cannot fail; keep the line valid JSON regardless.
        null(out);
    }
}

/// Whether `bytes` holds a quote, a backslash or a control character (below 0x20): eight
/// bytes at a time, with the classic "has a zero / a byte less than n" word tricks.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// A byte of `x` is below `n` (n ≤ 128): its lane's high bit is set in the result.
    fn has_less(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
    }
    fn has_byte(x: u64, b: u8) -> u64 {
        has_less(x ^ (ONES * u64::from(b)), 1)
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if has_less(x, 0x20) | has_byte(x, b'"') | has_byte(x, b'\\') != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

fn quoted_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    out.push(b'"');
    bare_ip(out, ip);
    out.push(b'"');
}

fn socket_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    out.push(b'"');
    match a {
        SocketAddr::V4(v4) => {
            bare_ip(out, &IpAddr::V4(*v4.ip()));
            out.push(b':');
            integer(out, v4.port());
        }
        // `[addr%scope]:port`: the standard library's spelling, as serde writes it.
        SocketAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
    out.push(b'"');
}

fn bare_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                integer(out, octet);
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use proptest::prelude::*;

    use super::*;
    use crate::audit::{ClosedBy, Intent, Outcome, ProxyReason};
    use crate::error::Side;
    use crate::policy::{Mode, Reason, Verdict};

    fn same_as_serde(rec: &AuditRecord) {
        let mut ours = Vec::new();
        write_record(&mut ours, rec);
        let theirs = serde_json::to_vec(rec).expect("serializes");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    fn any_text() -> impl Strategy<Value = String> {
        // Plain text, and text with every character class the escaper treats specially.
        prop_oneof![
            "[a-z0-9.:=+ -]{0,40}",
            any::<String>(),
            Just("quote \" back\\slash \u{0} \u{8} \u{c} \n \r \t \u{1f} \u{7f} é 😀".to_owned()),
        ]
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
            Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Just(IpAddr::V6(Ipv4Addr::new(81, 2, 69, 1).to_ipv6_mapped())),
        ]
    }

    fn any_socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any_ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port)),
            (any::<u128>(), any::<u16>(), any::<u32>()).prop_map(|(ip, port, scope)| {
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope))
            }),
        ]
    }

    fn pick<T: Label>(i: usize) -> T {
        let all = T::all();
        all[i % all.len()]
    }

    prop_compose! {
        fn any_addr()(ip in any_ip(), j in any_text(), c in any_text(), s in any_text(),
                      p in any_text()) -> AuditAddr {
            AuditAddr { ip, jurisdiction: j.into(), class: c.into(), source: s.into(), prefix: p }
        }
    }

    prop_compose! {
        fn any_record()(
            (ts, listener, host, claimed) in (any_text(), any_text(), proptest::option::of(any_text()), proptest::option::of(any_text())),
            (client, port, verified) in (proptest::option::of(any_socket_addr()), proptest::option::of(any::<u16>()), proptest::option::of(any::<bool>())),
            addrs in proptest::collection::vec(any_addr(), 0..3),
            dialed in proptest::option::of(any_ip()),
            labels in any::<[usize; 6]>(),
            (would_deny, rule, profile, db, versions) in (any::<bool>(), proptest::option::of(any_text()), any_text(), any_text(), any_text()),
            (up, down, status) in (any::<u64>(), any::<u64>(), proptest::option::of(any::<u16>())),
            duration in prop_oneof![any::<f64>(), 0.0..10_000.0, Just(f64::NAN), Just(f64::INFINITY)],
            (side, error, closed) in (any::<bool>(), proptest::option::of(any_text()), any::<bool>()),
        ) -> AuditRecord {
            let reason: Outcome = if labels[3] % 2 == 0 {
                pick::<Reason>(labels[4]).into()
            } else {
                pick::<ProxyReason>(labels[4]).into()
            };
            AuditRecord {
                ts,
                listener,
                client_addr: client,
                intent: pick::<Intent>(labels[0]),
                dest_host: host,
                dest_port: port,
                dest_claimed: claimed,
                dest_verified: verified,
                dest_addrs: addrs,
                dialed_ip: dialed,
                decision: pick::<Verdict>(labels[1]),
                mode: pick::<Mode>(labels[2]),
                would_deny,
                reason,
                rule,
                profile: profile.into(),
                db_version: db.into(),
                data_versions: versions.into(),
                bytes_up: up,
                bytes_down: down,
                duration_ms: duration,
                status,
                error_side: side.then(|| pick::<Side>(labels[5])),
                error,
                closed_by: closed.then_some(ClosedBy::Reload),
            }
        }
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes(rec in any_record()) {
            same_as_serde(&rec);
        }
    }

    #[test]
    fn finds_every_byte_that_needs_escaping_at_every_position() {
        for len in 0..20 {
            let plain = vec![b'a'; len];
            assert!(!needs_escape(&plain));
            for at in 0..len {
                for b in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut s = plain.clone();
                    s[at] = b;
                    assert!(needs_escape(&s), "byte {b:#x} at {at} of {len}");
                }
                for b in [0x20u8, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff] {
                    let mut s = plain.clone();
                    s[at] = b;
                    assert!(!needs_escape(&s), "byte {b:#x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn a_default_record_matches_too() {
        same_as_serde(&AuditRecord::default());
    }
}
