//! The answer for one address ([`Lookup`], [`Hit`]) and the packed table values it is decoded
//! from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::embedding::{Embedding, teredo_server};
use super::origin::CloudOrigin;
use super::{Jurisdiction, Source};

/// One table answer: jurisdiction, source and the prefix that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The address this answer is for: the looked-up address, the IPv4 address embedded in
    /// it, or (for a relay answer) the 6to4 address itself or the Teredo server.
    pub addr: IpAddr,
    /// Jurisdiction of the matched prefix.
    pub jurisdiction: Jurisdiction,
    /// Source of the matched prefix.
    pub source: Source,
    /// The matched prefix (for embedded addresses, the IPv4 prefix).
    pub prefix: IpNet,
    /// For a cloud range: its provider and region.
    pub cloud: Option<CloudOrigin>,
}

impl Hit {
    /// The source as logs, `lookup`, `explain` and the audit record name it: `special`,
    /// `override`, `geoip`, `none`, or for a cloud range its provider and region
    /// (`cloud:aws:eu-west-2`, `cloud:cloudflare`).
    pub fn source_name(&self) -> &'static str {
        match self.cloud {
            Some(o) => o.source_name(),
            None => self.source.as_str(),
        }
    }
}

/// The answer for one address.
///
/// Compact by design (28 bytes): the looked-up address and the table's packed answers, which
/// the accessors decode (a shift or a mask each). Building the answer is on every connection's
/// path; decoding it is done once, by policy, on the fields it reads.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    /// The looked-up address.
    pub(super) ip: IpAddr,
    /// Packed table value (see [`pack`]) of the classified address: `ip`, or the IPv4 address
    /// embedded in it.
    pub(super) value: u32,
    /// Packed table value of the relay (6to4: `ip` itself; Teredo: the server). Meaningful
    /// only for those two embeddings.
    pub(super) relay: u32,
    pub(super) embedded: Option<Embedding>,
}

impl Lookup {
    /// Jurisdiction of the address (for embedded addresses, of the embedded IPv4 address).
    #[inline]
    pub fn jurisdiction(&self) -> Jurisdiction {
        unpack_jurisdiction(self.value)
    }

    /// Source of the answer.
    #[inline]
    pub fn source(&self) -> Source {
        unpack_source(self.value)
    }

    /// The source with its provider and region for a cloud range (see [`Hit::source_name`]).
    pub fn source_name(&self) -> &'static str {
        self.hit().source_name()
    }

    /// The matched prefix (for embedded addresses, the IPv4 prefix).
    #[inline]
    pub fn prefix(&self) -> IpNet {
        prefix_of(self.classified(), self.value)
    }

    /// Set when the address was classified by an IPv4 address embedded in it.
    #[inline]
    pub fn embedded(&self) -> Option<Embedding> {
        self.embedded
    }

    /// The address the primary answer is for: the looked-up address, or the IPv4 address
    /// embedded in it.
    #[inline]
    pub fn classified(&self) -> IpAddr {
        match (self.embedded, self.ip) {
            (Some(e), IpAddr::V6(a)) => IpAddr::V4(e.ipv4_in(u128::from(a))),
            (_, ip) => ip,
        }
    }

    /// For 6to4 and Teredo: the second answer (the relay) that policy must also satisfy. For
    /// 6to4 it is the table's own answer for the IPv6 address, when the table has one.
    pub fn relay(&self) -> Option<Hit> {
        match (self.embedded, self.ip) {
            (Some(Embedding::SixToFour), ip) => {
                let own = Hit::decode(ip, self.relay);
                (own.source != Source::None).then_some(own)
            }
            (Some(Embedding::Teredo), IpAddr::V6(a)) => Some(Hit::decode(
                IpAddr::V4(teredo_server(u128::from(a))),
                self.relay,
            )),
            _ => None,
        }
    }

    /// The primary answer as a [`Hit`].
    pub fn hit(&self) -> Hit {
        Hit::decode(self.classified(), self.value)
    }
}

impl PartialEq for Lookup {
    /// Two lookups are equal when they give the same answer (the addresses may differ inside
    /// the matched prefix).
    fn eq(&self, other: &Self) -> bool {
        fn answer(h: Hit) -> (Jurisdiction, Source, IpNet) {
            (h.jurisdiction, h.source, h.prefix)
        }
        answer(self.hit()) == answer(other.hit())
            && self.embedded == other.embedded
            && self.relay().map(answer) == other.relay().map(answer)
    }
}

impl Eq for Lookup {}

impl Hit {
    /// The answer a packed table value gives for `addr`.
    fn decode(addr: IpAddr, value: u32) -> Hit {
        Hit {
            addr,
            jurisdiction: unpack_jurisdiction(value),
            source: unpack_source(value),
            prefix: prefix_of(addr, value),
            cloud: unpack_origin(value),
        }
    }
}

// Packed table values: prefix length (bits 0-7), source (8-10) and a 15-bit payload (11-25):
// the jurisdiction id, or for a cloud range its origin id ([`CloudOrigin`]), which names the
// jurisdiction its region table gave it. Packed values are below 2^26, so the compiled tables
// hold them directly in their leaf entries (`trie::MAX_VALUE`).
const PAYLOAD_SHIFT: u32 = 11;
const PAYLOAD_MASK: u32 = 0x7fff;

pub(super) fn pack(j: Jurisdiction, source: Source, len: u8) -> u32 {
    pack_payload(j.0, source, len)
}

pub(super) fn pack_payload(payload: u16, source: Source, len: u8) -> u32 {
    u32::from(len) | (source as u32) << 8 | (u32::from(payload) & PAYLOAD_MASK) << PAYLOAD_SHIFT
}

#[inline]
fn unpack_jurisdiction(v: u32) -> Jurisdiction {
    let payload = ((v >> PAYLOAD_SHIFT) & PAYLOAD_MASK) as u16;
    if (v >> 8) & 7 == Source::Cloud as u32 {
        CloudOrigin::from_raw(payload).jurisdiction()
    } else {
        Jurisdiction::from_raw(payload)
    }
}

#[inline]
fn unpack_origin(v: u32) -> Option<CloudOrigin> {
    ((v >> 8) & 7 == Source::Cloud as u32)
        .then(|| CloudOrigin::from_raw(((v >> PAYLOAD_SHIFT) & PAYLOAD_MASK) as u16))
}

#[inline]
fn unpack_source(v: u32) -> Source {
    Source::ALL
        .get(((v >> 8) & 7) as usize)
        .copied()
        .unwrap_or(Source::None)
}

/// `addr` masked to the prefix length a packed value holds.
#[inline]
fn prefix_of(addr: IpAddr, v: u32) -> IpNet {
    let len = v as u8;
    match addr {
        IpAddr::V4(a) => {
            let len = len.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(u32::from(a) & mask), len).unwrap_or_default())
        }
        IpAddr::V6(a) => {
            let len = len.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(u128::from(a) & mask), len).unwrap_or_default())
        }
    }
}
