//! Refresh one provider's feed in a directory: download ([`download`]), then validate it and
//! write it atomically ([`store`]). `update-ranges` and the running proxy's background refresh
//! both go through these two steps, so a feed one of them refuses the other refuses too.
//!
//! [`download`] is async (network only); [`store`] reads and writes files and parses the feed,
//! so a server calls it off its I/O threads.

use std::path::{Path, PathBuf};

use super::cloud::{self, Provider, RefusedFeed, Validation};
use super::fetch::{self, Fetcher};

/// A downloaded feed, not yet validated.
#[derive(Debug, Clone)]
pub struct Download {
    /// The provider.
    pub provider: Provider,
    /// Where the feed came from (for Azure: the file the download page linked).
    pub source: String,
    /// The feed's text.
    pub text: String,
}

/// A feed written by [`store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The file written.
    pub path: PathBuf,
    /// Prefixes in the new feed.
    pub prefixes: usize,
    /// The new feed's version token.
    pub version: String,
    /// The file it replaced, if there was one: prefixes and version.
    pub previous: Option<(usize, String)>,
}

impl Stored {
    /// `wrote DIR/aws.json: 50 prefixes, version 1700000050, was …`: for the CLI and logs.
    pub fn summary(&self) -> String {
        let was = self
            .previous
            .as_ref()
            .map(|(n, v)| format!(", was {n} prefixes, version {v}"))
            .unwrap_or_default();
        format!(
            "wrote {}: {} prefixes, version {}{was}",
            self.path.display(),
            self.prefixes,
            self.version
        )
    }
}

/// GET `provider`'s feed from `url`. For Azure, a download page (not JSON) is followed to the
/// file it links. The error names the address and the reason.
pub async fn download(
    fetcher: &Fetcher,
    provider: Provider,
    url: &str,
) -> Result<Download, String> {
    let mut source = url.to_string();
    let mut body = fetcher.get(url).await?;
    if provider == Provider::Azure && !body.trim_ascii_start().starts_with(b"{") {
        // The download page, not the file: follow its link to this week's file.
        let page = String::from_utf8_lossy(&body);
        let link = fetch::azure_link(&page)
            .ok_or_else(|| format!("{url}: no ServiceTags_Public link on the download page"))?;
        body = fetcher.get(&link).await?;
        source = link;
    }
    let text = String::from_utf8(body.to_vec()).map_err(|e| format!("{source}: not UTF-8: {e}"))?;
    Ok(Download {
        provider,
        source,
        text,
    })
}

/// Validate `feed` against the provider's minimum and the file it would replace in `dir`
/// (see [`cloud::validate`]), then write it there atomically. On error nothing is written and
/// the file already there is kept.
pub fn store(feed: &Download, dir: &Path, v: &Validation) -> Result<Stored, String> {
    let p = feed.provider;
    let previous = match cloud::read_dir_feed(dir, p) {
        Ok(prev) => prev.map(|(f, _)| f),
        Err(e) => {
            tracing::warn!(
                provider = p.name(),
                error = %e,
                "The current file does not parse: it is replaced"
            );
            None
        }
    };
    let parsed = cloud::validate(p, &feed.text, &feed.source, previous.as_ref(), v).map_err(
        |e| match e {
            RefusedFeed::Invalid(e) => e.to_string(),
            other => format!("{}: {other}", feed.source),
        },
    )?;
    let path = dir.join(p.file_name());
    cloud::write_atomically(&path, feed.text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Stored {
        path,
        prefixes: parsed.ranges.len(),
        version: parsed.version,
        previous: previous.map(|f| (f.ranges.len(), f.version)),
    })
}
