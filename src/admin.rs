//! The admin listener (`[admin] bind`, loopback by default): `GET /metrics` (Prometheus text
//! format), `GET /healthz` (alive), `GET /readyz` (serving; 503 while draining for shutdown),
//! `POST /-/reload` (as SIGHUP, answering with the result) and
//! `GET /v1/explain?host=&port=&client=&listener=` (the JSON decision of `explain`, from the
//! same vet stage as the live path, never connecting).
//!
//! The admin listener is not one of the proxy's listeners: it carries no proxied traffic, is
//! not audited, and keeps answering while the proxy drains, so an orchestrator sees `/readyz`
//! go 503 and stops sending work.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::destination;
use crate::pipeline::vet::{self, Vetted};
use crate::policy::{Decision, Reason, Subject};
use crate::reload::Reload;

/// The Prometheus text format's content type.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bind the admin listener on `bind` and serve it until the process ends. Returns the bound
/// address.
pub async fn serve(
    reload: Arc<Reload>,
    bind: SocketAddr,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("admin listener on {bind}: {e}")))?;
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, "Admin listener: /metrics /healthz /readyz /-/reload /v1/explain");
    let join = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "Admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let reload = reload.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let reload = reload.clone();
                    async move { Ok::<_, Infallible>(route(&reload, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, join))
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

fn json_answer(status: StatusCode, v: &Value) -> Answer {
    let mut body = v.to_string();
    body.push('\n');
    answer(status, "application/json", body)
}

async fn route(reload: &Reload, req: Request<Incoming>) -> Answer {
    let r = reload.reloader();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => answer(StatusCode::OK, METRICS_TYPE, r.render_metrics()),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if r.draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n"),
        (&Method::POST, "/-/reload") => match reload.run("admin").await {
            Ok(a) => json_answer(
                StatusCode::OK,
                &json!({
                    "result": "success",
                    "listeners_added": a.added,
                    "listeners_removed": a.removed,
                    "tunnels_closed": a.tunnels_closed,
                }),
            ),
            Err(e) => json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "result": "error", "error": e }),
            ),
        },
        (&Method::GET, "/v1/explain") => explain(reload, req.uri().query().unwrap_or("")).await,
        (_, "/metrics" | "/healthz" | "/readyz" | "/v1/explain") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        (_, "/-/reload") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics /healthz /readyz /-/reload /v1/explain\n",
        ),
    }
}

/// `GET /v1/explain`: the decision for `host` (`HOST`, `HOST:PORT`, `[IPv6]:PORT`), `port`
/// (default 443, or the one in `host`), `client` (default 127.0.0.1) on `listener` (default
/// the first), from the current snapshot.
async fn explain(reload: &Reload, query: &str) -> Answer {
    let bad = |e: String| json_answer(StatusCode::BAD_REQUEST, &json!({ "error": e }));
    let mut host = None;
    let mut port = None;
    let mut client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut listener_name = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "host" => host = Some(v.into_owned()),
            "port" => match v.parse::<u16>() {
                Ok(p) if p != 0 => port = Some(p),
                _ => return bad(format!("port: '{v}' is not a port (1 to 65535)")),
            },
            "client" => match v.parse::<IpAddr>() {
                Ok(ip) => client = ip,
                Err(_) => return bad(format!("client: '{v}' is not an IP address")),
            },
            "listener" => listener_name = Some(v.into_owned()),
            other => return bad(format!("unknown parameter '{other}'")),
        }
    }
    let Some(host) = host else {
        return bad("host is required".into());
    };
    let mut dest = match destination::parse_authority(&host, Some(443)) {
        Ok(d) => d,
        Err(e) => return bad(format!("host: {e}")),
    };
    if let Some(p) = port {
        dest.port = p;
    }
    let r = reload.reloader();
    let snap = r.current();
    let listener = match &listener_name {
        Some(name) => snap.listener(name),
        None => snap.listeners.first(),
    };
    let Some(listener) = listener.cloned() else {
        return bad(match listener_name {
            Some(n) => format!("no listener named '{n}'"),
            None => "the configuration has no listener".into(),
        });
    };
    let host_text = dest.host.to_string();
    let subject = Subject {
        listener: &listener.name,
        mode: listener.mode,
        client,
        host: &host_text,
        port: dest.port,
    };
    let vetted = vet::request(
        r.deps().resolver.as_ref(),
        &snap.table,
        &snap.config,
        &listener,
        &subject,
        &dest.host,
    )
    .await;
    let (decision, resolve_error) = match vetted {
        Vetted::Decided(d) => (d, None),
        Vetted::Unresolved(e) => (
            Decision::early(Reason::ResolveFailed, listener.mode),
            Some(e.to_string()),
        ),
    };
    let addresses: Vec<Value> = decision
        .addrs
        .iter()
        .map(|a| {
            let attestation = a
                .attestation
                .and_then(|i| snap.config.policy.attestations.get(i))
                .map(|at| json!({ "organisation": at.organisation, "basis": at.basis }));
            json!({
                "ip": a.ip,
                "jurisdiction": a.decided_by.jurisdiction.to_string(),
                "class": a.class.as_str(),
                "source": a.decided_by.source_name(),
                "prefix": a.decided_by.prefix.to_string(),
                "label": snap.table.label(&a.decided_by),
                "verdict": a.verdict.as_str(),
                "would_deny": a.would_deny,
                "reason": a.reason.as_str(),
                "rule": a.rule.as_deref(),
                "attestation": attestation,
            })
        })
        .collect();
    let dial: Vec<String> = decision
        .vetted
        .iter()
        .map(|v| v.addr().to_string())
        .collect();
    json_answer(
        StatusCode::OK,
        &json!({
            "destination": dest.authority(),
            "listener": listener.name,
            "mode": listener.mode.as_str(),
            "client": client,
            "profile": { "name": snap.config.profile.name, "version": snap.config.profile.version },
            "data_versions": &*snap.data_versions,
            "resolve_error": resolve_error,
            "addresses": addresses,
            "decision": decision.verdict.as_str(),
            "would_deny": decision.would_deny,
            "reason": decision.reason.as_str(),
            "rule": decision.rule.as_deref(),
            "would_dial": dial,
        }),
    )
}
