//! Rule firings: an anomaly opens, is updated while it lasts, and resolves.

use crate::SeriesKey;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyState {
    Open,
    Resolved,
}

impl AnomalyState {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyState::Open => "open",
            AnomalyState::Resolved => "resolved",
        }
    }
}

/// One point of the window that crossed the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidencePoint {
    pub time: DateTime<Utc>,
    pub value: f64,
}

/// An anomaly event. The same `id` is carried from open through updates to resolve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// `fingerprint` + `-` + opened_at in ns: unique per occurrence.
    pub id: String,
    /// Rule name + series id: the same problem on the same series.
    pub fingerprint: String,
    pub rule: String,
    /// The rule's condition as written, e.g. `cpu_percent > 85 for 5m`.
    pub condition: String,
    pub series_id: String,
    pub series: SeriesKey,
    pub severity: Severity,
    pub state: AnomalyState,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The most extreme value seen while open.
    pub observed: f64,
    /// What the rule expected (threshold or baseline).
    pub expected: Option<f64>,
    /// How far past expectation (observed / threshold for thresholds).
    pub score: f64,
    /// The window that crossed, oldest first (bounded).
    pub evidence: Vec<EvidencePoint>,
    /// A storm anomaly: how many anomalies of its rule and instance it stands for
    /// (opened past the rule's open-rate limit and folded into it). 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub folded: u64,
    /// An anomaly folded into a storm: the storm anomaly's id. Such an anomaly is never
    /// published on its own (no open or resolve event); the storm stands for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_into: Option<String>,
    /// What people did about it (acknowledged, resolved by hand, silenced), laid over
    /// the record when it is read ([`crate::Handling::apply`]); never set by a rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handling: Option<crate::Handling>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Anomaly {
    pub fn fingerprint_for(rule: &str, series: &SeriesKey) -> String {
        format!("{rule}:{}", series.id_hex())
    }
}

/// What happened to an anomaly: the message published on the anomalies topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyEventKind {
    Open,
    Update,
    Resolve,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    pub event: AnomalyEventKind,
    pub anomaly: Anomaly,
}
