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

/// Once the proxy is up: unmap the binary's read-only file pages from this process, so the
/// resident set holds the code that serving runs rather than all that start-up ran (config
/// parsing, the table build, the CLI) or the kernel mapped beside it on a fault (fault-around).
/// Pages that serving touches fault back in from the page cache. Only mappings of the
/// executable that are not writable and hold no private (anonymous) page are dropped: their
/// every byte is the file's, so dropping one changes nothing a reader sees. Measured with
/// smaps on an idle proxy: the binary's resident pages 9.2 -> 2.1 MiB, RSS 22.5 -> 15.6 MiB.
pub fn release_startup_pages() {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(smaps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/smaps"),
        ) else {
            return;
        };
        let Some(exe) = exe.to_str() else {
            return;
        };
        for (start, end) in clean_readonly_mappings(&smaps, exe) {
            // SAFETY: [start, end) is a whole mapping of the executable, private, not
            // writable and without an anonymous page (checked in smaps just now; a mapping
            // that is not writable cannot gain one): every page of it is the file's bytes,
            // which the next access faults back in unchanged, so every reference into it
            // stays valid. A failure (reported by the return value, ignored) leaves the pages
            // resident.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The address ranges in `smaps` of private, non-writable mappings of the file `path` whose
/// resident pages are all the file's (`Anonymous: 0 kB`: no page copied on write; a page can
/// still count as `Private_Dirty` while the page cache has not written a fresh file back).
fn clean_readonly_mappings(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // (range, still a candidate) of the mapping whose fields are being read.
    let mut current: Option<((usize, usize), bool)> = None;
    let mut finish = |current: &mut Option<((usize, usize), bool)>| {
        if let Some((range, true)) = current.take() {
            out.push(range);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            // A mapping's header: range, perms, offset, device, inode, path.
            finish(&mut current);
            let perms = fields.next().unwrap_or("");
            let name = after_fields(line, 5);
            let p = perms.as_bytes();
            let private_readonly = p.len() == 4 && p[1] == b'-' && p[3] == b'p';
            current = Some(((lo, hi), private_readonly && name == path && hi > lo));
            continue;
        }
        if let Some((_, candidate)) = current.as_mut()
            && first == "Anonymous:"
            && fields.next() != Some("0")
        {
            *candidate = false;
        }
    }
    finish(&mut current);
    out
}

/// What follows the first `n` whitespace-separated fields of `line`, trimmed (a path may
/// hold spaces).
fn after_fields(line: &str, n: usize) -> &str {
    let mut rest = line;
    for _ in 0..n {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
    }
    rest.trim()
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXE: &str = "/opt/rp bin/residency-proxy";

    /// Five mappings: rodata and text of the binary (clean), its RELRO segment (copied on
    /// write for relocations), its data (writable), and a library.
    fn smaps() -> String {
        let mapping = |range: &str, perms: &str, path: &str, anon: u32| {
            format!(
                "{range} {perms} 00000000 fe:00 5310571                    {path}\n\
                 Size:               9616 kB\nRss:                7472 kB\n\
                 Private_Dirty:      7472 kB\nAnonymous:          {anon} kB\n\
                 VmFlags: rd ex mr mw me\n"
            )
        };
        [
            mapping("1000-3000", "r--p", EXE, 0),
            mapping("3000-8000", "r-xp", EXE, 0),
            mapping("8000-9000", "r--p", EXE, 4),
            mapping("9000-a000", "rw-p", EXE, 0),
            mapping("a000-b000", "r-xp", "/usr/lib/libc.so.6", 0),
            mapping("b000-c000", "rw-p", "", 8),
        ]
        .concat()
    }

    #[test]
    fn only_the_binarys_readonly_mappings_without_copied_pages_are_dropped() {
        assert_eq!(
            clean_readonly_mappings(&smaps(), EXE),
            vec![(0x1000, 0x3000), (0x3000, 0x8000)]
        );
        assert_eq!(clean_readonly_mappings(&smaps(), "/opt/rp"), vec![]);
    }

    #[test]
    fn this_processes_own_text_is_found_and_survives_being_dropped() {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let found = clean_readonly_mappings(&smaps, exe.to_str().expect("utf-8 path"));
        assert!(
            !found.is_empty(),
            "no clean read-only mapping of the test binary"
        );
        release_startup_pages();
        // The mappings stay, and the code and constant data just dropped fault back in from the
        // file: reading smaps again runs that code and finds the same mappings.
        let again = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let found_again = clean_readonly_mappings(&again, exe.to_str().expect("utf-8 path"));
        assert_eq!(found_again, found);
    }

    #[test]
    fn a_path_with_spaces_is_read_whole() {
        assert_eq!(
            after_fields("1000-2000 r--p 0 fe:00 7   /opt/rp bin/x ", 5),
            "/opt/rp bin/x"
        );
        assert_eq!(after_fields("1000-2000 rw-p 0 00:00 0", 5), "");
    }
}
