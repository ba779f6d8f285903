//! What the verifier reports: the kinds of break, the first break met, and the summary of
//! the whole input.

use std::fmt;
use std::path::PathBuf;

/// What is wrong at a break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// A line was changed.
    Edited,
    /// Lines are missing.
    Deleted,
    /// Lines are out of order.
    Reordered,
    /// The end of a signed chain is missing, or the input is empty.
    Truncated,
    /// Lines of another chain, or files out of order.
    Spliced,
    /// Signed by another key than `--key`, or not signed.
    WrongKey,
    /// A checkpoint signature does not check.
    BadSignature,
    /// A line that is not JSON.
    NotJson,
    /// A JSON line without `seq` and `chain`.
    NotChained,
    /// The input could not be read.
    Unreadable,
}

impl BreakKind {
    /// The word the verdict uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Edited => "edited",
            BreakKind::Deleted => "deleted",
            BreakKind::Reordered => "reordered",
            BreakKind::Truncated => "truncated",
            BreakKind::Spliced => "spliced",
            BreakKind::WrongKey => "wrong key",
            BreakKind::BadSignature => "bad signature",
            BreakKind::NotJson => "not JSON",
            BreakKind::NotChained => "not chained",
            BreakKind::Unreadable => "unreadable",
        }
    }
}

/// The first break: where, what, and in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The file (empty when the input had no lines).
    pub file: PathBuf,
    /// The line in that file, from 1 (0 when the input had no lines).
    pub line: u64,
    /// What is wrong.
    pub what: BreakKind,
    /// The details, in a sentence.
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file.display(), self.line)?;
        }
        write!(f, "{}: {}", self.what.as_str(), self.detail)
    }
}

/// What the verifier found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Every link and (with a key) every signature checked, no break.
    pub ok: bool,
    /// Flow records.
    pub records: u64,
    /// Lines, special lines included.
    pub lines: u64,
    /// Checkpoints.
    pub checkpoints: u64,
    /// Every chain carries a signing key id (so it has checkpoints).
    pub signed: bool,
    /// The checkpoint signatures were checked against a given key.
    pub signatures_checked: bool,
    /// The key id the chains are signed with (the first one seen).
    pub key_id: Option<String>,
    /// `ts` of the first line.
    pub first_ts: Option<String>,
    /// `ts` of the last line.
    pub last_ts: Option<String>,
    /// Chains (one per process start, or per rotated file read alone).
    pub chains: u64,
    /// Files read.
    pub files: u64,
    /// The last chain ends at a rotation checkpoint: it goes on in a file not given.
    pub continues_later: bool,
    /// The first break, if any.
    pub broken: Option<Break>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let counts = format!(
            "{} in {} ({}, {}, {})",
            plural(self.records, "record", "records"),
            plural(self.lines, "line", "lines"),
            plural(self.files, "file", "files"),
            plural(self.chains, "chain", "chains"),
            plural(self.checkpoints, "checkpoint", "checkpoints"),
        );
        if let Some(b) = &self.broken {
            return if b.line > 0 {
                write!(
                    f,
                    "BROKEN at {}:{}: {}: {}. Read {counts}.",
                    b.file.display(),
                    b.line,
                    b.what.as_str(),
                    b.detail
                )
            } else {
                write!(
                    f,
                    "BROKEN: {}: {}. Read {counts}.",
                    b.what.as_str(),
                    b.detail
                )
            };
        }
        write!(f, "OK: {counts}")?;
        if let (Some(a), Some(b)) = (&self.first_ts, &self.last_ts) {
            write!(f, " from {a} to {b}")?;
        }
        f.write_str(". Every link of the chain checks")?;
        match (self.signed, self.signatures_checked, &self.key_id) {
            (true, true, Some(id)) => write!(
                f,
                "; every checkpoint signature checks with key {}, and each chain ends with its \
                 final checkpoint",
                short(id)
            )?,
            (true, _, _) => f.write_str(
                "; checkpoint signatures were not checked (no --key): give the public key to \
                 prove no line was cut from the end",
            )?,
            (false, _, _) => {
                f.write_str("; the log is not signed, so lines cut from its end could not be seen")?
            }
        }
        if self.continues_later {
            f.write_str("; the last chain goes on in a later file (rotation)")?;
        }
        f.write_str(".")
    }
}

/// The first 16 characters of a key id.
pub(super) fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}
