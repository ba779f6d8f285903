//! The text of what `Forwarded` and `X-Forwarded-For` carry: addresses, nodes, parameter
//! values.

use std::net::IpAddr;

/// An address as text (the text [`ip_bytes`] writes, in a string).
pub(super) fn ip_text(ip: IpAddr) -> String {
    let mut buf = [0u8; 39];
    match ip_bytes(ip, &mut buf).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(text) => text.to_owned(),
        None => ip.to_string(),
    }
}

/// An address as text in `buf` (39 bytes hold any IPv6 address), without an allocation: IPv4
/// without `fmt`'s padding machinery, IPv6 as `Display` spells it. `None` only if it did not
/// fit.
pub(super) fn ip_bytes(ip: IpAddr, buf: &mut [u8; 39]) -> Option<&[u8]> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            v4.octets()
                .into_iter()
                .enumerate()
                .try_for_each(|(i, octet)| {
                    if i > 0 {
                        cursor.write_all(b".")?;
                    }
                    cursor.write_all(digits.format(octet).as_bytes())
                })
        }
        IpAddr::V6(v6) => write!(cursor, "{v6}"),
    };
    let n = usize::try_from(cursor.position()).ok()?;
    written.ok()?;
    buf.get(..n)
}

/// A node for a `Forwarded` `for=` value: IPv4 bare, IPv6 bracketed and quoted.
pub(super) fn node_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => ip_text(ip),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// A `Forwarded` parameter value: a token as is, anything else as a quoted-string. None when
/// the text holds characters a header value cannot carry.
pub(super) fn param_value(text: &str) -> Option<String> {
    if !text.is_empty() && text.bytes().all(is_tchar) {
        return Some(text.to_owned());
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' | '\t' | '!'..='~' => out.push(c),
            _ => return None,
        }
    }
    out.push('"');
    Some(out)
}

/// RFC 9110 token characters.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
