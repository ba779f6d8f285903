//! Where a cloud range's answer comes from: provider and region, as a small id.
//!
//! A cloud prefix's packed table value holds a [`CloudOrigin`] id in place of a jurisdiction
//! id (see `pack` in `lookup`): the origin names the provider, its region string and the
//! jurisdiction the region table gave it. Ids are interned process-wide, append-only, so a
//! [`Hit`](super::Hit) can name its source (`cloud:aws:eu-west-2`) without the table, in the
//! audit record as in `lookup` and `explain`, and decoding the jurisdiction of a cloud answer
//! is one read of a slot that never changes once set.
//!
//! The id space is bounded ([`CAPACITY`]); a full registry hands out [`CloudOrigin::OVERFLOW`],
//! whose jurisdiction is `unknown`, so policy fails closed rather than guessing.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::Jurisdiction;

/// Number of origin ids (the packed value has room for 2^15; the embedded data uses about 320).
pub const CAPACITY: usize = 4096;

/// One interned origin.
#[derive(Debug)]
struct Info {
    /// `cloud:aws:eu-west-2`, or `cloud:cloudflare` for a provider range without a region.
    source: &'static str,
    provider: &'static str,
    region: Option<&'static str>,
    jurisdiction: Jurisdiction,
}

static SLOTS: [OnceLock<Info>; CAPACITY] = [const { OnceLock::new() }; CAPACITY];

type Key = (String, Option<String>, Jurisdiction);

fn index() -> &'static Mutex<(HashMap<Key, u16>, usize)> {
    static INDEX: OnceLock<Mutex<(HashMap<Key, u16>, usize)>> = OnceLock::new();
    INDEX.get_or_init(|| Mutex::new((HashMap::new(), 1)))
}

/// A cloud range's provider, region and jurisdiction, as an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloudOrigin(u16);

impl CloudOrigin {
    /// The origin of a range whose id could not be given (registry full): `unknown`.
    pub const OVERFLOW: CloudOrigin = CloudOrigin(0);

    /// The id for `provider` / `region` placed in `jurisdiction` (the same id every time).
    pub fn intern(provider: &str, region: Option<&str>, jurisdiction: Jurisdiction) -> CloudOrigin {
        let key = (
            provider.to_string(),
            region.map(str::to_string),
            jurisdiction,
        );
        let mut guard = match index().lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (map, next) = &mut *guard;
        if let Some(&id) = map.get(&key) {
            return CloudOrigin(id);
        }
        let id = *next;
        let Some(slot) = SLOTS.get(id) else {
            return CloudOrigin::OVERFLOW;
        };
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        let source = match region {
            Some(r) => leak(&format!("cloud:{provider}:{r}")),
            None => leak(&format!("cloud:{provider}")),
        };
        let _ = slot.set(Info {
            source,
            provider: leak(provider),
            region: region.map(leak),
            jurisdiction,
        });
        *next += 1;
        map.insert(key, id as u16);
        CloudOrigin(id as u16)
    }

    /// The id as stored in a packed value.
    #[inline]
    pub(super) fn raw(self) -> u16 {
        self.0
    }

    /// The origin a packed value names.
    #[inline]
    pub(super) fn from_raw(raw: u16) -> CloudOrigin {
        CloudOrigin(raw)
    }

    #[inline]
    fn info(self) -> Option<&'static Info> {
        SLOTS.get(usize::from(self.0)).and_then(OnceLock::get)
    }

    /// The jurisdiction the region table gave this origin (`unknown` for an unset id).
    #[inline]
    pub fn jurisdiction(self) -> Jurisdiction {
        self.info()
            .map_or(Jurisdiction::UNKNOWN, |i| i.jurisdiction)
    }

    /// `cloud:aws:eu-west-2`, `cloud:cloudflare`; `cloud` for an unset id.
    pub fn source_name(self) -> &'static str {
        self.info().map_or("cloud", |i| i.source)
    }

    /// The provider (`aws`, `azure`, `gcp`, `oracle`, `digitalocean`, `cloudflare`).
    pub fn provider(self) -> &'static str {
        self.info().map_or("unknown", |i| i.provider)
    }

    /// The provider's region string, if the provider gave the range one.
    pub fn region(self) -> Option<&'static str> {
        self.info().and_then(|i| i.region)
    }
}
