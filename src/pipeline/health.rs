//! Active health checks of reverse pools, decided by the same vet stage as live requests.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::Request;

use crate::pipeline::reverse;
use crate::state::Shared;

/// Active health checks: every pool with `health_check` has its members probed with a GET of
/// that path every interval, over vetted addresses only; 2xx and 3xx are healthy.
///
/// A member is vetted for the check as the reverse listeners that use the pool would vet it
/// (their name and mode, so their report mode and listener-scoped rules apply; see
/// `probe`). A member no such listener may reach is not dialled and is not held out of
/// rotation by the check: every request vets its members itself, skips a denied one for the
/// next, and answers 403 naming the deny when all are denied (a 503 "no healthy member" would
/// hide the policy's answer). A member whose name does not resolve is unhealthy.
pub async fn health_loop(shared: Arc<Shared>, pool_name: String) {
    // Whatever ends the loop, the pool may get a new one (a later swap that checks it again).
    struct Running<'a>(&'a Shared, &'a str);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            if let Ok(mut r) = self.0.health_loops.lock() {
                r.remove(self.1);
            }
        }
    }
    let _running = Running(&shared, &pool_name);
    loop {
        let snap = shared.state.load_full();
        let Some(pool) = snap.pools.get(&pool_name).cloned() else {
            return;
        };
        let Some(check) = pool.cfg.health_check.clone() else {
            return;
        };
        for (i, member) in pool.cfg.members.iter().enumerate() {
            let outcome = tokio::time::timeout(
                check.timeout,
                probe(&shared, &snap, &pool, member, &check.path),
            )
            .await
            .unwrap_or(Probe::Unhealthy);
            if outcome == Probe::NotVetted {
                tracing::debug!(
                    pool = %pool.cfg.name,
                    member = i,
                    "No listener using the pool may reach this member; not probed"
                );
            }
            pool.set_healthy(i, outcome != Probe::Unhealthy);
        }
        tokio::select! {
            _ = tokio::time::sleep(check.interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// What one health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The member answered 2xx or 3xx.
    Healthy,
    /// It did not resolve, could not be connected to, or answered something else.
    Unhealthy,
    /// No listener using the pool may reach it: not dialled.
    NotVetted,
}

/// Check one member. The member is vetted once per reverse listener that uses the pool
/// ([`crate::config::reverse::pool_users`]), in configuration order, with that listener's
/// name and mode, through the same [`reverse::vet_member`] as live requests; the first
/// decision that allows it gives the addresses dialled. The check has no client: rules are
/// matched as for the client `0.0.0.0`, so a rule scoped to particular clients does not apply
/// to it (and cannot take the member out of rotation).
async fn probe(
    shared: &Shared,
    snap: &crate::state::Snapshot,
    pool: &crate::upstream::pool::PoolState,
    member: &crate::config::reverse::Member,
    path: &str,
) -> Probe {
    let host = member.host.to_string();
    let users = crate::config::reverse::pool_users(
        &snap.config.listeners,
        &snap.config.routes,
        &pool.cfg.name,
    );
    let mut vetted = None;
    for listener in users {
        let subject = crate::policy::Subject {
            listener: &listener.name,
            mode: listener.mode,
            client: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            host: &host,
            port: member.port,
        };
        let Ok(decision) = reverse::vet_member(shared, snap, &subject, member).await else {
            return Probe::Unhealthy;
        };
        if decision.verdict == crate::policy::Verdict::Allow && !decision.vetted.is_empty() {
            vetted = Some(decision.vetted);
            break;
        }
    }
    let Some(vetted) = vetted else {
        return Probe::NotVetted;
    };
    let target = format!("{host}:{}", member.port);
    let Ok((conn, _)) = pool
        .connect(
            &member.host,
            &vetted,
            &shared.deps.connector,
            snap.config.limits.connect_timeout,
            &target,
            // A probe's own connection, closed after it: outside the members' limit.
            None,
        )
        .await
    else {
        return Probe::Unhealthy;
    };
    let req = Request::get(path)
        .header(hyper::header::HOST, target.as_str())
        .header(hyper::header::USER_AGENT, "residency-proxy-health-check")
        .body(
            http_body_util::Empty::<bytes::Bytes>::new()
                .map_err(crate::http::never)
                .boxed(),
        );
    let Ok(req) = req else {
        return Probe::Unhealthy;
    };
    // The response body is not read: the probe's connection closes with it.
    match conn.send(req).await {
        Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => Probe::Healthy,
        _ => Probe::Unhealthy,
    }
}
