//! The proxy's own answers: a refusal (403 naming the decision) and a failure (its status),
//! each audited through the request's recorder.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::{ProxyBody, never};
use crate::audit::recorder::Recorder;
use crate::audit::{Outcome, ProxyReason};
use crate::error::{ProxyError, Side};
use crate::policy::{Decision, Verdict};

/// Header naming the proxy's decision on refusals.
pub const DECISION_HEADER: &str = "x-residency-decision";

/// Plain-text answer with the decision header.
pub fn text_response(status: StatusCode, body: String, decision: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(never).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(decision) {
        resp.headers_mut().insert(DECISION_HEADER, v);
    }
    resp
}

/// A deny: 403 naming the reason and jurisdiction, audited.
pub fn refusal(
    mut rec: Recorder,
    decision: Decision,
    profile: &crate::policy::Profile,
    host: &str,
    port: u16,
) -> Response<ProxyBody> {
    rec.decision(&decision, profile);
    rec.rec().status = Some(403);
    let jurisdiction = decision
        .jurisdiction
        .map_or("-".to_string(), |j| j.code().to_string());
    let mut header = format!(
        "deny; reason={}; jurisdiction={}",
        decision.reason.as_str(),
        jurisdiction
    );
    if let Some(rule) = &decision.rule {
        header.push_str(&format!("; rule={rule}"));
    }
    let body = format!(
        "residency-proxy: {host}:{port} denied: {} (jurisdiction {jurisdiction}, profile {})\n",
        decision.reason.as_str(),
        profile.name
    );
    rec.finish();
    text_response(StatusCode::FORBIDDEN, body, &header)
}

/// A failure (bad request, DNS, connect, upstream): its status, audited.
pub fn failure(
    mut rec: Recorder,
    e: ProxyError,
    reason: impl Into<Outcome>,
) -> Response<ProxyBody> {
    let reason = reason.into();
    rec.error(&e);
    {
        let r = rec.rec();
        // A verdict already recorded stands (a report-mode pass, or an allowed member that
        // then failed, stays an allow); a failure before any decision takes `reason`'s.
        if r.reason == Outcome::Undecided {
            r.decision = if reason.allows() {
                Verdict::Allow
            } else {
                Verdict::Deny
            };
            r.reason = reason;
        }
        if r.dialed_ip.is_some() {
            r.decision = Verdict::Allow;
        }
    }
    let header = format!("error; reason={}", e.label());
    let body = format!("residency-proxy: {e}\n");
    rec.finish();
    text_response(e.status(), body, &header)
}

/// A request on a connection whose listener the current configuration no longer has (or
/// now has as another kind): 503, recorded, and the client reconnects. Nothing is decided or
/// dialled.
pub fn listener_gone(mut rec: Recorder) -> Response<ProxyBody> {
    let name = rec.rec().listener.clone();
    tracing::warn!(
        listener = %name,
        "Request on a listener the current configuration no longer has"
    );
    let r = rec.rec();
    r.reason = ProxyReason::ListenerNotConfigured.into();
    r.status = Some(503);
    r.error_side = Some(Side::Internal);
    r.error = Some(format!("listener {name} is no longer configured"));
    rec.finish();
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("residency-proxy: listener {name} is no longer configured\n"),
        &format!("error; reason={}", ProxyReason::ListenerNotConfigured),
    )
}
