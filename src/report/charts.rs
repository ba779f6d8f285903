//! The HTML form's charts, drawn with `plotters` on its SVG backend: one `<svg>` element per
//! chart, text as SVG `<text>` in the reader's sans-serif font (plotters is built without its
//! font-loading features: label widths are estimated, no system font is read).

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use super::summary::Report;
use super::terminal::{bytes, int};

/// Chart width in SVG units (the page scales it).
const W: u32 = 960;
/// Rows of a bar chart before the rest are summed.
const BARS: usize = 12;
/// Width of the legend beside a time chart.
const LEGEND: u32 = 150;
const FONT: &str = "sans-serif";

/// The charts of a report, each one SVG document.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Charts {
    pub(crate) bytes_by_jurisdiction: String,
    pub(crate) flows_over_time: String,
    pub(crate) bytes_over_time: String,
    pub(crate) denied_by_reason: String,
}

/// The colour of a class, the same in every chart.
pub(crate) fn class_color(class: &str) -> RGBColor {
    match class {
        "home" => RGBColor(0x1b, 0x7f, 0x3b),
        "adequate" => RGBColor(0x1f, 0x6f, 0xb4),
        "conditional" => RGBColor(0xe0, 0x8a, 0x00),
        "not-adequate" => RGBColor(0xc0, 0x1c, 0x28),
        "internal" => RGBColor(0x6b, 0x6b, 0x6b),
        "unknown" => RGBColor(0x7b, 0x3f, 0xa0),
        "none" => RGBColor(0xb0, 0xb0, 0xb0),
        _ => RGBColor(0x8c, 0x5a, 0x2b),
    }
}

fn fail<E: std::fmt::Display>(chart: &'static str) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Chart {
        chart,
        message: e.to_string(),
    }
}

/// Draw every chart of `r`.
pub(crate) fn draw(r: &Report) -> Result<Charts, ReportError> {
    Ok(Charts {
        bytes_by_jurisdiction: bytes_by_jurisdiction(r)?,
        flows_over_time: over_time(r, "flows over time", |b| &b.flows, |v| int(v as u64))?,
        bytes_over_time: over_time(r, "bytes over time", |b| &b.bytes, |v| bytes(v as u64))?,
        denied_by_reason: denied_by_reason(r)?,
    })
}

/// The SVG text made fit for inlining in HTML: no XML namespace (an HTML parser puts an
/// inline `<svg>` in it anyway), so the page names no URL at all.
fn inline(svg: String) -> String {
    svg.replacen(r#" xmlns="http://www.w3.org/2000/svg""#, "", 1)
}

/// `n` segments, one per bar or bucket (plotters' integer ranges include their end). One bar
/// still gets a range of two segments, the second left empty: a range from 0 to 0 has no width,
/// and its bar would not be drawn at all.
fn segments(
    n: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..n.saturating_sub(1).max(1)).into_segmented()
}

/// One bar of a horizontal bar chart.
struct Bar {
    label: String,
    value: f64,
    color: RGBColor,
}

fn bytes_by_jurisdiction(r: &Report) -> Result<String, ReportError> {
    let mut bars: Vec<Bar> = r
        .by_jurisdiction
        .iter()
        .filter(|p| p.bytes > 0)
        .map(|p| Bar {
            label: format!("{} ({})", p.jurisdiction, p.class),
            value: p.bytes as f64,
            color: class_color(&p.class),
        })
        .collect();
    fold_rest(&mut bars);
    hbar(
        "bytes by jurisdiction",
        &bars,
        "No bytes in this period",
        |v| bytes(v as u64),
    )
}

fn denied_by_reason(r: &Report) -> Result<String, ReportError> {
    let mut bars: Vec<Bar> = r
        .denied
        .by_reason
        .iter()
        .map(|c| Bar {
            label: c.name.clone(),
            value: c.flows as f64,
            color: RGBColor(0xc0, 0x1c, 0x28),
        })
        .collect();
    fold_rest(&mut bars);
    hbar(
        "denied by reason",
        &bars,
        "No flow was denied in this period",
        |v| int(v as u64),
    )
}

/// Keep the [`BARS`] largest bars, the rest summed in one `others` bar.
fn fold_rest(bars: &mut Vec<Bar>) {
    if bars.len() > BARS {
        let rest: f64 = bars[BARS - 1..].iter().map(|b| b.value).sum();
        let n = bars.len() - (BARS - 1);
        bars.truncate(BARS - 1);
        bars.push(Bar {
            label: format!("{n} others"),
            value: rest,
            color: RGBColor(0x8c, 0x8c, 0x8c),
        });
    }
}

/// A horizontal bar chart, largest bar on top, each bar labelled with its value.
fn hbar(
    name: &'static str,
    bars: &[Bar],
    empty: &str,
    fmt: impl Fn(f64) -> String,
) -> Result<String, ReportError> {
    let e = fail(name);
    let n = bars.len();
    let h = 70 + 30 * n.max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, h)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        if n == 0 {
            root.draw(&Text::new(
                empty.to_owned(),
                (20, 40),
                (FONT, 18).into_font(),
            ))
            .map_err(&e)?;
            root.present().map_err(&e)?;
        } else {
            let max = bars.iter().map(|b| b.value).fold(1.0, f64::max);
            let longest = bars
                .iter()
                .map(|b| b.label.chars().count())
                .max()
                .unwrap_or(4);
            let label_w = (longest as u32 * 8 + 16).clamp(60, 320);
            let mut chart = ChartBuilder::on(&root)
                .margin(12)
                .margin_right(24)
                .x_label_area_size(28)
                .y_label_area_size(label_w)
                .build_cartesian_2d(0f64..max * 1.2, segments(n))
                .map_err(&e)?;
            // Row i from the top is segment n-1-i.
            let label_of = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(i) if *i < n => bars[n - 1 - i].label.clone(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_y_mesh()
                .light_line_style(WHITE)
                .y_labels(n)
                .y_label_formatter(&label_of)
                .x_labels(6)
                .x_label_formatter(&|v| fmt(*v))
                .label_style((FONT, 14))
                .draw()
                .map_err(&e)?;
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| {
                    let y = n - 1 - i;
                    let mut r = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(y)),
                            (b.value, SegmentValue::Exact(y + 1)),
                        ],
                        b.color.filled(),
                    );
                    r.set_margin(5, 5, 0, 0);
                    r
                }))
                .map_err(&e)?;
            let style =
                TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| {
                    EmptyElement::at((b.value, SegmentValue::CenterOf(n - 1 - i)))
                        + Text::new(fmt(b.value), (6, 0), style.clone())
                }))
                .map_err(&e)?;
            root.present().map_err(&e)?;
        }
    }
    Ok(inline(svg))
}

/// Stacked bars of one series per class over the report's time buckets, with a legend.
fn over_time(
    r: &Report,
    name: &'static str,
    series: impl Fn(&super::summary::Bucket) -> &Vec<u64>,
    fmt: impl Fn(f64) -> String,
) -> Result<String, ReportError> {
    let e = fail(name);
    let o = &r.over_time;
    let n = o.buckets.len();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(&e)?;
        let totals: Vec<u64> = o.buckets.iter().map(|b| series(b).iter().sum()).collect();
        if n == 0 || totals.iter().all(|t| *t == 0) {
            root.draw(&Text::new(
                "Nothing recorded in this period".to_owned(),
                (20, 40),
                (FONT, 18).into_font(),
            ))
            .map_err(&e)?;
            root.present().map_err(&e)?;
            drop(root);
            return Ok(inline(svg));
        }
        let (plot, legend) = root.split_horizontally(W - LEGEND);
        let max = totals.iter().copied().max().unwrap_or(1).max(1) as f64;
        let label = |i: usize| -> String {
            let s = &o.buckets[i].start;
            if o.bucket == "hour" {
                // `MM-DD HH:00`
                format!(
                    "{} {}",
                    s.get(5..10).unwrap_or(s),
                    s.get(11..16).unwrap_or("")
                )
            } else {
                s.get(..10).unwrap_or(s).to_owned()
            }
        };
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d(segments(n), 0f64..max * 1.1)
            .map_err(&e)?;
        let x_label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < n => label(*i),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(n.min(8))
            .x_label_formatter(&x_label)
            .y_labels(6)
            .y_label_formatter(&|v| fmt(*v))
            .label_style((FONT, 13))
            .draw()
            .map_err(&e)?;
        let mut base = vec![0u64; n];
        for (ci, class) in o.classes.iter().enumerate() {
            let color = class_color(class);
            let rects: Vec<Rectangle<(SegmentValue<usize>, f64)>> = o
                .buckets
                .iter()
                .enumerate()
                .filter_map(|(bi, b)| {
                    let v = series(b).get(ci).copied().unwrap_or(0);
                    if v == 0 {
                        return None;
                    }
                    let y0 = base[bi];
                    base[bi] += v;
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(bi), y0 as f64),
                            (SegmentValue::Exact(bi + 1), base[bi] as f64),
                        ],
                        color.filled(),
                    );
                    r.set_margin(0, 0, 1, 1);
                    Some(r)
                })
                .collect();
            chart.draw_series(rects).map_err(&e)?;
        }
        for (i, class) in o.classes.iter().enumerate() {
            let y = 24 + 24 * i as i32;
            legend
                .draw(&Rectangle::new(
                    [(8, y - 7), (22, y + 7)],
                    class_color(class).filled(),
                ))
                .map_err(&e)?;
            legend
                .draw(&Text::new(
                    class.clone(),
                    (30, y),
                    TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(&e)?;
        }
        root.present().map_err(&e)?;
    }
    Ok(inline(svg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditAddr, AuditRecord, Intent};
    use crate::report::{Aggregator, ChainStatus, Options};

    /// The bars of `svg` in `color`: filled rectangles with both sides longer than a pixel and
    /// one longer than a legend swatch.
    fn bars(svg: &str, color: RGBColor) -> usize {
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", color.0, color.1, color.2);
        let side = |rect: &str, name: &str| {
            rect.split(&format!(" {name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        svg.split("<rect")
            .skip(1)
            .filter(|r| r.to_uppercase().contains(&fill.to_uppercase()))
            .filter(|r| {
                let (w, h) = (side(r, "width"), side(r, "height"));
                w > 1.0 && h > 1.0 && w.max(h) > 20.0
            })
            .count()
    }

    #[test]
    fn one_jurisdiction_in_one_hour_still_draws_its_bars() {
        let rec = AuditRecord {
            ts: "2026-12-02T14:06:21.000Z".into(),
            intent: Intent::Reverse,
            dialed_ip: Some([127, 0, 0, 1].into()),
            dest_addrs: vec![AuditAddr {
                ip: [127, 0, 0, 1].into(),
                jurisdiction: "internal".into(),
                class: "internal".into(),
                source: "special".into(),
                prefix: "127.0.0.0/8".into(),
            }],
            bytes_down: 100,
            ..AuditRecord::default()
        };
        let mut agg = Aggregator::new(Options::default());
        agg.line(serde_json::to_string(&rec).expect("serializes").as_bytes());
        let charts = draw(&agg.finish(ChainStatus::NotChecked)).expect("draws");
        let grey = class_color("internal");
        assert_eq!(bars(&charts.bytes_by_jurisdiction, grey), 1);
        assert_eq!(bars(&charts.flows_over_time, grey), 1);
        assert_eq!(bars(&charts.bytes_over_time, grey), 1);
    }
}
