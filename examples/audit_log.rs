//! Writes a synthetic audit log to stdout, for trying `report` (and measuring it) on
//! something that looks like a real deployment: mostly home traffic, some adequate and
//! attested flows, denials of several kinds, report-mode passes, `start` lines at each
//! (pretend) process start, a checkpoint every 1,000 records, and `seq`/`chain` keys.
//!
//! `cargo run --release --example audit_log -- FLOWS DAYS > audit.log`
//! (defaults: 5,000 flows over 4 days, from 2026-11-20). Deterministic: the same arguments
//! give the same file.

use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};

use residency_proxy::audit::{AuditAddr, AuditRecord, Intent, Outcome};
use residency_proxy::policy::{Mode, Reason, Verdict};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A kind of flow: host, address, jurisdiction, class, source, reason, verdict, mode, weight.
struct Kind {
    hosts: &'static [&'static str],
    ip: &'static str,
    jurisdiction: &'static str,
    class: &'static str,
    source: &'static str,
    reason: Outcome,
    verdict: Verdict,
    would_deny: bool,
    rule: Option<&'static str>,
    weight: u64,
    bytes: u64,
}

fn kinds() -> Vec<Kind> {
    let k =
        |hosts, ip, j, class, source, reason: Reason, verdict, would_deny, weight, bytes| Kind {
            hosts,
            ip,
            jurisdiction: j,
            class,
            source,
            reason: reason.into(),
            verdict,
            would_deny,
            rule: None,
            weight,
            bytes,
        };
    use Verdict::{Allow, Deny};
    let mut v = vec![
        k(
            &[
                "digital.nhs.uk",
                "api.service.nhs.uk",
                "login.nhs.uk",
                "files.trust.nhs.uk",
            ],
            "81.2.69.142",
            "GB",
            "home",
            "geoip",
            Reason::Home,
            Allow,
            false,
            7000,
            60_000,
        ),
        k(
            &[
                "records.eu-west-2.example.com",
                "s3.eu-west-2.amazonaws.com",
            ],
            "52.95.150.10",
            "GB",
            "home",
            "cloud:aws:eu-west-2",
            Reason::Home,
            Allow,
            false,
            1500,
            200_000,
        ),
        k(
            &["backup.eu-west-1.example.com"],
            "52.95.240.1",
            "IE",
            "adequate",
            "cloud:aws:eu-west-1",
            Reason::Adequate,
            Allow,
            false,
            450,
            120_000,
        ),
        k(
            &["analytics.example.de"],
            "20.52.0.8",
            "DE",
            "adequate",
            "cloud:azure:germanywestcentral",
            Reason::Adequate,
            Allow,
            false,
            250,
            40_000,
        ),
        k(
            &["api.payments.example"],
            "34.102.0.5",
            "US",
            "conditional",
            "cloud:gcp:us-central1",
            Reason::Attested,
            Allow,
            false,
            150,
            8_000,
        ),
        k(
            &["telemetry.vendor.example", "cdn.tracker.example"],
            "198.51.100.7",
            "US",
            "conditional",
            "geoip",
            Reason::NotAttested,
            Deny,
            false,
            250,
            0,
        ),
        k(
            &["upload.example.cn"],
            "203.0.113.9",
            "CN",
            "not-adequate",
            "geoip",
            Reason::NotAdequate,
            Deny,
            false,
            90,
            0,
        ),
        k(
            &["mirror.example.ru"],
            "192.0.2.44",
            "RU",
            "not-adequate",
            "geoip",
            Reason::NotAdequate,
            Allow,
            true,
            60,
            15_000,
        ),
        k(
            &["169.254.169.254"],
            "169.254.169.254",
            "metadata",
            "internal",
            "special",
            Reason::Metadata,
            Deny,
            false,
            40,
            0,
        ),
        k(
            &["pacs.internal.example"],
            "10.20.0.5",
            "internal",
            "internal",
            "special",
            Reason::InternalAllowed,
            Allow,
            false,
            200,
            30_000,
        ),
    ];
    v.push(Kind {
        rule: Some("research-partner"),
        ..k(
            &["sftp.partner.example.ca"],
            "24.48.0.1",
            "CA",
            "conditional",
            "geoip",
            Reason::RuleAllow,
            Allow,
            false,
            10,
            500_000,
        )
    });
    v.push(Kind {
        rule: Some("ban-social"),
        ..k(
            &["social.example.com"],
            "81.2.69.150",
            "GB",
            "home",
            "geoip",
            Reason::RuleDeny,
            Deny,
            false,
            30,
            0,
        )
    });
    v
}

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let days: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4).max(1);
    let start_ms: u64 = 1_795_132_800_000; // 2026-11-20T00:00:00Z
    let span = days * 86_400_000;
    let kinds = kinds();
    let total_weight: u64 = kinds.iter().map(|k| k.weight).sum();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let out = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let ts = |ms: u64| {
        residency_proxy::audit::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
    };
    let mut seq = 0u64;
    let mut emit = |out: &mut BufWriter<_>, mut line: String| {
        seq += 1;
        line.pop();
        let _ = writeln!(
            out,
            r#"{line},"seq":{seq},"chain":"{:064x}"}}"#,
            seq.wrapping_mul(0x9e37_79b9)
        );
    };
    for i in 0..flows {
        let ms = start_ms + span * i / flows.max(1) + rng.below(1000);
        // A restart half-way, with newer data.
        let data = if i < flows / 2 {
            "geoip=2026-06-01 aws=1761894521 azure=392"
        } else {
            "geoip=2026-11-01 aws=1763000000 azure=401"
        };
        let db = if i < flows / 2 {
            "2026-06-01"
        } else {
            "2026-11-01"
        };
        if i == 0 || i == flows / 2 {
            emit(
                &mut out,
                format!(
                    r#"{{"kind":"start","ts":"{}","version":"0.1.0","config.digest":"sha256:ab12","data.versions":"{data}","profile":"uk-adequate","db.version":"{db}","key.id":null}}"#,
                    ts(ms)
                ),
            );
        }
        if i > 0 && i % 1000 == 0 {
            emit(
                &mut out,
                format!(
                    r#"{{"kind":"checkpoint","ts":"{}","signature":"00"}}"#,
                    ts(ms)
                ),
            );
        }
        let mut w = rng.below(total_weight);
        let k = kinds
            .iter()
            .find(|k| {
                if w < k.weight {
                    true
                } else {
                    w -= k.weight;
                    false
                }
            })
            .unwrap_or(&kinds[0]);
        let host = k.hosts[rng.below(k.hosts.len() as u64) as usize];
        let ip: IpAddr = k.ip.parse().expect("fixture address");
        let client: SocketAddr = if rng.below(4) == 0 {
            SocketAddr::new(
                IpAddr::V6(std::net::Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    rng.below(3) as u16,
                    0,
                    0,
                    0,
                    0,
                    rng.below(500) as u16 + 1,
                )),
                40000 + rng.below(20000) as u16,
            )
        } else {
            SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::new(
                    10,
                    1,
                    rng.below(8) as u8,
                    rng.below(250) as u8 + 1,
                )),
                40000 + rng.below(20000) as u16,
            )
        };
        let resolved = k.reason != Outcome::Policy(Reason::ResolveFailed);
        let dialed = k.verdict == Verdict::Allow;
        let bytes = if dialed {
            k.bytes / 2 + rng.below(k.bytes.max(1))
        } else {
            0
        };
        let rec = AuditRecord {
            ts: ts(ms),
            listener: "egress".into(),
            client_addr: Some(client),
            intent: if rng.below(3) == 0 {
                Intent::Forward
            } else {
                Intent::Connect
            },
            dest_host: Some(host.into()),
            dest_port: Some(443),
            dest_addrs: if resolved {
                vec![AuditAddr {
                    ip,
                    jurisdiction: k.jurisdiction.into(),
                    class: k.class.into(),
                    source: k.source.into(),
                    prefix: format!("{ip}/32"),
                }]
            } else {
                Vec::new()
            },
            dialed_ip: dialed.then_some(ip),
            decision: k.verdict,
            mode: if k.would_deny {
                Mode::Report
            } else {
                Mode::Enforce
            },
            would_deny: k.would_deny,
            reason: k.reason,
            rule: k.rule.map(str::to_owned),
            profile: "uk-adequate".into(),
            db_version: db.into(),
            data_versions: data.into(),
            bytes_up: bytes / 5,
            bytes_down: bytes - bytes / 5,
            duration_ms: (rng.below(5000) as f64) / 10.0,
            status: Some(if dialed { 200 } else { 403 }),
            ..AuditRecord::default()
        };
        emit(&mut out, serde_json::to_string(&rec).expect("serialise"));
    }
    let _ = out.flush();
}
