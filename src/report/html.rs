//! The HTML form: one self-contained page (styles inline, charts inline SVG, no script, no
//! external asset), from the `report.html` template, readable printed.

use minijinja::{Environment, context};

use super::ReportError;
use super::charts;
use super::summary::Report;
use super::terminal::{bytes, int};

/// The page template (auto-escaped: its name ends in `.html`).
const TEMPLATE: &str = include_str!("report.html");

/// The `--html` form of `r`.
pub fn html(r: &Report) -> Result<String, ReportError> {
    let charts = charts::draw(r)?;
    let mut env = Environment::new();
    env.add_filter("int", |n: u64| int(n));
    env.add_filter("bytes", |n: u64| bytes(n));
    env.add_filter("pct", |p: f64| format!("{p:.1} %"));
    env.add_template("report.html", TEMPLATE)?;
    let colors: std::collections::BTreeMap<String, String> = r
        .by_class
        .iter()
        .map(|c| {
            let RgbHex(hex) = RgbHex::of(&c.class);
            (c.class.clone(), hex)
        })
        .collect();
    let page = env.get_template("report.html")?.render(context! {
        report => minijinja::value::Serde(r),
        chain => r.chain.line(),
        charts => minijinja::value::Serde(&charts),
        colors => colors,
        version => env!("CARGO_PKG_VERSION"),
    })?;
    Ok(page)
}

/// A class colour as CSS hex.
struct RgbHex(String);

impl RgbHex {
    fn of(class: &str) -> RgbHex {
        let c = charts::class_color(class);
        RgbHex(format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2))
    }
}
