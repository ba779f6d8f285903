//! The handles of recently seen flow label sets (see [`super::Metrics::observe`]).

use prometheus::{Histogram, IntCounter};

/// One flow label set and the metrics it moves, found once in their families and reused:
/// `with_label_values` hashes every label and takes the family's lock, three times a record.
/// Families these children belong to are never reset, so a kept handle stays the family's.
pub(super) struct FlowEntry {
    pub(super) listener: Box<str>,
    pub(super) intent: &'static str,
    pub(super) status_class: &'static str,
    pub(super) decision: &'static str,
    pub(super) mode: &'static str,
    pub(super) class: Box<str>,
    pub(super) reason: &'static str,
    pub(super) jurisdiction: Box<str>,
    pub(super) decisions: IntCounter,
    pub(super) requests: IntCounter,
    pub(super) duration: Histogram,
}

/// A record's flow labels, borrowed from it.
#[derive(Clone, Copy)]
pub(super) struct FlowLabels<'a> {
    pub(super) listener: &'a str,
    pub(super) intent: &'static str,
    pub(super) status_class: &'static str,
    pub(super) decision: &'static str,
    pub(super) mode: &'static str,
    pub(super) class: &'a str,
    pub(super) reason: &'static str,
    pub(super) jurisdiction: &'a str,
}

impl FlowEntry {
    pub(super) fn is(&self, l: &FlowLabels<'_>) -> bool {
        // The enums' labels are compared first: the cheapest, and where label sets differ most.
        self.decision == l.decision
            && self.reason == l.reason
            && self.status_class == l.status_class
            && self.intent == l.intent
            && self.mode == l.mode
            && *self.class == *l.class
            && *self.jurisdiction == *l.jurisdiction
            && *self.listener == *l.listener
    }
}
