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
