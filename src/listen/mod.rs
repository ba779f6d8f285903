//! Stage 1: accept connections, one file per listener kind. Each kind's accept loop enforces
//! its connection limit and client timeouts, and hands each request to the pipeline.
//!
//! - [`forward`]: HTTP/1.1 forward proxy (absolute-form and CONNECT), 503 over capacity.
//! - [`reverse`]: PROXY protocol, TLS (SNI, ALPN), HTTP/1.1 and HTTP/2 to the reverse pipeline.
//! - [`transparent`]: redirected connections and their original destinations, to the
//!   transparent pipeline.

pub(crate) mod forward;
pub(crate) mod reverse;
pub mod transparent;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::audit::recorder::Recorder;
use crate::audit::{Intent, ProxyReason};
use crate::config::ListenerConfig;
use crate::conn::ConnInfo;
use crate::error::Side;
use crate::state::Shared;

/// Accept until `stop` (the listener is removed, or the proxy shuts down) with the
/// listener's connection limit; each connection is served by `serve` in its own task, tracked
/// for draining. Shared by reverse and transparent listeners.
pub async fn accept_with<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    stop: CancellationToken,
    serve: F,
) where
    F: Fn(Arc<Shared>, Arc<ListenerConfig>, TcpStream, SocketAddr, ConnSlot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let inherited = nodelay_inherited(&listener);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let Some((stream, peer)) = accept(&listener, &cfg.name, &stop, inherited).await else {
            break;
        };
        let slot = ConnSlot {
            _permit: permit,
            _gauge: shared.metrics.connection(&cfg.name),
        };
        // `serve`'s future is the task itself (it holds the slot): wrapping it in another
        // async block would lay its state out twice, and every byte of a task's future is
        // copied into the task, so it is resident for the connection's whole life.
        let task = serve(shared.clone(), current(&shared, &cfg), stream, peer, slot);
        shared.tracker.spawn(task);
    }
}

/// A connection's place in its listener's `max_connections` and in the open-connections
/// gauge, both given back when the connection's task drops it.
pub(crate) struct ConnSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _gauge: crate::metrics::GaugeGuard,
}

/// The listener's settings for a connection accepted now: the current snapshot's (TLS
/// certificates, PROXY protocol, timeouts follow a swap), else the ones it was bound with.
pub(crate) fn current(shared: &Shared, bound: &Arc<ListenerConfig>) -> Arc<ListenerConfig> {
    shared
        .state
        .load()
        .listener(&bound.name)
        .cloned()
        .unwrap_or_else(|| bound.clone())
}

/// Whether connections accepted on `listener` come with `TCP_NODELAY` already: set on the
/// listener when it was bound, which Linux copies to each accepted socket.
pub(crate) fn nodelay_inherited(listener: &TcpListener) -> bool {
    nix::sys::socket::getsockopt(listener, nix::sys::socket::sockopt::TcpNoDelay).unwrap_or(false)
}

/// The next connection, with `TCP_NODELAY` set (by the listener's own, when `inherited`), or
/// `None` once `stop` is cancelled. An accept error (EMFILE and friends) is logged and retried
/// after a short back-off instead of spinning.
pub(crate) async fn accept(
    listener: &TcpListener,
    name: &str,
    stop: &CancellationToken,
    inherited: bool,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                if !inherited {
                    let _ = stream.set_nodelay(true);
                }
                return Some((stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = %name, "Accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Audit a connection refused before any request reached the pipeline: a malformed PROXY
/// header, a failed TLS handshake, a request hyper refused (`status` is what it answered, if
/// anything). One record each.
pub(crate) fn audit_refused(
    shared: &Shared,
    listener: &ListenerConfig,
    client: SocketAddr,
    intent: Intent,
    reason: ProxyReason,
    status: Option<u16>,
    error: &str,
) {
    let mut base = shared.state.load().record(listener, client, intent);
    base.reason = reason.into();
    base.status = status;
    base.error_side = Some(Side::Downstream);
    base.error = Some(error.into());
    Recorder::new(shared.deps.audit.clone(), base).finish();
}

/// A connection ended with an error: if hyper refused a request itself (400, 414, 431, an
/// HTTP/2 preface on HTTP/1.1), audit it with the status hyper sent; otherwise it is an
/// ordinary end (I/O, timeout), logged at debug.
pub(crate) fn audit_connection_error(
    shared: &Shared,
    conn: &ConnInfo,
    intent: Intent,
    e: &(dyn std::error::Error + 'static),
) {
    match e
        .downcast_ref::<hyper::Error>()
        .and_then(crate::audit::recorder::hyper_refusal)
    {
        Some(status) => audit_refused(
            shared,
            &conn.listener,
            conn.client,
            intent,
            ProxyReason::MalformedRequest,
            status.map(|s| s.as_u16()),
            &e.to_string(),
        ),
        None => tracing::debug!(error = %e, client.addr = %conn.client, "Connection ended"),
    }
}

/// A tunnel may move bytes on a client socket directly ([`TimedIo::socket`]).
impl crate::http::server::UpgradedIo for crate::conn::TimedIo {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.socket())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_accepted_on_a_nodelay_listener_has_nodelay_without_a_call() {
        let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
        std.set_nonblocking(true).expect("non-blocking");
        nix::sys::socket::setsockopt(&std, nix::sys::socket::sockopt::TcpNoDelay, &true)
            .expect("TCP_NODELAY on the listener");
        let listener = TcpListener::from_std(std).expect("a tokio listener");
        assert!(nodelay_inherited(&listener));
        let addr = listener.local_addr().expect("its address");
        let client = TcpStream::connect(addr).await.expect("connected");
        let stop = CancellationToken::new();
        let (accepted, _) = accept(&listener, "t", &stop, true).await.expect("accepted");
        assert!(
            accepted.nodelay().unwrap_or(false),
            "inherited from the listener"
        );
        drop(client);
    }
}
