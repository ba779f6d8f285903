//! Step 1 of the table's compilation (see [`super`]): prefixes of every source flattened into
//! disjoint ranges covering the whole family, each carrying the entry that wins it.

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
pub(super) fn family_max(width: u8) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// First and last address of `addr/len` in a family of `width` bits (host bits are ignored).
pub(super) fn prefix_bounds(addr: u128, len: u8, width: u8) -> (u128, u128) {
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
