//! Special-purpose address ranges: built in, not countries, highest precedence.
//!
//! From the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and the RFCs each
//! entry cites) plus the cloud instance-metadata endpoints. An address in one of these ranges is
//! never geolocated: policy's safety layer decides on `internal`, `metadata` and `reserved`
//! before any rule, and denies them unless configuration names the address space by CIDR (or,
//! for `metadata` and `reserved`, by jurisdiction).
//!
//! Globally reachable anycast entries of the registries (AS112, AMT, PCP/TURN anycast) are left
//! to the other sources. Ranges that embed an IPv4 address (`::ffff:0:0/96`, `64:ff9b::/96`,
//! `2002::/16`, `2001::/32`) are not listed: the table classifies them by the embedded address.

use super::Jurisdiction;

/// One built-in range.
#[derive(Debug, Clone, Copy)]
pub struct SpecialRange {
    /// The prefix.
    pub cidr: &'static str,
    /// `internal`, `metadata` or `reserved`.
    pub jurisdiction: Jurisdiction,
    /// What it is, with its reference.
    pub label: &'static str,
}

const fn r(cidr: &'static str, jurisdiction: Jurisdiction, label: &'static str) -> SpecialRange {
    SpecialRange {
        cidr,
        jurisdiction,
        label,
    }
}

const INTERNAL: Jurisdiction = Jurisdiction::INTERNAL;
const METADATA: Jurisdiction = Jurisdiction::METADATA;
const RESERVED: Jurisdiction = Jurisdiction::RESERVED;

/// Every built-in range.
pub const RANGES: &[SpecialRange] = &[
    // IPv4 (IANA IPv4 Special-Purpose Address Registry)
    r("0.0.0.0/8", RESERVED, "this network (RFC 791)"),
    r("0.0.0.0/32", RESERVED, "unspecified (RFC 1122)"),
    r("10.0.0.0/8", INTERNAL, "private-use (RFC 1918)"),
    r(
        "100.64.0.0/10",
        INTERNAL,
        "shared address space, CGNAT (RFC 6598)",
    ),
    r("127.0.0.0/8", INTERNAL, "loopback (RFC 1122)"),
    r("169.254.0.0/16", INTERNAL, "link-local (RFC 3927)"),
    r("172.16.0.0/12", INTERNAL, "private-use (RFC 1918)"),
    r(
        "192.0.0.0/24",
        RESERVED,
        "IETF protocol assignments (RFC 6890)",
    ),
    r(
        "192.0.2.0/24",
        RESERVED,
        "documentation TEST-NET-1 (RFC 5737)",
    ),
    r(
        "192.88.99.0/24",
        RESERVED,
        "deprecated 6to4 relay anycast (RFC 7526)",
    ),
    r("192.168.0.0/16", INTERNAL, "private-use (RFC 1918)"),
    r("198.18.0.0/15", RESERVED, "benchmarking (RFC 2544)"),
    r(
        "198.51.100.0/24",
        RESERVED,
        "documentation TEST-NET-2 (RFC 5737)",
    ),
    r(
        "203.0.113.0/24",
        RESERVED,
        "documentation TEST-NET-3 (RFC 5737)",
    ),
    r("224.0.0.0/4", RESERVED, "multicast (RFC 5771)"),
    r("240.0.0.0/4", RESERVED, "reserved (RFC 1112)"),
    r(
        "255.255.255.255/32",
        RESERVED,
        "limited broadcast (RFC 919)",
    ),
    // Cloud instance-metadata and credential endpoints: credentials live here (SSRF target).
    // Each with the provider documentation that names the address.
    r(
        "169.254.169.254/32",
        METADATA,
        "instance metadata (AWS IMDS, Azure IMDS, GCP, OCI, OpenStack, DigitalOcean)",
    ),
    r(
        "169.254.170.2/32",
        METADATA,
        "task metadata and credentials endpoint (AWS ECS, 'Task metadata endpoint')",
    ),
    r(
        "169.254.170.23/32",
        METADATA,
        "credentials endpoint (AWS EKS Pod Identity Agent)",
    ),
    r(
        "100.100.100.200/32",
        METADATA,
        "instance metadata (Alibaba Cloud ECS, 'Instance metadata')",
    ),
    // A public address that GeoIP places in the US: classified here, ahead of every source.
    r(
        "168.63.129.16/32",
        METADATA,
        "WireServer, host agent and DNS (Azure, 'What is IP address 168.63.129.16?')",
    ),
    r(
        "fd00:ec2::254/128",
        METADATA,
        "instance metadata over IPv6 (AWS IMDS, Nitro instances)",
    ),
    r(
        "fd00:ec2::23/128",
        METADATA,
        "credentials endpoint over IPv6 (AWS EKS Pod Identity Agent)",
    ),
    r(
        "fd20:ce::254/128",
        METADATA,
        "metadata server over IPv6 (GCP Compute Engine, IPv6-only instances)",
    ),
    r(
        "fe80::a9fe:a9fe/128",
        METADATA,
        "metadata service over IPv6 (OpenStack Neutron, IPv6 metadata spec)",
    ),
    // IPv6 (IANA IPv6 Special-Purpose Address Registry)
    r("::/128", RESERVED, "unspecified (RFC 4291)"),
    r("::1/128", INTERNAL, "loopback (RFC 4291)"),
    r(
        "64:ff9b:1::/48",
        INTERNAL,
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    r("100::/64", RESERVED, "discard-only (RFC 6666)"),
    r("100:0:0:1::/64", RESERVED, "dummy prefix (RFC 9780)"),
    r("2001:2::/48", RESERVED, "benchmarking (RFC 5180)"),
    r("2001:10::/28", RESERVED, "deprecated ORCHID (RFC 4843)"),
    r("2001:20::/28", RESERVED, "ORCHIDv2 (RFC 7343)"),
    r("2001:db8::/32", RESERVED, "documentation (RFC 3849)"),
    r("3fff::/20", RESERVED, "documentation (RFC 9637)"),
    r("5f00::/16", RESERVED, "segment routing SIDs (RFC 9602)"),
    r("fc00::/7", INTERNAL, "unique-local (RFC 4193)"),
    r("fe80::/10", INTERNAL, "link-local unicast (RFC 4291)"),
    r("ff00::/8", RESERVED, "multicast (RFC 4291)"),
];
