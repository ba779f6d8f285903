//! What `update-ranges` checks before it replaces a provider's file, and how it writes one.

use std::path::Path;

use super::feeds::parse_feed;
use super::{Feed, Provider};
use crate::jurisdiction::sources::SourceError;

/// Why `update-ranges` refuses a downloaded feed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RefusedFeed {
    /// Not the provider's format, or cut short.
    #[error("{0}")]
    Invalid(SourceError),
    /// Fewer prefixes than the provider's minimum.
    #[error("only {got} prefixes (at least {min} expected)")]
    TooSmall {
        /// Prefixes in the feed.
        got: usize,
        /// The minimum.
        min: usize,
    },
    /// Shrank by more than the allowed share against the data it would replace.
    #[error(
        "{new} prefixes against {old} in the current file: a shrink of {pct:.0}% (more than {max:.0}% needs --force)"
    )]
    Shrank {
        /// Prefixes in the current file.
        old: usize,
        /// Prefixes in the new feed.
        new: usize,
        /// The shrink, in percent.
        pct: f64,
        /// The allowed shrink, in percent.
        max: f64,
    },
}

/// Checks for a refreshed feed.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    /// Fewest prefixes accepted; `None` uses the provider's default.
    pub min_prefixes: Option<usize>,
    /// Largest accepted shrink against the current data, as a share (0.2 = 20%).
    pub max_shrink: f64,
    /// Accept a shrink beyond `max_shrink`.
    pub force: bool,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            min_prefixes: None,
            max_shrink: 0.2,
            force: false,
        }
    }
}

/// Validate a downloaded feed against the minimum size and the feed it would replace.
pub fn validate(
    provider: Provider,
    text: &str,
    source: &str,
    previous: Option<&Feed>,
    v: &Validation,
) -> Result<Feed, RefusedFeed> {
    let feed = parse_feed(provider, text, source).map_err(RefusedFeed::Invalid)?;
    let min = v.min_prefixes.unwrap_or_else(|| provider.min_prefixes());
    if feed.ranges.len() < min {
        return Err(RefusedFeed::TooSmall {
            got: feed.ranges.len(),
            min,
        });
    }
    if let Some(old) = previous {
        let (o, n) = (old.ranges.len(), feed.ranges.len());
        if o > 0 && n < o {
            let share = (o - n) as f64 / o as f64;
            if share > v.max_shrink && !v.force {
                return Err(RefusedFeed::Shrank {
                    old: o,
                    new: n,
                    pct: share * 100.0,
                    max: v.max_shrink * 100.0,
                });
            }
        }
    }
    Ok(feed)
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over the old file, so a reader sees the old data or the new, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "feed".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
