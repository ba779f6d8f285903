//! The life of a request, in one function: classify → resolve → lookup → decide → record →
//! connect → relay or tunnel. Each stage is a call into its own module.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, StatusCode};

use crate::audit::recorder::Recorder;
use crate::audit::{self, ProxyReason};
use crate::conn::ConnInfo;
use crate::http::{ProxyBody, failure, listener_gone, never, refusal};
use crate::pipeline::classify::{self, Intent};
use crate::pipeline::relay::{RelayCtx, Upstream};
use crate::pipeline::{connect, relay, vet};
use crate::policy::{Reason, Subject, Verdict};
use crate::state::Shared;
use crate::state::tunnels::TunnelSubject;
use crate::upstream::connect_first;
use crate::upstream::pool::Reserved;
use crate::upstream::tunnel::TunnelLimits;

/// Handle one request from a forward listener. Always answers; exactly one audit record is
/// emitted for it (when its response body or tunnel ends).
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<ProxyBody>,
) -> Response<ProxyBody> {
    let busy = conn.activity.begin();
    let snap = shared.state.load_full();
    let cfg = &snap.config;
    // This request's listener settings: from the snapshot it decides on.
    let Some(listener) = snap
        .listener(&conn.listener.name)
        .filter(|l| l.forward().is_some())
        .cloned()
    else {
        let base = snap.record(&conn.listener, conn.client, audit::Intent::Unknown);
        return listener_gone(Recorder::new(shared.deps.audit.clone(), base));
    };
    let mut rec = Recorder::new(
        shared.deps.audit.clone(),
        snap.record(&listener, conn.client, audit::Intent::Unknown),
    );
    rec.hold(busy);
    let listener = &listener;

    // 2. classify
    let intent = match classify::classify(&req) {
        Ok(i) => i,
        Err(e) => return failure(rec, e, ProxyReason::MalformedRequest),
    };
    let dest = intent.destination().clone();
    let host = dest.host.to_string();
    {
        let r = rec.rec();
        r.intent = intent.label();
        r.dest_host = Some(host.clone());
        r.dest_port = Some(dest.port);
    }
    // 3–5. gate, resolve, lookup, decide: the vet stage `explain` uses too
    let client_ip = conn.client.ip();
    let subject = Subject {
        listener: &listener.name,
        mode: listener.mode,
        client: client_ip,
        host: &host,
        port: dest.port,
    };
    let vetted = vet::request(
        shared.deps.resolver.as_ref(),
        &snap.table,
        cfg,
        listener,
        &subject,
        &dest.host,
    )
    .await;
    let decision = match vetted.into_result(&host) {
        Ok(d) => d,
        Err(e) => {
            rec.rec().reason = Reason::ResolveFailed.into();
            return failure(rec, e, Reason::ResolveFailed);
        }
    };

    // 6. record
    rec.decision(&decision, &cfg.profile);
    if decision.verdict == Verdict::Deny {
        return refusal(rec, decision, &cfg.profile, &host, dest.port);
    }

    // 7. connect: only vetted addresses, in order (absolute-form requests may reuse an idle
    // connection to an address this decision vetted, or wait for one: at most waiting while `upstream_max_connections` are open to the address; a tunnel
    // always dials its own)
    let reserved = match intent {
        Intent::Forward(_) => {
            shared.egress_idle.configure(&cfg.limits);
            let wait = cfg.limits.connect_timeout;
            let target = dest.authority();
            match shared
                .egress_idle
                .reserve(&decision.vetted, None, wait, &target)
                .await
            {
                Ok(r) => r,
                Err(e) => return failure(rec, e, decision.reason),
            }
        }
        Intent::Connect(_) => Reserved::Dial(None),
    };
    let upstream = match reserved {
        Reserved::Idle(sender, addr) => Upstream::Pooled(sender, addr),
        Reserved::Dial(slot) => match connect_first(
            &shared.deps.connector,
            &decision.vetted,
            cfg.limits.connect_timeout,
            &dest.authority(),
        )
        .await
        {
            Ok((stream, addr)) => Upstream::Fresh(stream, addr, slot),
            Err(e) => return failure(rec, e, decision.reason),
        },
    };

    match (intent, upstream) {
        (Intent::Connect(_), Upstream::Fresh(stream, dialled, _)) => {
            let r = rec.rec();
            r.dialed_ip = Some(dialled.addr().ip());
            r.status = Some(200);
            let limits = TunnelLimits {
                idle: cfg.limits.tunnel_idle_timeout,
                lifetime: cfg.limits.max_tunnel_lifetime,
            };
            let hard = shared.hard.clone();
            // Registered so a reload can re-decide it on the address it dialled.
            let open = shared.tunnels.open(
                TunnelSubject {
                    listener: listener.name.clone(),
                    client: client_ip,
                    host,
                    port: dest.port,
                    dialed: dialled.addr().ip(),
                },
                shared.metrics.tunnel(&listener.name),
            );
            // The tunnel keeps its client connection's slot of `max_connections` until it
            // closes: the upgraded socket (and the recorder's busy guard) hold the connection's
            // activity, which holds the slot.
            // Only the upgrade is kept of the request, and `run` is the task itself: an async
            // block around it would lay out its state twice, for the tunnel's whole life.
            let mut req = req;
            let upgrade = crate::http::server::on_upgrade(&mut req);
            drop(req);
            shared
                .tracker
                .spawn(connect::run(upgrade, stream, limits, rec, open, hard));
            let mut resp = Response::new(Empty::<Bytes>::new().map_err(never).boxed());
            *resp.status_mut() = StatusCode::OK;
            resp
        }
        (_, upstream) => {
            let ctx = RelayCtx {
                idle: &shared.egress_idle,
                connector: &shared.deps.connector,
                vetted: &decision.vetted,
                limits: &cfg.limits,
                activity: &conn.activity,
            };
            match relay::relay(req, &dest, upstream, ctx, rec).await {
                Ok(resp) => resp,
                Err((e, rec)) => failure(rec, e, decision.reason),
            }
        }
    }
}
