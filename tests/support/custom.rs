//! A proxy under test with a jurisdiction table and resolver of the test's own (for tests that
//! need the full special ranges, loopback included, or names of their own).

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use residency_proxy::audit::{self, AuditTarget};
use residency_proxy::config::Config;
use residency_proxy::destination::StaticResolver;
use residency_proxy::jurisdiction::JurisdictionTable;
use residency_proxy::server::{self, Deps, Snapshot};

use super::{AuditLog, RecordingConnector, TestProxy};

/// Start the proxy with exactly the configuration `text` (a forward listener named `egress`),
/// `table` and `resolver`, and a recording connector with no routes: any dial is a violation.
pub async fn spawn_proxy_with(
    text: &str,
    table: JurisdictionTable,
    resolver: StaticResolver,
) -> TestProxy {
    spawn_proxy_full(
        text,
        table,
        resolver,
        Arc::new(RecordingConnector::default()),
    )
    .await
}

/// The one way a test proxy starts: configuration `text`, `table`, `resolver`, `connector`,
/// and an in-memory audit log.
pub async fn spawn_proxy_full(
    text: &str,
    table: JurisdictionTable,
    resolver: StaticResolver,
    connector: Arc<RecordingConnector>,
) -> TestProxy {
    let config = Config::parse(text, "test.toml", Path::new("."))
        .unwrap_or_else(|e| panic!("test configuration refused: {e}\n{text}"));
    let records = Arc::new(Mutex::new(Vec::new()));
    let (sink, writer) = audit::spawn(
        AuditTarget::Memory(records.clone()),
        4096,
        Duration::from_secs(1),
    )
    .expect("start the in-memory audit writer");
    let deps = Deps {
        resolver: Arc::new(resolver),
        connector: connector.clone(),
        audit: sink,
    };
    let handle = server::start(Snapshot::new(config, table), deps)
        .await
        .expect("start the proxy");
    let addr = handle.addr("egress").expect("the egress listener is bound");
    TestProxy {
        addr,
        connector,
        audit: AuditLog { records },
        handle: Some(handle),
        writer: Some(writer),
        barriers: AtomicUsize::new(0),
    }
}

impl TestProxy {
    /// Swap the running proxy onto the configuration `text` (with the test world's table), as
    /// a reload would: new requests decide on it, running ones finish on theirs.
    pub fn swap_config(&self, text: &str) {
        let config = Config::parse(text, "test.toml", Path::new("."))
            .unwrap_or_else(|e| panic!("test configuration refused: {e}\n{text}"));
        self.handle
            .as_ref()
            .expect("the proxy is running")
            .swap(Snapshot::new(config, super::world_table()));
    }
}

/// A reload loader for tests: compile the configuration file at `path` (read at each reload)
/// with the test world's table, as `run` compiles its file with the real one.
pub fn world_loader(path: std::path::PathBuf) -> residency_proxy::reload::Loader {
    Arc::new(move || {
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        Ok(Snapshot::new(config, super::world_table()))
    })
}

impl TestProxy {
    /// The running proxy.
    pub fn handle(&self) -> &server::ProxyHandle {
        self.handle.as_ref().expect("the proxy is running")
    }

    /// Start the admin listener on an OS-picked loopback port, reloading with `loader`.
    pub async fn admin(
        &self,
        loader: residency_proxy::reload::Loader,
    ) -> (std::net::SocketAddr, Arc<residency_proxy::reload::Reload>) {
        let reload = residency_proxy::reload::Reload::new(self.handle().reloader(), loader);
        let (addr, _join) = residency_proxy::admin::serve(
            reload.clone(),
            "127.0.0.1:0".parse().expect("a socket address"),
        )
        .await
        .expect("bind the admin listener");
        (addr, reload)
    }
}

/// One request to the admin listener at `addr` (`Connection: close`): status and body.
pub async fn admin_request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin listener");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(super::WAIT, s.read_to_end(&mut buf))
        .await
        .expect("the admin listener answers in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}
