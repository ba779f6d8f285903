//! The headline: one sentence saying where the bytes went, built from the [`Share`]s (the
//! footing each allowed flow went on: its `reason`, or report mode).
//!
//! The audit record names an attested flow's host but not the attesting organisation (that
//! lives in the configuration), so the sentence names the hosts.

use super::summary::{Named, Report, Share};

/// How many names a list in the sentence shows before "and N others".
const NAMES: usize = 3;

/// The headline of `r`.
pub(crate) fn sentence(r: &Report) -> String {
    if r.totals.flows == 0 {
        return "No flows were recorded in this period.".to_owned();
    }
    if r.totals.bytes == 0 {
        return format!(
            "No bytes were recorded: {} flows, {} denied.",
            r.totals.flows, r.totals.denied
        );
    }
    let parts: Vec<String> = r
        .shares
        .iter()
        .filter(|s| s.bytes > 0)
        .enumerate()
        .map(|(i, s)| {
            let p = percent_text(s.bytes, r.totals.bytes);
            let lead = if i == 0 { " of bytes" } else { "" };
            format!("{p}{lead} {}", phrase(s))
        })
        .collect();
    format!("{}.", parts.join("; "))
}

fn phrase(s: &Share) -> String {
    let places = list(&s.jurisdictions);
    let detail = list(&s.detail);
    match s.basis {
        "home" => format!("stayed in {places}"),
        "adequate" => format!("went to {places} (adequate)"),
        "attested" => format!("went to {places} under attestation (hosts {detail})"),
        "rule-allow" => format!("went to {places}, allowed by rule {detail}"),
        "internal-allowed" => "went to internal addresses opened by internal_allowed".to_owned(),
        "unknown-allowed" => {
            format!("went to addresses no source could place ({places}, unknown allowed)")
        }
        "report-mode" => {
            format!("went to {places} only because of report mode (enforcement would deny)")
        }
        "denied" => format!("were on flows denied ({places})"),
        _ => format!("went to {places} (other outcomes)"),
    }
}

/// `A`, `A and B`, `A, B and C`, `A, B, C and 2 others` (names with bytes only).
fn list(names: &[Named]) -> String {
    let names: Vec<&str> = names
        .iter()
        .filter(|n| n.bytes > 0)
        .map(|n| n.name.as_str())
        .collect();
    match names.len() {
        0 => "nowhere named".to_owned(),
        1 => names[0].to_owned(),
        n if n <= NAMES => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
        n => format!("{} and {} others", names[..NAMES].join(", "), n - NAMES),
    }
}

/// A share of bytes as the sentence spells it: one decimal, `<0.1 %` for a sliver and
/// `>99.9 %` for all but one, so a part is never shown as nothing or as everything.
pub(crate) fn percent_text(part: u64, whole: u64) -> String {
    if part == whole {
        return "100 %".to_owned();
    }
    let p = super::summary::percent(part, whole);
    if p < 0.05 {
        "<0.1 %".to_owned()
    } else if p >= 99.95 {
        ">99.9 %".to_owned()
    } else {
        format!("{p:.1} %")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slivers_and_near_totals_are_never_rounded_away() {
        assert_eq!(percent_text(1, 10_000), "<0.1 %");
        assert_eq!(percent_text(9_999, 10_000), ">99.9 %");
        assert_eq!(percent_text(992, 1000), "99.2 %");
        assert_eq!(percent_text(5, 5), "100 %");
    }

    #[test]
    fn lists_name_three_then_count_the_rest() {
        let n = |names: &[&str]| -> Vec<Named> {
            names
                .iter()
                .map(|s| Named {
                    name: (*s).into(),
                    bytes: 1,
                })
                .collect()
        };
        assert_eq!(list(&n(&["IE"])), "IE");
        assert_eq!(list(&n(&["IE", "DE"])), "IE and DE");
        assert_eq!(list(&n(&["IE", "DE", "FR"])), "IE, DE and FR");
        assert_eq!(
            list(&n(&["IE", "DE", "FR", "NL", "BE"])),
            "IE, DE, FR and 2 others"
        );
    }
}
