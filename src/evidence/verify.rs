//! The streaming verifier: every link of the chain and every checkpoint signature, line by
//! line in bounded memory, across files in the order given.
//!
//! It keeps only the state of the chain it is in (the last link, the next `seq`, the key id,
//! how the last checkpoint ended) and the first break it met; after a break it takes up the
//! chain again from the broken line, so the counts cover the whole input.
//!
//! What each break means:
//! - **edited**: a line's bytes do not hash to the link it carries (with the `seq` expected);
//!   or a checkpoint names a line other than the one before it.
//! - **deleted**: a `seq` jumps forward (lines missing before it), or the first line is neither
//!   a `start` nor a `continue` (the head of the log is missing).
//! - **reordered**: a `seq` goes back, or the line after a jump carries the `seq` that was
//!   missing (two lines swapped).
//! - **truncated**: a signed chain ends without its final checkpoint (cut after its last
//!   checkpoint, or its process was killed), or the input has no lines. An unsigned chain has
//!   no checkpoints, so a cut at its end cannot be seen.
//! - **spliced**: a `continue` line that does not name the line before it (a file of another
//!   chain, or files out of order), a key that changes inside a chain, or a line after a
//!   chain's final checkpoint that is not a `start`.
//! - **wrong key**: with `--key`, a chain signed by another key, or not signed at all.
//! - **bad signature**: with `--key`, a checkpoint whose signature does not check: the lines
//!   before it were rewritten, links included.
//! - **not JSON**, **not chained** (a JSON line without `seq` and `chain`), **unreadable**.

use std::path::{Path, PathBuf};

use super::chain::{self, GENESIS, Link};
use super::line::{self, End, Fields};
use super::sign::PublicKey;

mod report;

use report::short;
pub use report::{Break, BreakKind, Summary};

/// A line's place: the index of its file in [`Verifier::files`], and its number there.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: usize,
    line: u64,
}

/// The chain being read.
#[derive(Debug)]
struct Chain {
    /// Link of the last line.
    prev: Link,
    /// `seq` the next line should carry.
    next_seq: u64,
    /// `false` after a line that could not be read as a sealed line: the next one is taken
    /// as it is, unchecked.
    in_sync: bool,
    /// The signing key id this chain names, if any.
    key_id: Option<String>,
    /// How the last line ended, if it was a checkpoint.
    end: Option<End>,
    /// The last line.
    last: Loc,
    /// The last checkpoint.
    last_checkpoint: Option<Loc>,
}

/// Checks lines one by one; see the module docs for what each break means.
#[derive(Debug)]
pub struct Verifier {
    key: Option<PublicKey>,
    files: Vec<PathBuf>,
    chain: Option<Chain>,
    broken: Option<Break>,
    /// After a `deleted` break: the `seq` that was missing, for the very next line.
    missing: Option<u64>,
    records: u64,
    lines: u64,
    checkpoints: u64,
    chains: u64,
    unsigned_chains: u64,
    key_id: Option<String>,
    first_ts: Option<String>,
    last_ts: Option<String>,
    continues_later: bool,
    /// The lines that chains taken up from a `continue` line (a file read without the one
    /// before it) name as their previous line: met later in the input, the files were given
    /// out of order.
    awaited: Vec<(u64, Link, Loc)>,
}

impl Verifier {
    /// A verifier; with `key`, every checkpoint signature is checked and every chain must be
    /// signed by it.
    pub fn new(key: Option<PublicKey>) -> Self {
        Verifier {
            key,
            files: Vec::new(),
            chain: None,
            broken: None,
            missing: None,
            records: 0,
            lines: 0,
            checkpoints: 0,
            chains: 0,
            unsigned_chains: 0,
            key_id: None,
            first_ts: None,
            last_ts: None,
            continues_later: false,
            awaited: Vec::new(),
        }
    }

    /// Whether a break was met.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// The first break met so far.
    pub fn broken(&self) -> Option<&Break> {
        self.broken.as_ref()
    }

    fn fail(&mut self, at: Loc, what: BreakKind, detail: impl Into<String>) {
        if self.broken.is_none() {
            self.broken = Some(Break {
                file: self.files.get(at.file).cloned().unwrap_or_default(),
                line: at.line,
                what,
                detail: detail.into(),
            });
        }
    }

    /// The input could not be read at `file:lineno`.
    pub fn unreadable(&mut self, file: &Path, lineno: u64, error: &str) {
        let at = self.locate(file, lineno);
        self.fail(at, BreakKind::Unreadable, error.to_owned());
    }

    fn locate(&mut self, file: &Path, lineno: u64) -> Loc {
        if self.files.last().map(|p| p.as_os_str()) != Some(file.as_os_str()) {
            self.files.push(file.to_path_buf());
        }
        Loc {
            file: self.files.len() - 1,
            line: lineno,
        }
    }

    fn show(&self, at: Loc) -> String {
        let file = self.files.get(at.file).map(|p| p.display().to_string());
        format!("{}:{}", file.unwrap_or_default(), at.line)
    }

    /// Check one line (`line` without its newline) of `file`. Lines must come in order.
    pub fn line(&mut self, file: &Path, lineno: u64, line: &[u8]) {
        self.lines += 1;
        let at = self.locate(file, lineno);
        let Some((head, carried)) = chain::split(line) else {
            let kind = if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
                BreakKind::NotChained
            } else {
                BreakKind::NotJson
            };
            self.fail(at, kind, "the line does not end with its seq and chain");
            self.lose_sync(at);
            return;
        };
        let fields: Fields<'_> = match serde_json::from_slice(line) {
            Ok(f) => f,
            Err(e) => {
                self.fail(
                    at,
                    BreakKind::NotJson,
                    format!("the line is not one JSON object ({e})"),
                );
                self.lose_sync(at);
                return;
            }
        };
        let Some(seq) = fields.seq else {
            self.fail(at, BreakKind::NotChained, "the line has no seq");
            self.lose_sync(at);
            return;
        };
        if let Some(ts) = &fields.ts {
            if self.first_ts.is_none() {
                self.first_ts = Some(ts.to_string());
            }
            match &mut self.last_ts {
                Some(last) => {
                    last.clear();
                    last.push_str(ts);
                }
                None => self.last_ts = Some(ts.to_string()),
            }
        }
        let kind = fields.kind.as_deref();
        match kind {
            Some(line::START) => self.begin(at, &fields),
            Some(line::CONTINUE) => self.resume(at, &fields),
            None | Some(line::CHECKPOINT) => self.ensure_chain(at, seq, carried),
            Some(other) => {
                self.fail(
                    at,
                    BreakKind::NotChained,
                    format!("unknown line kind '{other}'"),
                );
                self.ensure_chain(at, seq, carried);
            }
        }
        let before = self.link_check(at, seq, head, carried);
        if !self.awaited.is_empty() {
            self.out_of_order(at, seq, carried);
        }
        match kind {
            Some(line::CHECKPOINT) => self.checkpoint(at, &fields, before),
            None => self.records += 1,
            _ => {}
        }
        if let Some(c) = &mut self.chain {
            if kind != Some(line::CHECKPOINT) {
                c.end = None;
            }
            c.last = at;
        }
    }

    /// A line that an earlier `continue` line named as the one before it.
    fn out_of_order(&mut self, at: Loc, seq: u64, carried: Link) {
        let found = self
            .awaited
            .iter()
            .find(|(s, l, _)| *s == seq && *l == carried)
            .map(|&(_, _, named_at)| named_at);
        if let Some(named_at) = found {
            let detail = format!(
                "files out of order: this line is the one {} continues from, yet comes after it",
                self.show(named_at)
            );
            self.fail(at, BreakKind::Reordered, detail);
        }
    }

    fn lose_sync(&mut self, at: Loc) {
        if let Some(c) = &mut self.chain {
            c.in_sync = false;
            c.last = at;
        }
    }

    /// A `start` line: the chain before it ends here, a new one begins.
    fn begin(&mut self, at: Loc, f: &Fields<'_>) {
        self.close_chain(false);
        self.chains += 1;
        let key_id = f.key_id.as_deref().map(str::to_owned);
        self.check_key(at, key_id.as_deref());
        self.chain = Some(Chain {
            prev: GENESIS,
            next_seq: 0,
            in_sync: true,
            key_id,
            end: None,
            last: at,
            last_checkpoint: None,
        });
    }

    /// A `continue` line: links to the line it names, which must be the line before it (when
    /// there is one).
    fn resume(&mut self, at: Loc, f: &Fields<'_>) {
        let key_id = f.key_id.as_deref().map(str::to_owned);
        let (Some(prev_seq), Some(prev_chain)) = (f.prev_seq, f.prev_chain.as_deref()) else {
            self.fail(
                at,
                BreakKind::Edited,
                "a continue line without prev.seq and prev.chain",
            );
            self.lose_sync(at);
            return;
        };
        let mut named = GENESIS;
        if chain::is_link(prev_chain.as_bytes()) {
            named.copy_from_slice(prev_chain.as_bytes());
        } else {
            self.fail(at, BreakKind::Edited, "prev.chain is not a link");
        }
        let mismatch = match &self.chain {
            None => None,
            Some(c) if c.end == Some(End::Final) => {
                Some("it continues a chain whose final checkpoint came before it".to_owned())
            }
            Some(c) if c.key_id != key_id => {
                Some("it names another signing key than the chain before it".to_owned())
            }
            Some(c) if c.in_sync && (c.prev != named || c.next_seq != prev_seq + 1) => {
                Some(format!(
                    "it continues seq {prev_seq}, but the line before it ({}) is seq {}",
                    self.show(c.last),
                    c.next_seq.saturating_sub(1)
                ))
            }
            Some(_) => None,
        };
        if let Some(why) = mismatch {
            self.fail(
                at,
                BreakKind::Spliced,
                format!("files out of order or of another chain: {why}"),
            );
        }
        if self.chain.is_none() {
            // A rotated file read alone: its chain is taken up where this line says.
            self.awaited.push((prev_seq, named, at));
            self.chains += 1;
            self.check_key(at, key_id.as_deref());
        }
        self.chain = Some(Chain {
            prev: named,
            next_seq: prev_seq + 1,
            in_sync: true,
            key_id,
            end: None,
            last: at,
            last_checkpoint: self.chain.as_ref().and_then(|c| c.last_checkpoint),
        });
    }

    /// A flow record or checkpoint: there must be a chain to be in.
    fn ensure_chain(&mut self, at: Loc, seq: u64, carried: Link) {
        match &self.chain {
            None => {
                self.fail(
                    at,
                    BreakKind::Deleted,
                    "the first line is neither a start nor a continue line: the head of the \
                     log is missing",
                );
                self.chains += 1;
                self.chain = Some(Chain {
                    prev: carried,
                    next_seq: seq,
                    in_sync: false,
                    key_id: None,
                    end: None,
                    last: at,
                    last_checkpoint: None,
                });
            }
            Some(c) if c.end == Some(End::Final) => {
                self.fail(
                    at,
                    BreakKind::Spliced,
                    "a line after the final checkpoint of its chain that is not a start line",
                );
            }
            Some(_) => {}
        }
    }

    /// The seq and link of a line; returns the seq and link of the line before it.
    fn link_check(&mut self, at: Loc, seq: u64, head: &[u8], carried: Link) -> (u64, Link) {
        let missing = self.missing.take();
        let Some(c) = self.chain.as_mut() else {
            return (seq.saturating_sub(1), GENESIS);
        };
        let before = (c.next_seq.wrapping_sub(1), c.prev);
        let (in_sync, expected) = (c.in_sync, c.next_seq);
        c.prev = carried;
        c.next_seq = seq.wrapping_add(1);
        c.in_sync = true;
        if !in_sync {
            return before;
        }
        let last = c.last;
        if missing == Some(seq)
            && let Some(b) = &mut self.broken
            && b.what == BreakKind::Deleted
        {
            b.what = BreakKind::Reordered;
            b.detail = format!("seq {seq} comes after seq {}: lines out of order", seq + 1);
        }
        if seq > expected {
            let gap = seq - expected;
            let detail = format!(
                "seq {seq} follows seq {} ({}): {gap} line{} missing before this line",
                expected.wrapping_sub(1),
                self.show(last),
                if gap == 1 { " is" } else { "s are" }
            );
            if self.broken.is_none() {
                self.missing = Some(expected);
            }
            self.fail(at, BreakKind::Deleted, detail);
        } else if seq < expected {
            let detail = format!(
                "seq {seq} follows seq {} ({}): lines out of order",
                expected.wrapping_sub(1),
                self.show(last)
            );
            self.fail(at, BreakKind::Reordered, detail);
        } else if chain::expected(&before.1, head) != carried {
            self.fail(
                at,
                BreakKind::Edited,
                "the line's bytes do not hash to the chain it carries: it was changed",
            );
        }
        before
    }

    /// A checkpoint: it names the line before it, with this chain's key, and (with a key)
    /// its signature checks.
    fn checkpoint(&mut self, at: Loc, f: &Fields<'_>, before: (u64, Link)) {
        self.checkpoints += 1;
        let end = End::from_flags(f.is_final.unwrap_or(false), f.rotation.unwrap_or(false));
        let key_id = f.key_id.as_deref();
        let chain_key = self.chain.as_ref().and_then(|c| c.key_id.clone());
        match (&chain_key, key_id) {
            (_, None) => self.fail(at, BreakKind::Edited, "a checkpoint without key.id"),
            (Some(k), Some(id)) if k != id => self.fail(
                at,
                BreakKind::Spliced,
                "a checkpoint of another key than its chain's",
            ),
            (None, Some(id)) => {
                // The head of the chain was missing: learn its key here.
                self.check_key(at, Some(id));
                if let Some(c) = &mut self.chain {
                    c.key_id = Some(id.to_owned());
                }
            }
            _ => {}
        }
        let names_before = f.signed_seq == Some(before.0)
            && f.signed_chain.as_deref().map(str::as_bytes) == Some(&before.1[..]);
        if !names_before {
            self.fail(
                at,
                BreakKind::Edited,
                format!(
                    "the checkpoint does not name the line before it (seq {})",
                    before.0
                ),
            );
        }
        if let Some(key) = &self.key {
            let sig = f.sig.as_deref().unwrap_or("");
            if !key.verify_checkpoint(before.0, &before.1, end, sig) {
                self.fail(
                    at,
                    BreakKind::BadSignature,
                    format!(
                        "the signature over seq {} does not check: the lines before it were \
                         rewritten",
                        before.0
                    ),
                );
            }
        }
        if let Some(c) = &mut self.chain {
            c.end = Some(end);
            c.last_checkpoint = Some(at);
        }
    }

    /// A chain names `id` as its key: with `--key`, it must be that key's.
    fn check_key(&mut self, at: Loc, id: Option<&str>) {
        match id {
            None => self.unsigned_chains += 1,
            Some(id) => {
                if self.key_id.is_none() {
                    self.key_id = Some(id.to_owned());
                }
            }
        }
        let Some(key) = &self.key else { return };
        match id {
            Some(id) if id == key.id() => {}
            Some(id) => {
                let detail = format!(
                    "the chain is signed by key {}, not by the key given ({})",
                    short(id),
                    short(key.id())
                );
                self.fail(at, BreakKind::WrongKey, detail);
            }
            None => self.fail(
                at,
                BreakKind::WrongKey,
                "the chain is not signed, but a key was given",
            ),
        }
    }

    /// The chain being read ends (a start line follows, or the input ends).
    fn close_chain(&mut self, at_end: bool) {
        let Some(c) = self.chain.take() else { return };
        if c.key_id.is_none() || c.end == Some(End::Final) {
            return;
        }
        if at_end && c.end == Some(End::Rotation) {
            self.continues_later = true;
            return;
        }
        let after = c.last_checkpoint.map_or_else(
            || "it has no checkpoint at all".to_owned(),
            |l| format!("truncated after the last checkpoint at {}", self.show(l)),
        );
        let detail = if c.end == Some(End::Rotation) {
            "the chain goes on in a file that is missing".to_owned()
        } else {
            format!(
                "the signed chain ends here without its final checkpoint: {after} (or the \
                 process was killed)"
            )
        };
        self.fail(c.last, BreakKind::Truncated, detail);
    }

    /// The verdict, once every line was given.
    pub fn finish(mut self) -> Summary {
        if self.lines == 0 {
            self.fail(
                Loc { file: 0, line: 0 },
                BreakKind::Truncated,
                "the input has no lines",
            );
        }
        self.close_chain(true);
        let signed = self.chains > 0 && self.unsigned_chains == 0 && self.key_id.is_some();
        Summary {
            ok: self.broken.is_none(),
            records: self.records,
            lines: self.lines,
            checkpoints: self.checkpoints,
            signed,
            signatures_checked: signed && self.key.is_some(),
            key_id: self.key_id,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            chains: self.chains,
            files: self.files.len() as u64,
            continues_later: self.continues_later,
            broken: self.broken,
        }
    }
}

#[cfg(test)]
mod tests;
