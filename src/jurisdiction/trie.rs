//! The compiled longest-prefix-match table: pure, no I/O, no allocation and no lock on lookup.
//!
//! # Design
//!
//! A router's FIB answers "which prefix covers this address" once per packet; we answer it once
//! per connection, with the same constraints: cheap, constant-shaped and impossible to get
//! wrong. The design is a *multibit trie with a direct-indexed root, adaptive strides and range
//! blocks as leaves*: the direct first stride of DIR-24-8 (Gupta, Lin and McKeown) and DXR
//! (Zec, Rizzo and Mikuc), the density-adapted strides of the LC-trie (Nilsson and Karlsson),
//! and leaves searched like the range FIBs of Lampson, Srinivasan and Varghese.
//!
//! 1. **Merge.** All prefixes of all sources are flattened into disjoint, covering ranges, each
//!    carrying the winning entry (highest source precedence, then longest prefix). Prefixes
//!    form a laminar family, so one sweep with a stack of open prefixes does it in
//!    `O(n log n)`. Adjacent ranges merge only when their values are equal, and a value holds
//!    the matched prefix length, so DB-IP's 594k IPv4 and 774k IPv6 networks become 569,393
//!    and 746,514 ranges.
//! 2. **Root.** A direct-indexed root: on the top 18 bits for IPv4 (2^18 `u32` entries,
//!    1 MiB) and on the top 16 bits for IPv6 (256 KiB; IPv6 data sits in 126 of its entries).
//!    An entry is a *leaf* (the value itself, in its top 26 bits), a *block* or a *node*; a
//!    node keeps its stride in the entry's low four bits, which are zero for every other kind,
//!    and the others a two-bit tag above them. For uniformly random IPv4 addresses 89.0% of
//!    lookups end at the root entry: one memory access and no mispredicted branch.
//! 3. **Nodes.** A span holding more ranges than a block is split by a node of stride
//!    `ceil(log2(ranges / 8))` bits, at most 15: an array of `2^s` child entries, each a leaf,
//!    block or node. Strides follow density: 7.7% of random IPv4 addresses make two table
//!    accesses (root and a block or a node) and 3.3% three, while a dense IPv6 `/16` gets a
//!    node of up to 2^15 entries. For IPv6, from the third node step on, a node whose densest
//!    child would hold more ranges than a block takes more stride, up to one entry per two
//!    ranges: that shortens the deep tail for 3.8% more memory. A span split only because its
//!    boundaries are finer than a block's grid takes no more stride than it has ranges.
//! 4. **Blocks.** A span with at most 16 boundaries, all on the span's 16-bit grid, is a block:
//!    `m` sorted `u16` keys (the top 16 bits of each boundary below the span's prefix) and then
//!    `m + 1` `u16` value ids, 4 bytes per range, one or two cache lines. It is searched
//!    without a branch, in a handful of SSE2 instructions: a 32-byte window of keys is
//!    compared with the address (two compares, a pack and a byte mask); the keys at most the
//!    address are a prefix, as keys are sorted, so the answer is the first key above it, with
//!    a bit set at `m` to cut off the lanes past the block. A span whose boundaries are finer
//!    than its 16-bit grid is split by a node even when it holds few.
//! 5. **Values.** Leaf entries hold values directly (values are at most [`MAX_VALUE`]; the
//!    jurisdiction table's packed values are below 2^24). Blocks name values by `u16` id
//!    through a per-family dictionary, most frequent first: 3,505 entries for IPv4 and 7,764
//!    for IPv6 (14 KB and 31 KB, cache-resident). A span naming an id above 2^16 is split down
//!    to leaves instead.
//! 6. **IPv6.** The trie runs on the top 64 bits with `u64` arithmetic. A `/64` that a range
//!    boundary cuts (286 of them: DB-IP ranges ending mid-`/64`, the special `/128`s) is a
//!    *FINE* entry naming a second trie over the low 64 bits, built the same way. 2.3% of the
//!    benchmark's IPv6 lookups go through one.
//! 7. **The IPv6 walk has no branch on the table's data.** Every lookup takes the root, the
//!    root's child and then `FIXED_STEPS6` (two) more node steps, and searches a block. A
//!    step on an entry that is not a node consumes no bits (its stride field is zero) and
//!    re-reads its own slot, which is in cache; a lookup that ends in a leaf searches the
//!    block at offset 0 instead and keeps the leaf, by a select. Only the lookups deeper than
//!    three node steps (16.4% of the benchmark's) and those in a mixed `/64` branch. IPv4
//!    keeps a branchy walk: most of its lookups end at the root.
//! 8. **Validated, then read unchecked.** When a trie is built, every entry of its root,
//!    nodes and dictionary is checked: a node's children, a block's key window and ids, a FINE
//!    slot all lie inside their arrays, and every id a block holds indexes the dictionary. A
//!    failed check is a builder bug and panics at build time. Lookups then read without
//!    bounds checks (`unsafe`, with that argument beside each read); an address only selects
//!    among slots the check covered.
//!
//! Why the walk is shaped so (the measurements, and every variant tried and rejected, are in
//! `benches/README.md`, "The lookup table's structure, measured"):
//! - **A lookup costs its chain of dependent reads.** The benchmark measures throughput: the
//!   CPU overlaps the cache misses of several independent lookups, so a lookup costs about its
//!   chain of dependent reads times its instruction count, and a mispredicted branch that waits
//!   on a miss costs the whole chain up to it. Hence no branch on the table's data in the IPv6
//!   walk (step 7), few instructions per step, and reads without bounds checks (step 8).
//! - **An 18-bit IPv4 root.** With 16 bits, 18.4% of random addresses find a node or a block at
//!   the root, a branch the CPU cannot predict that then waits for a cache miss; 18 bits cost
//!   0.75 MiB more and some latency (the 1 MiB root no longer stays in L2), well inside what a
//!   connection can afford.
//! - **Memory is speed.** Every IPv6 variant above about 4.5 MB measured slower whatever its
//!   shape: depth is bought with memory only where that measured faster (the tail rule of
//!   step 3).
//!
//! Values are opaque `u32`s to this module; [`super`] packs the jurisdiction id, the source and
//! the matched prefix length into them.

mod build;
mod merge;

use build::{Coded, TrieBuilder, dictionary};
pub use merge::{RawPrefix, merge};
#[cfg(test)]
use merge::{family_max, prefix_bounds};

/// Entries (`u32`, in the root and in nodes). The low four bits are a node's stride, and zero
/// for every other kind, so a walk step needs no test to know how many key bits an entry
/// consumes. A node's first child is at `e >> PAYLOAD`. Every other entry has a tag in bits 4
/// and 5:
/// - [`LEAF`]: the value is `e >> PAYLOAD`;
/// - [`BLOCK`]: bits 6 to 9 hold the block's key count less one, and its offset in the block
///   array is `e >> BLOCK_OFFSET`;
/// - [`FINE`] (IPv6 only): a `/64` cut by a range boundary; `e >> PAYLOAD` is the slot of the
///   first entry of the trie over its low 64 bits.
///
/// A leaf is the one kind whose low six bits are all zero.
const STRIDE_MASK: u32 = 15;
const TAG_SHIFT: u32 = 4;
const LEAF: u32 = 0;
const BLOCK: u32 = 1;
const FINE: u32 = 2;
const PAYLOAD: u32 = 6;
const BLOCK_OFFSET: u32 = 10;

/// Bits of the direct-indexed IPv4 root (see the module doc for the choice).
const ROOT4_BITS: u32 = 18;
const ROOT4_LEN: usize = 1 << ROOT4_BITS;
/// Bits of the direct-indexed IPv6 root.
const ROOT6_BITS: u32 = 16;
const ROOT6_LEN: usize = 1 << ROOT6_BITS;
/// Boundaries one block holds at most: one 32-byte window of `u16` keys.
const BLOCK_KEYS: usize = 16;
/// Boundaries per child a node aims for when a span holds too many for one block.
const TARGET: usize = 8;
/// Largest node stride (it has four bits in an entry).
const MAX_STRIDE: u32 = 15;
/// IPv6: from this node step on, a node grows its stride until no child holds more ranges
/// than a block ...
const TAIL_STEP: u32 = 3;
/// ... while it keeps at least this many ranges per entry.
const TAIL_RANGES_PER_ENTRY: usize = 2;
/// Largest stride of a node that splits a span for resolution (its boundaries are too fine
/// for one block's 16-bit keys).
const RESOLUTION_STRIDE: u32 = 8;
/// Largest value a leaf entry holds (the entry's top 26 bits).
pub const MAX_VALUE: u32 = u32::MAX >> PAYLOAD;
/// Node steps every IPv6 lookup takes over the top 64 bits after the first (the root's child),
/// with no branch (see the module doc); deeper lookups go on in a loop.
const FIXED_STEPS6: usize = 2;
/// The same for the low 64 bits of a `/64` cut by a range boundary.
const FIXED_STEPS6_LOW: usize = 2;
/// How many of the first `m` keys of `window` (sorted, stored with the sign bit flipped) are at
/// most `x`: the index of the first key above `x`, or `m`. SSE2 (the x86-64 baseline): two
/// compares, a pack and a byte mask; keys are sorted, so the keys at most `x` are a prefix, and
/// lanes past the block's `m` keys (other data) are cut off by the bit at `m`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn count_at_most(window: &[u16; BLOCK_KEYS], m: usize, x: u16) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpgt_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
        _mm_set1_epi16,
    };
    // SAFETY: SSE2 is part of the x86_64 target's baseline, and the two unaligned loads read
    // the 32 bytes of `window`.
    let above = unsafe {
        let p = window.as_ptr().cast::<__m128i>();
        let x = _mm_set1_epi16((x ^ 0x8000) as i16);
        let low = _mm_cmpgt_epi16(_mm_loadu_si128(p), x);
        let high = _mm_cmpgt_epi16(_mm_loadu_si128(p.add(1)), x);
        _mm_movemask_epi8(_mm_packs_epi16(low, high)) as u32
    };
    (above | 1 << (m & 31)).trailing_zeros() as usize
}

/// Portable [`count_at_most`].
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn count_at_most(window: &[u16; BLOCK_KEYS], m: usize, x: u16) -> usize {
    let x = (x ^ 0x8000) as i16;
    window[..m.min(BLOCK_KEYS)]
        .iter()
        .take_while(|&&k| (k as i16) <= x)
        .count()
}

/// Value ids a block can name (they are `u16`).
const MAX_IDS: u32 = 1 << 16;

/// A key being resolved: IPv4 addresses (`u32`) and the halves of IPv6 addresses (`u64`).
trait Key: Copy {
    const BITS: u32;
    /// Bits the direct-indexed root resolves.
    const ROOT_BITS: u32;
    /// Entries of the root.
    const ROOT_LEN: usize = 1 << Self::ROOT_BITS;
    /// The top `ROOT_BITS` bits: the root index.
    fn root(self) -> usize;
    /// The bits below the root's, left-aligned in a `u64`: what [`Trie::descend`] resolves.
    fn rest(self) -> u64;
}

impl Key for u32 {
    const BITS: u32 = 32;
    const ROOT_BITS: u32 = ROOT4_BITS;
    #[inline(always)]
    fn root(self) -> usize {
        (self >> (32 - ROOT4_BITS)) as usize
    }
    #[inline(always)]
    fn rest(self) -> u64 {
        u64::from(self) << (32 + ROOT4_BITS)
    }
}

impl Key for u64 {
    const BITS: u32 = 64;
    const ROOT_BITS: u32 = ROOT6_BITS;
    #[inline(always)]
    fn root(self) -> usize {
        (self >> (64 - ROOT6_BITS)) as usize
    }
    #[inline(always)]
    fn rest(self) -> u64 {
        self << ROOT6_BITS
    }
}

/// Compiled ranges over keys of one width: a direct-indexed root, nodes and blocks.
#[derive(Debug, Clone)]
struct Trie<const ROOT_LEN: usize> {
    /// One entry per value of the key's top bits.
    root: Box<[u32; ROOT_LEN]>,
    /// For IPv6 first the first entries of the low-half tries of mixed `/64`s, then all nodes'
    /// entries, each node's children contiguous.
    nodes: Box<[u32]>,
    /// All blocks: `m` keys then `m + 1` value ids, followed by `BLOCK_KEYS` of padding so
    /// that a block's key window never leaves the slice.
    blocks: Box<[u16]>,
    /// The entry (a leaf, or for IPv6 a `FINE` entry) each id a block names stands for.
    dict: Box<[u32]>,
    /// Answer for an entry a lookup cannot decode (never reached on a table this module built).
    fallback: u32,
}

/// The tag of an entry that is not a node.
#[inline(always)]
fn tag(e: u32) -> u32 {
    (e >> TAG_SHIFT) & 3
}

/// Whether `e` is a leaf: its stride and its tag are zero.
#[inline(always)]
fn is_leaf(e: u32) -> bool {
    e & (STRIDE_MASK | 3 << TAG_SHIFT) == LEAF << TAG_SHIFT
}

impl<const ROOT_LEN: usize> Trie<ROOT_LEN> {
    /// The entry in node slot `pos`, a slot an entry of this trie names.
    #[inline(always)]
    fn entry(&self, pos: usize) -> u32 {
        debug_assert!(pos < self.nodes.len());
        // SAFETY: every slot a walk reads is a node's child, `(e >> PAYLOAD) + i` with
        // `i < 2^stride`, or a FINE entry's slot, and `Trie::validate` checked at build time
        // that all of those are inside `nodes` for every entry of the trie. A step on any
        // other entry stays on the slot it read. The table is immutable after the build.
        unsafe { *self.nodes.get_unchecked(pos) }
    }

    /// One node step from entry `e` in slot `pos`, with `k` the key bits still to resolve,
    /// left-aligned: a node takes its child index from the top of `k` and shifts those bits
    /// out. Any other entry stays where it is: its stride is zero, so it consumes no bits and
    /// reads its own slot again (in cache, as it was just read). No branch: the walk's cost is
    /// its chain of reads, and a mispredicted branch waiting on one of them costs more than
    /// the read itself (see the module doc).
    #[inline(always)]
    fn step(&self, pos: &mut usize, e: &mut u32, k: &mut u64) {
        let s = *e & STRIDE_MASK;
        let base = std::hint::select_unpredictable(s != 0, (*e >> PAYLOAD) as usize, *pos);
        // `(k >> 1) >> (63 - s)` is the top `s` bits of `k`, and 0 when `s` is 0.
        *pos = base + ((*k >> 1) >> (63 - s)) as usize;
        *k <<= s;
        *e = self.entry(*pos);
    }

    /// Follow entry `e` in slot `pos` through nodes: `FIXED` steps without a branch, then as
    /// many more as it takes (every node consumes at least one bit, so at most 64). Returns the
    /// entry reached, not a node, and the key bits left.
    #[inline(always)]
    fn descend<const FIXED: usize>(&self, mut pos: usize, mut e: u32, mut k: u64) -> (u32, u64) {
        for _ in 0..FIXED {
            self.step(&mut pos, &mut e, &mut k);
        }
        if e & STRIDE_MASK != 0 {
            for _ in 0..64 {
                self.step(&mut pos, &mut e, &mut k);
                if e & STRIDE_MASK == 0 {
                    break;
                }
            }
        }
        (e, k)
    }

    /// Follow node entry `e` to the entry it leads to for the key bits `k`, with a branch per
    /// step: for IPv4, whose few walks are short.
    #[inline(always)]
    fn descend_branchy(&self, mut e: u32, mut k: u64) -> (u32, u64) {
        // Every node consumes at least one bit, so the loop ends within 64 steps.
        for _ in 0..64 {
            let s = e & STRIDE_MASK;
            if s == 0 {
                break;
            }
            e = self.entry((e >> PAYLOAD) as usize + (k >> (64 - s)) as usize);
            k <<= s;
        }
        (e, k)
    }

    /// The entry a block entry `e` names for the key bits `k`; any other entry as it is.
    /// Branchy: for IPv4, where most walks end in a block.
    #[inline(always)]
    fn resolve(&self, e: u32, k: u64) -> u32 {
        if e & STRIDE_MASK == 0 && tag(e) == BLOCK {
            self.search((k >> 48) as u16, e)
        } else {
            e
        }
    }

    /// As [`Trie::resolve`], without a branch: an entry that is not a block searches the
    /// (cached) first block instead, and the answer is chosen after.
    #[inline(always)]
    fn resolve_branchless(&self, e: u32, k: u64) -> u32 {
        let block = e & STRIDE_MASK == 0 && tag(e) == BLOCK;
        let searched = self.search(
            (k >> 48) as u16,
            std::hint::select_unpredictable(block, e, 0),
        );
        std::hint::select_unpredictable(block, searched, e)
    }

    /// The entry block entry `e` names for block key `x`.
    #[inline(always)]
    fn search(&self, x: u16, e: u32) -> u32 {
        let m = ((e >> PAYLOAD) & 15) as usize + 1;
        let off = (e >> BLOCK_OFFSET) as usize;
        debug_assert!(off + BLOCK_KEYS.max(2 * m + 1) <= self.blocks.len());
        // SAFETY: `Trie::validate` checked for every block entry that its key window and its
        // `m + 1` ids lie inside `blocks`, and that each of those ids indexes `dict`. The
        // count is at most `m`, so the id read is one of those ids. Entry 0, which a
        // branch-free resolve searches instead of a non-block, is a valid one-key block.
        unsafe {
            let window = &*self.blocks.as_ptr().add(off).cast::<[u16; BLOCK_KEYS]>();
            let id = *self
                .blocks
                .get_unchecked(off + m + count_at_most(window, m, x));
            *self.dict.get_unchecked(usize::from(id))
        }
    }

    fn heap_bytes(&self) -> usize {
        ROOT_LEN * 4 + self.nodes.len() * 4 + self.blocks.len() * 2 + self.dict.len() * 4
    }
}

/// Check the leaf-value contract of [`Table4::build`] and [`Table6::build`].
fn check_values(prefixes: &[RawPrefix], default: u32) {
    assert!(
        default <= MAX_VALUE && prefixes.iter().all(|p| p.value <= MAX_VALUE),
        "table values must be at most MAX_VALUE"
    );
}

/// The compiled IPv4 table.
#[derive(Debug, Clone)]
pub struct Table4 {
    trie: Trie<ROOT4_LEN>,
    ranges: usize,
}

impl Table4 {
    /// Compile prefixes (IPv4, `addr` in the low 32 bits) into a table.
    ///
    /// # Panics
    ///
    /// If a value or `default` is above [`MAX_VALUE`], or the table would outgrow its entry
    /// encoding (2^25 node entries or 2^26 block `u16`s, 128 MiB each).
    pub fn build(prefixes: &[RawPrefix], default: u32) -> Self {
        check_values(prefixes, default);
        let ranges = merge(prefixes, 32, default);
        let (dict, ids) = dictionary(ranges.iter().map(|r| r.1 << PAYLOAD));
        let coded: Vec<Coded> = ranges
            .iter()
            .map(|r| {
                let entry = r.1 << PAYLOAD;
                Coded {
                    start: r.0 as u64,
                    entry,
                    id: ids.get(&entry).copied().unwrap_or(u32::MAX),
                }
            })
            .collect();
        let b = TrieBuilder::new(0, u32::MAX);
        Table4 {
            trie: b.finish::<u32, ROOT4_LEN>(&coded, dict, default),
            ranges: ranges.len(),
        }
    }

    /// The value stored for `addr`.
    #[inline(always)]
    pub fn get(&self, addr: u32) -> u32 {
        let e = self.trie.root[addr.root()];
        // Most random addresses end at the root (a leaf: the low six bits are zero).
        if is_leaf(e) {
            return e >> PAYLOAD;
        }
        let (e, k) = self.trie.descend_branchy(e, addr.rest());
        let e = self.trie.resolve(e, k);
        if is_leaf(e) {
            e >> PAYLOAD
        } else {
            self.trie.fallback
        }
    }

    /// Bytes of heap the table occupies.
    pub fn heap_bytes(&self) -> usize {
        self.trie.heap_bytes()
    }

    /// Number of merged ranges the table answers.
    pub fn ranges(&self) -> usize {
        self.ranges
    }
}

/// The compiled IPv6 table: a trie over the top 64 bits whose mixed `/64` blocks (a range
/// boundary inside) continue into tries over the low 64 bits.
#[derive(Debug, Clone)]
pub struct Table6 {
    trie: Trie<ROOT6_LEN>,
    ranges: usize,
}

impl Table6 {
    /// Compile IPv6 prefixes into a table.
    ///
    /// # Panics
    ///
    /// If a value or `default` is above [`MAX_VALUE`], or the table would outgrow its entry
    /// encoding (2^25 node entries or 2^26 block `u16`s, 128 MiB each).
    pub fn build(prefixes: &[RawPrefix], default: u32) -> Self {
        check_values(prefixes, default);
        let ranges = merge(prefixes, 128, default);
        // Split the ranges at /64 granularity. A /64 is mixed when a range starts strictly
        // inside it: its addresses are resolved by a trie over the low 64 bits, reached through
        // a FINE entry naming the node slot that holds that trie's first entry. Every other
        // /64 lies inside one range.
        let mut top: Vec<(u64, u32)> = Vec::with_capacity(ranges.len());
        // Per mixed /64: its ranges, the first being the one covering its first address.
        let mut mixed: Vec<std::ops::Range<usize>> = Vec::new();
        let mut i = 0;
        while i < ranges.len() {
            let hi = (ranges[i].0 >> 64) as u64;
            let mut j = i + 1;
            while ranges.get(j).is_some_and(|r| (r.0 >> 64) as u64 == hi) {
                j += 1;
            }
            let at_start = ranges[i].0 as u64 == 0;
            if at_start && j == i + 1 {
                top.push((hi, ranges[i].1 << PAYLOAD));
            } else {
                let covering = if at_start { i } else { i.saturating_sub(1) };
                let slot = mixed.len();
                assert!(slot < 1 << 26, "compiled table too large");
                top.push((hi, (slot as u32) << PAYLOAD | FINE << TAG_SHIFT));
                mixed.push(covering..j);
                // The next /64 starts inside the last range unless a range starts there.
                if let Some(next) = hi.checked_add(1)
                    && ranges.get(j).is_none_or(|r| (r.0 >> 64) as u64 != next)
                {
                    top.push((next, ranges[j - 1].1 << PAYLOAD));
                }
            }
            i = j;
        }
        top.dedup_by(|b, a| a.1 == b.1);
        let (dict, ids) = dictionary(
            ranges
                .iter()
                .map(|r| r.1 << PAYLOAD)
                .chain(top.iter().map(|t| t.1)),
        );
        let code = |start: u64, entry: u32| Coded {
            start,
            entry,
            id: ids.get(&entry).copied().unwrap_or(u32::MAX),
        };
        // The slots after the root hold the first entries of the low-half tries.
        let mut b = TrieBuilder::new(mixed.len(), TAIL_STEP);
        for (k, members) in mixed.iter().enumerate() {
            let Some(block) = ranges.get(members.clone()) else {
                continue;
            };
            let hi = block.last().map_or(0, |r| r.0 >> 64);
            let low: Vec<Coded> = block
                .iter()
                .map(|r| {
                    let lo = if r.0 >> 64 == hi { r.0 as u64 } else { 0 };
                    code(lo, r.1 << PAYLOAD)
                })
                .collect();
            if let Some((&first, inner)) = low.split_first() {
                let e = b.entry(0, 64, first, inner);
                b.nodes[k] = e;
            }
        }
        let coded: Vec<Coded> = top
            .iter()
            .map(|&(start, entry)| code(start, entry))
            .collect();
        Table6 {
            trie: b.finish::<u64, ROOT6_LEN>(&coded, dict, default),
            ranges: ranges.len(),
        }
    }

    /// The value stored for `addr`.
    ///
    /// Every lookup takes the same path: the root, `FIXED_STEPS6` node steps (a leaf or a
    /// block reached earlier stays in place) and a block search (skipped by a select for a
    /// leaf), with no branch on the table's data; only the few lookups deeper than that, and
    /// those in a mixed `/64`, branch (see the module doc).
    #[inline(always)]
    pub fn get(&self, addr: u128) -> u32 {
        let hi = (addr >> 64) as u64;
        let (mut e, mut k) = (self.trie.root[hi.root()], hi.rest());
        // The root's entries for allocated space are nodes: this branch is predictable.
        let s = e & STRIDE_MASK;
        if s != 0 {
            let pos = (e >> PAYLOAD) as usize + (k >> (64 - s)) as usize;
            (e, k) = self
                .trie
                .descend::<FIXED_STEPS6>(pos, self.trie.entry(pos), k << s);
        }
        let mut e = self.trie.resolve_branchless(e, k);
        if e & STRIDE_MASK == 0 && tag(e) == FINE {
            // A mixed /64: continue with the low half from its sub-root entry.
            let pos = (e >> PAYLOAD) as usize;
            let (low, k) =
                self.trie
                    .descend::<FIXED_STEPS6_LOW>(pos, self.trie.entry(pos), addr as u64);
            e = self.trie.resolve_branchless(low, k);
        }
        if is_leaf(e) {
            e >> PAYLOAD
        } else {
            self.trie.fallback
        }
    }

    /// Bytes of heap the table occupies.
    pub fn heap_bytes(&self) -> usize {
        self.trie.heap_bytes()
    }

    /// Number of merged ranges the table answers.
    pub fn ranges(&self) -> usize {
        self.ranges
    }
}

/// The value a naive longest-prefix scan gives: the reference the tables are tested against.
#[cfg(test)]
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
