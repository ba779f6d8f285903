//! The closed label sets of an audit record: what the flow asked for ([`Intent`]), why it
//! came out as it did ([`Outcome`]: a policy [`Reason`] or one of the proxy's own
//! [`ProxyReason`]s), beside the policy's [`Verdict`] and [`Mode`] and the failure's [`Side`].
//! Each serialises as its fixed spelling, the strings the audit format has always had; metric
//! labels are built from the same values.

use serde::{Deserialize, Deserializer, Serializer};

use crate::label::{Label, label_traits, labels};
use crate::policy::Reason;

labels! {
    /// What a flow asked the proxy to do.
    #[derive(Default)]
    pub enum Intent {
        /// An absolute-form HTTP request on a forward listener.
        Forward => "forward",
        /// A CONNECT tunnel.
        Connect => "connect",
        /// A request on a reverse listener.
        Reverse => "reverse",
        /// A connection redirected to a transparent listener (one record per connection).
        Transparent => "transparent",
        /// A forward-listener request that could not be classified (malformed).
        #[default]
        Unknown => "unknown",
    }
}

labels! {
    /// An outcome the proxy itself records, outside the policy's decision.
    pub enum ProxyReason {
        /// A reverse request no route (and no default pool) takes.
        NoRoute => "no-route",
        /// A reverse request whose pool has no member in rotation.
        NoHealthyMember => "no-healthy-member",
        /// A plain-HTTP reverse request redirected to HTTPS.
        RedirectHttps => "redirect-https",
        /// A reverse request whose every tried member failed to resolve or connect.
        UpstreamUnavailable => "upstream-unavailable",
        /// A reverse connection whose PROXY protocol header is malformed.
        BadProxyProtocol => "bad-proxy-protocol",
        /// A request that could not be parsed or classified.
        MalformedRequest => "malformed-request",
        /// A reverse connection whose TLS handshake failed.
        TlsHandshakeFailed => "tls-handshake-failed",
        /// A request on a listener the current configuration no longer has (after a swap).
        ListenerNotConfigured => "listener-not-configured",
        /// A connection on a transparent listener that no redirect rule sent there (no
        /// original destination, or the listener's own address).
        NotRedirected => "not-redirected",
        /// A transparent connection that would loop: its original destination is one of the
        /// proxy's own listeners, or it is the proxy's own upstream connection redirected back.
        RedirectLoop => "redirect-loop",
    }
}

labels! {
    /// What closed a flow the proxy had allowed, when the proxy closed it on purpose.
    pub enum ClosedBy {
        /// A reload: the new policy denies the open tunnel (its `reason` is the new decision's).
        Reload => "reload",
    }
}

/// The `reason` of an audit record: every outcome the proxy records, one closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    /// Nothing decided yet: the flow ended before a decision (the client went away during
    /// resolution, or a shutdown cut it). Spelled as the empty string, as the format has it.
    #[default]
    Undecided,
    /// The policy's reason for its decision.
    Policy(Reason),
    /// One of the proxy's own outcomes.
    Proxy(ProxyReason),
}

impl Outcome {
    /// Label for audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Undecided => "",
            Outcome::Policy(r) => r.as_str(),
            Outcome::Proxy(r) => r.as_str(),
        }
    }

    /// Whether this is the reason of a policy allow ([`Reason::allows`]).
    pub fn allows(self) -> bool {
        matches!(self, Outcome::Policy(r) if r.allows())
    }
}

impl Label for Outcome {
    fn all() -> Vec<Self> {
        // Lists each kind of outcome; a new kind does not compile until it is listed here.
        let _every_kind = |o: Outcome| match o {
            Outcome::Undecided | Outcome::Policy(_) | Outcome::Proxy(_) => (),
        };
        std::iter::once(Outcome::Undecided)
            .chain(Reason::ALL.iter().copied().map(Outcome::Policy))
            .chain(ProxyReason::ALL.iter().copied().map(Outcome::Proxy))
            .collect()
    }

    fn as_str(self) -> &'static str {
        Outcome::as_str(self)
    }
}

label_traits!(Outcome);

impl From<Reason> for Outcome {
    fn from(r: Reason) -> Outcome {
        Outcome::Policy(r)
    }
}

impl From<ProxyReason> for Outcome {
    fn from(r: ProxyReason) -> Outcome {
        Outcome::Proxy(r)
    }
}

/// Serde for a label field: written as its spelling, read back from it (an unknown spelling
/// is an error). Use with `#[serde(with = "as_label")]`.
pub(crate) mod as_label {
    use super::*;

    /// Write `v` as its spelling.
    pub fn serialize<T: Label, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    /// Read a label from its spelling.
    pub fn deserialize<'de, T: Label, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        T::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown label {s:?}")))
    }
}

/// [`as_label`] for an optional label: `null` when absent.
pub(crate) mod as_optional_label {
    use super::*;

    /// Write `v` as its spelling, or `null`.
    pub fn serialize<T: Label, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(v.as_str()),
            None => s.serialize_none(),
        }
    }

    /// Read an optional label.
    pub fn deserialize<'de, T: Label, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => T::parse(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown label {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Side;
    use crate::label::assert_closed;
    use crate::policy::{Mode, Verdict};

    #[test]
    fn every_verdict_is_spelled_once_and_parses_back() {
        assert_closed::<Verdict>();
        assert_eq!(Verdict::Allow, "allow");
        assert_eq!(Verdict::default(), Verdict::Deny);
    }

    #[test]
    fn every_mode_is_spelled_once_and_parses_back() {
        assert_closed::<Mode>();
        assert_eq!(Mode::Report, "report");
    }

    #[test]
    fn every_intent_is_spelled_once_and_parses_back() {
        assert_closed::<Intent>();
        assert_eq!(Intent::default(), "unknown");
    }

    #[test]
    fn every_side_is_spelled_once_and_parses_back() {
        assert_closed::<Side>();
        assert_eq!(Some(Side::Upstream).as_deref(), Some("upstream"));
    }

    #[test]
    fn every_policy_and_proxy_reason_is_spelled_once_and_parses_back() {
        assert_closed::<Reason>();
        assert_closed::<ProxyReason>();
    }

    #[test]
    fn outcomes_are_one_closed_set_spelled_as_the_reasons_they_wrap() {
        // Also: no proxy outcome is spelled like a policy reason (the set would not be closed).
        assert_closed::<Outcome>();
        assert_eq!(
            Outcome::all().len(),
            1 + Reason::ALL.len() + ProxyReason::ALL.len()
        );
        for r in Reason::ALL {
            assert_eq!(Outcome::from(*r).as_str(), r.as_str());
        }
        for r in ProxyReason::ALL {
            assert_eq!(Outcome::from(*r).as_str(), r.as_str());
        }
        assert_eq!(Outcome::default(), "");
        assert_eq!(Outcome::Policy(Reason::Metadata), "metadata");
        assert_eq!(Outcome::Proxy(ProxyReason::NoRoute).to_string(), "no-route");
    }

    #[test]
    fn only_the_reasons_of_an_allow_allow() {
        let allowing: Vec<&str> = Outcome::all()
            .into_iter()
            .filter(|o| o.allows())
            .map(Outcome::as_str)
            .collect();
        assert_eq!(
            allowing,
            [
                "home",
                "adequate",
                "attested",
                "internal-allowed",
                "unknown-allowed",
                "rule-allow"
            ]
        );
    }
}
