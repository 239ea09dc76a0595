//! [`Reader`] over the embedded store: telemetry from Parquet (plus the unflushed
//! buffer), the receiver's events (top queries, blocking) from their tables, anomalies
//! and insights from SQLite. The wait and I/O summaries are Elasticsearch views: the
//! trait's defaults say so.

use crate::state::StateStore;
use crate::writer::Store;
use sqlvigil_core::{async_trait, Reader, Result};
use sqlvigil_model::query::{
    AggregateRow, AnomalyFilter, Answer, GroupBy, Instances, MetricFilter, MetricStat, Range,
    SeriesInfo, Served,
};
use sqlvigil_model::{Anomaly, BlockingEvent, Insight, LogRecord, Sample, TopQuery};

/// Most event rows one top-queries or blocking answer reads (then `truncated`).
const MAX_EVENT_ROWS: usize = 200_000;
use std::sync::Arc;

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
        Ok(self.store.query_metrics(f).await?)
    }

    async fn metrics_served(&self, f: &MetricFilter) -> Result<(Vec<Sample>, Vec<Served>)> {
        Ok(self.store.query_points(f).await?)
    }

    async fn series(&self, f: &MetricFilter) -> Result<Vec<SeriesInfo>> {
        Ok(self.store.series(f).await?)
    }

    async fn aggregates(
        &self,
        f: &MetricFilter,
        window_ns: i64,
        group_by: GroupBy,
    ) -> Result<Vec<AggregateRow>> {
        Ok(self.store.aggregates(f, window_ns, group_by).await?)
    }

    async fn metric_stats(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<MetricStat>> {
        Ok(self.store.metric_stats(instance, from_ns, to_ns).await?)
    }

    async fn logs(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        Ok(self
            .store
            .query_logs(instance, from_ns, to_ns, limit)
            .await?)
    }

    async fn anomalies(&self, f: &AnomalyFilter) -> Result<Vec<Anomaly>> {
        Ok(self.state.anomalies(f)?)
    }

    async fn count_anomalies(&self, f: &AnomalyFilter) -> Result<u64> {
        Ok(self.state.count_anomalies(f)?)
    }

    async fn anomaly(&self, id: &str) -> Result<Option<Anomaly>> {
        Ok(self.state.anomaly(id)?)
    }

    async fn insights(
        &self,
        anomaly_id: Option<&str>,
        instances: &Instances,
        limit: usize,
    ) -> Result<Vec<Insight>> {
        Ok(self.state.insights(anomaly_id, instances, limit)?)
    }

    async fn storage(&self) -> Result<Vec<sqlvigil_model::query::TableStorage>> {
        Ok(self.store.storage()?)
    }

    async fn top_queries(
        &self,
        range: &Range,
        instances: &Instances,
        limit: usize,
    ) -> Result<Answer<TopQuery>> {
        Ok(self
            .store
            .top_queries(range, instances, limit, MAX_EVENT_ROWS)
            .await?)
    }

    async fn blocking(
        &self,
        range: &Range,
        instances: &Instances,
        limit: usize,
    ) -> Result<Answer<BlockingEvent>> {
        Ok(self
            .store
            .blocking(range, instances, limit, MAX_EVENT_ROWS)
            .await?)
    }
}
