//! [`Reader`] over Elasticsearch: the bridge's queries, with malformed documents counted
//! (`sqlvigil_bridge_malformed_docs`) and logged with their reason.

use super::query::{self, ReadOptions};
use crate::Elastic;
use sqlvigil_core::{async_trait, Reader, Result, Stats};
use sqlvigil_model::query::{
    AggregateRow, AnomalyFilter, Answer, GroupBy, Instances, MetricFilter, MetricStat, Range,
    SeriesInfo,
};
use sqlvigil_model::{
    Anomaly, BlockingEvent, Insight, IoSummary, LogRecord, Sample, TopQuery, WaitSummary,
};
use std::sync::Arc;

pub struct ElasticReader {
    pub es: Elastic,
    pub options: ReadOptions,
    pub stats: Arc<Stats>,
}

impl ElasticReader {
    /// Count and log what could not be read; keep the rows.
    fn rows<T>(&self, a: Answer<T>) -> Vec<T> {
        self.note(&a);
        a.rows
    }

    /// Count and log an answer's malformed documents.
    fn note<T>(&self, a: &Answer<T>) {
        if a.malformed_count > 0 {
            Stats::add(&self.stats.bridge_malformed_docs, a.malformed_count as u64);
            for m in &a.malformed {
                tracing::warn!(index = %m.index, id = %m.id, reason = %m.reason, "malformed document skipped");
            }
        }
    }

    /// The whole answer (the API shows what could not be read), counted and logged.
    fn noted<T>(&self, a: Answer<T>) -> Answer<T> {
        self.note(&a);
        a
    }
}

#[async_trait]
impl Reader for ElasticReader {
    fn backend(&self) -> &'static str {
        "elastic"
    }

    async fn metrics(&self, f: &MetricFilter) -> Result<Vec<Sample>> {
        Ok(self.rows(query::metrics(&self.es, &self.options, f).await?))
    }

    async fn series(&self, f: &MetricFilter) -> Result<Vec<SeriesInfo>> {
        Ok(self.rows(query::series(&self.es, &self.options, f).await?))
    }

    async fn aggregates(
        &self,
        f: &MetricFilter,
        window_ns: i64,
        group_by: GroupBy,
    ) -> Result<Vec<AggregateRow>> {
        Ok(query::aggregates(&self.es, &self.options, f, window_ns, group_by).await?)
    }

    async fn metric_stats(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<MetricStat>> {
        let range = Range::between(from_ns, to_ns);
        let answer = query::metric_stats(&self.es, &self.options, &range, instance).await?;
        Ok(self.rows(answer))
    }

    async fn logs(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        let range = Range::between(from_ns, to_ns);
        Ok(self.rows(query::logs(&self.es, &self.options, &range, instance, limit).await?))
    }

    async fn anomalies(&self, f: &AnomalyFilter) -> Result<Vec<Anomaly>> {
        Ok(self.rows(query::anomalies(&self.es, f).await?))
    }

    async fn count_anomalies(&self, f: &AnomalyFilter) -> Result<u64> {
        Ok(query::count_anomalies(&self.es, f).await?)
    }

    async fn anomaly(&self, id: &str) -> Result<Option<Anomaly>> {
        Ok(query::anomaly(&self.es, id).await?)
    }

    async fn insights(
        &self,
        anomaly_id: Option<&str>,
        instances: &Instances,
        limit: usize,
    ) -> Result<Vec<Insight>> {
        Ok(self.rows(query::insights(&self.es, anomaly_id, instances, limit).await?))
    }

    async fn waits(&self, range: &Range, instances: &Instances) -> Result<Vec<WaitSummary>> {
        Ok(query::waits(&self.es, &self.options, range, instances).await?)
    }

    async fn io(&self, range: &Range, instances: &Instances) -> Result<Vec<IoSummary>> {
        Ok(query::io(&self.es, &self.options, range, instances).await?)
    }

    async fn top_queries(
        &self,
        range: &Range,
        instances: &Instances,
        limit: usize,
    ) -> Result<Answer<TopQuery>> {
        let answer = query::top_queries(&self.es, &self.options, range, instances, limit).await?;
        Ok(self.noted(answer))
    }

    async fn blocking(
        &self,
        range: &Range,
        instances: &Instances,
        limit: usize,
    ) -> Result<Answer<BlockingEvent>> {
        let answer = query::blocking(&self.es, &self.options, range, instances, limit).await?;
        Ok(self.noted(answer))
    }
}
