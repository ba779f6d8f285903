//! The hash chain: one SHA-256 per line over the previous link and the line's canonical bytes.

use std::io::Write as _;

use ring::digest;

/// A link of the chain as written: 64 lowercase hex characters.
pub type Link = [u8; 64];

/// The link before the first line of a chain.
pub const GENESIS: Link = [b'0'; 64];

/// The key that ends every sealed line, before its link.
pub const SEQ_KEY: &str = "seq";
/// The key of the link, always the last one of a line.
pub const CHAIN_KEY: &str = "chain";

/// `,"chain":"`: what precedes the link at the end of a sealed line.
const CHAIN_PREFIX: &[u8] = b",\"chain\":\"";
/// Bytes a sealed line ends with after its canonical part (less its closing brace):
/// `,"chain":"` + 64 hex + `"}`.
const SUFFIX_LEN: usize = CHAIN_PREFIX.len() + 64 + 2;

/// The link of a line: `SHA-256(prev ‖ canonical)` in lowercase hex, where `canonical` is
/// given as `head` followed by `tail` (so a sealed line can be hashed in place).
pub fn link(prev: &Link, head: &[u8], tail: &[u8]) -> Link {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(head);
    ctx.update(tail);
    to_hex(ctx.finish().as_ref())
}

/// SHA-256 of `bytes` in lowercase hex (configuration digests, key ids).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, bytes);
    String::from_utf8_lossy(&to_hex(d.as_ref())).into_owned()
}

fn to_hex(hash: &[u8]) -> Link {
    let mut out = [0u8; 64];
    // A SHA-256 digest is 32 bytes, exactly what 64 hex characters hold.
    if hex::encode_to_slice(hash, &mut out).is_err() {
        out = GENESIS;
    }
    out
}

/// Whether `s` is a link: 64 lowercase hex characters.
pub fn is_link(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A sealed line cut in two: `head` is the canonical bytes less their closing `}`, `link`
/// the chain the line carries. `None` when the line does not end `,"chain":"<64 hex>"}`.
pub fn split(line: &[u8]) -> Option<(&[u8], Link)> {
    if line.len() < SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return None;
    }
    let cut = line.len() - SUFFIX_LEN;
    let (head, suffix) = line.split_at(cut);
    let hex = suffix.strip_prefix(CHAIN_PREFIX)?.get(..64)?;
    if !is_link(hex) {
        return None;
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(hex);
    Some((head, out))
}

/// The link a sealed line should carry after `prev`.
pub fn expected(prev: &Link, head: &[u8]) -> Link {
    link(prev, head, b"}")
}

/// Seal a serialized JSON object in place: `buf[start..]` holds one object ending in `}`;
/// afterwards it ends `,"seq":SEQ,"chain":"<link>"}`. Returns the new link.
pub fn seal(buf: &mut Vec<u8>, start: usize, prev: &Link, seq: u64) -> Link {
    if buf.last() == Some(&b'}') {
        buf.pop();
    }
    buf.extend_from_slice(b",\"seq\":");
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{seq}");
    let new = link(prev, &buf[start..], b"}");
    buf.extend_from_slice(CHAIN_PREFIX);
    buf.extend_from_slice(&new);
    buf.extend_from_slice(b"\"}");
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_line_splits_back_and_its_link_checks() {
        let mut buf = b"xx".to_vec();
        buf.extend_from_slice(br#"{"ts":"t","a":1}"#);
        let l = seal(&mut buf, 2, &GENESIS, 7);
        let line = &buf[2..];
        let text = std::str::from_utf8(line).unwrap();
        assert!(
            text.starts_with(r#"{"ts":"t","a":1,"seq":7,"chain":""#),
            "{text}"
        );
        let (head, carried) = split(line).unwrap();
        assert_eq!(carried, l);
        assert_eq!(head, br#"{"ts":"t","a":1,"seq":7"#);
        assert_eq!(expected(&GENESIS, head), l);
        // The canonical bytes are the line less its chain: hashing them directly agrees.
        let canonical = br#"{"ts":"t","a":1,"seq":7}"#;
        assert_eq!(link(&GENESIS, canonical, b""), l);
    }

    #[test]
    fn a_line_without_a_well_formed_chain_does_not_split() {
        assert!(split(br#"{"a":1}"#).is_none());
        let mut buf = br#"{"a":1}"#.to_vec();
        seal(&mut buf, 0, &GENESIS, 0);
        let upper = String::from_utf8(buf.clone()).unwrap().to_uppercase();
        assert!(split(upper.as_bytes()).is_none());
        buf.push(b' ');
        assert!(split(&buf).is_none());
    }
}
