//! The running proxy's cloud-range refresh (`jurisdiction.cloud_refresh`), against a local
//! HTTPS server serving fixture feeds (certificates made here; nothing leaves loopback): a new
//! feed is written to `cloud_dir` and the running proxy decides on a table rebuilt from it,
//! requests and audit records included; a truncated feed keeps the table and the file in use
//! and is counted; the background loop does the same on its own and ends with the proxy.

#[path = "support/feeds.rs"]
mod feeds;
#[path = "support/mmdb.rs"]
mod mmdb;
#[path = "support/pki.rs"]
mod pki;
mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use residency_proxy::audit::{self, AuditTarget};
use residency_proxy::config::Config;
use residency_proxy::destination::StaticResolver;
use residency_proxy::jurisdiction::cloud::{Provider, Validation};
use residency_proxy::jurisdiction::fetch::Fetcher;
use residency_proxy::jurisdiction::load;
use residency_proxy::refresh::{CloudRefresh, RefreshSettings};
use residency_proxy::server::{self, Deps, ProxyHandle, Snapshot};

use feeds::{FeedServer, Reply, feed_server};
use support::{KeepAliveClient, RecordingConnector, WAIT};

/// An AWS feed of 50 prefixes `3.8.i.0/24`, all in `region`, with version `token`.
fn aws_feed(region: &str, token: &str) -> String {
    let prefixes: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"ip_prefix":"3.8.{i}.0/24","region":"{region}","service":"EC2","network_border_group":"{region}"}}"#
            )
        })
        .collect();
    format!(
        "{{\"syncToken\":\"{token}\",\"createDate\":\"2026-11-01-00-00-00\",\n\"prefixes\":[\n{}\n],\n\"ipv6_prefixes\":[]}}\n",
        prefixes.join(",\n")
    )
}

const ADDR: &str = "3.8.7.9";

fn ip() -> IpAddr {
    ADDR.parse().expect("ip")
}

/// A small GeoIP database built 2026-06-01: all of 3.0.0.0/8 in the United States.
fn geoip(path: &Path) {
    let mut b = mmdb::MmdbBuilder::new(6, "GeoLite2-Country").build_epoch(1_780_272_000);
    b.insert_str("3.0.0.0/8", mmdb::maxmind_country("US"));
    std::fs::write(path, b.build()).expect("write the GeoIP database");
}

/// One forward listener, the GeoIP database at `db`; the cloud ranges come from `dir` only
/// (the embedded ones are off).
fn config(db: &Path, dir: &Path) -> Config {
    let text = format!(
        "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:0\"\n\n[jurisdiction]\ngeoip = \"{}\"\ncloud_ranges = false\ncloud_dir = \"{}\"\ncloud_refresh = \"6h\"\n",
        db.display(),
        dir.display()
    );
    Config::parse(&text, "test.toml", Path::new(".")).expect("test configuration")
}

struct World {
    handle: ProxyHandle,
    refresh: CloudRefresh,
    server: FeedServer,
    dir: PathBuf,
    connector: Arc<RecordingConnector>,
    records: Arc<Mutex<Vec<audit::AuditRecord>>>,
    writer: audit::AuditWriter,
    _tmp: tempfile::TempDir,
}

/// `cloud_dir` holds AWS in eu-west-2 (London); the feed server serves it in ap-east-1 (Hong
/// Kong). The proxy starts on the directory's data.
async fn world() -> World {
    let server = feed_server(
        [(
            "/aws.json",
            Reply::Body(aws_feed("ap-east-1", "1800000000")),
        )]
        .into(),
    )
    .await;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("cloud");
    std::fs::create_dir(&dir).expect("cloud dir");
    std::fs::write(dir.join("aws.json"), aws_feed("eu-west-2", "1700000000")).expect("seed");
    let db = tmp.path().join("country.mmdb");
    geoip(&db);
    let config = config(&db, &dir);
    assert_eq!(
        config.jurisdiction.cloud_refresh,
        Some(Duration::from_secs(6 * 3600))
    );
    let (table, _) = load::load(&config.jurisdiction).expect("the table builds");
    let records = Arc::new(Mutex::new(Vec::new()));
    let (sink, writer) = audit::spawn(
        AuditTarget::Memory(records.clone()),
        64,
        Duration::from_secs(1),
    )
    .expect("audit writer");
    let connector = Arc::new(RecordingConnector::default());
    let deps = Deps {
        resolver: Arc::new(StaticResolver::new()),
        connector: connector.clone(),
        audit: sink,
    };
    let handle = server::start(Snapshot::new(config, table), deps)
        .await
        .expect("the proxy starts");
    let settings = RefreshSettings {
        dir: dir.clone(),
        feeds: vec![(Provider::Aws, server.https("/aws.json"))],
        validation: Validation {
            min_prefixes: Some(5),
            ..Validation::default()
        },
        fetcher: Fetcher::new(Some(&server.ca), WAIT).expect("fetcher with the test CA"),
    };
    let refresh = CloudRefresh::new(handle.reloader(), settings);
    World {
        handle,
        refresh,
        server,
        dir,
        connector,
        records,
        writer,
        _tmp: tmp,
    }
}

impl World {
    /// Where the running proxy's current snapshot places the test address: jurisdiction and
    /// source.
    fn placed(&self) -> (String, String) {
        self.placed_ip(ip())
    }

    fn placed_ip(&self, ip: IpAddr) -> (String, String) {
        let snap = self.handle.snapshot();
        let hit = snap.table.lookup(ip);
        (
            hit.jurisdiction().code().to_string(),
            hit.source_name().to_string(),
        )
    }

    fn file(&self) -> String {
        std::fs::read_to_string(self.dir.join("aws.json")).expect("aws.json")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_feed_replaces_the_table_and_a_truncated_one_keeps_it() {
    let w = world().await;
    assert_eq!(w.placed(), ("GB".into(), "cloud:aws:eu-west-2".into()));
    let before = w.handle.snapshot();
    assert_eq!(&*before.data_versions, "geoip=2026-06-01 aws=1700000000");

    // A new feed: written to the directory, the table rebuilt and swapped in.
    let round = w.refresh.refresh_now().await;
    assert_eq!(round.failed, Vec::<(String, String)>::new());
    assert_eq!(round.stored, vec![Provider::Aws]);
    assert!(round.swapped, "the table was swapped");
    assert_eq!(w.file(), aws_feed("ap-east-1", "1800000000"));
    assert_eq!(w.placed(), ("HK".into(), "cloud:aws:ap-east-1".into()));
    let outside = "3.9.0.1".parse().expect("ip");
    assert_eq!(
        w.placed_ip(outside),
        ("US".into(), "geoip".into()),
        "the rebuilt table keeps the other sources"
    );
    let after = w.handle.snapshot();
    assert_eq!(
        &*after.data_versions, "geoip=2026-06-01 aws=1800000000",
        "the versions of every source"
    );
    assert_eq!(
        (&after.config.jurisdiction, &after.config.profile.name),
        (&before.config.jurisdiction, &before.config.profile.name),
        "only the table changed"
    );
    assert_eq!((w.refresh.stored(), w.refresh.failures()), (1, 0));

    // Requests decide on the new table: Hong Kong is not adequate, so the request is denied
    // before any dial, and its record names the cloud source and the new data version.
    let mut client = KeepAliveClient::connect(w.handle.addr("egress").expect("egress")).await;
    let resp = client.get(&format!("http://{ADDR}/")).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text());
    assert!(
        resp.decision().contains("jurisdiction=HK"),
        "{}",
        resp.decision()
    );
    drop(client);

    // The same feed again: written, but the table already holds it, so it is not rebuilt.
    let round = w.refresh.refresh_now().await;
    assert_eq!(round.stored, vec![Provider::Aws]);
    assert!(
        !round.swapped,
        "an unchanged feed does not rebuild the table"
    );
    assert!(Arc::ptr_eq(&after, &w.handle.snapshot()));

    // Truncated downloads: refused, the file and the table in use are kept, each is counted.
    let full = aws_feed("me-central-1", "1900000000");
    for (reply, reason) in [
        (Reply::CutShort(full.clone()), "body cut short"),
        (
            Reply::Body(full[..full.len() / 2].to_string()),
            "not an AWS ip-ranges.json document",
        ),
    ] {
        let failures = w.refresh.failures();
        w.server.set("/aws.json", reply);
        let round = w.refresh.refresh_now().await;
        assert!(round.stored.is_empty());
        assert!(!round.swapped);
        assert_eq!(round.failed.len(), 1, "{:?}", round.failed);
        assert_eq!(round.failed[0].0, "aws");
        assert!(round.failed[0].1.contains(reason), "{:?}", round.failed);
        assert_eq!(w.refresh.failures(), failures + 1, "the failure is counted");
        assert!(
            Arc::ptr_eq(&after, &w.handle.snapshot()),
            "the table in use is kept"
        );
        assert_eq!(w.placed(), ("HK".into(), "cloud:aws:ap-east-1".into()));
        assert_eq!(
            w.file(),
            aws_feed("ap-east-1", "1800000000"),
            "the file is kept"
        );
    }

    assert!(w.handle.shutdown(WAIT).await);
    w.writer.shutdown().await.expect("audit flush");
    let records = w.records.lock().expect("records").clone();
    let rec = records
        .iter()
        .find(|r| r.dest_host.as_deref() == Some(ADDR))
        .expect("the request's record");
    assert_eq!(rec.dest_addrs[0].source, "cloud:aws:ap-east-1");
    assert_eq!(rec.dest_addrs[0].jurisdiction, "HK");
    assert_eq!(rec.data_versions, after.data_versions);
    assert!(w.connector.dials().is_empty(), "nothing was dialled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresh_runs_on_its_own_and_stops_with_the_proxy() {
    let w = world().await;
    assert_eq!(w.placed().0, "GB");
    let task = w.refresh.spawn(Duration::from_millis(20));
    // Only a hang guard: the loop's first round swaps the table in.
    let deadline = tokio::time::Instant::now() + WAIT;
    while w.placed().0 != "HK" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.placed().1, "cloud:aws:ap-east-1");
    assert!(w.refresh.rounds() >= 1);
    assert_eq!(w.refresh.failures(), 0);
    assert!(w.handle.shutdown(WAIT).await);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the refresh loop ends at shutdown")
        .expect("the loop did not panic");
    w.writer.shutdown().await.expect("audit flush");
}

#[test]
fn cloud_refresh_is_refused_without_cloud_dir_or_below_ten_minutes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().display().to_string();
    let listener = "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:0\"\n\n[jurisdiction]\n";
    for (keys, want) in [
        (
            "cloud_refresh = \"6h\"\n".to_string(),
            "test.toml:6: jurisdiction.cloud_refresh",
        ),
        (
            format!("cloud_dir = \"{dir}\"\ncloud_refresh = \"5m\"\n"),
            "test.toml:7: jurisdiction.cloud_refresh",
        ),
        (
            format!("cloud_dir = \"{dir}\"\ncloud_refresh = \"often\"\n"),
            "test.toml:7: jurisdiction.cloud_refresh",
        ),
    ] {
        let text = format!("{listener}{keys}");
        let err = Config::parse(&text, "test.toml", Path::new("."))
            .expect_err("refused")
            .to_string();
        assert!(err.contains(want), "{err} (expected {want})");
    }
    let err = Config::parse(
        &format!("{listener}cloud_refresh = \"6h\"\n"),
        "test.toml",
        Path::new("."),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("needs jurisdiction.cloud_dir"), "{err}");
    for (keys, want) in [
        (
            format!("cloud_dir = \"{dir}\"\ncloud_refresh = \"off\"\n"),
            None,
        ),
        (format!("cloud_dir = \"{dir}\"\n"), None),
        (
            format!("cloud_dir = \"{dir}\"\ncloud_refresh = \"10m\"\n"),
            Some(Duration::from_secs(600)),
        ),
    ] {
        let c = Config::parse(&format!("{listener}{keys}"), "test.toml", Path::new("."))
            .expect("accepted");
        assert_eq!(c.jurisdiction.cloud_refresh, want, "{keys}");
    }
}
