//! What the API and the analyzer read, whichever backend holds the data: the embedded
//! store (Parquet + SQLite) or Elasticsearch through the bridge
//! ([`crate::sinks::elastic::reader::ElasticReader`]).

use crate::error::{PipelineError, Result};
use crate::sinks::state::{AnomalyFilter, StateStore};
use crate::sinks::store::{AggregateRow, GroupBy, MetricFilter, SeriesInfo, Store};
use async_trait::async_trait;
use sqlvigil_analytics::MetricStat;
use sqlvigil_model::{Anomaly, Insight, LogRecord, Sample};
use std::sync::Arc;

#[async_trait]
pub trait Reader: Send + Sync {
    /// `embedded` or `elastic`.
    fn backend(&self) -> &'static str;
    /// Points matching `f`, oldest first.
    async fn metrics(&self, f: &MetricFilter) -> Result<Vec<Sample>>;
    async fn series(&self, f: &MetricFilter) -> Result<Vec<SeriesInfo>>;
    async fn aggregates(
        &self,
        f: &MetricFilter,
        window_ns: i64,
        group_by: GroupBy,
    ) -> Result<Vec<AggregateRow>>;
    /// Average/min/max/count per gauge series of `instance` between the bounds.
    async fn metric_stats(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<MetricStat>>;
    /// Log records of `instance`, oldest first, at most `limit` (the newest).
    async fn logs(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>>;
    async fn anomalies(&self, f: &AnomalyFilter) -> Result<Vec<Anomaly>>;
    async fn anomaly(&self, id: &str) -> Result<Option<Anomaly>>;
    async fn insights(&self, anomaly_id: Option<&str>, limit: usize) -> Result<Vec<Insight>>;
}

/// The embedded store.
pub struct EmbeddedReader {
    pub store: Arc<Store>,
    pub state: Arc<StateStore>,
}

#[async_trait]
impl Reader for EmbeddedReader {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn metrics(&self, f: &MetricFilter) -> Result<Vec<Sample>> {
        self.store.query_metrics(f).await
    }

    async fn series(&self, f: &MetricFilter) -> Result<Vec<SeriesInfo>> {
        self.store.series(f).await
    }

    async fn aggregates(
        &self,
        f: &MetricFilter,
        window_ns: i64,
        group_by: GroupBy,
    ) -> Result<Vec<AggregateRow>> {
        self.store.aggregates(f, window_ns, group_by).await
    }

    async fn metric_stats(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<MetricStat>> {
        self.store.metric_stats(instance, from_ns, to_ns).await
    }

    async fn logs(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        self.store.query_logs(instance, from_ns, to_ns, limit).await
    }

    async fn anomalies(&self, f: &AnomalyFilter) -> Result<Vec<Anomaly>> {
        self.state.anomalies(f)
    }

    async fn anomaly(&self, id: &str) -> Result<Option<Anomaly>> {
        self.state.anomaly(id)
    }

    async fn insights(&self, anomaly_id: Option<&str>, limit: usize) -> Result<Vec<Insight>> {
        self.state.insights(anomaly_id, limit)
    }
}

/// For backends that cannot answer a question.
pub fn unsupported(what: &str, backend: &str) -> PipelineError {
    PipelineError::Unsupported(format!(
        "{what} needs store.backend: elastic (this is {backend})"
    ))
}
