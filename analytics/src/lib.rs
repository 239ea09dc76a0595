//! Analytics: turns anomalies plus their context into insights a DBA can act on.
//!
//! [`prompt`] builds a versioned prompt from an anomaly (or a time window) and its
//! [`Context`] within a character budget; [`llm`] holds the Ollama and OpenAI-compatible
//! clients; [`schema`] is the JSON schema answers must follow and its validation;
//! [`analyzer::Analyzer`] ties them together — ask the model, validate, ask once more
//! with the validation error, and fall back to the deterministic [`rules`] analyzer
//! (`model = "rules"`) when no LLM is configured or it fails, recording the failure.
//!
//! Depends on: model, reqwest (LLM HTTP APIs). Must not touch storage or the bus:
//! callers gather the [`Context`] and persist the [`sqlvigil_model::Insight`] returned.

pub mod analyzer;
#[cfg(test)]
mod fixtures;
pub mod llm;
pub mod prompt;
pub mod rules;
pub mod schema;

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

/// Summary of one series over the analysed window (digests and time-range analyses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStat {
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    pub unit: String,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub points: u64,
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
    /// Live DMV snapshot, when the live monitor is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSnapshot>,
}

/// Top queries and blocking sessions from the live monitor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSnapshot {
    pub top_queries: Vec<sqlvigil_model::live::TopQueryRow>,
    pub sessions: Vec<sqlvigil_model::live::SessionRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}
