//! Minimal MaxMind DB (MMDB v2.0) writer for tests. Depends on `std` only so
//! it can be `#[path]`-included from unit tests and integration tests alike.
//!
//! File layout (https://maxmind.github.io/MaxMind-DB/):
//! `[search tree][16 zero bytes][data section][\xAB\xCD\xEFMaxMind.com][metadata map]`
//!
//! Simplifications: no pointers in the data section (identical values are
//! written once and shared by the tree instead), and in IPv6 databases IPv4
//! networks live only at `::a.b.c.d/(96+len)`; the usual aliases
//! (`::ffff:0:0/96`, `2002::/16`) are deliberately NOT created.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;

/// A value in the data section.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Map(Vec<(String, Value)>),
    Str(String),
    U32(u32),
    U64(u64),
    Bool(bool),
    Double(f64),
    Array(Vec<Value>),
}

// Data-section type numbers. 1..=7 fit in the control byte; 8.. are "extended"
// (control byte type 0, the next byte holds `type - 7`).
const TYPE_STRING: u8 = 2;
const TYPE_DOUBLE: u8 = 3;
const TYPE_UINT16: u8 = 5;
const TYPE_UINT32: u8 = 6;
const TYPE_MAP: u8 = 7;
const TYPE_UINT64: u8 = 9;
const TYPE_ARRAY: u8 = 11;
const TYPE_BOOL: u8 = 14;

const DATA_SEPARATOR: [u8; 16] = [0; 16];
const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// Largest payload size the control-byte size encoding can express.
const MAX_SIZE: usize = 65_821 + 0xFF_FFFF;

/// Writes a control byte (plus extended-type and size bytes) for `type_num`.
fn write_ctrl(out: &mut Vec<u8>, type_num: u8, size: usize) {
    assert!(
        size <= MAX_SIZE,
        "mmdb: payload of {size} bytes is too large"
    );
    // Sizes >= 29 spill into 1-3 big-endian bytes after the type byte(s).
    let (low5, extra, extra_len) = if size < 29 {
        (size as u8, 0, 0)
    } else if size < 285 {
        (29, size - 29, 1)
    } else if size < 65_821 {
        (30, size - 285, 2)
    } else {
        (31, size - 65_821, 3)
    };
    if type_num <= 7 {
        out.push((type_num << 5) | low5);
    } else {
        out.push(low5);
        out.push(type_num - 7);
    }
    let extra = (extra as u32).to_be_bytes();
    out.extend_from_slice(&extra[4 - extra_len..]);
}

/// Unsigned integer with leading zero bytes stripped (zero has size 0).
fn write_uint(out: &mut Vec<u8>, type_num: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    write_ctrl(out, type_num, bytes.len() - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_ctrl(out, TYPE_STRING, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Map(pairs) => {
            write_ctrl(out, TYPE_MAP, pairs.len());
            for (key, val) in pairs {
                write_str(out, key);
                encode_value(out, val);
            }
        }
        Value::Str(s) => write_str(out, s),
        Value::U32(v) => write_uint(out, TYPE_UINT32, u64::from(*v)),
        Value::U64(v) => write_uint(out, TYPE_UINT64, *v),
        // Booleans carry their value in the size field and have no payload.
        Value::Bool(b) => write_ctrl(out, TYPE_BOOL, usize::from(*b)),
        Value::Double(d) => {
            write_ctrl(out, TYPE_DOUBLE, 8);
            out.extend_from_slice(&d.to_be_bytes());
        }
        Value::Array(items) => {
            write_ctrl(out, TYPE_ARRAY, items.len());
            for item in items {
                encode_value(out, item);
            }
        }
    }
}

/// One search-tree record while building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rec {
    /// No data ("empty" record, written as `node_count`).
    Empty,
    /// Index into `MmdbBuilder::values`.
    Data(usize),
    /// Index into `MmdbBuilder::nodes` (arena id, renumbered on build).
    Node(usize),
}

/// Builds an in-memory MMDB file.
#[derive(Debug, Clone)]
pub struct MmdbBuilder {
    ip_version: u16,
    database_type: String,
    record_size: u16,
    build_epoch: u64,
    /// Arena of nodes; node 0 is always the root. Replaced subtrees may leave
    /// unreachable nodes behind, which `build` skips.
    nodes: Vec<[Rec; 2]>,
    values: Vec<Value>,
}

impl MmdbBuilder {
    /// ip_version 6 (IPv4 data is placed in the ::/96 subtree, as MaxMind does) or 4.
    pub fn new(ip_version: u16, database_type: &str) -> Self {
        assert!(
            ip_version == 4 || ip_version == 6,
            "mmdb: ip_version must be 4 or 6, got {ip_version}"
        );
        Self {
            ip_version,
            database_type: database_type.to_string(),
            record_size: 28,
            build_epoch: 1_780_000_000,
            nodes: vec![[Rec::Empty, Rec::Empty]],
            values: Vec::new(),
        }
    }

    /// Record size in bits: 24, 28 or 32 (default 28).
    pub fn record_size(mut self, bits: u16) -> Self {
        assert!(
            matches!(bits, 24 | 28 | 32),
            "mmdb: record size must be 24, 28 or 32, got {bits}"
        );
        self.record_size = bits;
        self
    }

    /// Metadata `build_epoch` (default 1_780_000_000).
    pub fn build_epoch(mut self, secs: u64) -> Self {
        self.build_epoch = secs;
        self
    }

    /// Insert a network: `addr` is the network address as u128 (IPv4 as the plain u32 value widened),
    /// `v4` says whether addr/prefix_len are IPv4 (prefix_len <= 32) or IPv6 (<= 128).
    /// Later inserts of more specific prefixes override less specific ones in their range.
    ///
    /// Semantics are "last insert wins over its whole range": a later, less
    /// specific insert replaces everything inside it. Host bits of `addr` are
    /// masked off. A /0 becomes two /1 records (the root must be a node).
    pub fn insert(&mut self, addr: u128, prefix_len: u8, v4: bool, value: Value) {
        let (addr, prefix_len) = if v4 {
            assert!(prefix_len <= 32, "mmdb: IPv4 prefix /{prefix_len} > 32");
            assert!(
                addr <= u128::from(u32::MAX),
                "mmdb: IPv4 address {addr:#x} does not fit in 32 bits"
            );
            if self.ip_version == 6 {
                // IPv4 lives in the ::/96 subtree (no aliases, see module docs).
                (addr, u32::from(prefix_len) + 96)
            } else {
                (addr, u32::from(prefix_len))
            }
        } else {
            assert!(
                self.ip_version == 6,
                "mmdb: cannot insert an IPv6 network into an IPv4 database"
            );
            assert!(prefix_len <= 128, "mmdb: IPv6 prefix /{prefix_len} > 128");
            (addr, u32::from(prefix_len))
        };
        let bits = self.bit_count();
        let bit_at = |depth: u32| ((addr >> (bits - 1 - depth)) & 1) as usize;

        let value_idx = self.values.len();
        self.values.push(value);
        let data = Rec::Data(value_idx);

        if prefix_len == 0 {
            self.nodes[0] = [data, data];
            return;
        }
        let mut node = 0;
        for depth in 0..prefix_len - 1 {
            let bit = bit_at(depth);
            node = match self.nodes[node][bit] {
                Rec::Node(child) => child,
                leaf => {
                    // Split a leaf: both halves keep the old record for now.
                    let child = self.nodes.len();
                    self.nodes.push([leaf, leaf]);
                    self.nodes[node][bit] = Rec::Node(child);
                    child
                }
            };
        }
        self.nodes[node][bit_at(prefix_len - 1)] = data;
    }

    /// Convenience: parses "1.2.3.0/24" or "2001:db8::/32" with std parsing, panics on bad input (tests only).
    pub fn insert_str(&mut self, cidr: &str, value: Value) {
        let (ip, len) = cidr
            .split_once('/')
            .unwrap_or_else(|| panic!("mmdb: {cidr:?} is not in addr/len form"));
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|e| panic!("mmdb: bad address in {cidr:?}: {e}"));
        let len: u8 = len
            .parse()
            .unwrap_or_else(|e| panic!("mmdb: bad prefix length in {cidr:?}: {e}"));
        match ip {
            IpAddr::V4(v4) => self.insert(u128::from(u32::from(v4)), len, true, value),
            IpAddr::V6(v6) => self.insert(u128::from(v6), len, false, value),
        }
    }

    /// Serializes the database.
    pub fn build(&self) -> Vec<u8> {
        // Number reachable nodes breadth-first from the root (root = 0).
        let mut order = vec![0usize];
        let mut new_id: HashMap<usize, usize> = HashMap::from([(0, 0)]);
        let mut next = 0;
        while next < order.len() {
            for rec in self.nodes[order[next]] {
                if let Rec::Node(child) = rec {
                    new_id.insert(child, order.len());
                    order.push(child);
                }
            }
            next += 1;
        }
        let node_count = order.len();

        // Data section: encode each referenced value once; identical encodings
        // share one offset.
        let mut data = Vec::new();
        let mut offset_of_value: HashMap<usize, usize> = HashMap::new();
        let mut offset_of_bytes: HashMap<Vec<u8>, usize> = HashMap::new();
        for &arena_id in &order {
            for rec in self.nodes[arena_id] {
                if let Rec::Data(idx) = rec {
                    if offset_of_value.contains_key(&idx) {
                        continue;
                    }
                    let mut encoded = Vec::new();
                    encode_value(&mut encoded, &self.values[idx]);
                    let offset = *offset_of_bytes.entry(encoded).or_insert_with_key(|bytes| {
                        let at = data.len();
                        data.extend_from_slice(bytes);
                        at
                    });
                    offset_of_value.insert(idx, offset);
                }
            }
        }

        // Search tree.
        let max_record = (1u64 << self.record_size) - 1;
        let resolve = |rec: Rec| -> u32 {
            let value = match rec {
                Rec::Empty => node_count as u64,
                Rec::Node(arena_id) => new_id[&arena_id] as u64,
                Rec::Data(idx) => {
                    (node_count + DATA_SEPARATOR.len() + offset_of_value[&idx]) as u64
                }
            };
            assert!(
                value <= max_record,
                "mmdb: record value {value} does not fit in {} bits",
                self.record_size
            );
            value as u32
        };
        let node_bytes = usize::from(self.record_size) / 4;
        let mut out = Vec::with_capacity(node_count * node_bytes + 16 + data.len() + 512);
        for &arena_id in &order {
            let [left, right] = self.nodes[arena_id].map(resolve);
            let (l, r) = (left.to_be_bytes(), right.to_be_bytes());
            match self.record_size {
                24 => {
                    out.extend_from_slice(&l[1..]);
                    out.extend_from_slice(&r[1..]);
                }
                28 => {
                    // [left low 24][left high 4 | right high 4][right low 24]
                    out.extend_from_slice(&l[1..]);
                    out.push((l[0] << 4) | r[0]);
                    out.extend_from_slice(&r[1..]);
                }
                _ => {
                    out.extend_from_slice(&l);
                    out.extend_from_slice(&r);
                }
            }
        }
        out.extend_from_slice(&DATA_SEPARATOR);
        out.extend_from_slice(&data);

        out.extend_from_slice(METADATA_MARKER);
        self.write_metadata(&mut out, node_count);
        out
    }

    fn bit_count(&self) -> u32 {
        if self.ip_version == 6 { 128 } else { 32 }
    }

    /// Metadata map; the uint16 fields use the uint16 type as the spec says.
    fn write_metadata(&self, out: &mut Vec<u8>, node_count: usize) {
        assert!(node_count <= u32::MAX as usize, "mmdb: too many nodes");
        write_ctrl(out, TYPE_MAP, 9);
        write_str(out, "node_count");
        write_uint(out, TYPE_UINT32, node_count as u64);
        write_str(out, "record_size");
        write_uint(out, TYPE_UINT16, u64::from(self.record_size));
        write_str(out, "ip_version");
        write_uint(out, TYPE_UINT16, u64::from(self.ip_version));
        write_str(out, "database_type");
        write_str(out, &self.database_type);
        write_str(out, "languages");
        encode_value(out, &Value::Array(vec![Value::Str("en".into())]));
        write_str(out, "binary_format_major_version");
        write_uint(out, TYPE_UINT16, 2);
        write_str(out, "binary_format_minor_version");
        write_uint(out, TYPE_UINT16, 0);
        write_str(out, "build_epoch");
        write_uint(out, TYPE_UINT64, self.build_epoch);
        write_str(out, "description");
        encode_value(out, &map(vec![("en", Value::Str("test database".into()))]));
    }
}

/// Builds a `Value::Map` from `&str` keys.
fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn iso_map(iso: &str) -> Value {
    map(vec![("iso_code", Value::Str(iso.into()))])
}

/// `{"country": {"iso_code", "names": {"en"}}, "registered_country": {"iso_code"}}` (GeoIP2 schema).
pub fn maxmind_country(iso: &str) -> Value {
    map(vec![
        (
            "country",
            map(vec![
                ("iso_code", Value::Str(iso.into())),
                ("names", map(vec![("en", Value::Str(iso.into()))])),
            ]),
        ),
        ("registered_country", iso_map(iso)),
    ])
}

/// `{"registered_country": {"iso_code": iso}}` (no "country" key).
pub fn maxmind_registered_only(iso: &str) -> Value {
    map(vec![("registered_country", iso_map(iso))])
}

/// `{"country_code": iso}` (ip-location-db schema).
pub fn flat_country(iso: &str) -> Value {
    map(vec![("country_code", Value::Str(iso.into()))])
}

/// `{"asn": 64500, "org": "x"}`: matches neither country schema.
pub fn neither_schema() -> Value {
    map(vec![
        ("asn", Value::U32(64500)),
        ("org", Value::Str("x".into())),
    ])
}
