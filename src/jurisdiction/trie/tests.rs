//! The compiled tables must agree with a naive longest-prefix scan, on hand-picked edges and on
//! random prefix sets: sparse ones (few prefixes anywhere) and dense ones (thousands of prefixes
//! in one root bucket, so that nodes, blocks, resolution splits and, for IPv6, low-half tries
//! of mixed `/64`s are all exercised).

use super::*;
use proptest::prelude::*;

fn p(addr: u128, len: u8, rank: u64, value: u32) -> RawPrefix {
    RawPrefix {
        addr,
        len,
        rank,
        value,
    }
}

fn v4(s: &str) -> u128 {
    u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().expect("fixture")))
}

fn v6(s: &str) -> u128 {
    u128::from(s.parse::<std::net::Ipv6Addr>().expect("fixture"))
}

/// The value of `addr` in merged ranges (as [`merge`] returns them): binary search.
fn in_ranges(ranges: &[(u128, u32)], addr: u128) -> u32 {
    let i = ranges.partition_point(|r| r.0 <= addr);
    ranges[i - 1].1
}

/// Every range start, the address before it, and the family's ends.
fn boundary_probes(ranges: &[(u128, u32)], width: u8) -> Vec<u128> {
    let mut out = vec![0, family_max(width)];
    for r in ranges {
        out.extend([r.0, r.0.wrapping_sub(1) & family_max(width)]);
    }
    out
}

#[test]
fn ipv4_edges_match_expectations() {
    let prefixes = [
        p(0, 0, 1, 10),                  // /0 covers everything not covered by a longer prefix
        p(v4("10.0.0.0"), 8, 2, 20),     // RFC 1918
        p(v4("10.1.0.0"), 16, 3, 30),    // longer prefix inside it wins
        p(v4("10.1.2.3"), 32, 4, 40),    // a /32
        p(v4("192.0.2.0"), 24, 100, 50), // high-rank source
        p(v4("192.0.0.0"), 8, 200, 60),  // even higher rank wins over the longer /24 inside it
    ];
    let t = Table4::build(&prefixes, 0);
    let cases: &[(&str, u32, &str)] = &[
        (
            "0.0.0.0",
            10,
            "first address of the family, only /0 covers it",
        ),
        ("255.255.255.255", 10, "last address of the family"),
        ("9.255.255.255", 10, "just below 10/8"),
        ("10.0.0.0", 20, "first address of 10/8"),
        ("10.255.255.255", 20, "last address of 10/8"),
        ("11.0.0.0", 10, "just above 10/8"),
        ("10.1.0.0", 30, "longest prefix wins"),
        ("10.1.2.2", 30, "just below the /32"),
        ("10.1.2.3", 40, "the /32 itself"),
        ("10.1.2.4", 30, "just above the /32"),
        ("10.2.0.0", 20, "back in the /8 after the /16"),
        (
            "192.0.2.1",
            60,
            "a higher-precedence source beats a more specific prefix",
        ),
        ("192.1.0.0", 60, "rest of the /8"),
    ];
    for (addr, want, why) in cases {
        assert_eq!(t.get(v4(addr) as u32), *want, "{addr}: {why}");
        assert_eq!(
            naive(&prefixes, 32, v4(addr), 0),
            *want,
            "naive {addr}: {why}"
        );
    }
}

#[test]
fn empty_table_answers_default_everywhere() {
    let t4 = Table4::build(&[], 7);
    let t6 = Table6::build(&[], 7);
    for a in [0u32, 1, 0x8000_0000, u32::MAX] {
        assert_eq!(t4.get(a), 7);
    }
    for a in [0u128, 1, 1 << 64, u128::MAX] {
        assert_eq!(t6.get(a), 7);
    }
    assert_eq!((t4.ranges(), t6.ranges()), (1, 1));
    // An empty table is its root (2^18 entries for IPv4, 2^16 for IPv6), the one-key block
    // entry 0 names, the block padding and the one-entry dictionary.
    let rest = 3 * 2 + BLOCK_KEYS * 2 + 4;
    assert_eq!(
        (t4.heap_bytes(), t6.heap_bytes()),
        (ROOT4_LEN * 4 + rest, ROOT6_LEN * 4 + rest)
    );
}

#[test]
fn ipv6_long_prefixes_use_the_low_half_tries() {
    let prefixes = [
        p(v6("2000::"), 3, 1, 1),
        p(v6("fd00::"), 8, 2, 2),
        p(v6("fd00:ec2::254"), 128, 3, 3), // a /128 inside a /64: a mixed /64
        p(v6("2001:db8::"), 32, 4, 4),
        p(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), 127, 5, 5), // the family's last /127
    ];
    let t = Table6::build(&prefixes, 0);
    let cases: &[(&str, u32, &str)] = &[
        ("::", 0, "unspecified: no prefix"),
        ("2000::", 1, "first of 2000::/3"),
        (
            "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            1,
            "last of 2000::/3",
        ),
        ("4000::", 0, "just above 2000::/3"),
        ("2001:db8::1", 4, "longer prefix"),
        ("fd00:ec2::253", 2, "just below the /128"),
        ("fd00:ec2::254", 3, "the /128"),
        ("fd00:ec2::255", 2, "just above the /128"),
        ("fd00:ec2:0:1::", 2, "next /64"),
        ("fd00:ec1:ffff:ffff:ffff:ffff:ffff:ffff", 2, "previous /64"),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd",
            0,
            "below the last /127",
        ),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 5, "last address"),
    ];
    for (addr, want, why) in cases {
        assert_eq!(t.get(v6(addr)), *want, "{addr}: {why}");
        assert_eq!(
            naive(&prefixes, 128, v6(addr), 0),
            *want,
            "naive {addr}: {why}"
        );
    }
}

#[test]
fn merge_coalesces_adjacent_equal_ranges() {
    // Two adjacent /25s with the same value become one range.
    let prefixes = [p(v4("1.0.0.0"), 25, 1, 9), p(v4("1.0.0.128"), 25, 2, 9)];
    let ranges = merge(&prefixes, 32, 0);
    assert_eq!(ranges, vec![(0, 0), (v4("1.0.0.0"), 9), (v4("1.0.1.0"), 0)]);
    assert_eq!(Table4::build(&prefixes, 0).ranges(), 3);
}

#[test]
fn every_address_of_a_dense_bucket() {
    // 10.0.0.0/16 cut into 65,536 /32s of 7 values in a pattern that never repeats within a
    // block: one root bucket with 65,536 ranges, resolved through nodes down to blocks.
    let prefixes: Vec<RawPrefix> = (0..1u128 << 16)
        .map(|i| p(v4("10.0.0.0") + i, 32, 1, (i * i % 7) as u32 + 1))
        .collect();
    let t = Table4::build(&prefixes, 0);
    for a in v4("9.255.255.0")..=v4("10.1.0.255") {
        let want = if a >> 16 == 0x0a00 {
            let i = a & 0xffff;
            (i * i % 7) as u32 + 1
        } else {
            0
        };
        assert_eq!(t.get(a as u32), want, "address {a:#x}");
    }
}

#[test]
fn more_distinct_values_than_block_ids() {
    // 70,000 values, more than a block's u16 ids can name: the spans holding the rarest ones
    // are split down to leaves, which hold values directly.
    let base = v4("20.0.0.0");
    let prefixes: Vec<RawPrefix> = (0..70_000u128)
        .map(|i| p(base + 2 * i, 31, 1, i as u32 + 1))
        .collect();
    let t = Table4::build(&prefixes, 0);
    let ranges = merge(&prefixes, 32, 0);
    for a in boundary_probes(&ranges, 32) {
        assert_eq!(t.get(a as u32), in_ranges(&ranges, a), "address {a:#x}");
    }
    // The same in IPv6, inside one /64 (low-half trie) and across /64s.
    let prefixes: Vec<RawPrefix> = (0..70_000u128)
        .map(|i| {
            let addr = v6("2a00::") + (i << 64) * ((i & 1) ^ 1) + (i << 8) * (i & 1);
            p(addr, if i & 1 == 0 { 64 } else { 120 }, 1, i as u32 + 1)
        })
        .collect();
    let t = Table6::build(&prefixes, 0);
    let ranges = merge(&prefixes, 128, 0);
    for a in boundary_probes(&ranges, 128) {
        assert_eq!(t.get(a), in_ranges(&ranges, a), "address {a:#x}");
    }
}

#[test]
fn a_range_cut_into_cidrs_inside_one_64() {
    // What GeoIP data holds for a range ending mid-/64: /65, /66, ... /128 nested towards one
    // address (a "staircase"), each boundary one bit finer than the last.
    let base = v6("2a02:1234:5678:9abc::");
    let end = base + 0x1234_5678_9abc_def0;
    let mut prefixes = vec![p(v6("2a02::"), 16, 1, 1)];
    let mut start = base;
    let mut rank = 2;
    while start <= end {
        let mut len = 128u8;
        while len > 64 {
            let size = 1u128 << (128 - len + 1);
            if !start.is_multiple_of(size) || start + size - 1 > end {
                break;
            }
            len -= 1;
        }
        prefixes.push(p(start, len, rank, (rank % 5) as u32 + 2));
        rank += 1;
        start += 1u128 << (128 - len);
    }
    let t = Table6::build(&prefixes, 0);
    let ranges = merge(&prefixes, 128, 0);
    assert!(ranges.len() > 30, "the staircase has many ranges");
    for a in boundary_probes(&ranges, 128) {
        assert_eq!(t.get(a), naive(&prefixes, 128, a, 0), "address {a:#x}");
    }
}

#[test]
fn values_up_to_the_limit_are_stored() {
    let prefixes = [p(v4("1.0.0.0"), 8, 1, MAX_VALUE), p(v6("2000::"), 3, 1, 5)];
    let t4 = Table4::build(&prefixes[..1], MAX_VALUE - 1);
    assert_eq!(t4.get(v4("1.2.3.4") as u32), MAX_VALUE);
    assert_eq!(t4.get(0), MAX_VALUE - 1);
    let t6 = Table6::build(&prefixes[1..], MAX_VALUE);
    assert_eq!(t6.get(v6("2001::")), 5);
    assert_eq!(t6.get(0), MAX_VALUE);
}

#[test]
#[should_panic(expected = "MAX_VALUE")]
fn values_above_the_limit_are_refused() {
    Table4::build(&[p(0, 0, 1, MAX_VALUE + 1)], 0);
}

/// Random prefixes clustered in a few regions so that nesting and adjacency are common.
fn prefix_strategy(width: u8) -> impl Strategy<Value = (u128, u8)> {
    let max_len = width;
    (any::<u128>(), 0u8..4, 0..=max_len).prop_map(move |(a, region, len)| {
        let top = u128::from(region) << (u32::from(width) - 2);
        // Few distinct high bits and free low bits: nesting, adjacency and (for IPv6) prefixes
        // longer than /64 inside shared /64 blocks are all common.
        let high = (a & 0x7) << (u32::from(width) - 8);
        let low_bits = if width == 128 { 70 } else { 20 };
        let low = (a >> 3) & ((1u128 << low_bits) - 1);
        (top | high | low, len)
    })
}

/// Many prefixes packed into one root bucket: a `/18` for IPv4; for IPv6 a `/40` whose `/48`s
/// are cut at `/56`, `/64` and, in a few `/64`s, down to `/128`. Lengths are weighted towards
/// the long end so that buckets hold hundreds of ranges.
fn dense_strategy(width: u8) -> impl Strategy<Value = (u128, u8)> {
    (any::<u128>(), any::<u8>()).prop_map(move |(a, pick)| {
        if width == 32 {
            let len = [18, 20, 22, 24, 24, 26, 28, 29, 30, 31, 32, 32][usize::from(pick % 12)];
            (0x0a00_0000 | (a & 0x3fff), len)
        } else {
            let len =
                [40, 44, 48, 48, 52, 56, 60, 64, 64, 72, 96, 127, 128][usize::from(pick % 13)];
            let region = v6("2a02:1234:5600::");
            if len > 64 {
                // One of 4 /64s, anywhere inside it: mixed /64s with boundaries at every
                // granularity.
                let block = (a & 1) << 80 | ((a >> 1) & 1) << 64;
                (region | block | (a >> 64), len)
            } else {
                // 16 /48s, 16 /64s (at /60 steps) in each, and /72s inside those.
                let mid = (a & 0xf) << 80 | ((a >> 4) & 0xf) << 64 | ((a >> 8) & 0xff) << 56;
                (region | mid, len)
            }
        }
    })
}

/// Prefixes with pseudo-random precedence (length counts within a band), ties broken by index
/// so that the naive scan's answer is well defined.
fn ranked(raw: &[((u128, u8), u32)], step: u64) -> Vec<RawPrefix> {
    raw.iter()
        .enumerate()
        .map(|(i, ((a, l), v))| {
            let rank = (i as u64 * 7919) % 1000 * step + u64::from(*l);
            p(*a, *l, rank << 16 | i as u64, *v + 1)
        })
        .collect()
}

fn sample_addrs(prefixes: &[RawPrefix], width: u8, extra: &[u128]) -> Vec<u128> {
    let mut out = extra.to_vec();
    for p in prefixes {
        let (s, e) = prefix_bounds(p.addr, p.len, width);
        out.extend([s, e, s.wrapping_sub(1), e.wrapping_add(1)]);
    }
    let max = family_max(width);
    out.into_iter().map(|a| a & max).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ipv4_table_equals_naive_scan(
        raw in proptest::collection::vec((prefix_strategy(32), 0u32..6), 0..60),
        probes in proptest::collection::vec(any::<u32>(), 0..50),
    ) {
        let prefixes = ranked(&raw, 64);
        let t = Table4::build(&prefixes, 0);
        let probes: Vec<u128> = probes.iter().map(|&a| u128::from(a)).collect();
        for a in sample_addrs(&prefixes, 32, &probes) {
            prop_assert_eq!(t.get(a as u32), naive(&prefixes, 32, a, 0), "address {:#x}", a);
        }
    }

    #[test]
    fn ipv6_table_equals_naive_scan(
        raw in proptest::collection::vec((prefix_strategy(128), 0u32..6), 0..60),
        probes in proptest::collection::vec(any::<u128>(), 0..50),
    ) {
        let prefixes = ranked(&raw, 256);
        let t = Table6::build(&prefixes, 0);
        for a in sample_addrs(&prefixes, 128, &probes) {
            prop_assert_eq!(t.get(a), naive(&prefixes, 128, a, 0), "address {:#x}", a);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Dense sets: the table answers every range boundary (and the address before it) as the
    /// merged ranges do, and the merged ranges answer a sample of them as the naive scan does.
    #[test]
    fn ipv4_dense_table_equals_naive_scan(
        raw in proptest::collection::vec((dense_strategy(32), 0u32..12), 0..2500),
        probes in proptest::collection::vec(0u32..0x4000, 0..64),
    ) {
        let prefixes = ranked(&raw, 64);
        let t = Table4::build(&prefixes, 0);
        let ranges = merge(&prefixes, 32, 0);
        prop_assert_eq!(t.ranges(), ranges.len());
        for a in boundary_probes(&ranges, 32) {
            prop_assert_eq!(t.get(a as u32), in_ranges(&ranges, a), "address {:#x}", a);
        }
        let sampled = ranges.iter().step_by(17).map(|r| r.0);
        for a in probes.iter().map(|&x| u128::from(0x0a00_0000 | x)).chain(sampled) {
            prop_assert_eq!(t.get(a as u32), naive(&prefixes, 32, a, 0), "address {:#x}", a);
        }
    }

    #[test]
    fn ipv6_dense_table_equals_naive_scan(
        raw in proptest::collection::vec((dense_strategy(128), 0u32..12), 0..2500),
        probes in proptest::collection::vec(any::<u128>(), 0..64),
    ) {
        let prefixes = ranked(&raw, 256);
        let t = Table6::build(&prefixes, 0);
        let ranges = merge(&prefixes, 128, 0);
        prop_assert_eq!(t.ranges(), ranges.len());
        for a in boundary_probes(&ranges, 128) {
            prop_assert_eq!(t.get(a), in_ranges(&ranges, a), "address {:#x}", a);
        }
        let region = v6("2a02:1234:5600::");
        let sampled = ranges.iter().step_by(17).map(|r| r.0);
        for a in probes.iter().map(|&x| region | x >> 40).chain(sampled) {
            prop_assert_eq!(t.get(a), naive(&prefixes, 128, a, 0), "address {:#x}", a);
        }
    }
}

/// Follow node entries from `e` with the left-aligned key bits `k`, as the walk does: the node
/// steps taken, the entry reached and the key bits left.
fn descend<const R: usize>(t: &Trie<R>, mut k: u64, mut e: u32) -> (u32, u32, u64) {
    let mut n = 0;
    while e & STRIDE_MASK != 0 {
        let s = e & STRIDE_MASK;
        e = t.nodes[(e >> PAYLOAD) as usize + (k >> (64 - s)) as usize];
        k <<= s;
        n += 1;
    }
    (n, e, k)
}

/// Table accesses (root, node entries, block) one IPv4 lookup makes, the dictionary not counted.
fn accesses4(t: &Table4, addr: u32) -> u32 {
    let (n, e, _) = descend(&t.trie, addr.rest(), t.trie.root[addr.root()]);
    1 + n + u32::from(tag(e) == BLOCK)
}

/// The production table (embedded database and special ranges) and the database.
fn embedded_table() -> (
    crate::jurisdiction::JurisdictionTable,
    crate::jurisdiction::geoip::GeoIpDb,
) {
    let mut b = crate::jurisdiction::TableBuilder::with_special_ranges();
    let db = crate::jurisdiction::geoip::GeoIpDb::embedded().expect("embedded database");
    db.add_to(&mut b).expect("load");
    (b.build(), db)
}

fn print_structure<const R: usize>(family: &str, ranges: usize, root_len: usize, t: &Trie<R>) {
    println!(
        "{family}: ranges {ranges}, root entries {root_len}, node entries {}, block u16s {}, \
         dict {}, heap {}",
        t.nodes.len(),
        t.blocks.len(),
        t.dict.len(),
        t.heap_bytes()
    );
}

/// Structure counts of the production IPv4 table, for the module doc:
/// `cargo test --release --lib trie::tests::structure_report -- --ignored --nocapture`.
#[test]
#[ignore = "a report on the embedded database, not a check"]
fn structure_report() {
    let (table, _) = embedded_table();
    let t = &table.v4;
    print_structure("IPv4", t.ranges(), <u32 as Key>::ROOT_LEN, &t.trie);
    let mut x = 0x5EED_u64;
    let mut hist = [0u32; 8];
    let n = 1 << 20;
    for _ in 0..n {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let a = (x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32) as u32;
        hist[accesses4(t, a).min(7) as usize] += 1;
    }
    let mean: f64 = hist
        .iter()
        .enumerate()
        .map(|(k, &c)| k as f64 * f64::from(c))
        .sum::<f64>()
        / f64::from(n);
    let pct: Vec<String> = hist[1..]
        .iter()
        .map(|&c| format!("{:.1}%", 100.0 * f64::from(c) / f64::from(n)))
        .collect();
    println!(
        "IPv4 random: accesses 1..7: {}; mean {mean:.2}",
        pct.join(" ")
    );
}

/// Node steps in the top-half trie for `addr`, whether it ends in a block, and whether it goes
/// on to a low-half trie.
fn steps6(t: &Table6, addr: u128) -> (u32, bool, bool) {
    let hi = (addr >> 64) as u64;
    let (n, e, k) = descend(&t.trie, hi.rest(), t.trie.root[hi.root()]);
    let block = tag(e) == BLOCK;
    let e = t.trie.resolve(e, k);
    (n, block, tag(e) == FINE)
}

/// Structure counts of the production IPv6 table, over addresses drawn as the lookup bench
/// draws them (a network of the database chosen uniformly, then an address inside it):
/// `cargo test --release --lib trie::tests::structure_report_v6 -- --ignored --nocapture`.
#[test]
#[ignore = "a report on the embedded database, not a check"]
fn structure_report_v6() {
    let (table, db) = embedded_table();
    let t = &table.v6;
    print_structure("IPv6", t.ranges(), <u64 as Key>::ROOT_LEN, &t.trie);
    let mut nets = Vec::new();
    for item in db
        .reader()
        .networks(maxminddb::WithinOptions::default())
        .expect("networks")
    {
        let item = item.expect("network");
        if !item.has_data() {
            continue;
        }
        let net = item.network().expect("network");
        if let std::net::IpAddr::V6(a) = net.network() {
            let a = u128::from(a);
            if a >> 32 != 0 {
                nets.push((a, net.prefix()));
            }
        }
    }
    let mut x = 0x5EED_u64;
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let n = 1 << 20;
    let mut hist = [0u32; 10];
    let (mut blocks, mut fine) = (0u32, 0u32);
    for _ in 0..n {
        let (a, len) = nets[(next() % nets.len() as u64) as usize];
        let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        let addr = a | (u128::from(next()) << 64 | u128::from(next())) & host;
        let (steps, block, f) = steps6(t, addr);
        hist[steps.min(9) as usize] += 1;
        blocks += u32::from(block);
        fine += u32::from(f);
    }
    let pct = |c: u32| format!("{:.1}%", 100.0 * f64::from(c) / f64::from(n));
    let h: Vec<String> = hist.iter().map(|&c| pct(c)).collect();
    println!(
        "IPv6 bench-drawn: node steps 0..9: {}; end in a block {}; go on to a low half {}",
        h.join(" "),
        pct(blocks),
        pct(fine)
    );
}

/// A funnel of nested clusters inside `2001:db8::/32`: at every level 200 prefixes, one of
/// which holds the next level's 200, so that every node has one child much denser than the
/// others.
fn funnel() -> Vec<RawPrefix> {
    let mut out = vec![p(v6("2000::"), 3, 1, 1)];
    let mut base = v6("2001:db8::");
    let mut rank = 2;
    for len in [44u8, 48, 52, 56, 60, 64] {
        let step = 1u128 << (128 - u32::from(len));
        for i in 0..200u128 {
            out.push(p(base + i * step, len, rank, (rank % 5) as u32 + 2));
            rank += 1;
        }
        base += 7 * step;
    }
    out
}

#[test]
fn deep_funnels_are_cut_short_and_stay_exact() {
    let prefixes = funnel();
    let t = Table6::build(&prefixes, 0);
    let ranges = merge(&prefixes, 128, 0);
    let mut deepest = 0;
    for a in boundary_probes(&ranges, 128) {
        assert_eq!(t.get(a), in_ranges(&ranges, a), "address {a:#x}");
        assert_eq!(t.get(a), naive(&prefixes, 128, a, 0), "naive {a:#x}");
        deepest = deepest.max(steps6(&t, a).0);
    }
    // Count-based strides alone take 7 node steps here; from the third step on, a node with a
    // child denser than a block takes one more bit of stride (TAIL_STEP).
    assert!(deepest <= 6, "{deepest} node steps");
}

/// 40 `/32`s in one `/18`: the root entry for `1.0.0.0/18` is a node whose children are
/// blocks.
fn small_dense_v4() -> Table4 {
    let prefixes: Vec<RawPrefix> = (0..40u128)
        .map(|i| p(v4("1.0.0.0") + i * 300, 32, 1, (i % 3) as u32 + 1))
        .collect();
    Table4::build(&prefixes, 0)
}

#[test]
fn a_built_table_passes_its_own_validation() {
    small_dense_v4().trie.validate();
    Table6::build(&funnel(), 0).trie.validate();
}

#[test]
#[should_panic(expected = "inconsistent")]
fn validation_refuses_a_node_reaching_past_the_nodes() {
    let mut trie = small_dense_v4().trie;
    let i = trie
        .root
        .iter()
        .position(|&e| e & STRIDE_MASK != 0)
        .expect("a node at the root");
    // A stride-1 node whose second child would be one slot past the end.
    trie.root[i] = ((trie.nodes.len() - 1) as u32) << PAYLOAD | 1;
    trie.validate();
}

#[test]
#[should_panic(expected = "inconsistent")]
fn validation_refuses_a_block_id_outside_the_dictionary() {
    let mut trie = small_dense_v4().trie;
    let e = *trie
        .nodes
        .iter()
        .find(|&&e| e & STRIDE_MASK == 0 && tag(e) == BLOCK)
        .expect("a block");
    let m = ((e >> PAYLOAD) & 15) as usize + 1;
    let off = (e >> BLOCK_OFFSET) as usize;
    let mut blocks = trie.blocks.to_vec();
    blocks[off + m] = trie.dict.len() as u16;
    trie.blocks = blocks.into_boxed_slice();
    trie.validate();
}
