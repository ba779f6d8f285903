//! The terminal form: plain text tables, no colour, every line at most [`WIDTH`] columns.

use std::fmt::Write as _;

use super::summary::Report;

/// The widest line the terminal form writes.
pub const WIDTH: usize = 100;

/// Column alignment.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// `1234567` as `1,234,567`.
pub(crate) fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units: `512 B`, `1.5 kB`, `20.0 MB`, `3.21 GB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// `s` cut to `w` characters, with `…` when cut.
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Words of `text` wrapped to [`WIDTH`], every line starting with `indent`.
fn wrap(out: &mut String, indent: &str, text: &str) {
    // A unit stays with its number (`0.9 %`).
    let mut words: Vec<String> = Vec::new();
    for w in text.split_whitespace() {
        match words.last_mut() {
            Some(prev) if w.starts_with('%') => {
                prev.push(' ');
                prev.push_str(w);
            }
            _ => words.push(w.to_owned()),
        }
    }
    let mut line = String::from(indent);
    for word in &words {
        let word = fit(word, WIDTH - indent.len());
        if line.len() > indent.len() && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if line.len() > indent.len() {
        out.push_str(&line);
        out.push('\n');
    }
}

/// A table indented by two spaces: `cols` are (header, alignment, width).
fn table(out: &mut String, cols: &[(&str, Align, usize)], rows: &[Vec<String>]) {
    let mut line = |cells: Vec<String>| {
        let mut l = String::from(" ");
        for ((_, align, w), cell) in cols.iter().zip(cells) {
            let cell = fit(&cell, *w);
            let pad = w.saturating_sub(cell.chars().count());
            l.push(' ');
            match align {
                Align::Left => {
                    l.push_str(&cell);
                    l.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(&cell);
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(cols.iter().map(|(h, _, _)| (*h).to_owned()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn heading(out: &mut String, title: &str) {
    out.push('\n');
    out.push_str(&fit(title, WIDTH));
    out.push('\n');
}

/// The terminal form of `r`.
pub fn terminal(r: &Report) -> String {
    use Align::{Left, Right};
    let mut out = String::new();
    out.push_str("Residency report\n");
    wrap(&mut out, "", &format!("Chain: {}", r.chain.line()));
    let seen = match (&r.period.first, &r.period.last) {
        (Some(f), Some(l)) => format!("{f} to {l}"),
        _ => "no flows".to_owned(),
    };
    let asked = match (&r.period.since, &r.period.until) {
        (None, None) => String::new(),
        (s, u) => format!(
            " (asked: since {}, until {})",
            s.as_deref().unwrap_or("the start"),
            u.as_deref().unwrap_or("the end")
        ),
    };
    wrap(&mut out, "", &format!("Period: {seen}{asked}"));
    let mut input = format!(
        "Input:  {} lines: {} flows",
        int(r.input.lines),
        int(r.input.flows)
    );
    for (kind, n) in &r.input.special {
        let _ = write!(input, ", {} {kind}", int(*n));
    }
    if r.input.filtered_out > 0 {
        let _ = write!(input, "; {} outside the period", int(r.input.filtered_out));
    }
    if r.input.unparseable > 0 {
        let _ = write!(input, "; {} unparseable", int(r.input.unparseable));
        if let Some(p) = &r.input.first_unparseable {
            let _ = write!(input, " (first: {} line {}: {})", p.file, p.line, p.error);
        }
    }
    wrap(&mut out, "", &input);

    heading(&mut out, "Where data went");
    wrap(&mut out, "  ", &r.headline);
    let t = &r.totals;
    wrap(
        &mut out,
        "  ",
        &format!(
            "{} flows: {} allowed ({} only because of report mode), {} denied; {} ({} up, {} down).",
            int(t.flows),
            int(t.allowed),
            int(t.would_deny),
            int(t.denied),
            bytes(t.bytes),
            bytes(t.bytes_up),
            bytes(t.bytes_down)
        ),
    );

    heading(
        &mut out,
        "Flows and bytes by jurisdiction (of the address dialed)",
    );
    let rows: Vec<Vec<String>> = r
        .by_jurisdiction
        .iter()
        .map(|p| {
            vec![
                p.jurisdiction.clone(),
                p.class.clone(),
                int(p.flows),
                bytes(p.bytes),
                format!("{:.1} %", p.percent),
                int(p.denied),
                int(p.would_deny),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            ("JURISDICTION", Left, 14),
            ("CLASS", Left, 14),
            ("FLOWS", Right, 12),
            ("BYTES", Right, 11),
            ("SHARE", Right, 8),
            ("DENIED", Right, 10),
            ("WOULD DENY", Right, 10),
        ],
        &rows,
    );

    heading(&mut out, "By class");
    let rows: Vec<Vec<String>> = r
        .by_class
        .iter()
        .map(|c| {
            vec![
                c.class.clone(),
                int(c.flows),
                bytes(c.bytes),
                format!("{:.1} %", c.percent),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            ("CLASS", Left, 14),
            ("FLOWS", Right, 12),
            ("BYTES", Right, 11),
            ("SHARE", Right, 8),
        ],
        &rows,
    );

    denied(&mut out, r);
    would_deny(&mut out, r);
    over_time(&mut out, r);
    versions(&mut out, r);
    out
}

fn denied(out: &mut String, r: &Report) {
    use Align::{Left, Right};
    let d = &r.denied;
    heading(out, &format!("Denied: {} flows", int(d.flows)));
    if d.flows == 0 {
        return;
    }
    let count_rows = |v: &[super::summary::Count]| -> Vec<Vec<String>> {
        v.iter()
            .map(|c| vec![c.name.clone(), int(c.flows)])
            .collect()
    };
    table(
        out,
        &[("REASON", Left, 30), ("FLOWS", Right, 12)],
        &count_rows(&d.by_reason),
    );
    out.push('\n');
    table(
        out,
        &[("JURISDICTION", Left, 30), ("FLOWS", Right, 12)],
        &count_rows(&d.by_jurisdiction),
    );
    let approx = |e: u64| {
        if e > 0 {
            format!("±{}", int(e))
        } else {
            String::new()
        }
    };
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .top_destinations
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                h.jurisdiction.clone(),
                int(h.flows),
                approx(h.error),
            ]
        })
        .collect();
    table(
        out,
        &[
            ("TOP DENIED DESTINATIONS", Left, 52),
            ("JURISDICTION", Left, 14),
            ("FLOWS", Right, 12),
            ("", Right, 10),
        ],
        &rows,
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .clients
        .iter()
        .map(|c| vec![c.client.clone(), int(c.flows), approx(c.error)])
        .collect();
    let title = if d.clients_are == "addresses" {
        "CLIENTS THAT TRIED (addresses)"
    } else {
        "CLIENTS THAT TRIED (networks; --clients: addresses)"
    };
    table(
        out,
        &[(title, Left, 52), ("FLOWS", Right, 12), ("", Right, 10)],
        &rows,
    );
    if d.approximate {
        wrap(
            out,
            "  ",
            "More distinct names than the report keeps counters for: counts with ± are upper \
             bounds, off by at most that much.",
        );
    }
}

fn would_deny(out: &mut String, r: &Report) {
    use Align::{Left, Right};
    let w = &r.would_deny;
    heading(
        out,
        &format!(
            "Report mode: {} flows ({}) enforcement would deny",
            int(w.flows),
            bytes(w.bytes)
        ),
    );
    if w.flows == 0 {
        return;
    }
    let rows: Vec<Vec<String>> = w
        .groups
        .iter()
        .map(|g| {
            vec![
                g.host.clone(),
                g.jurisdiction.clone(),
                g.reason.clone(),
                g.rule.clone(),
                int(g.flows),
                bytes(g.bytes),
            ]
        })
        .collect();
    table(
        out,
        &[
            ("WHAT ENFORCEMENT WOULD BREAK", Left, 34),
            ("JURISDICTION", Left, 12),
            ("REASON", Left, 16),
            ("RULE", Left, 12),
            ("FLOWS", Right, 9),
            ("BYTES", Right, 9),
        ],
        &rows,
    );
}

fn over_time(out: &mut String, r: &Report) {
    use Align::{Left, Right};
    let o = &r.over_time;
    heading(
        out,
        &format!("Flows over time (per {}), by class", o.bucket),
    );
    if o.buckets.is_empty() {
        return;
    }
    // As many class columns as fit; the rest summed in a last `other` column.
    let fixed = 2 + 17 + 1 + 10 + 1 + 10;
    let col = |c: &str| c.chars().count().clamp(7, 13) + 1;
    let mut shown = 0;
    let mut used = fixed;
    for c in &o.classes {
        if used + col(c) + col("others") > WIDTH {
            break;
        }
        used += col(c);
        shown += 1;
    }
    if shown + 1 == o.classes.len() {
        shown += 1;
    }
    let mut cols: Vec<(&str, Align, usize)> = vec![
        ("START (UTC)", Left, 17),
        ("FLOWS", Right, 10),
        ("BYTES", Right, 10),
    ];
    for c in &o.classes[..shown] {
        cols.push((c.as_str(), Right, col(c) - 1));
    }
    if shown < o.classes.len() {
        cols.push(("others", Right, col("others") - 1));
    }
    let rows: Vec<Vec<String>> = o
        .buckets
        .iter()
        .map(|b| {
            let mut row = vec![
                b.start.clone(),
                int(b.flows.iter().sum()),
                bytes(b.bytes.iter().sum()),
            ];
            row.extend(b.flows[..shown].iter().map(|n| int(*n)));
            if shown < o.classes.len() {
                row.push(int(b.flows[shown..].iter().sum()));
            }
            row
        })
        .collect();
    table(out, &cols, &rows);
}

fn versions(out: &mut String, r: &Report) {
    heading(out, "Versions seen");
    let v = &r.versions;
    for (name, seen) in [
        ("Proxy", &v.proxy),
        ("Profile", &v.profile),
        ("GeoIP", &v.geoip),
        ("Data", &v.data),
    ] {
        if seen.is_empty() {
            wrap(out, "  ", &format!("{name}: none recorded"));
        }
        for s in seen {
            wrap(
                out,
                "  ",
                &format!("{name}: {} ({} lines)", s.value, int(s.lines)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_bytes_in_decimal_units() {
        assert_eq!(int(0), "0");
        assert_eq!(int(1234567), "1,234,567");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1500), "1.50 kB");
        assert_eq!(bytes(20_000_000), "20.0 MB");
    }

    #[test]
    fn long_words_and_cells_are_cut_to_the_width() {
        let mut s = String::new();
        wrap(&mut s, "  ", &"x".repeat(300));
        assert!(s.lines().all(|l| l.chars().count() <= WIDTH));
        assert_eq!(fit("abcdef", 4), "abc…");
    }
}
