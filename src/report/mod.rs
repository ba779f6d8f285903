//! The residency report: what the audit trail says about where data went, for the risk
//! owner, in bounded memory however long the log.
//!
//! - [`Aggregator`] (`aggregate.rs`) is fed one line at a time ([`Aggregator::line`]): flow
//!   records ([`AuditRecord`](crate::audit::AuditRecord), unknown keys such as `seq` and
//!   `chain` ignored), special lines (a `kind` key: `start`, `continue`, `checkpoint`: counted;
//!   `start` lines give the versions seen) and anything else (counted as unparseable, the first
//!   one's file and line kept). `--since`/`--until` are applied here.
//! - Memory is bounded (`topn.rs`): sets small by nature (jurisdictions, classes, reasons,
//!   versions) are exact maps with a cap and an `other` bucket; open sets (denied hosts,
//!   client networks, would-deny groups) are Space-Saving heavy-hitter tables, whose counts
//!   are exact until more distinct names than counters arrive, and upper bounds with a stated
//!   error after. The over-time series widens its buckets past a cap.
//! - [`Report`] (`summary.rs`) is the finished numbers, serialised as the `--json` form; the
//!   headline sentence is `headline.rs`.
//! - Three renderers over one [`Report`]: [`terminal`] (plain text, 100 columns), [`json`] and
//!   [`html`] (one self-contained page, inline SVG charts drawn with `plotters`, built from a
//!   `minijinja` template).

mod aggregate;
mod build;
mod charts;
mod headline;
mod html;
mod summary;
mod terminal;
mod topn;
mod when;

pub use aggregate::Aggregator;
pub use html::html;
pub use summary::{
    Bucket, ClassRow, Client, Count, Denied, DeniedHost, Input, Named, OverTime, Period, PlaceRow,
    Report, SCHEMA, Seen, Share, Totals, Versions, WouldDeny, WouldGroup,
};
pub use terminal::terminal;

use serde::Serialize;

/// What the verification of the audit chain said, shown at the top of every form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ChainStatus {
    /// The chain was not checked.
    NotChecked,
    /// Every link (and signature) checked; `text` says what was checked.
    Verified {
        /// What the verifier said.
        text: String,
    },
    /// The chain is broken; `text` names the first broken line and what is wrong.
    Broken {
        /// What the verifier said.
        text: String,
    },
}

impl ChainStatus {
    /// One line for the top of a report.
    pub fn line(&self) -> String {
        match self {
            ChainStatus::NotChecked => {
                "not checked: these numbers are only as good as the files they were read from"
                    .to_owned()
            }
            ChainStatus::Verified { text } => format!("verified: {text}"),
            ChainStatus::Broken { text } => format!("BROKEN: {text}"),
        }
    }
}

/// A `--since` or `--until` bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Unix milliseconds.
    pub millis: i64,
    /// As given.
    pub text: String,
}

impl Bound {
    /// Parse RFC 3339 (`2026-11-23T11:00:00Z`, an offset, a fraction) or a date
    /// (`2026-11-23`: midnight UTC).
    pub fn parse(text: &str) -> Result<Bound, ReportError> {
        when::parse_millis(text)
            .map(|millis| Bound {
                millis,
                text: text.trim().to_owned(),
            })
            .ok_or_else(|| ReportError::Time(text.to_owned()))
    }
}

/// What a report counts and shows.
#[derive(Debug, Clone)]
pub struct Options {
    /// Count records at or after this time.
    pub since: Option<Bound>,
    /// Count records before this time.
    pub until: Option<Bound>,
    /// Name clients by address instead of by network.
    pub clients: bool,
    /// Rows of each top list.
    pub top: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            since: None,
            until: None,
            clients: false,
            top: 20,
        }
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A `--since`/`--until` value that is not a time.
    #[error("{0:?} is not a time: use RFC 3339 (2026-11-23T11:00:00Z) or a date (2026-11-23)")]
    Time(String),
    /// A chart could not be drawn.
    #[error("drawing the {chart} chart: {message}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// What failed.
        message: String,
    },
    /// The HTML template failed.
    #[error("HTML template: {0}")]
    Template(#[from] minijinja::Error),
    /// The JSON form failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The `--json` form: [`Report`] as pretty JSON.
pub fn json(report: &Report) -> Result<String, ReportError> {
    Ok(serde_json::to_string_pretty(report)?)
}
