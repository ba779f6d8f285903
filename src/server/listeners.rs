//! The bound listeners of a running proxy: each a listening socket and its accept loop. A
//! reload binds what it adds before anything changes, keeps a listener whose name, kind and
//! address stay, moves a listener that changes name or kind onto the socket its address already
//! has, and stops (without cutting their connections) the ones it removes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ListenerConfig, ListenerKind};
use crate::state::Shared;

/// One bound listener.
pub(crate) struct Bound {
    pub(crate) name: String,
    kind: &'static str,
    /// As configured (port 0: the OS picked one).
    bind: SocketAddr,
    /// As bound.
    pub(crate) addr: SocketAddr,
    /// A duplicate of the listening socket, for a successor on the same address.
    socket: std::net::TcpListener,
    stop: CancellationToken,
    join: JoinHandle<()>,
}

/// What a reload does to the listeners, decided before the snapshot is swapped.
pub(crate) struct Plan {
    /// New listeners, each with the socket it will accept on.
    start: Vec<(Arc<ListenerConfig>, std::net::TcpListener)>,
    /// Indices of the current listeners to stop (removed, or moved to a successor).
    stop: Vec<usize>,
}

impl Plan {
    /// Listeners added (or moved), and listeners removed (or moved), by name.
    pub(crate) fn changes(&self, set: &ListenerSet) -> (Vec<String>, Vec<String>) {
        let added = self.start.iter().map(|(c, _)| c.name.clone()).collect();
        let removed = self
            .stop
            .iter()
            .map(|&i| set.bound[i].name.clone())
            .collect();
        (added, removed)
    }
}

/// Every bound listener, and the accept loops of the ones stopped.
#[derive(Default)]
pub(crate) struct ListenerSet {
    pub(crate) bound: Vec<Bound>,
    retired: Vec<JoinHandle<()>>,
}

/// Bind `cfg`'s address (std, so a reload binds without awaiting), non-blocking for Tokio.
pub(crate) fn bind(cfg: &ListenerConfig) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(cfg.bind).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("listener {} on {}: {e}", cfg.name, cfg.bind),
        )
    })?;
    l.set_nonblocking(true)?;
    // Accepted connections inherit it (Linux copies the listener's TCP options to each
    // accepted socket), which saves a `setsockopt` per connection; the accept loops check.
    let _ = nix::sys::socket::setsockopt(&l, nix::sys::socket::sockopt::TcpNoDelay, &true);
    Ok(l)
}

impl ListenerSet {
    /// Decide what `configs` changes, binding every address not bound yet. If any bind fails,
    /// nothing is changed (the new sockets are closed) and the error names the listener.
    pub(crate) fn plan(&self, configs: &[Arc<ListenerConfig>]) -> io::Result<Plan> {
        let mut claimed = vec![false; self.bound.len()];
        let mut start = Vec::new();
        for cfg in configs {
            let same = self.bound.iter().enumerate().position(|(i, b)| {
                !claimed[i]
                    && b.name == cfg.name
                    && b.bind == cfg.bind
                    && b.kind == cfg.kind.as_str()
            });
            if let Some(i) = same {
                claimed[i] = true;
                continue;
            }
            // The address is bound already by a listener renamed or changing kind: its
            // successor takes over the socket (no gap, no second bind).
            let moved = (cfg.bind.port() != 0)
                .then(|| {
                    self.bound
                        .iter()
                        .enumerate()
                        .position(|(i, b)| !claimed[i] && b.bind == cfg.bind)
                })
                .flatten();
            let socket = match moved {
                Some(i) => {
                    claimed[i] = true;
                    self.bound[i].socket.try_clone()?
                }
                None => bind(cfg)?,
            };
            start.push((cfg.clone(), socket));
        }
        let stop = (0..self.bound.len()).filter(|&i| !claimed[i]).collect();
        Ok(Plan { start, stop })
    }

    /// Carry out `plan` (after the snapshot that configures it is in place).
    pub(crate) fn apply(&mut self, shared: &Arc<Shared>, plan: Plan) -> io::Result<()> {
        let mut stop = plan.stop;
        stop.sort_unstable();
        for i in stop.into_iter().rev() {
            let b = self.bound.remove(i);
            b.stop.cancel();
            tracing::info!(listener = %b.name, addr = %b.addr, "Listener stopped: no longer configured");
            self.retired.push(b.join);
        }
        for (cfg, socket) in plan.start {
            let b = spawn(shared, cfg, socket)?;
            self.bound.push(b);
        }
        Ok(())
    }

    /// Every listener and its bound address.
    pub(crate) fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.bound
            .iter()
            .map(|b| (b.name.clone(), b.addr))
            .collect()
    }

    /// The accept loops, current and stopped, to await at shutdown.
    pub(crate) fn take_joins(&mut self) -> Vec<JoinHandle<()>> {
        let mut joins: Vec<JoinHandle<()>> = self.retired.drain(..).collect();
        for b in self.bound.drain(..) {
            joins.push(b.join);
        }
        joins
    }
}

/// Start accepting on `socket` for `cfg`.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    cfg: Arc<ListenerConfig>,
    socket: std::net::TcpListener,
) -> io::Result<Bound> {
    let dup = socket.try_clone()?;
    let listener = tokio::net::TcpListener::from_std(socket)?;
    let addr = listener.local_addr()?;
    let stop = shared.shutdown.child_token();
    tracing::info!(listener = %cfg.name, kind = cfg.kind.as_str(), addr = %addr, "Listening");
    let (name, bind, kind) = (cfg.name.clone(), cfg.bind, cfg.kind.as_str());
    let join = match &cfg.kind {
        ListenerKind::Forward(_) => tokio::spawn(crate::listen::forward::accept_loop(
            shared.clone(),
            listener,
            cfg,
            stop.clone(),
        )),
        ListenerKind::Reverse(_) => tokio::spawn(crate::listen::reverse::accept_loop(
            shared.clone(),
            listener,
            cfg,
            stop.clone(),
        )),
        ListenerKind::Transparent(_) => tokio::spawn(crate::listen::transparent::accept_loop(
            shared.clone(),
            listener,
            cfg,
            stop.clone(),
        )),
    };
    Ok(Bound {
        name,
        kind,
        bind,
        addr,
        socket: dup,
        stop,
        join,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bound_listener_has_nodelay_for_its_connections_to_inherit() {
        let mut cfg = crate::config::Config::example()
            .expect("the example configuration")
            .listeners
            .into_iter()
            .next()
            .expect("a listener");
        cfg.bind = "127.0.0.1:0".parse().expect("an address");
        let l = super::bind(&cfg).expect("bound");
        let on = nix::sys::socket::getsockopt(&l, nix::sys::socket::sockopt::TcpNoDelay);
        assert_eq!(on.ok(), Some(true));
    }
}
