//! The verifier on logs built here line by line (the real writer's logs are in
//! `tests/evidence.rs`).

use super::*;
use crate::evidence::chain::seal;
use crate::evidence::line::{Checkpoint, Continue, Start};
use crate::evidence::sign::SigningKey;

/// A tiny sealing writer: what the audit writer does, without the audit record.
struct Log {
    key: Option<SigningKey>,
    prev: Link,
    seq: u64,
    lines: Vec<Vec<u8>>,
}

impl Log {
    fn new(key: Option<SigningKey>) -> Log {
        let mut log = Log {
            key,
            prev: GENESIS,
            seq: 0,
            lines: Vec::new(),
        };
        let id = log.key.as_ref().map(|k| k.id().to_owned());
        let start = Start {
            ts: "t0",
            kind: line::START,
            version: "test",
            config_digest: None,
            data_versions: "geoip=none",
            profile: "p",
            db_version: "none",
            key_id: id.as_deref(),
        };
        log.push(serde_json::to_vec(&start).unwrap());
        log
    }

    fn push(&mut self, mut buf: Vec<u8>) {
        self.prev = seal(&mut buf, 0, &self.prev, self.seq);
        self.seq += 1;
        self.lines.push(buf);
    }

    fn record(&mut self, n: u64) {
        self.push(format!(r#"{{"ts":"t{n}","listener":"l","bytes.up":{n}}}"#).into_bytes());
    }

    fn checkpoint(&mut self, end: End) {
        let Some(key) = &self.key else { return };
        let chain = String::from_utf8(self.prev.to_vec()).unwrap();
        let sig = key.sign_checkpoint(self.seq - 1, &self.prev, end);
        let line = serde_json::to_vec(&Checkpoint {
            ts: "tc",
            kind: line::CHECKPOINT,
            key_id: key.id(),
            signed_seq: self.seq - 1,
            signed_chain: &chain,
            is_final: end == End::Final,
            rotation: end == End::Rotation,
            sig: &sig,
        })
        .unwrap();
        self.push(line);
    }

    fn resume(&mut self) {
        let chain = String::from_utf8(self.prev.to_vec()).unwrap();
        let id = self.key.as_ref().map(|k| k.id().to_owned());
        let line = serde_json::to_vec(&Continue {
            ts: "tr",
            kind: line::CONTINUE,
            prev_seq: self.seq - 1,
            prev_chain: &chain,
            key_id: id.as_deref(),
        })
        .unwrap();
        self.push(line);
    }
}

fn verify(key: Option<PublicKey>, files: &[(&str, &[Vec<u8>])]) -> Summary {
    let mut v = Verifier::new(key);
    for (name, lines) in files {
        for (i, l) in lines.iter().enumerate() {
            v.line(Path::new(name), i as u64 + 1, l);
        }
    }
    v.finish()
}

fn signed(records: u64) -> (Log, PublicKey) {
    let key = SigningKey::generate().unwrap();
    let public = key.public();
    let mut log = Log::new(Some(key));
    for n in 1..=records {
        log.record(n);
        if n % 4 == 0 {
            log.checkpoint(End::None);
        }
    }
    log.checkpoint(End::Final);
    (log, public)
}

fn broken_at(s: &Summary) -> (u64, BreakKind) {
    let b = s
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("not broken: {s}"));
    (b.line, b.what)
}

#[test]
fn an_intact_signed_log_verifies_with_its_key_and_without() {
    let (log, public) = signed(10);
    let s = verify(Some(public), &[("a", &log.lines)]);
    assert!(s.ok, "{s}");
    assert_eq!(
        (s.records, s.lines, s.checkpoints, s.chains),
        (10, 14, 3, 1)
    );
    assert!(s.signed && s.signatures_checked);
    assert!(
        s.to_string().starts_with("OK: 10 records in 14 lines"),
        "{s}"
    );
    let s = verify(None, &[("a", &log.lines)]);
    assert!(s.ok && !s.signatures_checked, "{s}");
    assert!(s.to_string().contains("not checked"), "{s}");
}

#[test]
fn each_tampering_is_found_at_its_line() {
    let (log, public) = signed(10);
    // Line 3 is record 2 (line 1 is the start line).
    let mut edited = log.lines.clone();
    edited[2] = String::from_utf8(edited[2].clone())
        .unwrap()
        .replace(r#""bytes.up":2"#, r#""bytes.up":9"#)
        .into_bytes();
    assert_eq!(
        broken_at(&verify(None, &[("a", &edited)])),
        (3, BreakKind::Edited)
    );

    let mut deleted = log.lines.clone();
    deleted.remove(2);
    assert_eq!(
        broken_at(&verify(None, &[("a", &deleted)])),
        (3, BreakKind::Deleted)
    );

    let mut swapped = log.lines.clone();
    swapped.swap(2, 3);
    assert_eq!(
        broken_at(&verify(None, &[("a", &swapped)])),
        (3, BreakKind::Reordered)
    );

    // Cut after a mid-chain checkpoint: every line left checks, but the end is missing.
    let cut = &log.lines[..11];
    let s = verify(Some(public.clone()), &[("a", cut)]);
    assert_eq!(broken_at(&s), (11, BreakKind::Truncated));

    let other = SigningKey::generate().unwrap().public();
    assert_eq!(
        broken_at(&verify(Some(other), &[("a", &log.lines)])),
        (1, BreakKind::WrongKey)
    );
    let s = verify(None, &[("a", &[])]);
    assert_eq!(broken_at(&s), (0, BreakKind::Truncated));
}

#[test]
fn a_rewritten_chain_is_caught_by_the_next_signature() {
    let (log, public) = signed(10);
    // Whoever edits record 2 and recomputes every link after it (no key needed for that)
    // leaves a chain that checks, but not the checkpoint's signature.
    let mut forged = Log {
        key: None,
        prev: GENESIS,
        seq: 0,
        lines: Vec::new(),
    };
    for (i, l) in log.lines.iter().enumerate() {
        let mut text = String::from_utf8(l.clone()).unwrap();
        let cut = text.rfind(",\"seq\":").unwrap();
        text.truncate(cut);
        text.push('}');
        if i == 2 {
            text = text.replace(r#""bytes.up":2"#, r#""bytes.up":9"#);
        }
        if text.contains(r#""kind":"checkpoint""#) {
            let old: serde_json::Value = serde_json::from_str(&text).unwrap();
            let new_chain = String::from_utf8(forged.prev.to_vec()).unwrap();
            text = text.replace(old["signed.chain"].as_str().unwrap(), &new_chain);
        }
        forged.push(text.into_bytes());
    }
    assert!(verify(None, &[("a", &forged.lines)]).ok);
    let s = verify(Some(public), &[("a", &forged.lines)]);
    assert_eq!(broken_at(&s), (6, BreakKind::BadSignature), "{s}");
}

#[test]
fn rotated_files_verify_in_order_and_alone_but_not_spliced() {
    let key = SigningKey::generate().unwrap();
    let public = key.public();
    let mut log = Log::new(Some(key));
    log.record(1);
    log.checkpoint(End::Rotation);
    let first = std::mem::take(&mut log.lines);
    log.resume();
    log.record(2);
    log.checkpoint(End::Final);
    let second = log.lines.clone();
    let s = verify(Some(public.clone()), &[("a.1", &first), ("a", &second)]);
    assert!(s.ok, "{s}");
    assert_eq!((s.records, s.chains, s.files), (2, 1, 2));
    let s = verify(Some(public.clone()), &[("a.1", &first)]);
    assert!(s.ok && s.continues_later, "{s}");
    assert!(verify(Some(public.clone()), &[("a", &second)]).ok);
    // Out of order: the second file first, then the first one (a new chain after a final).
    let s = verify(Some(public.clone()), &[("a", &second), ("a.1", &first)]);
    assert!(!s.ok);
    // Another run's rotated file after this one's first file.
    let (other, _) = {
        let key = SigningKey::generate().unwrap();
        let mut o = Log::new(Some(key));
        o.record(1);
        o.checkpoint(End::Rotation);
        o.lines.clear();
        o.resume();
        o.record(2);
        (o, ())
    };
    let s = verify(None, &[("a.1", &first), ("b", &other.lines)]);
    assert_eq!(broken_at(&s), (1, BreakKind::Spliced), "{s}");
}

#[test]
fn an_unsigned_log_verifies_and_says_what_it_cannot_see() {
    let mut log = Log::new(None);
    for n in 1..=3 {
        log.record(n);
    }
    let s = verify(None, &[("a", &log.lines)]);
    assert!(s.ok && !s.signed, "{s}");
    assert!(s.to_string().contains("not signed"), "{s}");
    // Cut at the end: unseen without signatures, as documented.
    assert!(verify(None, &[("a", &log.lines[..2])]).ok);
    let key = SigningKey::generate().unwrap().public();
    assert_eq!(
        broken_at(&verify(Some(key), &[("a", &log.lines)])),
        (1, BreakKind::WrongKey)
    );
    let junk = vec![b"not json".to_vec()];
    assert_eq!(
        broken_at(&verify(None, &[("a", &junk)])),
        (1, BreakKind::NotJson)
    );
}
