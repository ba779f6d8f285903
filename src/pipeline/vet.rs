//! The vet stage: the one decision every door uses.
//!
//! gate → resolve → lookup → decide → [`VettedAddr`](crate::policy::VettedAddr)s. Forward
//! requests, CONNECT tunnels, reverse pool members, health checks and the `explain` command all
//! call these functions, so what `explain` prints is what the proxy does: there is no second
//! copy of a decision to drift from the first.

use std::net::IpAddr;

use crate::config::{Config, ListenerConfig};
use crate::destination::{self, Host, ResolveError, Resolver};
use crate::error::ProxyError;
use crate::jurisdiction::{JurisdictionTable, Lookup};
use crate::policy::{Decision, Reason, Subject};

/// What vetting a destination came to.
#[derive(Debug)]
pub enum Vetted {
    /// A decision: allow (with the vetted addresses) or deny, including the listener gate's
    /// denies and every looked-up address.
    Decided(Decision),
    /// The destination name did not resolve: nothing to decide on, nothing is dialled.
    Unresolved(ResolveError),
}

impl Vetted {
    /// The decision, or the resolution failure as the error the request answers with.
    pub fn into_result(self, host: &str) -> Result<Decision, ProxyError> {
        match self {
            Vetted::Decided(d) => Ok(d),
            Vetted::Unresolved(ResolveError::Timeout(h)) => Err(ProxyError::ResolveTimeout(h)),
            Vetted::Unresolved(other) => Err(ProxyError::Resolve {
                host: host.to_string(),
                reason: other.to_string(),
            }),
        }
    }
}

/// The listener's own checks, before any lookup: the client must be in `allowed_clients`
/// (never an open proxy) and, on a forward or transparent listener, the port in
/// `allowed_ports` (a reverse listener's destinations are its pool members, whose ports the
/// configuration names).
pub fn gate(listener: &ListenerConfig, client: IpAddr, port: u16) -> Option<Reason> {
    if !listener.allowed_clients.iter().any(|n| n.contains(&client)) {
        return Some(Reason::ClientNotAllowed);
    }
    if let Some(ports) = listener.allowed_ports()
        && !ports.contains(&port)
    {
        return Some(Reason::PortNotAllowed);
    }
    None
}

/// Decide on addresses already resolved: look each up and apply the policy. Pure.
pub fn decide(
    table: &JurisdictionTable,
    config: &Config,
    subject: &Subject<'_>,
    addrs: &[IpAddr],
) -> Decision {
    let lookups: Vec<(IpAddr, Lookup)> = addrs.iter().map(|ip| (*ip, table.lookup(*ip))).collect();
    config.policy.decide(&config.profile, subject, &lookups)
}

/// Resolve `host` and decide on every address it resolves to.
pub async fn resolve_and_decide(
    resolver: &dyn Resolver,
    table: &JurisdictionTable,
    config: &Config,
    subject: &Subject<'_>,
    host: &Host,
) -> Vetted {
    match destination::resolve(resolver, host).await {
        Ok(addrs) => Vetted::Decided(decide(table, config, subject, &addrs)),
        Err(e) => Vetted::Unresolved(e),
    }
}

/// A request on `listener` (forward, CONNECT, or a reverse listener's member as `explain` asks
/// it): the listener gate, then resolve and decide. `subject.host`
/// is the normalised text of `host`.
pub async fn request(
    resolver: &dyn Resolver,
    table: &JurisdictionTable,
    config: &Config,
    listener: &ListenerConfig,
    subject: &Subject<'_>,
    host: &Host,
) -> Vetted {
    if let Some(reason) = gate(listener, subject.client, subject.port) {
        return Vetted::Decided(Decision::early(reason, listener.mode));
    }
    resolve_and_decide(resolver, table, config, subject, host).await
}
