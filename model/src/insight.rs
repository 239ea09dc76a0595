//! Analyses of anomalies, kept with what produced them for audit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An explanation of one or more anomalies and what to do about them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    pub id: String,
    pub generated_at: DateTime<Utc>,
    /// The LLM that answered, or `rules` for the deterministic analyzer.
    pub model: String,
    pub prompt_version: String,
    pub anomaly_ids: Vec<String>,
    /// Fingerprint of the anomaly analysed (dedup key together with `input_digest`).
    pub fingerprint: String,
    pub instance: String,
    pub summary: String,
    pub recommended_actions: Vec<String>,
    /// Metric name → value (or object) that supports the summary.
    pub supporting_metrics: serde_json::Value,
    /// SHA-256 of the canonical inputs.
    pub input_digest: String,
    /// The inputs themselves, for audit (for LLM insights: the prompt sent).
    pub inputs: serde_json::Value,
    /// Time the model took to answer (absent for the rules analyzer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// What prompted it: `anomaly`, `on_demand` or `digest`.
    #[serde(default = "default_trigger")]
    pub trigger: String,
    /// Why this answer comes from the analyzer it does, when that is not the configured
    /// one: e.g. the rules analyzer standing in while the LLM is busy during a storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn default_trigger() -> String {
    "anomaly".into()
}

/// An analysis the LLM could not complete (kept for audit; a rules insight stands in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisFailure {
    pub id: String,
    pub at: DateTime<Utc>,
    pub model: String,
    pub anomaly_ids: Vec<String>,
    pub instance: String,
    pub input_digest: String,
    pub attempts: u32,
    pub error: String,
}
