//! Addresses that embed an IPv4 address, and where the IPv4 address sits in each.

use std::net::Ipv4Addr;

pub(super) const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;
pub(super) const TEREDO: u128 = 0x2001_0000 << 96;

/// How an IPv6 address embeds the IPv4 address it was classified by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:0:0/96` (RFC 4291 §2.5.5.2).
    Mapped,
    /// `64:ff9b::/96` well-known NAT64 prefix (RFC 6052).
    Nat64,
    /// `::/96` IPv4-compatible (deprecated, RFC 4291 §2.5.5.1).
    Compatible,
    /// `2002::/16` 6to4 (RFC 3056): the embedded router address, and the table's own answer for
    /// the IPv6 address when it has one (the stricter of the two applies).
    SixToFour,
    /// `2001::/32` Teredo (RFC 4380): the client address, and the Teredo server (the relay);
    /// the stricter of the two applies.
    Teredo,
}

impl Embedding {
    /// The IPv4 address an address with this embedding classifies by.
    #[inline]
    pub(super) fn ipv4_in(self, x: u128) -> Ipv4Addr {
        match self {
            Embedding::Mapped | Embedding::Nat64 | Embedding::Compatible => {
                Ipv4Addr::from(x as u32)
            }
            // RFC 3056 §2: the 6to4 router address follows the 2002::/16 prefix.
            Embedding::SixToFour => Ipv4Addr::from((x >> 80) as u32),
            // RFC 4380 §4: the client address is obfuscated (inverted) in bits 0-31.
            Embedding::Teredo => Ipv4Addr::from(!(x as u32)),
        }
    }

    /// Label for logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Embedding::Mapped => "ipv4-mapped",
            Embedding::Nat64 => "nat64",
            Embedding::Compatible => "ipv4-compatible",
            Embedding::SixToFour => "6to4",
            Embedding::Teredo => "teredo",
        }
    }
}

/// RFC 4380 §4: the Teredo server's IPv4 address sits in bits 32-63.
pub(super) fn teredo_server(x: u128) -> Ipv4Addr {
    Ipv4Addr::from((x >> 64) as u32)
}
