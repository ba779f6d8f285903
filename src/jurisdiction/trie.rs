//! The compiled longest-prefix-match table: pure, no I/O, no allocation and no lock on lookup.
//!
//! # Design
//!
//! A router's FIB answers "which prefix covers this address" once per packet; we answer it once
//! per connection, but with the same constraints: the answer must be cheap, constant-shaped and
//! impossible to get wrong. We use the *first-stride index over merged ranges* design (the same
//! family as DIR-16-x and the range-search FIBs of Lampson, Srinivasan and Varghese):
//!
//! 1. **Merge.** All prefixes of all sources (special ranges, operator overrides, cloud ranges,
//!    GeoIP) are flattened at build time into disjoint, covering address ranges, each carrying
//!    the winning entry (highest source precedence, then longest prefix). Prefixes form a laminar
//!    family (two CIDR blocks are either nested or disjoint), so one sweep with a stack of open
//!    prefixes does this in `O(n log n)`. Adjacent ranges with the same value are coalesced.
//! 2. **Index.** A direct-indexed first stride on the top 16 bits (65,536 buckets) points at the
//!    slice of range starts inside that bucket. Every bucket begins with a synthetic range at its
//!    own first address, so a search never leaves its bucket and never needs a predecessor.
//! 3. **Search.** Within a bucket only the bits below the stride are stored (`u16` for IPv4, so
//!    a bucket's keys are dense in cache), and a branch-free binary search finds the last start
//!    at or below the address. Most buckets hold a handful of ranges, so a lookup is typically
//!    one index load, one or two cache lines of keys, and one value load.
//!
//! IPv6 uses the same index over the top 64 bits (GeoIP, cloud and registry data are all at
//! `/64` or shorter). The rare `/64` blocks that hold a longer prefix (such as the metadata
//! address `fd00:ec2::254/128` or an operator's `/127`) are marked with a sentinel value and
//! answered from a small exact table of 128-bit ranges.
//!
//! Why not a Poptrie or DIR-24-8: DIR-24-8 costs 32 MiB for IPv4 alone and does not extend to
//! IPv6; a Poptrie is faster on very large tables but much more code to prove correct. The range
//! search is within a few nanoseconds of either on GeoIP-sized data, uses a few megabytes for the
//! full DB-IP table, and is checked against a naive longest-prefix scan by property tests.
//!
//! Values are opaque `u32`s to this module; [`super`] packs the jurisdiction id, the source and
//! the matched prefix length into them.

/// Sentinel value marking an IPv6 `/64` block that must be answered by the exact table.
const FINE: u32 = u32::MAX;

/// One prefix to merge: `addr/len` in a family of `width` bits, with its value and precedence.
#[derive(Debug, Clone, Copy)]
pub struct RawPrefix {
    /// Network address, right-aligned in a `u128` (IPv4 uses the low 32 bits).
    pub addr: u128,
    /// Prefix length in bits.
    pub len: u8,
    /// Precedence: higher wins where prefixes overlap (callers fold source rank, length and
    /// insertion order into it).
    pub rank: u64,
    /// Opaque value stored for every address this prefix wins.
    pub value: u32,
}

/// Last address of a family of `width` bits.
fn family_max(width: u8) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// First and last address of `addr/len` in a family of `width` bits (host bits are ignored).
fn prefix_bounds(addr: u128, len: u8, width: u8) -> (u128, u128) {
    let len = len.min(width);
    let host_bits = u32::from(width - len);
    let host_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let start = addr & !host_mask & family_max(width);
    (start, start | host_mask & family_max(width))
}

/// Flatten prefixes into disjoint ranges covering the whole family: `(start, value)` pairs,
/// sorted, the first starting at 0, each running to the next start (the last to the family's
/// end). Addresses no prefix covers get `default`.
pub fn merge(prefixes: &[RawPrefix], width: u8, default: u32) -> Vec<(u128, u32)> {
    let mut items: Vec<(u128, u128, u64, u32)> = prefixes
        .iter()
        .map(|p| {
            let (s, e) = prefix_bounds(p.addr, p.len, width);
            (s, e, p.rank, p.value)
        })
        .collect();
    // Parents before children: start ascending, then end descending.
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));

    let mut out: Vec<(u128, u32)> = Vec::with_capacity(items.len() * 2 + 1);
    let mut emit = |from: u128, value: u32| {
        if out.last().is_some_and(|&(_, v)| v == value) {
            return;
        }
        out.push((from, value));
    };
    // Stack of open prefixes: (end, effective rank, effective value).
    let mut stack: Vec<(u128, u64, u32)> = Vec::new();
    // Next address not yet emitted; None once the family's last address is emitted.
    let mut cursor: Option<u128> = Some(0);

    for &(start, end, rank, value) in &items {
        while let Some(&(top_end, _, top_value)) = stack.last() {
            if top_end >= start {
                break;
            }
            if let Some(c) = cursor
                && c <= top_end
            {
                emit(c, top_value);
            }
            cursor = top_end.checked_add(1);
            stack.pop();
        }
        let (outer_rank, outer_value) = stack.last().map_or((0, default), |&(_, r, v)| (r, v));
        if let Some(c) = cursor
            && c < start
        {
            emit(c, outer_value);
        }
        cursor = Some(start);
        let (eff_rank, eff_value) = if stack.is_empty() || rank >= outer_rank {
            (rank, value)
        } else {
            (outer_rank, outer_value)
        };
        stack.push((end, eff_rank, eff_value));
    }
    while let Some((top_end, _, top_value)) = stack.pop() {
        if let Some(c) = cursor
            && c <= top_end
        {
            emit(c, top_value);
        }
        cursor = top_end.checked_add(1);
    }
    if let Some(c) = cursor
        && c <= family_max(width)
    {
        emit(c, default);
    }
    out
}

/// Key bits kept below the 16-bit first stride.
trait Low: Copy + Ord {
    fn from_bits(v: u64) -> Self;
}
impl Low for u16 {
    fn from_bits(v: u64) -> Self {
        (v & 0xffff) as u16
    }
}
impl Low for u64 {
    fn from_bits(v: u64) -> Self {
        v
    }
}

/// Ranges over a key of `bits` bits, indexed by the top 16 bits.
#[derive(Debug, Clone)]
struct StrideTable<L> {
    /// `index[b]..index[b + 1]` is bucket `b`'s slice of `lows`/`values`.
    index: Box<[u32]>,
    /// Range starts with the bucket bits removed.
    lows: Box<[L]>,
    values: Box<[u32]>,
    /// Width of the key in bits (32 for IPv4, 64 for the IPv6 `/64` table).
    bits: u32,
}

impl<L: Low> StrideTable<L> {
    /// Build from merged ranges over keys of `bits` bits (`bits` is 32 or 64).
    fn build(ranges: &[(u64, u32)], bits: u32) -> Self {
        let shift = bits - 16;
        let mut index = Vec::with_capacity(65_537);
        let mut lows = Vec::with_capacity(ranges.len() + 65_536);
        let mut values = Vec::with_capacity(ranges.len() + 65_536);
        let mut next = 0usize;
        let mut current = ranges.first().map_or(0, |r| r.1);
        for bucket in 0u64..65_536 {
            let bucket_start = bucket << shift;
            let bucket_end = bucket_start | ((1u64 << shift) - 1);
            index.push(lows.len() as u32);
            while next < ranges.len() && ranges[next].0 <= bucket_start {
                current = ranges[next].1;
                next += 1;
            }
            lows.push(L::from_bits(0));
            values.push(current);
            while next < ranges.len() && ranges[next].0 <= bucket_end {
                current = ranges[next].1;
                lows.push(L::from_bits(ranges[next].0 - bucket_start));
                values.push(current);
                next += 1;
            }
        }
        index.push(lows.len() as u32);
        StrideTable {
            index: index.into_boxed_slice(),
            lows: lows.into_boxed_slice(),
            values: values.into_boxed_slice(),
            bits,
        }
    }

    /// The value of the range holding `key`. Branch-free binary search inside one bucket.
    #[inline(always)]
    fn get(&self, key: u64) -> u32 {
        let shift = self.bits - 16;
        let bucket = (key >> shift) as usize & 0xffff;
        let low = L::from_bits(key & ((1u64 << shift) - 1));
        let (Some(&lo), Some(&hi)) = (self.index.get(bucket), self.index.get(bucket + 1)) else {
            return FINE;
        };
        let Some(slice) = self.lows.get(lo as usize..hi as usize) else {
            return FINE;
        };
        let mut base = 0usize;
        let mut size = slice.len();
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            // Compiles to a conditional move: no branch to mispredict.
            base = if slice.get(mid).is_some_and(|&m| m <= low) {
                mid
            } else {
                base
            };
            size -= half;
        }
        self.values.get(lo as usize + base).copied().unwrap_or(FINE)
    }

    fn heap_bytes(&self) -> usize {
        self.index.len() * 4 + self.lows.len() * std::mem::size_of::<L>() + self.values.len() * 4
    }

    fn ranges(&self) -> usize {
        self.lows.len()
    }
}

/// The compiled IPv4 table.
#[derive(Debug, Clone)]
pub struct Table4 {
    inner: StrideTable<u16>,
}

impl Table4 {
    /// Compile prefixes (IPv4, `addr` in the low 32 bits) into a table.
    pub fn build(prefixes: &[RawPrefix], default: u32) -> Self {
        let ranges: Vec<(u64, u32)> = merge(prefixes, 32, default)
            .into_iter()
            .map(|(s, v)| (s as u64, v))
            .collect();
        Table4 {
            inner: StrideTable::build(&ranges, 32),
        }
    }

    /// The value stored for `addr`.
    #[inline]
    pub fn get(&self, addr: u32) -> u32 {
        self.inner.get(u64::from(addr))
    }

    /// Bytes of heap the table occupies.
    pub fn heap_bytes(&self) -> usize {
        self.inner.heap_bytes()
    }

    /// Number of stored ranges (including one synthetic range per bucket).
    pub fn ranges(&self) -> usize {
        self.inner.ranges()
    }
}

/// The compiled IPv6 table: a `/64` stride table plus an exact table for mixed `/64` blocks.
#[derive(Debug, Clone)]
pub struct Table6 {
    coarse: StrideTable<u64>,
    /// Sorted 128-bit range starts and values covering every mixed `/64` block.
    fine_starts: Box<[u128]>,
    fine_values: Box<[u32]>,
}

impl Table6 {
    /// Compile IPv6 prefixes into a table.
    pub fn build(prefixes: &[RawPrefix], default: u32) -> Self {
        let ranges = merge(prefixes, 128, default);
        // A /64 block is mixed when a range boundary falls inside it.
        let mut mixed: Vec<u64> = ranges
            .iter()
            .filter(|(s, _)| *s as u64 != 0)
            .map(|(s, _)| (s >> 64) as u64)
            .collect();
        mixed.dedup();
        let value_at = |addr: u128| -> u32 {
            let i = ranges.partition_point(|(s, _)| *s <= addr);
            ranges.get(i.wrapping_sub(1)).map_or(default, |r| r.1)
        };
        let mut boundaries: Vec<u64> = ranges.iter().map(|(s, _)| (s >> 64) as u64).collect();
        boundaries.extend(mixed.iter().filter_map(|m| m.checked_add(1)));
        boundaries.sort_unstable();
        boundaries.dedup();
        let mut coarse: Vec<(u64, u32)> = Vec::with_capacity(boundaries.len());
        for block in boundaries {
            let value = if mixed.binary_search(&block).is_ok() {
                FINE
            } else {
                value_at(u128::from(block) << 64)
            };
            if coarse.last().is_some_and(|&(_, v)| v == value && v != FINE) {
                continue;
            }
            coarse.push((block, value));
        }
        let mut fine: Vec<(u128, u32)> = Vec::new();
        for &m in &mixed {
            let block_start = u128::from(m) << 64;
            let block_end = block_start | u128::from(u64::MAX);
            let first = ranges
                .partition_point(|(s, _)| *s <= block_start)
                .saturating_sub(1);
            for &(s, v) in ranges.iter().skip(first) {
                if s > block_end {
                    break;
                }
                if fine.last().is_none_or(|&(ls, _)| ls < s) {
                    fine.push((s, v));
                }
            }
        }
        Table6 {
            coarse: StrideTable::build(&coarse, 64),
            fine_starts: fine.iter().map(|f| f.0).collect(),
            fine_values: fine.iter().map(|f| f.1).collect(),
        }
    }

    /// The value stored for `addr`.
    #[inline]
    pub fn get(&self, addr: u128) -> u32 {
        let v = self.coarse.get((addr >> 64) as u64);
        if v != FINE {
            return v;
        }
        let i = self.fine_starts.partition_point(|&s| s <= addr);
        self.fine_values
            .get(i.wrapping_sub(1))
            .copied()
            .unwrap_or(FINE)
    }

    /// Bytes of heap the table occupies.
    pub fn heap_bytes(&self) -> usize {
        self.coarse.heap_bytes() + self.fine_starts.len() * 16 + self.fine_values.len() * 4
    }

    /// Number of stored ranges (coarse, including synthetic bucket starts, plus exact).
    pub fn ranges(&self) -> usize {
        self.coarse.ranges() + self.fine_starts.len()
    }
}

/// The value a naive longest-prefix scan gives: the reference the tables are tested against.
pub fn naive(prefixes: &[RawPrefix], width: u8, addr: u128, default: u32) -> u32 {
    prefixes
        .iter()
        .filter(|p| {
            let (s, e) = prefix_bounds(p.addr, p.len, width);
            s <= addr && addr <= e
        })
        .max_by_key(|p| p.rank)
        .map_or(default, |p| p.value)
}

#[cfg(test)]
mod tests;
