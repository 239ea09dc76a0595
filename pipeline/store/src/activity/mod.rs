//! The receiver's events in the embedded store: a Parquet table each,
//! `top_queries/` ([`TopQuery`] observations) and `query_samples/` ([`QuerySample`]s),
//! written next to `metrics/` and `logs/` (same hour partitions, same flush).
//!
//! Columns: `time`, `instance`, `database`, `query_hash` (what reads filter and group
//! on, so DataFusion prunes by them) and `record`, the typed model as JSON (the model is
//! the schema; a field added to it needs no migration). Log records that are events go
//! here instead of `logs/`: the query text and plan would only bloat the log table.

pub mod table;

use crate::error::Result;
use crate::writer::{Buffer, Store};
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlvigil_model::query::{Answer, Instances, Malformed, Range};
use sqlvigil_model::{Activity, BlockingEvent, LogRecord, QuerySample, TopQuery};
use std::borrow::Cow;
use std::sync::Mutex;
use table::{schema, to_batch, Row, QUERY_SAMPLES, TOP_QUERIES};

/// Buffer `models` as rows of their table; `key` gives each one's indexed columns.
fn append_models<T: Serialize>(
    buffer: &Mutex<Buffer>,
    models: &[T],
    key: impl for<'a> Fn(&'a T) -> (i64, &'a str, &'a str, &'a str),
) -> Result<()> {
    if models.is_empty() {
        return Ok(());
    }
    let rows: Vec<Row<'_, T>> = models
        .iter()
        .map(|m| {
            let (t, instance, database, hash) = key(m);
            (t, instance, database, hash, m)
        })
        .collect();
    crate::writer::append(buffer, to_batch(&rows)?);
    Ok(())
}

fn nanos(t: &chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Store {
    /// Keep the events among `logs` in their tables; the rest are log lines.
    /// The log lines come back borrowed when the batch holds no event (the usual case).
    pub(crate) fn split_activity<'a>(&self, logs: &'a [LogRecord]) -> Result<Cow<'a, [LogRecord]>> {
        let (mut tops, mut samples, mut events) = (Vec::new(), Vec::new(), Vec::new());
        for (i, log) in logs.iter().enumerate() {
            match sqlvigil_model::activity::parse(log) {
                Ok(Some(Activity::TopQuery(q))) => tops.push(q),
                Ok(Some(Activity::Sample(s))) => samples.push(s),
                Ok(None) => continue,
                Err(reason) => {
                    // Stored as the log line it is, never lost; the reason is logged.
                    tracing::warn!(instance = %log.instance, "receiver event kept as a log line: {reason}");
                    continue;
                }
            }
            events.push(i);
        }
        sqlvigil_core::Stats::add(
            &self.stats.query_events,
            (tops.len() + samples.len()) as u64,
        );
        append_models(&self.top_queries, &tops, |q| {
            (nanos(&q.last_seen), &q.instance, &q.database, &q.query_hash)
        })?;
        append_models(&self.query_samples, &samples, |s| {
            (nanos(&s.time), &s.instance, &s.database, &s.query_hash)
        })?;
        if events.is_empty() {
            return Ok(Cow::Borrowed(logs));
        }
        let plain = logs
            .iter()
            .enumerate()
            .filter(|(i, _)| events.binary_search(i).is_err())
            .map(|(_, l)| l.clone())
            .collect();
        Ok(Cow::Owned(plain))
    }

    /// The models stored in `table` within `range` (and of `instance`), newest first,
    /// at most `limit`; rows whose record does not parse are listed as malformed.
    async fn records<T: DeserializeOwned>(
        &self,
        table: &'static str,
        buffer: &Mutex<Buffer>,
        range: &Range,
        instances: &Instances,
        limit: usize,
    ) -> Result<Answer<T>> {
        let ts = |ns: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(ns),
                Some("UTC".into()),
            ))
        };
        let (_ctx, df) = self
            .frame(table, buffer, schema(), (range.from_ns, range.to_ns))
            .await?;
        let mut conds = Vec::new();
        if let Some(from) = range.from_ns {
            conds.push(col("time").gt_eq(ts(from)));
        }
        if let Some(to) = range.to_ns {
            conds.push(col("time").lt_eq(ts(to)));
        }
        if let Some(only) = instances.only() {
            conds.push(crate::scope::instance_in(only));
        }
        let df = match conds.into_iter().reduce(datafusion::prelude::Expr::and) {
            Some(c) => df.filter(c)?,
            None => df,
        };
        let df = df
            .sort(vec![col("time").sort(false, false)])?
            .limit(0, Some(limit.saturating_add(1)))?;
        let (mut rows, mut malformed) = (Vec::new(), Vec::new());
        for batch in df.collect().await? {
            let records = crate::query::string_col(&batch, "record")?;
            for i in 0..batch.num_rows() {
                match serde_json::from_str::<T>(records.value(i)) {
                    Ok(r) => rows.push(r),
                    Err(e) => malformed.push(Malformed {
                        index: table.into(),
                        id: i.to_string(),
                        reason: e.to_string(),
                    }),
                }
            }
        }
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        Ok(Answer::new(rows, malformed, truncated))
    }

    /// Queries by CPU within `range`: the observations (deltas) summed per query.
    pub async fn top_queries(
        &self,
        range: &Range,
        instances: &Instances,
        limit: usize,
        max_observations: usize,
    ) -> Result<Answer<TopQuery>> {
        let seen: Answer<TopQuery> = self
            .records(
                TOP_QUERIES,
                &self.top_queries,
                range,
                instances,
                max_observations,
            )
            .await?;
        Ok(Answer {
            rows: TopQuery::top(seen.rows, limit),
            ..seen
        })
    }

    /// The query samples within `range`, newest first.
    pub async fn query_samples(
        &self,
        range: &Range,
        instances: &Instances,
        limit: usize,
    ) -> Result<Answer<QuerySample>> {
        self.records(QUERY_SAMPLES, &self.query_samples, range, instances, limit)
            .await
    }

    /// Blocked sessions within `range`, newest first.
    pub async fn blocking(
        &self,
        range: &Range,
        instances: &Instances,
        limit: usize,
        max_samples: usize,
    ) -> Result<Answer<BlockingEvent>> {
        let samples = self.query_samples(range, instances, max_samples).await?;
        let mut rows: Vec<BlockingEvent> = samples
            .rows
            .iter()
            .filter_map(QuerySample::blocking_event)
            .collect();
        rows.truncate(limit);
        Ok(Answer {
            rows,
            malformed: samples.malformed,
            malformed_count: samples.malformed_count,
            truncated: samples.truncated,
        })
    }
}
