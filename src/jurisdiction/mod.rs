//! Stage 4 of the pipeline: where is this address, legally?
//!
//! [`JurisdictionTable::lookup`] maps any [`IpAddr`] to a [`Lookup`]: the [`Jurisdiction`] (an
//! ISO 3166-1 country, or one of the non-country jurisdictions `internal`, `metadata`,
//! `reserved`, `unknown`), the [`Source`] that said so and the matched prefix.
//!
//! Sources, highest precedence first (within one source the most specific prefix wins):
//! 1. special-purpose ranges from the IANA registries ([`special`]), built in;
//! 2. operator overrides ([`sources`]);
//! 3. cloud-provider ranges ([`cloud`]: the embedded snapshot of AWS, Azure, GCP, Oracle,
//!    DigitalOcean and Cloudflare, refreshed feeds, AWS `ip-ranges.json` files), placed by the
//!    provider's own region: GeoIP misplaces many of them, and anycast / edge ranges are
//!    `global`, which GeoIP never overrides;
//! 4. the GeoIP database ([`geoip`]), DB-IP's country database embedded by default;
//! 5. otherwise `unknown`, which policy fails closed on.
//!
//! Addresses that embed an IPv4 address (IPv4-mapped, NAT64, IPv4-compatible, 6to4, Teredo) are
//! classified by the IPv4 address inside them, see [`Embedding`].

pub mod cloud;
mod embedding;
pub mod fetch;
pub mod geoip;
pub(crate) mod iso3166;
pub mod load;
mod lookup;
pub(crate) mod origin;
pub mod sources;
pub(crate) mod special;
pub(crate) mod trie;
pub mod update;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

pub use embedding::Embedding;
use embedding::{NAT64, TEREDO, teredo_server};
pub use lookup::{Hit, Lookup};
use lookup::{pack, pack_payload};
pub use origin::CloudOrigin;
use trie::{RawPrefix, Table4, Table6};

/// Names of the jurisdictions that are not countries, in id order after `unknown`.
const NON_COUNTRY: [&str; 5] = ["unknown", "internal", "metadata", "reserved", "global"];

/// A jurisdiction: a small integer id, stable for a given build of the country list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jurisdiction(u16);

impl Jurisdiction {
    /// No source knows this address. Policy fails closed on it.
    pub const UNKNOWN: Jurisdiction = Jurisdiction(0);
    /// Private, loopback, link-local, CGNAT and other non-public space.
    pub const INTERNAL: Jurisdiction = Jurisdiction(1);
    /// Cloud instance-metadata endpoints (169.254.169.254, fd00:ec2::254).
    pub const METADATA: Jurisdiction = Jurisdiction(2);
    /// Documentation, benchmarking, multicast, reserved, broadcast and unspecified space.
    pub const RESERVED: Jurisdiction = Jurisdiction(3);
    /// Anycast and edge ranges that their provider declares regionless (AWS `GLOBAL`, GCP
    /// `global`, Azure tags without a region, Cloudflare): the serving location cannot be known
    /// from the address. GeoIP never overrides it.
    pub const GLOBAL: Jurisdiction = Jurisdiction(4);

    /// `metadata`, `reserved` or `internal`: the safety jurisdictions, decided before any rule
    /// and opened only by configuration that names the address space.
    #[inline]
    pub fn is_safety(self) -> bool {
        matches!(
            self,
            Jurisdiction::METADATA | Jurisdiction::RESERVED | Jurisdiction::INTERNAL
        )
    }

    /// Precedence among the safety jurisdictions when two answers combine (6to4, Teredo):
    /// `metadata` over `reserved` over `internal`; 0 for any other jurisdiction.
    #[inline]
    pub fn safety_rank(self) -> u8 {
        match self {
            Jurisdiction::METADATA => 3,
            Jurisdiction::RESERVED => 2,
            Jurisdiction::INTERNAL => 1,
            _ => 0,
        }
    }

    /// Number of jurisdiction ids: the bound of arrays indexed by [`Jurisdiction::index`].
    pub const COUNT: usize = NON_COUNTRY.len() + iso3166::ALPHA2.len();

    /// The jurisdiction named by `code`: an ISO 3166-1 alpha-2 code (any case) or one of
    /// `unknown`, `internal`, `metadata`, `reserved`, `global`. `None` for anything else.
    pub fn from_code(code: &str) -> Option<Jurisdiction> {
        if let Some(i) = NON_COUNTRY
            .iter()
            .position(|n| n.eq_ignore_ascii_case(code))
        {
            return Some(Jurisdiction(i as u16));
        }
        if code.len() != 2 {
            return None;
        }
        let upper = code.to_ascii_uppercase();
        iso3166::ALPHA2
            .binary_search(&upper.as_str())
            .ok()
            .map(|i| Jurisdiction((NON_COUNTRY.len() + i) as u16))
    }

    /// The code: `GB`, `internal`, …
    pub fn code(self) -> &'static str {
        let i = usize::from(self.0);
        match NON_COUNTRY.get(i) {
            Some(name) => name,
            None => iso3166::ALPHA2
                .get(i - NON_COUNTRY.len())
                .copied()
                .unwrap_or("unknown"),
        }
    }

    /// Is this an ISO country (not `internal`, `metadata`, `reserved`, `global` or `unknown`)?
    pub fn is_country(self) -> bool {
        usize::from(self.0) >= NON_COUNTRY.len()
    }

    /// Array index for per-jurisdiction tables (always `< COUNT`).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    fn from_raw(raw: u16) -> Jurisdiction {
        if usize::from(raw) < Self::COUNT {
            Jurisdiction(raw)
        } else {
            Jurisdiction::UNKNOWN
        }
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Which source a lookup answer came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// IANA special-purpose registries (built in).
    Special,
    /// Operator CIDR overrides.
    Override,
    /// Cloud-provider published ranges.
    Cloud,
    /// The GeoIP database.
    GeoIp,
    /// Nothing matched.
    None,
}

impl Source {
    const ALL: [Source; 5] = [
        Source::Special,
        Source::Override,
        Source::Cloud,
        Source::GeoIp,
        Source::None,
    ];

    /// Label for logs, audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Special => "special",
            Source::Override => "override",
            Source::Cloud => "cloud",
            Source::GeoIp => "geoip",
            Source::None => "none",
        }
    }

    /// Precedence rank: higher wins.
    fn rank(self) -> u64 {
        4 - self as u64
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors building a table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// An IPv4-mapped IPv6 prefix would never match (mapped addresses are classified as IPv4),
    /// and widening `::ffff:0:0/96` to `0.0.0.0/0` would silently cover all of IPv4.
    #[error("{0} is an IPv4-mapped IPv6 prefix; write the IPv4 prefix instead")]
    MappedPrefix(Ipv6Net),
}

/// What the table was built from, for `--version`, metrics and the audit record.
#[derive(Debug, Clone, Default)]
pub struct TableInfo {
    /// The GeoIP database, if one was loaded.
    pub geoip: Option<geoip::GeoIpInfo>,
    /// The cloud sources, one per provider and file, in load order.
    pub cloud: Vec<cloud::CloudInfo>,
    /// Number of prefixes per source, in [`Source`] order (special, override, cloud, geoip).
    pub prefixes: [usize; 4],
}

/// Collects prefixes from every source, then compiles them into a [`JurisdictionTable`].
#[derive(Debug, Default)]
pub struct TableBuilder {
    v4: Vec<RawPrefix>,
    v6: Vec<RawPrefix>,
    labels: HashMap<(IpNet, Source), String>,
    info: TableInfo,
}

impl TableBuilder {
    /// An empty builder; call [`TableBuilder::with_special_ranges`] to add the built-in ranges.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder holding the built-in special-purpose ranges.
    pub fn with_special_ranges() -> Self {
        Self::with_special_ranges_where(|_| true)
    }

    /// A builder holding the built-in special-purpose ranges that `keep` accepts. Test worlds
    /// use it to give loopback addresses countries; production uses [`Self::with_special_ranges`].
    pub fn with_special_ranges_where(keep: impl Fn(&special::SpecialRange) -> bool) -> Self {
        let mut b = Self::new();
        for r in special::RANGES.iter().filter(|r| keep(r)) {
            // The built-in list is tested to parse and to hold no mapped prefix.
            if let Ok(net) = r.cidr.parse::<IpNet>() {
                let _ = b.add(net, r.jurisdiction, Source::Special, Some(r.label));
            }
        }
        b
    }

    /// Add one prefix. Within a source, a later identical prefix replaces an earlier one. A
    /// [`Source::Cloud`] prefix added here gets an origin of provider `unnamed` with `label`
    /// as its region; cloud data uses [`TableBuilder::add_cloud`].
    pub fn add(
        &mut self,
        net: IpNet,
        jurisdiction: Jurisdiction,
        source: Source,
        label: Option<&str>,
    ) -> Result<(), TableError> {
        if source == Source::Cloud {
            let origin = CloudOrigin::intern("unnamed", label, jurisdiction);
            return self.add_cloud(net, origin);
        }
        self.add_payload(net, jurisdiction.0, source, label)
    }

    /// Add one cloud prefix: its jurisdiction is its origin's.
    pub fn add_cloud(&mut self, net: IpNet, origin: CloudOrigin) -> Result<(), TableError> {
        self.add_payload(net, origin.raw(), Source::Cloud, None)
    }

    fn add_payload(
        &mut self,
        net: IpNet,
        payload: u16,
        source: Source,
        label: Option<&str>,
    ) -> Result<(), TableError> {
        let net = net.trunc();
        let seq = (self.v4.len() + self.v6.len()) as u64;
        let rank = |len: u8| source.rank() << 48 | u64::from(len) << 40 | seq;
        match net {
            IpNet::V4(n) => self.v4.push(RawPrefix {
                addr: u128::from(u32::from(n.network())),
                len: n.prefix_len(),
                rank: rank(n.prefix_len()),
                value: pack_payload(payload, source, n.prefix_len()),
            }),
            IpNet::V6(n) => {
                if n.prefix_len() >= 96 && n.network().to_ipv4_mapped().is_some() {
                    return Err(TableError::MappedPrefix(n));
                }
                self.v6.push(RawPrefix {
                    addr: u128::from(n.network()),
                    len: n.prefix_len(),
                    rank: rank(n.prefix_len()),
                    value: pack_payload(payload, source, n.prefix_len()),
                })
            }
        }
        if let Some(slot) = self.info.prefixes.get_mut(source as usize) {
            *slot += 1;
        }
        if let Some(label) = label {
            self.labels.insert((net, source), label.to_string());
        }
        Ok(())
    }

    /// Record the cloud sources the table was built from.
    pub fn add_cloud_info(&mut self, info: cloud::CloudInfo) {
        self.info.cloud.push(info);
    }

    /// Record the GeoIP database the table was built from.
    pub fn set_geoip_info(&mut self, info: geoip::GeoIpInfo) {
        self.info.geoip = Some(info);
    }

    /// Compile everything into the immutable lookup table.
    pub fn build(self) -> JurisdictionTable {
        let default = pack(Jurisdiction::UNKNOWN, Source::None, 0);
        JurisdictionTable {
            v4: Table4::build(&self.v4, default),
            v6: Table6::build(&self.v6, default),
            labels: self.labels,
            info: self.info,
        }
    }
}

/// The compiled, immutable jurisdiction table. Lookups allocate nothing, take no lock and
/// cannot panic.
#[derive(Debug, Clone)]
pub struct JurisdictionTable {
    v4: Table4,
    v6: Table6,
    labels: HashMap<(IpNet, Source), String>,
    info: TableInfo,
}

/// The address as a `u128`, assembled from the pieces the compiler holds an `IpAddr` in.
///
/// An `IpAddr` whose family is known only at run time (one read from a slice, as the proxy
/// reads its resolved addresses) is kept by rustc as a tag and three pieces after it: four
/// bytes (where an IPv4 address sits), eight and four. `u128::from(Ipv6Addr)` reads two
/// eight-byte halves, so rustc stored the pieces to the stack and read the halves back (seen in
/// the release binary's resolve-and-classify loop): each load straddles two stores, which the
/// store buffer cannot forward, so the load waits for those stores to commit, or is replayed,
/// and the cache misses of successive lookups stop overlapping. In a loop of that shape IPv6
/// lookups took 62 to 93 ns instead of 24 (and 56.7 ns in one of seven runs of
/// `random_ipv6/table_ipaddr` in `benches/lookup.rs`; the stall depends on the CPU's memory
/// dependence prediction). Built from the same pieces, every load matches a store or the
/// halves stay in registers.
#[inline(always)]
fn v6_bits(a: Ipv6Addr) -> u128 {
    let o = a.octets();
    let p0 = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
    let p1 = u64::from_be_bytes([o[4], o[5], o[6], o[7], o[8], o[9], o[10], o[11]]);
    let p2 = u32::from_be_bytes([o[12], o[13], o[14], o[15]]);
    let hi = u64::from(p0) << 32 | p1 >> 32;
    let lo = p1 << 32 | u64::from(p2);
    u128::from(hi) << 64 | u128::from(lo)
}

impl JurisdictionTable {
    /// Where is `ip`?
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Lookup {
        match ip {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    #[inline(always)]
    fn lookup_v4(&self, a: Ipv4Addr) -> Lookup {
        Lookup {
            ip: IpAddr::V4(a),
            value: self.v4.get(u32::from(a)),
            relay: 0,
            embedded: None,
        }
    }

    #[inline(always)]
    fn lookup_v6(&self, a: Ipv6Addr) -> Lookup {
        let x = v6_bits(a);
        // Every embedding lives under one of four top-16-bit values (`::/16`, `64::/16`,
        // Teredo's `2001::/32`, `2002::/16`): test those first, so an ordinary address pays a
        // few compares and takes no call.
        let top = (x >> 112) as u16;
        if (top == 0) | (top == 0x0064) | (x >> 96 == TEREDO >> 96) | (top == 0x2002)
            && let Some(l) = self.lookup_embedded(a)
        {
            return l;
        }
        Lookup {
            ip: IpAddr::V6(a),
            value: self.v6.get(x),
            relay: 0,
            embedded: None,
        }
    }

    /// The answer for an address that embeds an IPv4 address, or `None` for one that does not.
    #[cold]
    #[inline(never)]
    fn lookup_embedded(&self, a: Ipv6Addr) -> Option<Lookup> {
        let x = u128::from(a);
        let e = if x >> 32 == 0xffff {
            Embedding::Mapped
        } else if x >> 32 == NAT64 >> 32 {
            Embedding::Nat64
        } else if x >> 32 == 0 && x > 1 {
            // ::/96 except :: and ::1, which are the unspecified and loopback addresses.
            Embedding::Compatible
        } else if x >> 112 == 0x2002 {
            Embedding::SixToFour
        } else if x >> 96 == TEREDO >> 96 {
            Embedding::Teredo
        } else {
            return None;
        };
        let relay = match e {
            Embedding::SixToFour => self.v6.get(x),
            Embedding::Teredo => self.v4.get(u32::from(teredo_server(x))),
            _ => 0,
        };
        Some(Lookup {
            ip: IpAddr::V6(a),
            value: self.v4.get(u32::from(e.ipv4_in(x))),
            relay,
            embedded: Some(e),
        })
    }

    /// The label of a matched prefix from a labelled source (special range name, override
    /// label, cloud region). Cold path: for the CLI and the audit record.
    pub fn label(&self, hit: &Hit) -> Option<&str> {
        self.labels
            .get(&(hit.prefix, hit.source))
            .map(String::as_str)
    }

    /// What the table was built from.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// Heap bytes of the compiled IPv4 and IPv6 tables.
    pub fn heap_bytes(&self) -> (usize, usize) {
        (self.v4.heap_bytes(), self.v6.heap_bytes())
    }

    /// Stored ranges in the compiled IPv4 and IPv6 tables.
    pub fn ranges(&self) -> (usize, usize) {
        (self.v4.ranges(), self.v6.ranges())
    }
}

/// Let the kernel drop the resident pages of the data compiled into the binary (the GeoIP
/// database, 8 MB, and the cloud-range snapshot): they are read only while a table is built,
/// and are part of the binary's file mapping, so the kernel reads them back from the file if a
/// later build (a reload) touches them again. Called once a table is built.
pub fn release_embedded_data() {
    release_pages(geoip::EMBEDDED);
    release_pages(cloud::SNAPSHOT.as_bytes());
}

/// `madvise(MADV_DONTNEED)` on the whole pages inside `data`, a read-only part of the binary.
fn release_pages(data: &'static [u8]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = match usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) {
            Ok(p) if p.is_power_of_two() => p,
            _ => return,
        };
        let start = (data.as_ptr() as usize).next_multiple_of(page);
        let end = (data.as_ptr() as usize + data.len()) & !(page - 1);
        if end <= start {
            return;
        }
        // SAFETY: the range lies inside `data`, read-only static data of a private file
        // mapping that is never written: dropping its pages changes no byte of it (the next
        // read faults the same bytes back in from the file), so every `&'static` reference to
        // it stays valid. madvise reports failure by its return value, which is ignored: the
        // pages then simply stay resident.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = data;
}

#[cfg(test)]
mod tests;
