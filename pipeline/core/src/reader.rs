//! What the API and the analytics stage read, whichever backend holds the data: the
//! embedded store (`sqlvigil-store`'s `EmbeddedReader`: Parquet + SQLite) or
//! Elasticsearch through the bridge (`sqlvigil-bridge`'s `ElasticReader`).
//!
//! Both answer every method the same way. Where a backend cannot (the summaries of
//! waits, I/O, top queries and blocking are read from Elasticsearch documents), the
//! default implementation answers [`Error::Unsupported`] naming the setting that can.

use crate::error::{Error, Result};
use async_trait::async_trait;
use sqlvigil_model::query::{
    AggregateRow, AnomalyFilter, Answer, GroupBy, Instances, MetricFilter, MetricStat, Range,
    SeriesInfo, Served,
};
use sqlvigil_model::{
    Anomaly, BlockingEvent, Insight, IoSummary, LogRecord, Sample, TopQuery, WaitSummary,
};

#[async_trait]
pub trait Reader: Send + Sync {
    /// `embedded` or `elastic`.
    fn backend(&self) -> &'static str;
    /// Points matching `f`, oldest first.
    async fn metrics(&self, f: &MetricFilter) -> Result<Vec<Sample>>;
    /// [`Reader::metrics`], and the stretches of `f`'s range answered with rollups
    /// rather than the points as sent (none: raw throughout), read together.
    async fn metrics_served(&self, f: &MetricFilter) -> Result<(Vec<Sample>, Vec<Served>)> {
        Ok((self.metrics(f).await?, Vec::new()))
    }
    async fn series(&self, f: &MetricFilter) -> Result<Vec<SeriesInfo>>;
    async fn aggregates(
        &self,
        f: &MetricFilter,
        window_ns: i64,
        group_by: GroupBy,
    ) -> Result<Vec<AggregateRow>>;
    /// Average/min/max/count per gauge series of `instance` between the bounds, by
    /// metric then attributes (built with [`sqlvigil_model::query::MetricStats`]).
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
    /// Anomalies newest first (by opening time, then id), continuing after `f.after`.
    async fn anomalies(&self, f: &AnomalyFilter) -> Result<Vec<Anomaly>>;
    /// How many anomalies match `f` (its cursor and limit aside).
    async fn count_anomalies(&self, f: &AnomalyFilter) -> Result<u64>;
    async fn anomaly(&self, id: &str) -> Result<Option<Anomaly>>;
    /// Insights newest first, of `anomaly_id` if given, about `instances`.
    async fn insights(
        &self,
        anomaly_id: Option<&str>,
        instances: &Instances,
        limit: usize,
    ) -> Result<Vec<Insight>>;

    /// Time waited per instance and wait type within `range`, longest first.
    async fn waits(&self, _range: &Range, _instances: &Instances) -> Result<Vec<WaitSummary>> {
        Err(summaries_unsupported("wait statistics"))
    }
    /// I/O per instance, database and file within `range`.
    async fn io(&self, _range: &Range, _instances: &Instances) -> Result<Vec<IoSummary>> {
        Err(summaries_unsupported("I/O statistics"))
    }
    /// Queries by CPU within `range`, at most `limit`.
    async fn top_queries(
        &self,
        _range: &Range,
        _instances: &Instances,
        _limit: usize,
    ) -> Result<Answer<TopQuery>> {
        Err(summaries_unsupported("top queries"))
    }
    /// What the store holds on disk, per table (empty: the backend keeps its own).
    async fn storage(&self) -> Result<Vec<sqlvigil_model::query::TableStorage>> {
        Ok(Vec::new())
    }
    /// Blocked sessions within `range`, newest first, at most `limit`.
    async fn blocking(
        &self,
        _range: &Range,
        _instances: &Instances,
        _limit: usize,
    ) -> Result<Answer<BlockingEvent>> {
        Err(summaries_unsupported("blocking events"))
    }
}

/// The summaries are read from Elasticsearch documents (query-level and session data
/// the embedded store does not keep).
fn summaries_unsupported(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what} are read from Elasticsearch documents; set store.backend: elastic"
    ))
}

/// Prometheus text of what the store holds (`sqlvigil_store_*`, one series per table).
pub fn render_storage(tables: &[sqlvigil_model::query::TableStorage]) -> String {
    use sqlvigil_model::query::TableStorage;
    use std::fmt::Write;
    let now = chrono::Utc::now();
    let age = |t: &TableStorage| {
        t.oldest
            .map_or(0.0, |o| (now - o).num_milliseconds() as f64 / 1000.0)
    };
    type Field<'a> = &'a dyn Fn(&TableStorage) -> f64;
    let series: [(&str, &str, Field); 6] = [
        ("files", "Parquet files of the table.", &|t| t.files as f64),
        ("bytes", "Bytes of the table's files.", &|t| t.bytes as f64),
        ("rows", "Rows in the table's files, as written.", &|t| {
            t.rows as f64
        }),
        (
            "uncompacted_files",
            "Files not compacted yet (the compaction backlog).",
            &|t| t.uncompacted_files as f64,
        ),
        ("series", "Metric series catalogued.", &|t| t.series as f64),
        ("oldest_age_seconds", "Age of the oldest row kept.", &age),
    ];
    let mut out = String::new();
    for (name, help, field) in series {
        let _ = writeln!(
            out,
            "# HELP sqlvigil_store_{name} {help}\n# TYPE sqlvigil_store_{name} gauge"
        );
        for t in tables {
            let _ = writeln!(
                out,
                "sqlvigil_store_{name}{{table=\"{}\"}} {}",
                crate::health::prometheus_label(&t.table),
                field(t)
            );
        }
    }
    out
}
