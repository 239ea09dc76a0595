//! The analytics stage: anomalies topic → context from the store → analyzer (LLM or
//! rules) → insights in SQLite and on the insights topic. Also serves on-demand analyses
//! (the API's `POST /api/v1/insights`) and the scheduled capacity digest per instance.
//!
//! Dedup: an insight is keyed by fingerprint and input digest; when one exists for the
//! same inputs it is returned instead of asking the model again.

use crate::bus::{Bus, Record, Subscription};
use crate::config::Config;
use crate::error::{PipelineError, Result};
use crate::sinks::reader::Reader;
use crate::sinks::state::StateStore;
use crate::sinks::store::MetricFilter;
use crate::sinks::Sink;
use crate::stats::Stats;
use chrono::{DateTime, Utc};
use sqlvigil_analytics::analyzer::Analyzer;
use sqlvigil_analytics::llm::{LlmClient, ModelStatus};
use sqlvigil_analytics::prompt::Subject;
use sqlvigil_analytics::{Context, RelatedMetric};
use sqlvigil_model::{AnomalyEvent, AnomalyEventKind, Insight};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How far back the analyzer looks for related metrics and log lines.
const CONTEXT_WINDOW_NS: i64 = 5 * 60 * 1_000_000_000;
const CONTEXT_LOG_LINES: usize = 20;
/// Attribute naming the database of per-database series in the analyzer's context.
pub const DATABASE_ATTR: &str = "sqlserver.database.name";

/// Shared by the anomaly worker, the digest schedule and the API.
pub struct AnalyticsService {
    analyzer: Analyzer,
    reader: Arc<dyn Reader>,
    sink: Arc<dyn Sink>,
    state: Arc<StateStore>,
    bus: Arc<dyn Bus>,
    stats: Arc<Stats>,
    topic: String,
    min_interval: Duration,
    /// Last LLM analysis of an opened anomaly per instance (rate limit).
    last_llm: Mutex<HashMap<String, Instant>>,
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn llm_failed(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Transport(format!("analysis: {e}"))
}

impl AnalyticsService {
    pub fn new(
        config: &Config,
        reader: Arc<dyn Reader>,
        sink: Arc<dyn Sink>,
        state: Arc<StateStore>,
        bus: Arc<dyn Bus>,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        let llm: Option<Arc<dyn LlmClient>> = match &config.analytics.llm {
            Some(cfg) => Some(Arc::from(
                cfg.build()
                    .map_err(|e| PipelineError::Config(e.to_string()))?,
            )),
            None => None,
        };
        Ok(AnalyticsService {
            analyzer: Analyzer::new(llm, config.analytics.prompt_budget_chars),
            reader,
            sink,
            state,
            bus,
            stats,
            topic: config.bus.topics.insights.clone(),
            min_interval: config.analytics.min_interval_per_instance,
            last_llm: Mutex::new(HashMap::new()),
        })
    }

    /// The configured LLM's name, if any.
    pub fn llm_model(&self) -> Option<&str> {
        self.analyzer.llm_model()
    }

    /// Whether this instance may ask the LLM about an anomaly now (and note that it does).
    fn take_llm_slot(&self, instance: &str) -> bool {
        let mut last = self.last_llm.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get(instance) {
            Some(t) if now.duration_since(*t) < self.min_interval => false,
            _ => {
                last.insert(instance.to_string(), now);
                true
            }
        }
    }

    /// Gather what the analyzer needs about `subject` from the store.
    async fn context(&self, subject: &Subject) -> Result<Context> {
        let (from, to) = match subject {
            Subject::Anomaly(a) => {
                let opened = ns(a.opened_at);
                (opened.saturating_sub(CONTEXT_WINDOW_NS), opened)
            }
            Subject::Window { from, to, .. } | Subject::Digest { from, to, .. } => {
                (ns(*from), ns(*to))
            }
        };
        let instance = subject.instance().to_string();
        let mut ctx = Context {
            logs: self
                .reader
                .logs(&instance, from, to, CONTEXT_LOG_LINES)
                .await?,
            ..Default::default()
        };
        match subject {
            Subject::Anomaly(_) => ctx.related = self.latest(&instance, from, to).await?,
            _ => {
                ctx.stats = self.reader.metric_stats(&instance, from, to).await?;
                let tail = to.saturating_sub(CONTEXT_WINDOW_NS).max(from);
                ctx.related = self.latest(&instance, tail, to).await?;
            }
        }
        Ok(ctx)
    }

    /// Latest value per series of `instance` in the window.
    async fn latest(&self, instance: &str, from: i64, to: i64) -> Result<Vec<RelatedMetric>> {
        let filter = MetricFilter {
            instance: Some(instance.to_string()),
            from_ns: Some(from),
            to_ns: Some(to),
            ..Default::default()
        };
        let mut latest: HashMap<u64, RelatedMetric> = HashMap::new();
        for s in self.reader.metrics(&filter).await? {
            let id = s.key.id();
            let mut attributes = s.key.attributes;
            // Per-database series would otherwise look alike.
            if !s.key.database.is_empty() {
                attributes.insert(DATABASE_ATTR.into(), s.key.database.to_string());
            }
            latest.insert(
                id,
                RelatedMetric {
                    metric: s.key.metric.to_string(),
                    attributes,
                    value: s.value,
                    unit: s.unit.to_string(),
                },
            );
        }
        let mut related: Vec<RelatedMetric> = latest.into_values().collect();
        related.sort_by(|a, b| (&a.metric, &a.attributes).cmp(&(&b.metric, &b.attributes)));
        Ok(related)
    }

    /// Analyse `subject` on request (API, digest): the LLM when configured, else rules.
    pub async fn analyze(&self, subject: Subject) -> Result<Insight> {
        self.analyze_with(subject, true).await
    }

    /// Analyse an anomaly that just opened: the LLM only if this instance's rate limit
    /// allows, else rules — so an anomaly storm cannot flood the model.
    async fn analyze_opened(&self, subject: Subject) -> Result<Insight> {
        let allowed = self.llm_model().is_some() && self.take_llm_slot(subject.instance());
        self.analyze_with(subject, allowed).await
    }

    /// Analyse, persist, publish. `llm_allowed = false` forces the rules analyzer.
    async fn analyze_with(&self, subject: Subject, llm_allowed: bool) -> Result<Insight> {
        let ctx = self.context(&subject).await?;
        let use_llm = llm_allowed && self.llm_model().is_some();
        if use_llm {
            // Same prompt as before → same insight: do not ask the model twice.
            let prompt = self.analyzer.prompt(&subject, &ctx);
            let fingerprint = match &subject {
                Subject::Anomaly(a) => a.fingerprint.clone(),
                other => format!("{}:{}", other.trigger(), other.instance()),
            };
            if let Some(existing) = self.state.insight_for(&fingerprint, &prompt.digest)? {
                return Ok(existing);
            }
        }
        let outcome = self
            .analyzer
            .analyze(&subject, &ctx, use_llm, Utc::now())
            .await
            .map_err(llm_failed)?;
        if let Some(f) = &outcome.failure {
            self.state.insert_failure(f)?;
        }
        let insight = outcome.insight;
        if !self.state.insert_insight(&insight)? {
            return Ok(self
                .state
                .insight_for(&insight.fingerprint, &insight.input_digest)?
                .unwrap_or(insight));
        }
        Stats::add(&self.stats.insights_written, 1);
        self.sink.write_insights(std::slice::from_ref(&insight))?;
        tracing::info!(instance = %insight.instance, model = %insight.model, summary = %insight.summary, "insight");
        let record = Record {
            key: insight.instance.clone().into_bytes().into(),
            payload: serde_json::to_vec(&insight)?.into(),
        };
        crate::runtime::publish_retrying(self.bus.as_ref(), &self.topic, vec![record]).await?;
        Ok(insight)
    }

    /// Warn at start-up when the configured model is missing or the server unreachable.
    pub async fn check_model(&self) {
        let Some(model) = self.llm_model() else {
            return;
        };
        let Some(client) = self.analyzer_client() else {
            return;
        };
        match client.check_model().await {
            Ok(ModelStatus::Present) => tracing::info!(model, "LLM model is available"),
            Ok(ModelStatus::Missing { available }) => tracing::warn!(
                model,
                ?available,
                "the configured LLM model is not on the server (pull it); insights fall back to the rules analyzer"
            ),
            Err(e) => tracing::warn!(model, "LLM server not reachable ({e}); insights fall back to the rules analyzer"),
        }
    }

    fn analyzer_client(&self) -> Option<&dyn LlmClient> {
        self.analyzer.client()
    }

    /// Consume the anomalies topic until stopped and drained.
    pub async fn run_worker(
        self: Arc<Self>,
        mut sub: Box<dyn Subscription>,
        topic: String,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        loop {
            let batch = sub.next_batch(64, Duration::from_millis(250)).await?;
            if batch.is_empty() {
                if *stop.borrow() && self.bus.pending(&topic, crate::runtime::ANALYTICS_GROUP) == 0
                {
                    return Ok(());
                }
                continue;
            }
            for d in &batch {
                match serde_json::from_slice::<AnomalyEvent>(&d.record.payload) {
                    Ok(ev) if ev.event == AnomalyEventKind::Open => {
                        self.analyze_opened(Subject::Anomaly(Box::new(ev.anomaly)))
                            .await?;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        Stats::add(&self.stats.decode_errors, 1);
                        tracing::warn!("undecodable anomaly event skipped: {e}");
                    }
                }
            }
            sub.ack(&batch).await?;
        }
    }

    /// Every `interval`, a capacity digest over the last `window` for each instance that
    /// reported in it.
    pub async fn run_digests(
        self: Arc<Self>,
        interval: Duration,
        window: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.digest_all(window).await {
                tracing::warn!("capacity digest failed: {e}");
            }
        }
    }

    /// One digest per instance seen in the last `window`.
    pub async fn digest_all(&self, window: Duration) -> Result<Vec<Insight>> {
        let to = Utc::now();
        let from = to - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
        let filter = MetricFilter {
            from_ns: Some(ns(from)),
            to_ns: Some(ns(to)),
            ..Default::default()
        };
        let mut instances: Vec<String> = self
            .reader
            .series(&filter)
            .await?
            .into_iter()
            .map(|s| s.instance)
            .collect();
        instances.sort();
        instances.dedup();
        let mut out = Vec::new();
        for instance in instances {
            out.push(self.analyze(Subject::Digest { instance, from, to }).await?);
        }
        Ok(out)
    }
}
