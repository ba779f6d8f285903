//! Errors from the toml crate (syntax, types, unknown keys) mapped to file, line, key path and
//! value, in TOML's vocabulary rather than serde's.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::ConfigError;
use crate::jurisdiction::sources::line_of;

/// Map a toml syntax, type or unknown-key error to file, line, key path and value.
pub(super) fn toml_error(text: &str, source: &str, e: &toml::de::Error) -> ConfigError {
    let message = friendly(e.message());
    let Some(span) = e.span() else {
        return ConfigError::new(source, "", message);
    };
    let line = line_of(text, span.start);
    let (mut key, value) = match DeTable::parse(text) {
        Ok(doc) => locate(doc.get_ref(), text, &span),
        Err(_) => None,
    }
    .unwrap_or_else(|| {
        // A syntax error (no document), or a span no part covers: name the nearest table.
        let table = nearest_table(text, line);
        let snippet = text.get(span.clone()).unwrap_or("").trim();
        if message == "duplicate key" && !snippet.is_empty() {
            return (join(&table, snippet), None);
        }
        // On a `key = value` line, name the key and show the value as written.
        let assignment = text
            .lines()
            .nth(line.saturating_sub(1))
            .and_then(|l| l.split_once('='))
            .filter(|(k, _)| is_bare_key(k.trim()));
        match assignment {
            Some((k, v)) => (join(&table, k.trim()), Some(v.trim().to_string())),
            None => (table, (!snippet.is_empty()).then(|| snippet.to_string())),
        }
    });
    let mut reason = message;
    if let Some(field) = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        key = join(&key, field);
        reason = "required key is missing".to_string();
    }
    let err = ConfigError::new(source, key, reason).at_line(line);
    match value {
        Some(v) => err.with_value(v),
        None => err,
    }
}

/// Trade serde's Rust vocabulary for TOML's.
fn friendly(message: &str) -> String {
    if message.contains(" as i128, ") {
        return "integer out of range".to_string();
    }
    let mut m = message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(at) = m.find("expected struct ") {
        m.truncate(at);
        m.push_str("expected a table");
    }
    m
}

/// A bare TOML key (or dotted bare keys): letters, digits, `_`, `-` and `.`.
fn is_bare_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// One located part of the document.
struct Part {
    span: Range<usize>,
    path: String,
    /// A key, or a table header: no value to show.
    is_key: bool,
}

/// Key path and (for a value) its text at `span`: the deepest part with exactly this span,
/// else the smallest part containing it.
fn locate(doc: &DeTable<'_>, text: &str, span: &Range<usize>) -> Option<(String, Option<String>)> {
    let mut parts = Vec::new();
    collect(doc, "", &mut parts);
    let exact = parts
        .iter()
        .filter(|p| p.span == *span)
        .max_by_key(|p| p.path.len());
    let part = exact.or_else(|| {
        parts
            .iter()
            .filter(|p| p.span.start <= span.start && span.end <= p.span.end)
            .min_by_key(|p| (p.span.end - p.span.start, usize::MAX - p.path.len()))
    })?;
    let value = (!part.is_key)
        .then(|| text.get(part.span.clone()).map(str::to_string))
        .flatten();
    Some((part.path.clone(), value))
}

fn collect(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Part>) {
    for (k, v) in table.iter() {
        let path = join(prefix, k.get_ref());
        out.push(Part {
            span: k.span(),
            path: path.clone(),
            is_key: true,
        });
        collect_value(v, &path, out);
    }
}

fn collect_value(v: &Spanned<DeValue<'_>>, path: &str, out: &mut Vec<Part>) {
    match v.get_ref() {
        DeValue::Table(t) => {
            out.push(Part {
                span: v.span(),
                path: path.to_string(),
                is_key: true,
            });
            collect(t, path, out);
        }
        DeValue::Array(a) => {
            let tables = a.iter().all(|e| e.get_ref().is_table());
            out.push(Part {
                span: v.span(),
                path: path.to_string(),
                is_key: tables,
            });
            for (i, e) in a.iter().enumerate() {
                collect_value(e, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(Part {
            span: v.span(),
            path: path.to_string(),
            is_key: false,
        }),
    }
}

/// The table header in force before `line` (`policy.rule[2]`), for syntax errors.
fn nearest_table(text: &str, line: usize) -> String {
    let mut current = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let clean = |name: &str| -> String {
        name.split('.')
            .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
            .collect::<Vec<_>>()
            .join(".")
    };
    for l in text.lines().take(line.saturating_sub(1)) {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("[[") {
            if let Some(end) = rest.find("]]") {
                let name = clean(&rest[..end]);
                let n = counts.entry(name.clone()).or_insert(0);
                current = format!("{name}[{n}]");
                *n += 1;
            }
        } else if let Some(rest) = t.strip_prefix('[')
            && let Some(end) = rest.find(']')
        {
            current = clean(&rest[..end]);
        }
    }
    current
}
