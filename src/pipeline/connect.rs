//! CONNECT: 200, then the client's stream (`http::server::on_upgrade`), then copy bytes both
//! ways; and, after a reload, the re-decision of every open tunnel.

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::audit::ClosedBy;
use crate::audit::recorder::Recorder;
use crate::error::Side;
use crate::http::server::ClientUpgrade;
use crate::pipeline::vet;
use crate::policy::{Subject, Verdict};
use crate::state::tunnels::{Closed, OpenTunnel};
use crate::state::{Shared, Snapshot};
use crate::upstream::tunnel::{TunnelLimits, tunnel};

/// Run the tunnel once the client connection is upgraded; the recorder is finished (and the
/// audit record emitted) when the tunnel ends, or when a reload closes it (`open`). Cut at the
/// drain deadline (`hard`), the recorder is dropped as it stands.
pub async fn run(
    upgrade: ClientUpgrade,
    upstream: TcpStream,
    limits: TunnelLimits,
    mut rec: Recorder,
    open: OpenTunnel,
    hard: CancellationToken,
) {
    let cut = tokio::select! {
        () = relay_upgraded(upgrade, upstream, limits, &mut rec, &open) => false,
        () = hard.cancelled() => true,
    };
    // Off the open-tunnels gauge before the record is out: a scrape that sees the record's
    // counts never sees the tunnel still open.
    drop(open);
    if cut {
        drop(rec);
        return;
    }
    rec.finish();
}

async fn relay_upgraded(
    upgrade: ClientUpgrade,
    upstream: TcpStream,
    limits: TunnelLimits,
    rec: &mut Recorder,
    open: &OpenTunnel,
) {
    match upgrade.wait().await {
        Ok(upgraded) => {
            let counters = rec.bytes.clone();
            tokio::select! {
                stats = tunnel(upgraded, upstream, limits, &counters) => {
                    if stats.idle_timeout {
                        rec.rec().error = Some("tunnel idle timeout".into());
                    } else if stats.lifetime_exceeded {
                        rec.rec().error = Some("tunnel lifetime exceeded".into());
                    }
                }
                _ = open.closed() => {
                    if let Some(why) = open.closed_by_reload() {
                        let r = rec.rec();
                        r.reason = why.reason;
                        r.rule.clone_from(&why.rule);
                        r.closed_by = Some(ClosedBy::Reload);
                    }
                }
            }
        }
        Err(e) => {
            let r = rec.rec();
            r.error_side = Some(Side::Downstream);
            r.error = Some(format!("upgrade failed: {e}"));
        }
    }
}

/// Re-decide every open tunnel under `snap` on the address it dialled (the listener gate,
/// then the policy), and close each the new policy denies. A tunnel whose
/// listener is no longer configured drains as its listener does. Returns how many were closed.
pub fn reevaluate(shared: &Shared, snap: &Snapshot) -> usize {
    let mut closed = 0;
    for (id, t) in shared.tunnels.subjects() {
        let Some(listener) = snap.listener(&t.listener) else {
            continue;
        };
        let subject = Subject {
            listener: &listener.name,
            mode: listener.mode,
            client: t.client,
            host: &t.host,
            port: t.port,
        };
        let d = match vet::gate(listener, t.client, t.port) {
            Some(reason) => crate::policy::Decision::early(reason, listener.mode),
            None => vet::decide(&snap.table, &snap.config, &subject, &[t.dialed]),
        };
        // A deny is enforced (report mode passes what it would deny, as an allow).
        if d.verdict == Verdict::Deny {
            let why = Closed {
                reason: d.reason.into(),
                rule: d.rule.as_deref().map(str::to_string),
            };
            if shared.tunnels.close(id, why) {
                tracing::info!(
                    listener = %t.listener,
                    dest.host = %t.host,
                    dest.port = t.port,
                    dialed.ip = %t.dialed,
                    reason = d.reason.as_str(),
                    "Tunnel closed: the reloaded policy denies it"
                );
                closed += 1;
            }
        }
    }
    closed
}
