//! A refused configuration: file, line, key path, bad value and reason, shown on one line.

use std::fmt;
use std::path::Path;

/// Longest value (in characters) shown in a message; longer values are cut with `…`.
const MAX_VALUE_CHARS: usize = 80;

/// A refused configuration. Displayed as one line:
/// `{file}:{line}: {key}: {reason} ('{value}')`, leaving out the parts that are not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or the embedded example's name).
    pub file: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// Key path, e.g. `listener[0].bind` or `policy.rule[2].classes[1]`; empty when the error
    /// is not about one key (e.g. an unreadable file).
    pub key: String,
    /// The offending value, as written, where there is one.
    pub value: Option<String>,
    /// What is wrong, and what was expected.
    pub reason: String,
}

impl ConfigError {
    /// An error about `key` in `file`, with no line or value yet.
    pub fn new(file: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: None,
            key: key.into(),
            value: None,
            reason: reason.into(),
        }
    }

    /// The same error, at `line`.
    pub fn at_line(mut self, line: usize) -> ConfigError {
        self.line = Some(line);
        self
    }

    /// The same error, naming the offending value.
    pub fn with_value(mut self, value: impl Into<String>) -> ConfigError {
        self.value = Some(value.into());
        self
    }

    /// The configuration file could not be read.
    pub fn read(path: &Path, e: &std::io::Error) -> ConfigError {
        ConfigError::new(
            &path.display().to_string(),
            "",
            format!("cannot read configuration file: {e}"),
        )
    }
}

/// Write `s` on one line: control characters (newlines, tabs, escapes) are escaped.
fn one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        one_line(f, &self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            one_line(f, &self.key)?;
            f.write_str(": ")?;
        }
        one_line(f, &self.reason)?;
        if let Some(value) = &self.value {
            f.write_str(" ('")?;
            if value.chars().count() > MAX_VALUE_CHARS {
                let cut: String = value.chars().take(MAX_VALUE_CHARS).collect();
                one_line(f, &cut)?;
                f.write_str("…")?;
            } else {
                one_line(f, value)?;
            }
            f.write_str("')")?;
        }
        Ok(())
    }
}
