//! Evidence: the tamper-evident form of the audit trail, and its verification.
//!
//! Every line a file or stdout audit target holds is one JSON object that ends with two keys,
//! `"seq":N` (per writer, +1 per line) and `"chain":"<64 lowercase hex>"`, where
//! `chain = hex(SHA-256(previous chain as 64 ASCII hex characters ‖ canonical bytes))` and the
//! canonical bytes are the line without its trailing `,"chain":"…"` (so they end `,"seq":N}`).
//! Checking a link therefore never re-serializes anything: it is byte-exact and costs one
//! SHA-256 per line. Besides flow records (which have no `kind` key), the writer writes three
//! kinds of special lines, chained the same way (see [`line`]): `start` (a process begins a
//! chain), `continue` (the first line of a file reopened after rotation) and `checkpoint`
//! (an Ed25519 signature over the seq and chain of the line before it).
//!
//! - [`chain`]: the link hash, splitting a line into canonical bytes and chain, sealing one.
//! - [`line`]: the special lines' keys and shapes, and the signed checkpoint message.
//! - [`sign`]: Ed25519 keys (PKCS#8 PEM private, SPKI PEM public), key ids, signatures.
//! - [`source`]: audit files in the order given, plain or gzip, line by line in bounded memory.
//! - [`verify`]: the streaming [`Verifier`](verify::Verifier) and its [`Summary`](verify::Summary).
//!
//! This module knows nothing of the flow record's fields: the audit writer (above it) seals
//! the lines it serializes, and `verify` and `report` read them back through it.

pub mod chain;
pub mod line;
pub mod sign;
pub mod source;
pub mod verify;

pub use sign::{KeyError, PublicKey, SigningKey};
pub use source::{Line, Lines};
pub use verify::{Break, BreakKind, Summary, Verifier};
