//! How long does one jurisdiction lookup take on the full embedded table, and how does it
//! compare with `maxminddb::Reader::lookup` on the same data, in the same run?
//!
//! Every bench runs on the full production table: the embedded DB-IP country database, the
//! built-in special-purpose ranges and the embedded cloud-provider ranges, built by
//! `jurisdiction::load::load` with default sources. `table_no_cloud` (random IPv4 and IPv6) and
//! `table_decode_no_cloud` run the same loop on the table built without the cloud ranges, in
//! the same run, so the cost of the cloud source is read off one report; both tables' memory
//! is printed at start.
//! The baseline is the raw `maxminddb::Reader` over the same embedded database
//! (`GeoIpDb::embedded()?.reader()`), measured in the same process and run:
//! - `maxminddb`: `Reader::lookup` only (tree walk; the data offset is kept through
//!   `black_box(&offset)` so the walk is not optimised away);
//! - `maxminddb_decode` (random IPv4 only): `Reader::lookup` plus decoding `country_code`,
//!   which is what a caller needs to get a jurisdiction out of it.
//!
//! Inputs and outputs: each address is read from a fixture `Vec` generated at start (runtime
//! data the optimiser cannot see through), and every answer goes to `black_box(&answer)`. The
//! loop is criterion's `iter_custom` with the index in a register (see [`cycle`]), and the
//! address itself is not passed through `black_box`: both would put a store-to-load
//! forwarding delay (a spill of the index or of the 17-byte `IpAddr`, then a reload) in front
//! of every lookup, a harness cost no caller has. Every variant, ours and maxminddb's, is timed
//! by the same loop.
//!
//! Every answer, ours and maxminddb's, is kept with `black_box(&answer)`. Returning a struct by
//! value through `black_box` makes rustc store it field by field and read it back with wider
//! loads: a store-forwarding stall that makes each iteration wait for the previous one. That
//! is a harness effect, shown once as `table_by_value` (random IPv4 only).
//!
//! The table's answer is a `Lookup` (28 bytes: the address and the packed answers, decoded by
//! its accessors). `table_decode` also decodes the jurisdiction, source and matched prefix,
//! which is what policy reads: the counterpart of `maxminddb_decode`.
//!
//! `table_ipaddr` (random IPv4 and IPv6) times the call as the proxy makes it: the address is
//! an `IpAddr` read from a `Vec<IpAddr>`, so its family is known only at run time and the
//! compiler cannot specialise `lookup` for it. The other variants build the `IpAddr` from a
//! typed address in the loop, so `lookup` is compiled for one family (see benches/README.md).
//!
//! Groups (each iteration is one lookup, so criterion's time per iteration is ns/lookup):
//! - `random_ipv4`: uniformly random IPv4 addresses, 2^20 of them, cycled;
//! - `random_ipv6`: random IPv6 addresses inside networks the database has data for;
//! - `hot_set`: 1,000 fixed random IPv4 addresses, cycled (cache-resident working set);
//! - `dependent_chain`: latency, not throughput: each address is derived from the previous
//!   answer, so lookup N+1 cannot start before lookup N ends. `mix_only` runs the same chain
//!   without a lookup: the cost of deriving the next address, included in the other two.
//!
//! Addresses are generated before timing by a fixed-seed splitmix64, so every run sees the same
//! addresses and generation is not timed.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{Bencher, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use maxminddb::{PathElement, Reader, WithinOptions};
use residency_proxy::jurisdiction::geoip::{self, GeoIpDb};
use residency_proxy::jurisdiction::load::{TableSources, load};
use residency_proxy::jurisdiction::{JurisdictionTable, Lookup, Source};

/// Random addresses per fixture for the streaming benches (cycled by index).
const FIXTURE_LEN: usize = 1 << 20;
/// Size of the cache-resident working set.
const HOT_LEN: usize = 1_000;
/// Path of the country code in the embedded database's (flat, ip-location-db) records.
const COUNTRY_CODE: [PathElement<'static>; 1] = [PathElement::Key("country_code")];
const MIB: f64 = 1024.0 * 1024.0;

/// splitmix64 (Steele, Lea, Flood 2014): fixed-seed, good enough for fixtures, no `rand`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    fn next_u128(&mut self) -> u128 {
        u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())
    }
}

/// The splitmix64 finaliser.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The next address of a dependent chain: a Weyl sequence (never cycles within a run) mixed
/// with bits of the previous answer, so the next lookup depends on the previous one.
#[inline(always)]
fn chain_next(weyl: &mut u64, answer_bits: u64) -> Ipv4Addr {
    *weyl = weyl.wrapping_add(0x9E37_79B9_7F4A_7C15);
    Ipv4Addr::from(mix64(*weyl ^ answer_bits) as u32)
}

/// Bits of a table answer that depend on the whole lookup: jurisdiction id and prefix length.
#[inline(always)]
fn answer_bits(l: &Lookup) -> u64 {
    l.jurisdiction().index() as u64 | u64::from(l.prefix().prefix_len()) << 16
}

/// maxminddb's answer as a data offset (0 for no data or an error).
#[inline(always)]
fn mmdb_offset(reader: &Reader<Vec<u8>>, ip: IpAddr) -> usize {
    reader.lookup(ip).map_or(0, |r| r.offset().unwrap_or(0))
}

fn random_v4(rng: &mut SplitMix64, n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|_| Ipv4Addr::from((rng.next_u64() >> 32) as u32))
        .collect()
}

/// IPv6 networks the database has data for (IPv4 networks and `::/96` left out).
fn allocated_v6(reader: &Reader<Vec<u8>>) -> Vec<(u128, u8)> {
    let mut nets = Vec::new();
    let items = reader
        .networks(WithinOptions::default())
        .expect("iterate database networks");
    for item in items {
        let item = item.expect("read database network");
        if !item.has_data() {
            continue;
        }
        let net = item.network().expect("network of a database entry");
        if let IpAddr::V6(a) = net.network() {
            let a = u128::from(a);
            if a >> 32 != 0 {
                nets.push((a, net.prefix()));
            }
        }
    }
    nets
}

/// A random address inside a random (uniformly chosen) network of `nets`.
fn random_v6(rng: &mut SplitMix64, nets: &[(u128, u8)], n: usize) -> Vec<Ipv6Addr> {
    (0..n)
        .map(|_| {
            let (addr, len) = nets[(rng.next_u64() % nets.len() as u64) as usize];
            let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            Ipv6Addr::from(addr | rng.next_u128() & host)
        })
        .collect()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

fn report_table(what: &str, table: &JurisdictionTable, build_ms: f64) {
    let (v4, v6) = table.heap_bytes();
    let (r4, r6) = table.ranges();
    let total = v4 + v6;
    eprintln!("compiled jurisdiction table ({what}):");
    eprintln!("  memory v4:    {v4} bytes ({:.2} MiB)", v4 as f64 / MIB);
    eprintln!("  memory v6:    {v6} bytes ({:.2} MiB)", v6 as f64 / MIB);
    eprintln!(
        "  memory total: {total} bytes ({:.2} MiB)",
        total as f64 / MIB
    );
    eprintln!("  ranges v4: {r4}, v6: {r6}, total: {}", r4 + r6);
    eprintln!("  build time: {build_ms:.1} ms");
    eprintln!("  Lookup: {} bytes", std::mem::size_of::<Lookup>());
    eprintln!(
        "  embedded mmdb: {} bytes ({:.2} MiB)",
        geoip::EMBEDDED.len(),
        geoip::EMBEDDED.len() as f64 / MIB
    );
}

fn benches(c: &mut Criterion) {
    let (table, report) = load(&TableSources::default()).expect("build the embedded table");
    report_table(
        "embedded DB-IP + special ranges + embedded cloud ranges",
        &table,
        report.build_ms,
    );
    let (bare, bare_report) = load(&TableSources {
        cloud_ranges: false,
        ..TableSources::default()
    })
    .expect("build the table without cloud ranges");
    report_table(
        "embedded DB-IP + special ranges, no cloud ranges",
        &bare,
        bare_report.build_ms,
    );
    let mem = |t: &JurisdictionTable| {
        let (a, b) = t.heap_bytes();
        a + b
    };
    eprintln!(
        "memory with cloud ranges / without: {:.3}x ({} cloud prefixes)",
        mem(&table) as f64 / mem(&bare) as f64,
        table.info().prefixes[Source::Cloud as usize]
    );
    let db = GeoIpDb::embedded().expect("open the embedded database");
    let reader = db.reader();

    // The two sides must be looking at the same data.
    let probe: IpAddr = "8.8.8.8".parse().expect("address");
    let code: Option<&str> = reader
        .lookup(probe)
        .expect("lookup")
        .decode_path(&COUNTRY_CODE)
        .expect("decode");
    assert_eq!(code, Some(table.lookup(probe).jurisdiction().code()));

    let mut rng = SplitMix64(0x5EED_0F1A_B1E5);
    let v4 = random_v4(&mut rng, FIXTURE_LEN);
    let hot = random_v4(&mut rng, HOT_LEN);
    let nets = allocated_v6(reader);
    let v6 = random_v6(&mut rng, &nets, FIXTURE_LEN);
    eprintln!(
        "fixtures: {} random IPv4, {} random IPv6 from {} allocated IPv6 networks, {} hot IPv4",
        v4.len(),
        v6.len(),
        nets.len(),
        hot.len()
    );
    let with_data = v4
        .iter()
        .filter(|&&a| mmdb_offset(reader, IpAddr::V4(a)) != 0)
        .count();
    let countries = v4
        .iter()
        .filter(|&&a| table.lookup(IpAddr::V4(a)).jurisdiction().is_country())
        .count();
    eprintln!(
        "random IPv4 fixture: {:.1}% have maxminddb data, {:.1}% map to a country in the table",
        100.0 * with_data as f64 / v4.len() as f64,
        100.0 * countries as f64 / v4.len() as f64
    );

    random_ipv4(c, &table, &bare, reader, &v4);
    random_ipv6(c, &table, &bare, reader, &v6);
    hot_set(c, &table, reader, &hot);
    dependent_chain(c, &table, reader);
}

/// Time `f` over `addrs`, cycled, one call per iteration, keeping each answer with
/// `black_box(&answer)`.
///
/// A custom loop keeps the index in a register. With `Bencher::iter` the closure's captured
/// index lives in memory, and every `black_box` (an opaque barrier that may write memory)
/// forces it to be stored and reloaded: a store-to-load forwarding delay in front of every
/// address load, which a mispredicted branch then waits for. That is a harness cost, worth
/// about 1.5 ns per table lookup here; this loop removes it for every variant alike.
fn cycle<A: Copy, R>(b: &mut Bencher<'_>, addrs: &[A], f: impl Fn(A) -> R) {
    b.iter_custom(|iters| {
        let start = Instant::now();
        let mut i = 0usize;
        for _ in 0..iters {
            let Some(&a) = addrs.get(i) else { break };
            let r = f(a);
            black_box(&r);
            i += 1;
            if i == addrs.len() {
                i = 0;
            }
        }
        start.elapsed()
    })
}

/// As [`cycle`], but over `IpAddr`s the way the proxy reads its resolved addresses: an
/// iterator over a slice, each address copied out (`*ip`) and passed on, so its family is known
/// only at run time. Runs whole passes over `addrs` and a partial last one.
fn cycle_ipaddr<R>(b: &mut Bencher<'_>, addrs: &[IpAddr], f: impl Fn(IpAddr) -> R) {
    b.iter_custom(|iters| {
        let start = Instant::now();
        let mut left = usize::try_from(iters).unwrap_or(usize::MAX);
        while left > 0 {
            let n = left.min(addrs.len());
            for ip in &addrs[..n] {
                let r = f(*ip);
                black_box(&r);
            }
            left -= n;
        }
        start.elapsed()
    })
}

fn random_ipv4(
    c: &mut Criterion,
    table: &JurisdictionTable,
    bare: &JurisdictionTable,
    reader: &Reader<Vec<u8>>,
    v4: &[Ipv4Addr],
) {
    let fixture = "uniform-2^20";
    let mut g = c.benchmark_group("random_ipv4");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("table", fixture), |b| {
        cycle(b, v4, |a| table.lookup(IpAddr::V4(a)))
    });
    g.bench_function(BenchmarkId::new("table_no_cloud", fixture), |b| {
        cycle(b, v4, |a| bare.lookup(IpAddr::V4(a)))
    });
    g.bench_function(BenchmarkId::new("table_by_value", fixture), |b| {
        cycle(b, v4, |a| black_box(table.lookup(IpAddr::V4(a))))
    });
    let generic: Vec<IpAddr> = v4.iter().map(|&a| IpAddr::V4(a)).collect();
    g.bench_function(BenchmarkId::new("table_ipaddr", fixture), |b| {
        cycle_ipaddr(b, &generic, |a| table.lookup(a))
    });
    g.bench_function(BenchmarkId::new("table_decode", fixture), |b| {
        cycle(b, v4, |a| {
            let l = table.lookup(IpAddr::V4(a));
            (l.jurisdiction(), l.source(), l.prefix())
        })
    });
    g.bench_function(BenchmarkId::new("table_decode_no_cloud", fixture), |b| {
        cycle(b, v4, |a| {
            let l = bare.lookup(IpAddr::V4(a));
            (l.jurisdiction(), l.source(), l.prefix())
        })
    });
    g.bench_function(BenchmarkId::new("maxminddb", fixture), |b| {
        cycle(b, v4, |a| mmdb_offset(reader, IpAddr::V4(a)))
    });
    g.bench_function(BenchmarkId::new("maxminddb_decode", fixture), |b| {
        cycle(b, v4, |a| {
            let code: Option<&str> = reader
                .lookup(IpAddr::V4(a))
                .ok()
                .and_then(|r| r.decode_path(&COUNTRY_CODE).ok().flatten());
            code
        })
    });
    g.finish();
}

fn random_ipv6(
    c: &mut Criterion,
    table: &JurisdictionTable,
    bare: &JurisdictionTable,
    reader: &Reader<Vec<u8>>,
    v6: &[Ipv6Addr],
) {
    let fixture = "allocated-2^20";
    let mut g = c.benchmark_group("random_ipv6");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("table", fixture), |b| {
        cycle(b, v6, |a| table.lookup(IpAddr::V6(a)))
    });
    g.bench_function(BenchmarkId::new("table_no_cloud", fixture), |b| {
        cycle(b, v6, |a| bare.lookup(IpAddr::V6(a)))
    });
    let generic: Vec<IpAddr> = v6.iter().map(|&a| IpAddr::V6(a)).collect();
    g.bench_function(BenchmarkId::new("table_ipaddr", fixture), |b| {
        cycle_ipaddr(b, &generic, |a| table.lookup(a))
    });
    g.bench_function(BenchmarkId::new("maxminddb", fixture), |b| {
        cycle(b, v6, |a| mmdb_offset(reader, IpAddr::V6(a)))
    });
    g.finish();
}

fn hot_set(
    c: &mut Criterion,
    table: &JurisdictionTable,
    reader: &Reader<Vec<u8>>,
    hot: &[Ipv4Addr],
) {
    let fixture = "1000-fixed";
    let mut g = c.benchmark_group("hot_set");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("table", fixture), |b| {
        cycle(b, hot, |a| table.lookup(IpAddr::V4(a)))
    });
    g.bench_function(BenchmarkId::new("maxminddb", fixture), |b| {
        cycle(b, hot, |a| mmdb_offset(reader, IpAddr::V4(a)))
    });
    g.finish();
}

/// Time a dependent chain: `step` maps the current address to the bits of its answer that the
/// next address is derived from (see [`chain_next`]). Locals stay in registers, as in [`cycle`].
fn chain(b: &mut Bencher<'_>, step: impl Fn(Ipv4Addr) -> u64) {
    b.iter_custom(|iters| {
        let mut weyl = 0x0DE9_C4A1_u64;
        let mut ip = chain_next(&mut weyl, 0);
        let start = Instant::now();
        for _ in 0..iters {
            ip = chain_next(&mut weyl, step(ip));
        }
        black_box(ip);
        start.elapsed()
    })
}

fn dependent_chain(c: &mut Criterion, table: &JurisdictionTable, reader: &Reader<Vec<u8>>) {
    let fixture = "ipv4";
    let mut g = c.benchmark_group("dependent_chain");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("table", fixture), |b| {
        chain(b, |ip| answer_bits(&table.lookup(IpAddr::V4(ip))))
    });
    g.bench_function(BenchmarkId::new("maxminddb", fixture), |b| {
        chain(b, |ip| mmdb_offset(reader, IpAddr::V4(ip)) as u64)
    });
    g.bench_function(BenchmarkId::new("mix_only", fixture), |b| {
        chain(b, |ip| u64::from(u32::from(ip) >> 24))
    });
    g.finish();
}

criterion_group! {
    name = lookup;
    config = config();
    targets = benches
}
criterion_main!(lookup);
