//! From a finished [`Aggregator`] to a [`Report`]: sorting, the top lists, the dense time
//! series, the headline.

use std::collections::BTreeMap;

use super::ChainStatus;
use super::aggregate::{Aggregator, Basis, Tally};
use super::headline;
use super::summary::*;
use super::topn::{Capped, Hitter, OTHER};
use super::when::{self, DAY_MS, HOUR_MS};

/// Keep hourly buckets up to this span, daily past it.
const HOURLY_SPAN_MS: i64 = 3 * DAY_MS;

impl Aggregator {
    /// The report, with what the chain verification (if any) said.
    pub fn finish(mut self, chain: ChainStatus) -> Report {
        let span = self.last_ms.unwrap_or(0) - self.first_ms.unwrap_or(0);
        if self.bucket_ms < DAY_MS && span > HOURLY_SPAN_MS {
            self.widen(DAY_MS);
        }
        build(self, chain)
    }
}

fn sorted_counts(c: Capped<u64>, top: Option<usize>) -> Vec<Count> {
    let mut v: Vec<Count> = c
        .into_vec()
        .into_iter()
        .map(|(name, flows)| Count { name, flows })
        .collect();
    v.sort_by(|a, b| b.flows.cmp(&a.flows).then_with(|| a.name.cmp(&b.name)));
    if let Some(n) = top {
        v.truncate(n);
    }
    v
}

fn seen(c: Capped<u64>) -> Vec<Seen> {
    sorted_counts(c, None)
        .into_iter()
        .map(|c| Seen {
            value: c.name,
            lines: c.flows,
        })
        .collect()
}

fn named<K: Into<String>>(v: impl IntoIterator<Item = (K, u64)>, top: usize) -> Vec<Named> {
    let mut v: Vec<Named> = v
        .into_iter()
        .map(|(k, bytes)| Named {
            name: k.into(),
            bytes,
        })
        .collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    v.truncate(top);
    v
}

/// Build the report from a finished aggregator.
fn build(a: Aggregator, chain: ChainStatus) -> Report {
    let top = a.opts.top.max(1);
    let bytes = a.total.bytes();
    let shares: Vec<Share> = {
        let mut basis = a.basis;
        Basis::ALL
            .iter()
            .filter_map(|b| basis.remove(b).map(|t| (*b, t)))
            .map(|(b, t)| Share {
                basis: b.as_str(),
                flows: t.tally.flows,
                bytes: t.tally.bytes(),
                percent: percent(t.tally.bytes(), bytes),
                jurisdictions: named(t.places.into_vec(), usize::MAX),
                detail: named(t.detail.top(top).into_iter().map(|h| (h.key, h.value)), top),
            })
            .collect()
    };
    let mut by_jurisdiction: Vec<PlaceRow> = a
        .places
        .into_vec()
        .into_iter()
        .map(|(key, p)| {
            let (j, c) = key.split_once('\u{0}').unwrap_or((OTHER, OTHER));
            PlaceRow {
                jurisdiction: j.to_owned(),
                class: c.to_owned(),
                flows: p.tally.flows,
                bytes_up: p.tally.up,
                bytes_down: p.tally.down,
                bytes: p.tally.bytes(),
                percent: percent(p.tally.bytes(), bytes),
                denied: p.denied,
                would_deny: p.would_deny,
            }
        })
        .collect();
    by_jurisdiction.sort_by(|x, y| {
        (y.bytes, y.flows)
            .cmp(&(x.bytes, x.flows))
            .then_with(|| (&x.jurisdiction, &x.class).cmp(&(&y.jurisdiction, &y.class)))
    });
    let mut by_class: Vec<ClassRow> = a
        .classes
        .into_vec()
        .into_iter()
        .map(|(class, t)| ClassRow {
            class,
            flows: t.flows,
            bytes: t.bytes(),
            percent: percent(t.bytes(), bytes),
        })
        .collect();
    by_class.sort_by(|x, y| {
        (y.bytes, y.flows)
            .cmp(&(x.bytes, x.flows))
            .then_with(|| x.class.cmp(&y.class))
    });
    let approximate = a.denied_hosts.approximate() || a.denied_clients.approximate();
    let denied = Denied {
        flows: a.denied,
        by_reason: sorted_counts(a.denied_reasons, None),
        by_jurisdiction: sorted_counts(a.denied_places, None),
        top_destinations: a
            .denied_hosts
            .top(top)
            .into_iter()
            .map(|h: Hitter<String, String>| DeniedHost {
                host: h.key,
                jurisdiction: h.value,
                flows: h.count,
                error: h.error,
            })
            .collect(),
        clients: a
            .denied_clients
            .top(top)
            .into_iter()
            .map(|h| Client {
                client: h.key,
                flows: h.count,
                error: h.error,
            })
            .collect(),
        clients_are: if a.opts.clients {
            "addresses"
        } else {
            "networks"
        },
        approximate,
    };
    let would_deny = WouldDeny {
        flows: a.would_deny.flows,
        bytes: a.would_deny.bytes(),
        approximate: a.would.approximate(),
        groups: a
            .would
            .top(top)
            .into_iter()
            .map(|h| WouldGroup {
                host: h.key.host,
                jurisdiction: h.key.jurisdiction,
                reason: h.key.reason,
                rule: h.key.rule,
                flows: h.count,
                bytes: h.value,
                error: h.error,
            })
            .collect(),
    };
    let over_time = over_time(a.bucket_ms, a.buckets, &by_class);
    let mut report = Report {
        schema: SCHEMA,
        chain,
        period: Period {
            since: a.opts.since.map(|b| b.text),
            until: a.opts.until.map(|b| b.text),
            first: a.first_ms.map(|m| when::format_millis(m, true)),
            last: a.last_ms.map(|m| when::format_millis(m, true)),
        },
        input: Input {
            lines: a.lines,
            flows: a.total.flows,
            special: a.special,
            filtered_out: a.filtered_out,
            blank: a.blank,
            unparseable: a.unparseable,
            first_unparseable: a.first_unparseable,
        },
        headline: String::new(),
        totals: Totals {
            flows: a.total.flows,
            allowed: a.allowed,
            denied: a.denied,
            would_deny: a.would_deny.flows,
            bytes_up: a.total.up,
            bytes_down: a.total.down,
            bytes,
        },
        shares,
        by_jurisdiction,
        by_class,
        denied,
        would_deny,
        over_time,
        versions: Versions {
            proxy: seen(a.proxy_versions),
            profile: seen(a.profiles),
            geoip: seen(a.db_versions),
            data: seen(a.data_versions),
        },
    };
    report.headline = headline::sentence(&report);
    report
}

fn over_time(
    width: i64,
    buckets: BTreeMap<i64, BTreeMap<String, Tally>>,
    by_class: &[ClassRow],
) -> OverTime {
    let classes: Vec<String> = by_class.iter().map(|c| c.class.clone()).collect();
    let bucket = match width {
        HOUR_MS => "hour".to_owned(),
        DAY_MS => "day".to_owned(),
        w => format!("{} days", w / DAY_MS),
    };
    let mut out = Vec::new();
    if let (Some((&first, _)), Some((&last, _))) =
        (buckets.first_key_value(), buckets.last_key_value())
    {
        let mut t = first;
        while t <= last {
            let row = buckets.get(&t);
            let pick = |f: &dyn Fn(&Tally) -> u64| -> Vec<u64> {
                classes
                    .iter()
                    .map(|c| row.and_then(|r| r.get(c)).map_or(0, f))
                    .collect()
            };
            out.push(Bucket {
                start: when::format_millis(t, false),
                flows: pick(&|t| t.flows),
                bytes: pick(&|t| t.bytes()),
            });
            t += width;
        }
    }
    OverTime {
        bucket,
        bucket_seconds: width / 1000,
        classes,
        buckets: out,
    }
}
