//! `analytics:` — the LLM to ask (none: the rules analyzer answers), rate limits,
//! prompt budget and the scheduled digest.

use crate::analyzer::Analyzer;
use crate::llm::{LlmClient, LlmConfig};
use serde::{Deserialize, Serialize};
use sqlvigil_core::{async_trait, Build, BuildContext, Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// Insights: the LLM to ask (none: the rules analyzer answers), rate limits, digests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Ollama or an OpenAI-compatible server; absent: rules analyzer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmConfig>,
    /// Least time between two LLM analyses of opened anomalies on one instance; anomalies
    /// in between get a rules insight (so a storm of anomalies cannot flood the model).
    #[serde(with = "sqlvigil_model::duration")]
    pub min_interval_per_instance: Duration,
    /// Largest prompt (system + user) in characters; least relevant sections go first.
    pub prompt_budget_chars: usize,
    pub digest: DigestConfig,
    /// Analyses of opened anomalies run at most this many at a time.
    pub concurrency: usize,
    /// LLM requests in flight at most; an analysis that finds none free gets a rules
    /// insight at once (labelled in its `note`) instead of waiting behind a storm.
    pub llm_concurrency: usize,
    /// Anomalies that open on one instance within this window are analysed together:
    /// one insight for the burst, naming each. A lone anomaly waits at most the quiet gap
    /// (a quarter of a second) before its analysis starts.
    #[serde(with = "sqlvigil_model::duration")]
    pub coalesce_window: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            llm: None,
            min_interval_per_instance: Duration::from_secs(60),
            prompt_budget_chars: 12_000,
            digest: DigestConfig::default(),
            concurrency: 4,
            llm_concurrency: 1,
            coalesce_window: Duration::from_secs(5),
        }
    }
}

/// The scheduled capacity-planning digest per instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    pub enabled: bool,
    /// How often a digest is written.
    #[serde(with = "sqlvigil_model::duration")]
    pub interval: Duration,
    /// The time window each digest covers (ending now).
    #[serde(with = "sqlvigil_model::duration")]
    pub window: Duration,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
            window: Duration::from_secs(24 * 3600),
        }
    }
}

#[async_trait]
impl Build for AnalyticsConfig {
    /// The analyzer: the LLM client (when configured) and the rules fallback.
    type Output = Analyzer;

    fn validate(&self) -> Result<()> {
        if self.prompt_budget_chars == 0 {
            return Err(Error::Config(
                "analytics.prompt_budget_chars must be greater than 0".into(),
            ));
        }
        if self.digest.interval.is_zero() || self.digest.window.is_zero() {
            return Err(Error::Config(
                "analytics.digest.interval and analytics.digest.window must be greater than 0"
                    .into(),
            ));
        }
        if self.concurrency == 0 || self.llm_concurrency == 0 {
            return Err(Error::Config(
                "analytics.concurrency and analytics.llm_concurrency must be greater than 0".into(),
            ));
        }
        if self.coalesce_window.is_zero() {
            return Err(Error::Config(
                "analytics.coalesce_window must be greater than 0".into(),
            ));
        }
        if let Some(llm) = &self.llm {
            llm.validate().map_err(Error::Config)?;
        }
        Ok(())
    }

    async fn build(&self, _ctx: &BuildContext) -> Result<Analyzer> {
        let llm: Option<Arc<dyn LlmClient>> = match &self.llm {
            Some(cfg) => Some(Arc::from(cfg.build()?)),
            None => None,
        };
        Ok(Analyzer::new(llm, self.prompt_budget_chars))
    }
}
