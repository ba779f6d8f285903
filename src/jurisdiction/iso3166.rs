//! ISO 3166-1 alpha-2 country codes, as data.
//!
//! Every jurisdiction key in the proxy (adequacy profiles, the cloud-region tables, GeoIP
//! answers) is an ISO 3166-1 alpha-2 code. Loaders look codes up with `Jurisdiction::from_code`
//! (a binary search of [`ALPHA2`]), which rejects typos such as
//! `UK` (the ISO code for the United Kingdom is `GB`) or `EL` (the EU protocol code for
//! Greece, whose ISO code is `GR`) before a profile can silently fail to match.
//!
//! # Source
//!
//! The 249 officially assigned codes of the ISO 3166 Maintenance Agency's online browsing
//! platform (<https://www.iso.org/obp/ui/#search/code/>), cross-checked on 2026-11-23 against
//! two independent copies: Debian `iso-codes` 4.15.0 (`iso_3166-1.json`) and the IANA tz
//! database 2025b `iso3166.tab` (current as of ISO/TC 46 N1108, 2023-04-05); the two agree
//! exactly. Re-check against the ISO platform when ISO announces a change to ISO 3166-1.
//!
//! # Why `XK` is included
//!
//! `XK` is not officially assigned: ISO 3166-1 reserves `XA`..`XZ` as user-assigned codes.
//! Kosovo has no official code; the European Commission uses `XK`, and MaxMind, DB-IP and
//! other GeoIP vendors return `XK` for it. Without it, an address in Kosovo would look like a
//! malformed answer rather than a real (not-adequate by default) country. No other
//! user-assigned code is accepted.

/// All officially assigned ISO 3166-1 alpha-2 codes (249), sorted, plus "XK" (Kosovo,
/// user-assigned code used by GeoIP vendors).
#[rustfmt::skip]
pub const ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ",
    "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ",
    "DE", "DJ", "DK", "DM", "DO", "DZ",
    "EC", "EE", "EG", "EH", "ER", "ES", "ET",
    "FI", "FJ", "FK", "FM", "FO", "FR",
    "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY",
    "HK", "HM", "HN", "HR", "HT", "HU",
    "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT",
    "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ",
    "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY",
    "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ",
    "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM",
    "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY",
    "QA",
    "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ",
    "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ",
    "UA", "UG", "UM", "US", "UY", "UZ",
    "VA", "VC", "VE", "VG", "VI", "VN", "VU",
    "WF", "WS",
    "XK",
    "YE", "YT",
    "ZA", "ZM", "ZW",
];

/// Is `code` (upper-case) a known code? (For the tests of the list itself.)
#[cfg(test)]
///
/// Matching is exact: callers normalise case first, so `"gb"` is not known.
pub fn is_known(code: &str) -> bool {
    ALPHA2.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted() {
        for pair in ALPHA2.windows(2) {
            assert!(
                pair[0] < pair[1],
                "not strictly sorted: {} then {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ALPHA2 {
            assert!(seen.insert(*code), "duplicate code {code}");
        }
    }

    #[test]
    fn has_249_official_codes_plus_xk() {
        assert_eq!(ALPHA2.len(), 250);
    }

    #[test]
    fn every_code_is_two_upper_case_ascii_letters() {
        for code in ALPHA2 {
            assert_eq!(code.len(), 2, "{code:?}");
            assert!(code.bytes().all(|b| b.is_ascii_uppercase()), "{code:?}");
        }
    }

    #[test]
    fn known_codes() {
        for code in ["GB", "US", "FR", "XK", "AD", "ZW", "GR", "AX"] {
            assert!(is_known(code), "{code} should be known");
        }
    }

    #[test]
    fn common_mistakes_are_not_codes() {
        for code in ["UK", "EL", "EU", "gb", "", "G", "GBR"] {
            assert!(!is_known(code), "{code:?} should not be known");
        }
    }
}
