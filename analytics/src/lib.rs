//! Analytics: turns anomalies plus their context into insights a DBA can act on.
//!
//! [`prompt`] builds a versioned prompt from an anomaly (or a time window) and its
//! [`Context`] within a character budget; [`llm`] holds the Ollama and OpenAI-compatible
//! clients; [`schema`] is the JSON schema answers must follow and its validation;
//! [`analyzer::Analyzer`] ties them together — ask the model, validate, ask once more
//! with the validation error, and fall back to the deterministic [`rules`] analyzer
//! (`model = "rules"`) when no LLM is configured or it fails, recording the failure.
//!
//! [`service::AnalyticsService`] is the stage around it: anomalies topic → context read
//! through `Reader` → analyzer → insights in the `Ledger`, the sink and on the insights
//! topic; on-demand analyses for the API and the scheduled capacity [`digest`].
//! [`config::AnalyticsConfig`] (`analytics:`) builds the analyzer.
//!
//! Depends on: `sqlvigil-model`, `sqlvigil-core` (the traits the stage reads and writes
//! through), reqwest (LLM HTTP APIs). Must not touch a concrete store, bus or the API:
//! the topology hands the stage its `Reader`, `Sink`, `Ledger` and `Bus`.

pub mod analyzer;
pub mod config;
pub mod digest;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod llm;
pub mod prompt;
pub mod root_cause;
pub mod rules;
pub mod schema;
pub mod service;
pub mod worker;

pub use config::AnalyticsConfig;
pub use error::AnalyticsError;
pub use service::AnalyticsService;
pub use sqlvigil_model::query::MetricStat;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A recent value of a metric related to the anomaly (same instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelatedMetric {
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    pub value: f64,
    pub unit: String,
}

/// What the analyzer knows besides the anomaly itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Latest values on the anomaly's instance around its window, any order.
    pub related: Vec<RelatedMetric>,
    /// Per-series statistics over the window (digests, time-range analyses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<MetricStat>,
    /// Recent SQL Server error-log lines on the instance, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<sqlvigil_model::LogRecord>,
    /// The receiver's top queries of the window (`db.server.top_query` events summed per
    /// query), highest CPU first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_queries: Vec<sqlvigil_model::TopQuery>,
    /// Blocking chains of the window (from `db.server.query_sample` events), most
    /// victims first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocking: Vec<sqlvigil_model::BlockingChain>,
    /// The live monitor's DMV snapshot of the instance at the anomaly (taken for it when
    /// the newest is older), when the instance is monitored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<sqlvigil_model::live::LiveSnapshot>,
}

/// When the first and the last of `anomalies` opened.
pub fn burst_span(
    anomalies: &[sqlvigil_model::Anomaly],
) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let times = anomalies.iter().map(|a| a.opened_at);
    let first = times.clone().min().unwrap_or_default();
    (first, times.max().unwrap_or(first))
}

/// `anomalies` most severe first (severity, then score, then id for a stable order).
pub fn most_severe(anomalies: &[sqlvigil_model::Anomaly]) -> Vec<&sqlvigil_model::Anomaly> {
    let mut v: Vec<_> = anomalies.iter().collect();
    v.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.score.total_cmp(&a.score))
            .then_with(|| a.id.cmp(&b.id))
    });
    v
}
