//! The analytics stage: anomalies topic → context from the store → analyzer (LLM or
//! rules) → insights in SQLite and on the insights topic. Also serves on-demand analyses
//! (the API's `POST /api/v1/insights`) and the scheduled capacity digest per instance.
//!
//! Dedup: an insight is keyed by fingerprint and input digest; when one exists for the
//! same inputs it is returned instead of asking the model again.

use crate::analyzer::Analyzer;
use crate::config::AnalyticsConfig;
use crate::error::AnalyticsError;
use crate::llm::{LlmClient, ModelStatus};
use crate::prompt::Subject;
use crate::{Context, RelatedMetric};
use chrono::{DateTime, Utc};
use sqlvigil_core::{publish_retrying, Bus, Component, Ledger, Live, Reader, Record, Sink, Stats};
use sqlvigil_model::query::MetricFilter;
use sqlvigil_model::Insight;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far back the analyzer looks for related metrics and log lines.
const CONTEXT_WINDOW_NS: i64 = 5 * 60 * 1_000_000_000;
const CONTEXT_LOG_LINES: usize = 20;
/// Top queries of the window given to the analyzer.
const CONTEXT_TOP_QUERIES: usize = 5;
/// Blocked-session samples of the window read to build the blocking chains.
const CONTEXT_BLOCKED_SESSIONS: usize = 500;
/// The analytics worker's consumer group on the anomalies topic.
pub const ANALYTICS_GROUP: &str = "sqlvigil-analytics";

type Result<T, E = AnalyticsError> = std::result::Result<T, E>;

/// What the stage reads and writes, built before it by the topology.
pub struct StageIo {
    /// Telemetry, logs and anomalies to build the context from.
    pub reader: Arc<dyn Reader>,
    /// Insights go to the telemetry backend too (Elastic's `llm_insights`).
    pub sink: Arc<dyn Sink>,
    /// The durable record of insights and failures (dedup, audit).
    pub ledger: Arc<dyn Ledger>,
    /// The insights topic is published to; the anomalies topic drained at shutdown.
    pub bus: Arc<dyn Bus>,
    /// The live monitor, when instances are configured for it: the snapshot of the
    /// anomaly's moment goes into the context.
    pub live: Option<Arc<dyn Live>>,
}

/// Shared by the anomaly worker, the digest schedule and the API.
pub struct AnalyticsService {
    pub(crate) analyzer: Analyzer,
    pub(crate) reader: Arc<dyn Reader>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) live: Option<Arc<dyn Live>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) topic: String,
    pub(crate) min_interval: Duration,
    /// Last LLM analysis of an opened anomaly per instance (rate limit).
    pub(crate) last_llm: Mutex<HashMap<String, Instant>>,
    /// Free LLM request slots (`analytics.llm_concurrency`).
    pub(crate) llm_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) concurrency: usize,
    pub(crate) coalesce_window: Duration,
    /// The stage's health (backlog, progress, waiting).
    pub(crate) health: Arc<Component>,
}

pub(crate) fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl AnalyticsService {
    /// The stage over `io`, asking `analyzer` (built from `config`).
    pub fn new(
        config: &AnalyticsConfig,
        analyzer: Analyzer,
        io: StageIo,
        insights_topic: &str,
        stats: Arc<Stats>,
        health: Arc<Component>,
    ) -> Self {
        AnalyticsService {
            analyzer,
            reader: io.reader,
            sink: io.sink,
            ledger: io.ledger,
            bus: io.bus,
            live: io.live,
            stats,
            topic: insights_topic.to_string(),
            min_interval: config.min_interval_per_instance,
            last_llm: Mutex::new(HashMap::new()),
            llm_slots: Arc::new(tokio::sync::Semaphore::new(config.llm_concurrency)),
            concurrency: config.concurrency,
            coalesce_window: config.coalesce_window,
            health,
        }
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
            Subject::Burst { anomalies, .. } => {
                let (first, last) = crate::burst_span(anomalies);
                (ns(first).saturating_sub(CONTEXT_WINDOW_NS), ns(last))
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
        self.query_activity(&instance, from, to, &mut ctx).await?;
        ctx.live = self.live_snapshot(subject).await;
        match subject {
            Subject::Anomaly(_) | Subject::Burst { .. } => {
                ctx.related = self.latest(&instance, from, to).await?
            }
            _ => {
                ctx.stats = self.reader.metric_stats(&instance, from, to).await?;
                let tail = to.saturating_sub(CONTEXT_WINDOW_NS).max(from);
                ctx.related = self.latest(&instance, tail, to).await?;
            }
        }
        Ok(ctx)
    }

    /// The live monitor's view of the subject's instance: for an anomaly (or a burst, its
    /// first) a snapshot taken at or after it opened — taken now if the newest is older —
    /// otherwise the newest one.
    async fn live_snapshot(&self, subject: &Subject) -> Option<sqlvigil_model::live::LiveSnapshot> {
        let live = self.live.as_ref()?;
        let instance = subject.instance();
        let opened = match subject {
            Subject::Anomaly(a) => Some((a.opened_at, a.id.clone())),
            Subject::Burst { anomalies, .. } => {
                let first = crate::burst_span(anomalies).0;
                anomalies.first().map(|a| (first, a.id.clone()))
            }
            Subject::Window { .. } | Subject::Digest { .. } => None,
        };
        let snap = match opened {
            Some((at, id)) => {
                live.for_anomaly(instance, at, &format!("anomaly {id}"))
                    .await
            }
            None => live.latest(instance),
        };
        snap.map(|s| (*s).clone())
    }

    /// The receiver's query events of the window: top queries and blocking chains. A
    /// backend that cannot answer (`Unsupported`) leaves them out.
    async fn query_activity(
        &self,
        instance: &str,
        from: i64,
        to: i64,
        ctx: &mut Context,
    ) -> Result<()> {
        let range = sqlvigil_model::query::Range::between(from, to);
        let only = sqlvigil_model::query::Instances::one(instance);
        let keep = |e: sqlvigil_core::Error| match e {
            sqlvigil_core::Error::Unsupported(_) => Ok(()),
            other => Err(other),
        };
        match self
            .reader
            .top_queries(&range, &only, CONTEXT_TOP_QUERIES)
            .await
        {
            Ok(answer) => ctx.top_queries = answer.rows,
            Err(e) => keep(e)?,
        }
        match self
            .reader
            .blocking(&range, &only, CONTEXT_BLOCKED_SESSIONS)
            .await
        {
            Ok(answer) => {
                ctx.blocking =
                    sqlvigil_model::activity::blocking_tree(&answer.rows, &HashMap::new())
            }
            Err(e) => keep(e)?,
        }
        Ok(())
    }

    /// Latest value per series of `instance` in the window.
    async fn latest(&self, instance: &str, from: i64, to: i64) -> Result<Vec<RelatedMetric>> {
        let filter = MetricFilter {
            instances: sqlvigil_model::query::Instances::one(instance),
            from_ns: Some(from),
            to_ns: Some(to),
            ..Default::default()
        };
        let mut latest: HashMap<u64, RelatedMetric> = HashMap::new();
        for s in self.reader.metrics(&filter).await? {
            let id = s.key.id();
            latest.insert(
                id,
                RelatedMetric {
                    metric: s.key.metric.to_string(),
                    // Per-database series would otherwise look alike.
                    attributes: s.key.attributes_with_database(),
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
        self.analyze_with(subject, true, None).await
    }

    /// Analyse anomalies that just opened (one, or a burst of one instance): the LLM only
    /// when this instance's rate limit allows and a request slot is free right now, else
    /// the rules analyzer, saying why in the insight's `note` — a storm never queues
    /// behind the model.
    pub(crate) async fn analyze_opened(&self, subject: Subject) -> Result<Insight> {
        let Some(model) = self.llm_model() else {
            return self.analyze_with(subject, false, None).await;
        };
        let permit = self.llm_slots.clone().try_acquire_owned();
        let note = match &permit {
            Err(_) => Some(format!(
                "rules analyzer: every LLM slot ({model}) was busy with other analyses"
            )),
            Ok(_) if !self.take_llm_slot(subject.instance()) => Some(format!(
                "rules analyzer: {model} analysed this instance less than min_interval_per_instance ago"
            )),
            Ok(_) => None,
        };
        if note.is_some() {
            Stats::add(&self.stats.analytics_rules_fallback, 1);
        }
        let insight = self.analyze_with(subject, note.is_none(), note).await;
        drop(permit);
        insight
    }

    /// Analyse, persist, publish. `llm_allowed = false` forces the rules analyzer; `note`
    /// says why on the insight.
    async fn analyze_with(
        &self,
        subject: Subject,
        llm_allowed: bool,
        note: Option<String>,
    ) -> Result<Insight> {
        let ctx = self.context(&subject).await?;
        let use_llm = llm_allowed && self.llm_model().is_some();
        if use_llm {
            // Same prompt as before → same insight: do not ask the model twice.
            let prompt = self.analyzer.prompt(&subject, &ctx);
            let fingerprint = subject.fingerprint();
            if let Some(existing) = self.ledger.insight_for(&fingerprint, &prompt.digest)? {
                return Ok(existing);
            }
        }
        let outcome = self
            .analyzer
            .analyze(&subject, &ctx, use_llm, Utc::now())
            .await?;
        if let Some(f) = &outcome.failure {
            self.ledger.insert_failure(f)?;
        }
        let mut insight = outcome.insight;
        insight.note = note;
        if !self.ledger.insert_insight(&insight)? {
            return Ok(self
                .ledger
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
        publish_retrying(
            self.bus.as_ref(),
            &self.topic,
            vec![record],
            Some(&self.health),
        )
        .await?;
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
}
