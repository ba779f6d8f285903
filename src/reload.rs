//! Configuration reload (SIGHUP, `POST /-/reload`): re-read the configuration and everything
//! it names (profile, GeoIP database, overrides, cloud ranges, certificates), compile it on a
//! blocking thread (never a runtime worker), and apply it ([`Reloader::apply`]). A reload that
//! fails at any step changes nothing: the running snapshot keeps serving, one log line says
//! why (file, line and reason), and `config_reloads_total{result="error"}` counts it.

use std::io;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::server::{Applied, Reloader, Snapshot};

/// `mi_option_purge_delay` in the bundled mimalloc (`mimalloc.h`, `mi_option_e`): how long a
/// freed page waits before it is returned to the operating system, in milliseconds.
pub const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay while the proxy is busy. Start-up runs with none (the table build's
/// garbage goes back at once); under load, a page freed at the end of one request is taken
/// again by the next, and giving it back in between cost a `madvise` and a page fault each
/// time (S1 CPU per request 20.9 -> 18.9 µs with 100 ms, measured interleaved).
const SERVING_PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Once the proxy is up: return what start-up freed, then let freed pages wait
/// [`SERVING_PURGE_DELAY_MS`] before they are returned. (Collecting again later, with the
/// delay on, was tried to return memory when load stops: a proxy so collected was measured to
/// stay slow in the allocator, 7,000 instead of 61,000 req/s over 10,000 connections.)
pub fn set_serving_purge_delay() {
    // SAFETY: mi_collect only returns mimalloc's own free pages (as in
    // `release_freed_memory`); mi_option_set only stores an option value, which mimalloc
    // reads when it next schedules a purge.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, SERVING_PURGE_DELAY_MS);
    }
}

/// Hand memory freed by a table build back to the operating system (the binary's mimalloc,
/// and glibc's malloc for what C code allocates). Building the table takes several times its
/// final size in short-lived allocations, which an allocator otherwise keeps (the RSS of a process that has reloaded would stay near its peak).
pub fn release_freed_memory() {
    crate::jurisdiction::release_embedded_data();
    // SAFETY: mi_collect only returns mimalloc's own free pages to the system; it has no
    // preconditions (a process whose global allocator is not mimalloc has none to return).
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it has no
    // preconditions and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Builds the next snapshot from the configuration's sources (blocking: it reads files and
/// compiles the jurisdiction table).
pub type Loader = Arc<dyn Fn() -> Result<Snapshot, String> + Send + Sync>;

/// Reloads a running proxy, one reload at a time.
pub struct Reload {
    reloader: Reloader,
    loader: Loader,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reload {
    /// Reload `reloader`'s proxy from what `loader` builds.
    pub fn new(reloader: Reloader, loader: Loader) -> Arc<Reload> {
        Arc::new(Reload {
            reloader,
            loader,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// The proxy this reloads.
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// Reload now; `trigger` (`SIGHUP`, `admin`) is logged. Returns what changed, or why
    /// nothing did.
    pub async fn run(&self, trigger: &str) -> Result<Applied, String> {
        let _one = self.one_at_a_time.lock().await;
        let loader = self.loader.clone();
        let result = match tokio::task::spawn_blocking(move || loader()).await {
            Ok(built) => built,
            Err(e) => Err(format!("the reload task failed: {e}")),
        }
        .and_then(|snapshot| self.reloader.apply(snapshot));
        // The old snapshot is gone once the requests still reading it finish; what the build
        // freed can go back now.
        release_freed_memory();
        self.reloader.metrics().reloaded(result.is_ok());
        match &result {
            Ok(applied) => {
                let snap = self.reloader.current();
                tracing::info!(
                    trigger,
                    source = %snap.config.source,
                    profile = %snap.config.profile.name,
                    data.versions = %snap.data_versions,
                    listeners.added = ?applied.added,
                    listeners.removed = ?applied.removed,
                    tunnels_closed = applied.tunnels_closed,
                    "Configuration reloaded"
                );
            }
            Err(e) => tracing::error!(
                trigger,
                error = %e,
                "Reload refused: the running configuration keeps serving"
            ),
        }
        result
    }

    /// Reload on every SIGHUP (unix). The handler is installed before this returns.
    #[cfg(unix)]
    pub fn spawn_on_sighup(self: &Arc<Self>) -> io::Result<JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let reload = self.clone();
        Ok(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = reload.run("SIGHUP").await;
            }
        }))
    }
}
