//! Steps 2 to 5 and 8 of the table's compilation (see [`super`]): the ranges coded into a
//! trie's nodes, blocks and dictionary, and every entry of the result checked before a lookup
//! reads it unchecked.

use std::collections::HashMap;

use super::*;

/// One range being compiled: where it starts, the entry that answers it (a leaf, or for IPv6 a
/// `FINE` entry) and that entry's id in the dictionary.
#[derive(Debug, Clone, Copy)]
pub(super) struct Coded {
    pub(super) start: u64,
    pub(super) entry: u32,
    pub(super) id: u32,
}

/// Builds one [`Trie`]'s nodes and blocks.
pub(super) struct TrieBuilder {
    pub(super) nodes: Vec<u32>,
    blocks: Vec<u16>,
    /// Nodes above the entry being built.
    level: u32,
    /// The node step from which strides grow to cut the tail ([`TAIL_STEP`]; `u32::MAX`: never).
    tail_step: u32,
}

/// The most ranges that start inside one child of `inner`'s span when children cover
/// `child_span` bits each.
fn densest_child(base: u64, child_span: u32, inner: &[Coded]) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut prev = None;
    for c in inner {
        let child = (c.start - base) >> child_span;
        run = if prev == Some(child) { run + 1 } else { 1 };
        prev = Some(child);
        best = best.max(run);
    }
    best
}

fn ceil_log2(x: usize) -> u32 {
    usize::BITS - x.saturating_sub(1).leading_zeros()
}

impl TrieBuilder {
    /// The entry for the span of `span` bits starting at `base`: its first range is `first`,
    /// its other ranges start at `inner` (strictly inside the span, sorted).
    pub(super) fn entry(&mut self, base: u64, span: u32, first: Coded, inner: &[Coded]) -> u32 {
        if inner.is_empty() {
            return first.entry;
        }
        // Bits of resolution the boundaries need below the span's prefix.
        let finest = inner
            .iter()
            .map(|c| (c.start - base).trailing_zeros())
            .min()
            .unwrap_or(0);
        let need = span - finest.min(span);
        let ids_fit = first.id < MAX_IDS && inner.iter().all(|c| c.id < MAX_IDS);
        if inner.len() <= BLOCK_KEYS && need <= 16 && ids_fit {
            let off = self.blocks.len();
            let shift = 64 - span;
            for c in inner {
                self.blocks
                    .push((((c.start - base) << shift) >> 48) as u16 ^ 0x8000);
            }
            self.blocks.push(first.id as u16);
            self.blocks.extend(inner.iter().map(|c| c.id as u16));
            assert!(off < 1 << 22, "compiled table too large");
            return (off as u32) << BLOCK_OFFSET
                | ((inner.len() - 1) as u32) << PAYLOAD
                | BLOCK << TAG_SHIFT;
        }
        let s = if inner.len() > BLOCK_KEYS {
            ceil_log2(inner.len().div_ceil(TARGET)).clamp(1, MAX_STRIDE)
        } else {
            need.saturating_sub(16)
                .clamp(1, RESOLUTION_STRIDE.min(ceil_log2(inner.len() + 1)))
        }
        .min(span);
        let mut s = s;
        if self.level + 1 >= self.tail_step && inner.len() > BLOCK_KEYS {
            while s < MAX_STRIDE.min(span)
                && (2usize << s) * TAIL_RANGES_PER_ENTRY <= inner.len()
                && densest_child(base, span - s, inner) > BLOCK_KEYS
            {
                s += 1;
            }
        }
        self.node(base, span, s, first, inner)
    }

    /// A node of stride `s` for the span (see [`TrieBuilder::entry`]).
    fn node(&mut self, base: u64, span: u32, s: u32, first: Coded, inner: &[Coded]) -> u32 {
        let off = self.nodes.len();
        self.nodes.resize(off + (1 << s), 0);
        let child_span = span - s;
        let mut cur = first;
        let mut i = 0;
        self.level += 1;
        for c in 0..1u64 << s {
            let child = base + (c << child_span);
            let last = child + ((1u64 << child_span) - 1);
            if let Some(r) = inner.get(i)
                && r.start == child
            {
                cur = *r;
                i += 1;
            }
            let j = i + inner[i..].partition_point(|r| r.start <= last);
            let e = self.entry(child, child_span, cur, &inner[i..j]);
            if let Some(r) = inner[i..j].last() {
                cur = *r;
            }
            self.nodes[off + c as usize] = e;
            i = j;
        }
        self.level -= 1;
        assert!(off < 1 << 26, "compiled table too large");
        (off as u32) << PAYLOAD | s
    }

    /// A builder whose first `reserved` node slots are kept for the caller (the IPv6 low-half
    /// tries' first entries).
    pub(super) fn new(reserved: usize, tail_step: u32) -> Self {
        TrieBuilder {
            nodes: vec![0; reserved],
            // Entry 0 (all bits clear but the tag) names this one-key block, whose ids are
            // both 0: the block a branch-free resolve searches in place of a non-block.
            blocks: vec![0x8000, 0, 0],
            level: 0,
            tail_step,
        }
    }

    /// Compile the root over keys of `K` and finish the trie.
    pub(super) fn finish<K: Key, const ROOT_LEN: usize>(
        mut self,
        coded: &[Coded],
        dict: Vec<u32>,
        fallback: u32,
    ) -> Trie<ROOT_LEN> {
        debug_assert_eq!(ROOT_LEN, K::ROOT_LEN);
        let span = K::BITS - K::ROOT_BITS;
        let mut root = Box::new([fallback << PAYLOAD; ROOT_LEN]);
        // `coded` starts at 0 (merged ranges cover the whole family).
        if let Some((&first, inner)) = coded.split_first() {
            let mut cur = first;
            let mut i = 0;
            for (c, slot) in root.iter_mut().enumerate() {
                let child = (c as u64) << span;
                let last = child + ((1u64 << span) - 1);
                if let Some(r) = inner.get(i)
                    && r.start == child
                {
                    cur = *r;
                    i += 1;
                }
                let j = i + inner[i..].partition_point(|r| r.start <= last);
                *slot = self.entry(child, span, cur, &inner[i..j]);
                if let Some(r) = inner[i..j].last() {
                    cur = *r;
                }
                i = j;
            }
        }
        self.blocks.extend([0u16; BLOCK_KEYS]);
        let trie = Trie {
            root,
            nodes: self.nodes.into_boxed_slice(),
            blocks: self.blocks.into_boxed_slice(),
            dict: dict.into_boxed_slice(),
            fallback,
        };
        trie.validate();
        trie
    }
}

/// Ids for entries, most frequent first: the dictionary and each entry's id.
pub(super) fn dictionary(values: impl Iterator<Item = u32>) -> (Vec<u32>, HashMap<u32, u32>) {
    let mut freq: HashMap<u32, usize> = HashMap::new();
    for v in values {
        *freq.entry(v).or_default() += 1;
    }
    let mut dict: Vec<(u32, usize)> = freq.into_iter().collect();
    dict.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let ids = dict
        .iter()
        .enumerate()
        .map(|(i, d)| (d.0, i as u32))
        .collect();
    (dict.into_iter().map(|d| d.0).collect(), ids)
}

impl<const ROOT_LEN: usize> Trie<ROOT_LEN> {
    /// Check what the lookups' unchecked reads rely on, for every entry of the root, the
    /// nodes and the dictionary (reachable or not): a node's children lie inside `nodes`; a
    /// block's key window and ids lie inside `blocks` and its ids index `dict`; a FINE slot
    /// lies inside `nodes`; dictionary entries are leaves or FINE entries; entry 0 is a block.
    ///
    /// # Panics
    ///
    /// If one does not hold: a bug in the builder, never an input's fault.
    pub(super) fn validate(&self) {
        let (nodes, blocks, dict) = (self.nodes.len(), self.blocks.len(), self.dict.len());
        let valid = |e: u32| {
            let s = e & STRIDE_MASK;
            if s != 0 {
                return (e >> PAYLOAD) as usize + (1usize << s) <= nodes;
            }
            match tag(e) {
                LEAF => true,
                FINE => ((e >> PAYLOAD) as usize) < nodes,
                BLOCK => {
                    let m = ((e >> PAYLOAD) & 15) as usize + 1;
                    let off = (e >> BLOCK_OFFSET) as usize;
                    off + BLOCK_KEYS.max(2 * m + 1) <= blocks
                        && self.blocks[off + m..=off + 2 * m]
                            .iter()
                            .all(|&id| usize::from(id) < dict)
                }
                _ => false,
            }
        };
        assert!(
            self.root.iter().chain(self.nodes.iter()).all(|&e| valid(e))
                && self
                    .dict
                    .iter()
                    .all(|&e| valid(e) && e & STRIDE_MASK == 0 && tag(e) != BLOCK)
                && valid(BLOCK << TAG_SHIFT),
            "compiled table is inconsistent"
        );
    }
}
