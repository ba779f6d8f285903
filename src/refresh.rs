//! The running proxy's refresh of the cloud ranges (`jurisdiction.cloud_refresh`).
//!
//! Every interval, each provider's official feed is downloaded into `jurisdiction.cloud_dir`
//! with the same steps as `update-ranges` ([`crate::jurisdiction::update`]: fetch, validate
//! against the provider's minimum and the file it replaces, atomic write). When at least one
//! feed differs from the version the table in use holds, the table is rebuilt from the configuration's sources and only the table
//! is replaced: a new [`Snapshot`] of the same configuration, through the proxy's swap, so pools
//! keep their runtime state and requests already running finish on the table they loaded.
//!
//! A feed that cannot be fetched or is refused, and a rebuild that fails, keep the last good
//! data (the file in the directory, the table in use); each is logged with the provider and the
//! reason and counted ([`CloudRefresh::failures`]). A rebuild that failed is tried again on the
//! next round even if no feed changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::jurisdiction::cloud::{self, Provider, Validation};
use crate::jurisdiction::fetch::Fetcher;
use crate::jurisdiction::load;
use crate::jurisdiction::update;
use crate::server::{ProxyHandle, Reloader, Snapshot};

/// Time limit of one provider's download.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// What to refresh and how.
#[derive(Clone)]
pub struct RefreshSettings {
    /// The directory the feeds are written to and the table reads (`jurisdiction.cloud_dir`).
    pub dir: PathBuf,
    /// Each provider and the address of its feed, fetched in this order.
    pub feeds: Vec<(Provider, String)>,
    /// The checks a downloaded feed passes before it replaces the file in `dir`.
    pub validation: Validation,
    /// How the feeds are reached (proxy, trusted roots, time limit).
    pub fetcher: Fetcher,
}

impl RefreshSettings {
    /// Every provider's official feed into `dir`, with the default checks.
    pub fn official(dir: PathBuf, fetcher: Fetcher) -> RefreshSettings {
        RefreshSettings {
            dir,
            feeds: Provider::ALL
                .iter()
                .map(|p| (*p, p.feed_url().to_string()))
                .collect(),
            validation: Validation::default(),
            fetcher,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Providers whose feed was written (changed or not).
    pub stored: Vec<Provider>,
    /// What failed: a provider's name (or `table` for the rebuild) and the reason.
    pub failed: Vec<(String, String)>,
    /// Whether the running proxy now decides on a rebuilt table.
    pub swapped: bool,
}

/// The refresh of a running proxy's cloud ranges. Cloneable; clones share the counters.
#[derive(Clone)]
pub struct CloudRefresh {
    inner: Arc<Inner>,
}

struct Inner {
    reloader: Reloader,
    settings: RefreshSettings,
    /// One round at a time (the background loop and [`CloudRefresh::refresh_now`]).
    round: tokio::sync::Mutex<()>,
    /// A feed was written but the table in use was not rebuilt from it yet.
    pending: AtomicBool,
    rounds: AtomicU64,
    stored: AtomicU64,
    failures: AtomicU64,
}

impl CloudRefresh {
    /// A refresh of the proxy `reloader` swaps snapshots of; nothing runs until
    /// [`CloudRefresh::refresh_now`] or [`CloudRefresh::spawn`].
    pub fn new(reloader: Reloader, settings: RefreshSettings) -> CloudRefresh {
        CloudRefresh {
            inner: Arc::new(Inner {
                reloader,
                settings,
                round: tokio::sync::Mutex::new(()),
                pending: AtomicBool::new(false),
                rounds: AtomicU64::new(0),
                stored: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// Rounds completed.
    pub fn rounds(&self) -> u64 {
        self.inner.rounds.load(Ordering::Relaxed)
    }

    /// Feeds written.
    pub fn stored(&self) -> u64 {
        self.inner.stored.load(Ordering::Relaxed)
    }

    /// Failures: feeds not fetched or refused, and rebuilds that failed.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Run one round now: fetch every feed, write the good ones, rebuild and swap the table
    /// if any was written (or a previous rebuild failed).
    pub async fn refresh_now(&self) -> Round {
        let inner = &self.inner;
        let _one = inner.round.lock().await;
        let mut round = Round::default();
        for (provider, url) in &inner.settings.feeds {
            match self.store_one(*provider, url).await {
                Ok(stored) => {
                    let changed = !self.in_use(*provider, &stored);
                    tracing::info!(
                        provider = provider.name(),
                        version = %stored.version,
                        prefixes = stored.prefixes,
                        path = %stored.path.display(),
                        changed,
                        "Cloud ranges refreshed"
                    );
                    inner.stored.fetch_add(1, Ordering::Relaxed);
                    if changed {
                        inner.pending.store(true, Ordering::Relaxed);
                    }
                    round.stored.push(*provider);
                }
                Err(reason) => {
                    tracing::warn!(
                        provider = provider.name(),
                        reason = %reason,
                        "Cloud range refresh failed: the last good data is kept"
                    );
                    inner.failures.fetch_add(1, Ordering::Relaxed);
                    round.failed.push((provider.name().to_string(), reason));
                }
            }
        }
        if inner.pending.load(Ordering::Relaxed) {
            match self.rebuild().await {
                Ok(swapped) => {
                    round.swapped = swapped;
                    inner.pending.store(!swapped, Ordering::Relaxed);
                }
                Err(reason) => {
                    tracing::error!(
                        provider = "table",
                        reason = %reason,
                        "Jurisdiction table rebuild failed: the table in use is kept"
                    );
                    inner.failures.fetch_add(1, Ordering::Relaxed);
                    round.failed.push(("table".to_string(), reason));
                }
            }
        }
        inner.rounds.fetch_add(1, Ordering::Relaxed);
        round
    }

    /// Whether the table in use already holds `stored`: the same file at the same version (an
    /// unchanged feed does not rebuild the table).
    fn in_use(&self, provider: Provider, stored: &update::Stored) -> bool {
        let origin = stored.path.display().to_string();
        self.inner
            .reloader
            .current()
            .table
            .info()
            .cloud
            .iter()
            .any(|c| c.provider == provider && c.origin == origin && c.version == stored.version)
    }

    /// Fetch one provider's feed and store it in the directory.
    async fn store_one(&self, provider: Provider, url: &str) -> Result<update::Stored, String> {
        let s = &self.inner.settings;
        let feed = update::download(&s.fetcher, provider, url).await?;
        let (dir, validation) = (s.dir.clone(), s.validation);
        tokio::task::spawn_blocking(move || update::store(&feed, &dir, &validation))
            .await
            .map_err(|e| format!("the write stopped: {e}"))?
    }

    /// Rebuild the table from the current configuration's sources and swap it in. `Ok(false)`
    /// when the configuration changed its sources meanwhile (its own table is newer).
    async fn rebuild(&self) -> Result<bool, String> {
        let reloader = &self.inner.reloader;
        let sources = reloader.current().config.jurisdiction.clone();
        let from = sources.clone();
        let (table, report) = tokio::task::spawn_blocking(move || load::load(&from))
            .await
            .map_err(|e| format!("the rebuild stopped: {e}"))?
            .map_err(|e| e.to_string())?;
        let swapped = reloader.swap_with(|current| {
            (current.config.jurisdiction == sources)
                .then(|| Snapshot::new(current.config.clone(), table))
        });
        if swapped {
            tracing::info!(
                build_ms = report.build_ms,
                sources = %report
                    .providers
                    .iter()
                    .map(cloud::CloudInfo::summary)
                    .collect::<Vec<_>>()
                    .join(", "),
                "Jurisdiction table rebuilt with the refreshed cloud ranges"
            );
            cloud::warn_if_stale(&report.providers);
        }
        Ok(swapped)
    }

    /// Run a round every `every` (the first one `every` after now) until the proxy shuts down.
    pub fn spawn(&self, every: Duration) -> JoinHandle<()> {
        let this = self.clone();
        let shutdown = self.inner.reloader.shutdown();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + every;
            let mut ticks = tokio::time::interval_at(start, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = this.refresh_now() => {}
                }
            }
        })
    }
}

/// Start the refresh the running proxy's configuration asks for (`jurisdiction.cloud_refresh`
/// with `jurisdiction.cloud_dir`), over every provider's official feed; `None` when it asks
/// for none.
pub fn spawn_configured(handle: &ProxyHandle) -> Result<Option<CloudRefresh>, String> {
    let snapshot = handle.snapshot();
    let sources = &snapshot.config.jurisdiction;
    let (Some(every), Some(dir)) = (sources.cloud_refresh, sources.cloud_dir.clone()) else {
        return Ok(None);
    };
    let fetcher = Fetcher::new(None, DOWNLOAD_TIMEOUT)
        .map_err(|e| format!("jurisdiction.cloud_refresh: {e}"))?;
    tracing::info!(
        every_s = every.as_secs(),
        dir = %dir.display(),
        "Cloud ranges are refreshed in the background"
    );
    let refresh = CloudRefresh::new(handle.reloader(), RefreshSettings::official(dir, fetcher));
    refresh.spawn(every);
    Ok(Some(refresh))
}
