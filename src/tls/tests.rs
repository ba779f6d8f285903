use super::*;

#[test]
fn wildcard_covers_one_label_only() {
    assert!(san_covers("*.app.test", "a.app.test"));
    assert!(san_covers("app.test", "app.test"));
    assert!(san_covers("*.app.test", "*.app.test"));
    assert!(!san_covers("*.app.test", "app.test"));
    assert!(!san_covers("*.app.test", "a.b.app.test"));
    assert!(!san_covers("*.app.test", ".app.test"));
    assert!(!san_covers("a.app.test", "*.app.test"));
    assert!(!san_covers("*.", "a."));
}

#[test]
fn names_are_normalised() {
    assert_eq!(normalise_name("App.Test."), "app.test");
    assert_eq!(normalise_name("*.APP.test"), "*.app.test");
}

#[test]
fn rfc3339_dates() {
    assert_eq!(crate::time::rfc3339_seconds(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        crate::time::rfc3339_seconds(951_782_400),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(
        crate::time::rfc3339_seconds(1_735_689_599),
        "2024-12-31T23:59:59Z"
    );
    assert_eq!(crate::time::rfc3339_seconds(-1), "1969-12-31T23:59:59Z");
    assert_eq!(
        crate::time::rfc3339_seconds(253_402_300_799),
        "9999-12-31T23:59:59Z"
    );
}

#[test]
fn times_round_trip() {
    for s in [0, 1, -86_400, 1_700_000_000] {
        assert_eq!(unix_seconds(system_time(s)), s);
    }
}
