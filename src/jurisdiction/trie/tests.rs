//! The compiled tables must agree with a naive longest-prefix scan, on hand-picked edges and on
//! random prefix sets.

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
}

#[test]
fn ipv6_long_prefixes_use_the_exact_table() {
    let prefixes = [
        p(v6("2000::"), 3, 1, 1),
        p(v6("fd00::"), 8, 2, 2),
        p(v6("fd00:ec2::254"), 128, 3, 3), // a /128 inside a /64: the mixed-block path
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
        let prefixes: Vec<RawPrefix> = raw.iter().enumerate()
            .map(|(i, ((a, l), v))| p(*a, *l, (i as u64 * 7919) % 1000 * 64 + u64::from(*l), *v + 1))
            .collect();
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
        let prefixes: Vec<RawPrefix> = raw.iter().enumerate()
            .map(|(i, ((a, l), v))| p(*a, *l, (i as u64 * 7919) % 1000 * 256 + u64::from(*l), *v + 1))
            .collect();
        let t = Table6::build(&prefixes, 0);
        for a in sample_addrs(&prefixes, 128, &probes) {
            prop_assert_eq!(t.get(a), naive(&prefixes, 128, a, 0), "address {:#x}", a);
        }
    }
}
