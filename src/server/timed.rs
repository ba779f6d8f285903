//! The resolver and connector of a running proxy, timed into the metrics' histograms.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::destination::{BoxFuture, ResolveError, Resolver};
use crate::metrics::Metrics;
use crate::policy::VettedAddr;
use crate::upstream::Connector;

/// A resolver whose every lookup is observed in `dns_resolve_seconds`.
pub(crate) struct TimedResolver {
    pub(crate) inner: Arc<dyn Resolver>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Resolver for TimedResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        let started = Instant::now();
        Box::pin(async move {
            let r = self.inner.resolve(name).await;
            self.metrics.resolved(started.elapsed().as_secs_f64());
            r
        })
    }
}

/// A connector whose every connect is observed in `upstream_connect_seconds`.
pub(crate) struct TimedConnector {
    pub(crate) inner: Arc<dyn Connector>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Connector for TimedConnector {
    fn connect(&self, addr: VettedAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        let started = Instant::now();
        Box::pin(async move {
            let r = self.inner.connect(addr).await;
            self.metrics
                .upstream_connected(started.elapsed().as_secs_f64());
            r
        })
    }
}
