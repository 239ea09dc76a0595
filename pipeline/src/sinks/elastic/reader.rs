//! [`Reader`] over Elasticsearch: the bridge's queries, with malformed documents counted
//! (`sqlvigil_bridge_malformed_docs`) and logged with their reason.

use crate::error::Result;
use crate::sinks::reader::Reader;
use crate::sinks::state::AnomalyFilter;
use crate::sinks::store::{AggregateRow, GroupBy, MetricFilter, SeriesInfo};
use crate::stats::Stats;
use async_trait::async_trait;
use sqlvigil_analytics::MetricStat;
use sqlvigil_bridge::query::{self, Answer, Range, ReadOptions};
use sqlvigil_bridge::Elastic;
use sqlvigil_model::{Anomaly, Insight, LogRecord, MetricKind, Sample};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct ElasticReader {
    pub es: Elastic,
    pub options: ReadOptions,
    pub stats: Arc<Stats>,
}

impl ElasticReader {
    /// Count and log what could not be read; keep the rows.
    pub fn rows<T>(&self, a: Answer<T>) -> Vec<T> {
        self.note(&a);
        a.rows
    }

    /// Count and log an answer's malformed documents.
    pub fn note<T>(&self, a: &Answer<T>) {
        if a.malformed_count > 0 {
            Stats::add(&self.stats.bridge_malformed_docs, a.malformed_count as u64);
            for m in &a.malformed {
                tracing::warn!(index = %m.index, id = %m.id, reason = %m.reason, "malformed document skipped");
            }
        }
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
        let f = MetricFilter {
            instance: Some(instance.to_string()),
            from_ns: Some(from_ns),
            to_ns: Some(to_ns),
            ..Default::default()
        };
        let mut by_series: BTreeMap<u64, MetricStat> = BTreeMap::new();
        for s in self.metrics(&f).await? {
            if s.kind != MetricKind::Gauge {
                continue;
            }
            let e = by_series.entry(s.key.id()).or_insert_with(|| {
                let mut attributes = s.key.attributes.clone();
                if !s.key.database.is_empty() {
                    attributes.insert(
                        crate::analytics::DATABASE_ATTR.into(),
                        s.key.database.to_string(),
                    );
                }
                MetricStat {
                    metric: s.key.metric.to_string(),
                    attributes,
                    unit: s.unit.to_string(),
                    avg: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    points: 0,
                }
            });
            // Running mean, so no second pass is needed.
            e.points += 1;
            e.avg += (s.value - e.avg) / e.points as f64;
            e.min = e.min.min(s.value);
            e.max = e.max.max(s.value);
        }
        let mut out: Vec<MetricStat> = by_series.into_values().collect();
        out.sort_by(|a, b| (&a.metric, &a.attributes).cmp(&(&b.metric, &b.attributes)));
        Ok(out)
    }

    async fn logs(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        let range = Range {
            from_ns: Some(from_ns),
            to_ns: Some(to_ns),
        };
        Ok(self.rows(query::logs(&self.es, &self.options, &range, instance, limit).await?))
    }

    async fn anomalies(&self, f: &AnomalyFilter) -> Result<Vec<Anomaly>> {
        Ok(self.rows(query::anomalies(&self.es, f).await?))
    }

    async fn anomaly(&self, id: &str) -> Result<Option<Anomaly>> {
        Ok(query::anomaly(&self.es, id).await?)
    }

    async fn insights(&self, anomaly_id: Option<&str>, limit: usize) -> Result<Vec<Insight>> {
        Ok(self.rows(query::insights(&self.es, anomaly_id, limit).await?))
    }
}
