//! Analytics: turns anomalies plus their context into insights a DBA can act on.
//!
//! This first version holds the deterministic rules analyzer ([`rules::analyze`]),
//! which answers with `model = "rules"` when no LLM is configured or reachable; the
//! prompt builder, Ollama and OpenAI-compatible clients and notifiers join it here.
//!
//! Depends on: model only. Must not touch storage, the bus or the network: callers hand
//! it an anomaly and a [`Context`] and persist the [`sqlvigil_model::Insight`] it returns.

pub mod rules;

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
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}
