//! The feed: what happened, in order — anomalies opening, changing, resolving, being
//! acknowledged, resolved by hand or silenced, and insights written — each with a
//! sequence number that never goes back, so a reader (the API's live stream) resumes
//! where it stopped, across restarts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a feed entry tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedKind {
    #[serde(rename = "anomaly.open")]
    AnomalyOpen,
    #[serde(rename = "anomaly.update")]
    AnomalyUpdate,
    #[serde(rename = "anomaly.resolve")]
    AnomalyResolve,
    /// A person acknowledged, resolved or silenced the anomaly.
    #[serde(rename = "anomaly.handled")]
    AnomalyHandled,
    #[serde(rename = "insight")]
    Insight,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::AnomalyOpen => "anomaly.open",
            FeedKind::AnomalyUpdate => "anomaly.update",
            FeedKind::AnomalyResolve => "anomaly.resolve",
            FeedKind::AnomalyHandled => "anomaly.handled",
            FeedKind::Insight => "insight",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            FeedKind::AnomalyOpen,
            FeedKind::AnomalyUpdate,
            FeedKind::AnomalyResolve,
            FeedKind::AnomalyHandled,
            FeedKind::Insight,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl From<crate::AnomalyEventKind> for FeedKind {
    fn from(k: crate::AnomalyEventKind) -> Self {
        match k {
            crate::AnomalyEventKind::Open => FeedKind::AnomalyOpen,
            crate::AnomalyEventKind::Update => FeedKind::AnomalyUpdate,
            crate::AnomalyEventKind::Resolve => FeedKind::AnomalyResolve,
        }
    }
}

/// The anomaly events worth a feed entry: every open and resolve, and of each anomaly
/// that only changed, its last update; none of an anomaly folded into a storm (the
/// storm stands for it).
pub fn worth_feeding(events: &[crate::AnomalyEvent]) -> Vec<&crate::AnomalyEvent> {
    use crate::AnomalyEventKind::Update;
    use std::collections::HashMap;
    let mut last_update: HashMap<&str, usize> = HashMap::new();
    let mut changed_state: std::collections::HashSet<&str> = Default::default();
    for (i, ev) in events.iter().enumerate() {
        match ev.event {
            Update => {
                last_update.insert(&ev.anomaly.id, i);
            }
            _ => {
                changed_state.insert(&ev.anomaly.id);
            }
        }
    }
    events
        .iter()
        .enumerate()
        .filter(|(_, ev)| ev.anomaly.folded_into.is_none())
        .filter(|(i, ev)| match ev.event {
            Update => {
                !changed_state.contains(ev.anomaly.id.as_str())
                    && last_update.get(ev.anomaly.id.as_str()) == Some(i)
            }
            _ => true,
        })
        .map(|(_, ev)| ev)
        .collect()
}

/// One entry: its sequence number, kind, the instance it is about, when it was
/// written, and the anomaly or insight as it was then (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEntry {
    pub seq: i64,
    pub kind: FeedKind,
    pub instance: String,
    pub at: DateTime<Utc>,
    pub body: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Anomaly, AnomalyEvent, AnomalyEventKind};

    fn ev(id: &str, event: AnomalyEventKind, observed: f64) -> AnomalyEvent {
        AnomalyEvent {
            event,
            anomaly: Anomaly {
                id: id.into(),
                fingerprint: id.into(),
                rule: "r".into(),
                condition: "x > 1".into(),
                series_id: String::new(),
                series: crate::SeriesKey::new("i", "h", "", "m"),
                severity: crate::Severity::Warning,
                state: crate::AnomalyState::Open,
                opened_at: Default::default(),
                updated_at: Default::default(),
                resolved_at: None,
                observed,
                expected: None,
                score: 1.0,
                evidence: Vec::new(),
                folded: 0,
                folded_into: None,
                handling: None,
            },
        }
    }

    #[test]
    fn opens_and_resolves_feed_and_only_the_last_update_of_a_quiet_anomaly() {
        use AnomalyEventKind::{Open, Resolve, Update};
        let mut folded = ev("f", Open, 1.0);
        folded.anomaly.folded_into = Some("storm".into());
        let events = vec![
            ev("a", Open, 1.0),
            ev("a", Update, 2.0),
            ev("b", Update, 1.0),
            ev("b", Update, 3.0),
            folded,
            ev("c", Resolve, 1.0),
        ];
        let fed: Vec<(&str, AnomalyEventKind, f64)> = worth_feeding(&events)
            .into_iter()
            .map(|e| (e.anomaly.id.as_str(), e.event, e.anomaly.observed))
            .collect();
        assert_eq!(
            fed,
            vec![("a", Open, 1.0), ("b", Update, 3.0), ("c", Resolve, 1.0)]
        );
    }
}
