//! The embedded telemetry store: Arrow batches buffered in memory, written as Parquet
//! files under `<data_dir>/metrics/day=YYYY-MM-DD/hour=HH/` (and `logs/`; hive-style
//! names, which DataFusion lists below the table directory), and queried with
//! DataFusion over the files plus the not-yet-flushed buffer, so a point is visible as
//! soon as the consumer has processed it.
//!
//! Files are written under a temporary name and renamed, so a reader or a crash never
//! sees half a file.

use super::Sink;
use crate::error::Result;
use crate::stats::Stats;
use arrow::array::{Array, Float64Array, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::functions_aggregate::expr_fn::{avg, count, max, min};
use datafusion::prelude::{col, lit, DataFrame, Expr, SessionContext};
use datafusion::scalar::ScalarValue;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sqlvigil_analytics::MetricStat;
use sqlvigil_model::arrow_schema::{
    batch_to_logs, batch_to_samples, log_schema, logs_to_batch, sample_schema, samples_to_batch,
};
use sqlvigil_model::{LogRecord, Sample};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Buffer {
    batches: Vec<RecordBatch>,
    rows: usize,
    /// Taken by the flush in progress: still visible to queries until its file is.
    flushing: Vec<RecordBatch>,
}

pub use sqlvigil_model::query::{AggregateRow, GroupBy, MetricFilter, SeriesInfo};

/// The SQL expression a [`GroupBy`] groups on. Point attributes come out of the stored
/// attributes JSON (compact, keys sorted) with string functions; only fixed attribute
/// names are spliced in.
fn group_column(g: GroupBy) -> String {
    if let Some(attr) = g.attribute() {
        return format!(r#"split_part(split_part(attributes, '"{attr}":"', 2), '"', 1)"#);
    }
    match g {
        GroupBy::Series => "series_id",
        GroupBy::Instance => "instance",
        GroupBy::Database => "database",
        GroupBy::Host => "host",
        _ => "'all'",
    }
    .to_string()
}

pub struct Store {
    dir: PathBuf,
    metrics: Mutex<Buffer>,
    logs: Mutex<Buffer>,
    seq: AtomicU64,
    /// Serializes flushes (the runtime's workers may flush at the same time).
    flushing: Mutex<()>,
    stats: Arc<Stats>,
}

fn lock(m: &Mutex<Buffer>) -> MutexGuard<'_, Buffer> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn append(buffer: &Mutex<Buffer>, batch: RecordBatch) {
    let mut buf = lock(buffer);
    buf.rows += batch.num_rows();
    buf.batches.push(batch);
}

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

impl Store {
    pub fn open(data_dir: &Path, stats: Arc<Stats>) -> Result<Store> {
        for sub in ["metrics", "logs"] {
            std::fs::create_dir_all(data_dir.join(sub))?;
        }
        Ok(Store {
            dir: data_dir.to_path_buf(),
            metrics: Mutex::new(Buffer::default()),
            logs: Mutex::new(Buffer::default()),
            seq: AtomicU64::new(0),
            flushing: Mutex::new(()),
            stats,
        })
    }

    /// Write `batches` as one Parquet file in the hour directory of its first row, under
    /// a temporary name. Returns (temporary, final) names: renaming publishes it.
    fn write_file(
        &self,
        table: &str,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Option<(PathBuf, PathBuf)>> {
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let t0 = first
            .column(0)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .map(|a| a.value(0))
            .unwrap_or_default();
        let hour = sqlvigil_model::ns_to_datetime(t0)
            .format("day=%Y-%m-%d/hour=%H")
            .to_string();
        let dir = self.dir.join(table).join(hour);
        std::fs::create_dir_all(&dir)?;
        let name = format!(
            "part-{}-{}-{}",
            chrono::Utc::now().timestamp_millis(),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = dir.join(format!("{name}.tmp"));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let file = std::fs::File::create(&tmp)?;
        let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
        for b in batches {
            writer.write(b)?;
        }
        writer.into_inner()?.sync_all()?;
        Ok(Some((tmp, dir.join(format!("{name}.parquet")))))
    }

    fn flush_buffer(
        &self,
        table: &str,
        buffer: &Mutex<Buffer>,
        schema: SchemaRef,
    ) -> Result<usize> {
        // One flush per table at a time; appends go on meanwhile (the file is written
        // without the buffer lock), and queries see the batches being flushed until the
        // file that holds them appears: the rename and the hand-over happen under the lock.
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let (batches, rows) = {
            let mut buf = lock(buffer);
            if buf.rows == 0 {
                return Ok(0);
            }
            buf.flushing = std::mem::take(&mut buf.batches);
            (buf.flushing.clone(), std::mem::take(&mut buf.rows))
        };
        let written = self.write_file(table, schema, &batches);
        let mut buf = lock(buffer);
        let published = written.and_then(|names| match names {
            Some((tmp, name)) => std::fs::rename(tmp, name).map_err(Into::into),
            None => Ok(()),
        });
        if let Err(e) = published {
            // Keep the rows buffered for the next flush.
            let mut back = std::mem::take(&mut buf.flushing);
            back.append(&mut buf.batches);
            buf.batches = back;
            buf.rows += rows;
            return Err(e);
        }
        buf.flushing.clear();
        Ok(rows)
    }

    /// A DataFrame over the files and the buffer of `table`.
    async fn frame(
        &self,
        table: &str,
        buffer: &Mutex<Buffer>,
        schema: SchemaRef,
    ) -> Result<(SessionContext, DataFrame)> {
        let ctx = SessionContext::new();
        let dir = self.dir.join(table);
        let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema.clone());
        ctx.register_table("files", Arc::new(ListingTable::try_new(config)?))?;
        let buffered = {
            let buf = lock(buffer);
            buf.flushing
                .iter()
                .chain(&buf.batches)
                .cloned()
                .collect::<Vec<_>>()
        };
        ctx.register_table(
            "buffer",
            Arc::new(MemTable::try_new(schema, vec![buffered])?),
        )?;
        let df = ctx
            .table("files")
            .await?
            .union(ctx.table("buffer").await?)?;
        Ok((ctx, df))
    }

    fn apply(df: DataFrame, f: &MetricFilter) -> Result<DataFrame> {
        let mut conds: Vec<Expr> = Vec::new();
        if let Some(id) = f.series_id {
            conds.push(col("series_id").eq(lit(id)));
        }
        if let Some(m) = &f.metric {
            conds.push(col("metric").eq(lit(m.as_str())));
        }
        if let Some(i) = &f.instance {
            conds.push(col("instance").eq(lit(i.as_str())));
        }
        if let Some(from) = f.from_ns {
            conds.push(col("time").gt_eq(ts(from)));
        }
        if let Some(to) = f.to_ns {
            conds.push(col("time").lt_eq(ts(to)));
        }
        let df = match conds.into_iter().reduce(Expr::and) {
            Some(c) => df.filter(c)?,
            None => df,
        };
        // A bus redelivers what a crash left unacknowledged, so a point may have been
        // written twice; the store serves each (series, time) once.
        let all: Vec<Expr> = df
            .schema()
            .fields()
            .iter()
            .map(|f| col(datafusion::common::Column::from_name(f.name())))
            .collect();
        Ok(df.distinct_on(vec![col("series_id"), col("time")], all, None)?)
    }

    /// Points matching `filter`, oldest first.
    pub async fn query_metrics(&self, filter: &MetricFilter) -> Result<Vec<Sample>> {
        let df = self.sorted_points(filter).await?.limit(0, filter.limit)?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            out.extend(batch_to_samples(&b)?);
        }
        Ok(out)
    }

    /// Points matching `filter` as a stream of batches in (time, series) order, for
    /// replays over more data than fits in memory.
    pub async fn stream_metrics(
        &self,
        filter: &MetricFilter,
    ) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
        Ok(self.sorted_points(filter).await?.execute_stream().await?)
    }

    /// The points `filter` selects, in (time, series) order: a total order, so queries
    /// and replays are deterministic.
    async fn sorted_points(&self, filter: &MetricFilter) -> Result<DataFrame> {
        let (_ctx, df) = self
            .frame("metrics", &self.metrics, sample_schema())
            .await?;
        Ok(Self::apply(df, filter)?.sort(vec![
            col("time").sort(true, false),
            col("series_id").sort(true, false),
        ])?)
    }

    /// Windowed aggregates of one metric: per event-time window (tumbling, aligned to the
    /// epoch) and group, count/avg/min/max and approximate p50/p95/p99, computed by
    /// DataFusion SQL over the points `filter` selects.
    pub async fn aggregates(
        &self,
        filter: &MetricFilter,
        window_ns: i64,
        group_by: GroupBy,
    ) -> Result<Vec<AggregateRow>> {
        let (ctx, df) = self
            .frame("metrics", &self.metrics, sample_schema())
            .await?;
        ctx.register_table("pts", Self::apply(df, filter)?.into_view())?;
        let group = group_column(group_by);
        // Only integers and fixed column names are spliced in; user strings went
        // through the DataFrame filter above.
        let sql = format!(
            "SELECT date_bin(INTERVAL '{window_ns} nanoseconds', time, TIMESTAMP '1970-01-01T00:00:00Z') AS window_start, \
                    CAST({group} AS VARCHAR) AS grp, count(*) AS points, avg(value) AS avg, min(value) AS min, \
                    max(value) AS max, \
                    approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS p50, \
                    approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY value) AS p95, \
                    approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99 \
             FROM pts GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let mut out = Vec::new();
        for b in ctx.sql(&sql).await?.collect().await? {
            let start: arrow::array::Int64Array = typed_col(&b, "window_start", &DataType::Int64)?;
            let grp = string_col(&b, "grp")?;
            let points: UInt64Array = typed_col(&b, "points", &DataType::UInt64)?;
            let [avg, min, max, p50, p95, p99]: [Result<Float64Array>; 6] =
                ["avg", "min", "max", "p50", "p95", "p99"]
                    .map(|n| typed_col(&b, n, &DataType::Float64));
            let (avg, min, max, p50, p95, p99) = (avg?, min?, max?, p50?, p95?, p99?);
            out.extend((0..b.num_rows()).map(|i| AggregateRow {
                window_start: sqlvigil_model::ns_to_datetime(start.value(i)),
                group: grp.value(i).to_string(),
                points: points.value(i),
                avg: avg.value(i),
                min: min.value(i),
                max: max.value(i),
                p50: p50.value(i),
                p95: p95.value(i),
                p99: p99.value(i),
            }));
        }
        Ok(out)
    }

    /// Distinct series matching `filter` (time bounds apply to their points).
    pub async fn series(&self, filter: &MetricFilter) -> Result<Vec<SeriesInfo>> {
        let (_ctx, df) = self
            .frame("metrics", &self.metrics, sample_schema())
            .await?;
        let keys = [
            "series_id",
            "instance",
            "host",
            "database",
            "metric",
            "attributes",
            "unit",
            "kind",
        ];
        let df = Self::apply(df, filter)?
            .aggregate(
                keys.iter().map(|k| col(*k)).collect(),
                vec![
                    count(lit(1)).alias("points"),
                    max(col("time")).alias("last_time"),
                ],
            )?
            .sort(vec![
                col("metric").sort(true, false),
                col("instance").sort(true, false),
                col("series_id").sort(true, false),
            ])?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            out.extend(series_rows(&b)?);
        }
        Ok(out)
    }

    /// Average, min, max and count per series of `instance` between the bounds
    /// (gauges and derived rates; raw cumulative counters say little as averages).
    pub async fn metric_stats(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<MetricStat>> {
        let (_ctx, df) = self
            .frame("metrics", &self.metrics, sample_schema())
            .await?;
        let f = MetricFilter {
            instance: Some(instance.to_string()),
            from_ns: Some(from_ns),
            to_ns: Some(to_ns),
            ..Default::default()
        };
        let df = Self::apply(df, &f)?
            .filter(col("kind").eq(lit("gauge")))?
            .aggregate(
                vec![
                    col("metric"),
                    col("database"),
                    col("attributes"),
                    col("unit"),
                ],
                vec![
                    avg(col("value")).alias("avg"),
                    min(col("value")).alias("min"),
                    max(col("value")).alias("max"),
                    count(lit(1)).alias("points"),
                ],
            )?
            .sort(vec![
                col("metric").sort(true, false),
                col("database").sort(true, false),
                col("attributes").sort(true, false),
            ])?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            let [metric, database, attributes, unit] =
                ["metric", "database", "attributes", "unit"].map(|n| string_col(&b, n));
            let (metric, database, attributes, unit) = (metric?, database?, attributes?, unit?);
            let [avg, min, max]: [Result<Float64Array>; 3] =
                ["avg", "min", "max"].map(|n| typed_col(&b, n, &DataType::Float64));
            let (avg, min, max) = (avg?, min?, max?);
            let points: UInt64Array = typed_col(&b, "points", &DataType::UInt64)?;
            out.extend((0..b.num_rows()).map(|i| MetricStat {
                metric: metric.value(i).into(),
                attributes: with_database(attributes.value(i), database.value(i)),
                unit: unit.value(i).into(),
                avg: avg.value(i),
                min: min.value(i),
                max: max.value(i),
                points: points.value(i),
            }));
        }
        Ok(out)
    }

    /// Log records of `instance` between the bounds, oldest first, at most `limit` (the newest).
    pub async fn query_logs(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        let (_ctx, df) = self.frame("logs", &self.logs, log_schema()).await?;
        let df = df
            .filter(
                col("instance")
                    .eq(lit(instance))
                    .and(col("time").gt_eq(ts(from_ns)))
                    .and(col("time").lt_eq(ts(to_ns))),
            )?
            // Total order (time, then text) so the same window always yields the same lines.
            .sort(vec![
                col("time").sort(false, false),
                col("message").sort(false, false),
                col("category").sort(false, false),
            ])?
            .limit(0, Some(limit))?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            out.extend(batch_to_logs(&b)?);
        }
        out.reverse();
        Ok(out)
    }

    /// Number of Parquet files written (tests, diagnostics).
    pub fn file_count(&self, table: &str) -> usize {
        fn walk(p: &Path) -> usize {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let p = e.path();
                            if p.is_dir() {
                                walk(&p)
                            } else {
                                usize::from(p.extension().is_some_and(|x| x == "parquet"))
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.dir.join(table))
    }
}

/// Column `name` cast to `dt` and downcast to its array type.
fn typed_col<T: Clone + 'static>(b: &RecordBatch, name: &'static str, dt: &DataType) -> Result<T> {
    let missing = || sqlvigil_model::ModelError::Column(name);
    let col = cast(b.column_by_name(name).ok_or_else(missing)?, dt)?;
    Ok(col
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(missing)?)
}

fn string_col(b: &RecordBatch, name: &'static str) -> Result<StringArray> {
    typed_col(b, name, &DataType::Utf8)
}

/// Attributes JSON plus the database (when set) under `sqlserver.database.name`.
fn with_database(attributes_json: &str, database: &str) -> BTreeMap<String, String> {
    let mut attrs: BTreeMap<String, String> =
        serde_json::from_str(attributes_json).unwrap_or_default();
    if !database.is_empty() {
        attrs.insert("sqlserver.database.name".into(), database.into());
    }
    attrs
}

fn series_rows(b: &RecordBatch) -> Result<Vec<SeriesInfo>> {
    let ids: UInt64Array = typed_col(b, "series_id", &DataType::UInt64)?;
    let points: UInt64Array = typed_col(b, "points", &DataType::UInt64)?;
    let last: arrow::array::Int64Array = typed_col(b, "last_time", &DataType::Int64)?;
    let [instance, host, database, metric, attributes, unit, kind] = [
        "instance",
        "host",
        "database",
        "metric",
        "attributes",
        "unit",
        "kind",
    ]
    .map(|n| string_col(b, n));
    let (instance, host, database, metric, attributes, unit, kind) = (
        instance?,
        host?,
        database?,
        metric?,
        attributes?,
        unit?,
        kind?,
    );
    Ok((0..b.num_rows())
        .map(|i| SeriesInfo {
            id: format!("{:016x}", ids.value(i)),
            instance: instance.value(i).into(),
            host: host.value(i).into(),
            database: database.value(i).into(),
            metric: metric.value(i).into(),
            attributes: serde_json::from_str(attributes.value(i)).unwrap_or_default(),
            unit: unit.value(i).into(),
            kind: kind.value(i).into(),
            points: points.value(i),
            last_time: sqlvigil_model::ns_to_datetime(if last.is_null(i) {
                0
            } else {
                last.value(i)
            }),
        })
        .collect())
}

impl Sink for Store {
    fn name(&self) -> &'static str {
        "store"
    }

    fn write_samples(&self, samples: &[Sample]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        append(&self.metrics, samples_to_batch(samples)?);
        Ok(())
    }

    fn write_logs(&self, logs: &[LogRecord]) -> Result<()> {
        if logs.is_empty() {
            return Ok(());
        }
        append(&self.logs, logs_to_batch(logs)?);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let rows = self.flush_buffer("metrics", &self.metrics, sample_schema())?;
        Stats::add(&self.stats.stored_rows, rows as u64);
        let logs = self.flush_buffer("logs", &self.logs, log_schema())?;
        Stats::add(&self.stats.stored_log_records, logs as u64);
        Ok(())
    }

    fn buffered_rows(&self) -> usize {
        lock(&self.metrics).rows + lock(&self.logs).rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_model::SeriesKey;

    #[tokio::test]
    async fn serves_buffered_and_flushed_points_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let store = Store::open(dir.path(), stats.clone()).unwrap();
        let key = SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization");
        let other = SeriesKey::new("sql2", "h", "", "sqlserver.cpu.utilization");
        store
            .write_samples(&[
                Sample::gauge(key.clone(), 1_000, 1.5, "%"),
                Sample::gauge(other, 1_500, 7.0, "%"),
            ])
            .unwrap();
        store.flush().unwrap();
        store
            .write_samples(&[Sample::gauge(key.clone(), 2_000, 2.5, "%")])
            .unwrap();
        let f = MetricFilter {
            series_id: Some(key.id()),
            ..Default::default()
        };
        let values: Vec<f64> = store
            .query_metrics(&f)
            .await
            .unwrap()
            .iter()
            .map(|s| s.value)
            .collect();
        assert_eq!(values, vec![1.5, 2.5]);
        store.flush().unwrap();
        assert_eq!(store.file_count("metrics"), 2);
        drop(store);
        let store = Store::open(dir.path(), stats).unwrap();
        let f = MetricFilter {
            instance: Some("sql1".into()),
            from_ns: Some(1_500),
            ..Default::default()
        };
        let values: Vec<f64> = store
            .query_metrics(&f)
            .await
            .unwrap()
            .iter()
            .map(|s| s.value)
            .collect();
        assert_eq!(values, vec![2.5]);
        let series = store.series(&MetricFilter::default()).await.unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].points, 2);
        assert_eq!(series[0].id, key.id_hex());
        let stats = store.metric_stats("sql1", 0, 10_000).await.unwrap();
        assert_eq!(
            (stats[0].avg, stats[0].min, stats[0].max, stats[0].points),
            (2.0, 1.5, 2.5, 2)
        );
    }

    #[tokio::test]
    async fn a_point_written_twice_is_served_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
        let key = SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization");
        let batch = [
            Sample::gauge(key.clone(), 1_000, 1.5, "%"),
            Sample::gauge(key.clone(), 2_000, 2.5, "%"),
        ];
        // A redelivery after a crash: once flushed, once still buffered.
        store.write_samples(&batch).unwrap();
        store.flush().unwrap();
        store.write_samples(&batch).unwrap();
        let all = MetricFilter::default();
        let values: Vec<f64> = store
            .query_metrics(&all)
            .await
            .unwrap()
            .iter()
            .map(|s| s.value)
            .collect();
        assert_eq!(values, vec![1.5, 2.5]);
        assert_eq!(store.series(&all).await.unwrap()[0].points, 2);
    }

    #[tokio::test]
    async fn windowed_aggregates_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
        let s = |inst: &str, t_s: i64, v: f64| {
            Sample::gauge(
                SeriesKey::new(inst, "h", "", "sqlserver.cpu.utilization"),
                t_s * 1_000_000_000,
                v,
                "%",
            )
        };
        let mut samples: Vec<Sample> = (0..60).map(|i| s("a", i, i as f64)).collect();
        samples.extend((0..60).map(|i| s("b", i, 100.0)));
        store.write_samples(&samples[..30]).unwrap();
        store.flush().unwrap();
        store.write_samples(&samples[30..]).unwrap();
        let f = MetricFilter {
            metric: Some("sqlserver.cpu.utilization".into()),
            ..Default::default()
        };
        let rows = store
            .aggregates(&f, 30_000_000_000, GroupBy::Instance)
            .await
            .unwrap();
        assert_eq!(rows.len(), 4, "2 windows x 2 instances: {rows:?}");
        let a0 = &rows[0];
        assert_eq!(
            (a0.group.as_str(), a0.points, a0.min, a0.max, a0.avg),
            ("a", 30, 0.0, 29.0, 14.5)
        );
        assert!((a0.p95 - 27.5).abs() < 1.5, "{a0:?}");
        assert_eq!(rows[1].group, "b");
        let all = store
            .aggregates(&f, 60_000_000_000, GroupBy::All)
            .await
            .unwrap();
        assert_eq!((all.len(), all[0].points), (1, 120));
    }

    #[tokio::test]
    async fn aggregates_per_wait_category() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
        let metric = "sqlserver.os.wait.duration.per_second";
        let w = |category: &str, ty: &str, v: f64| {
            let key = SeriesKey::new("a", "h", "", metric)
                .with_attr("wait.category", category)
                .with_attr("wait.type", ty);
            Sample::gauge(key, 1_000_000_000, v, "s/s")
        };
        let samples = [
            w("Lock", "LCK_M_X", 2.0),
            w("Lock", "LCK_M_S", 4.0),
            w("Buffer IO", "PAGEIOLATCH_SH", 1.0),
        ];
        store.write_samples(&samples).unwrap();
        let f = MetricFilter {
            metric: Some(metric.into()),
            ..Default::default()
        };
        let rows = store
            .aggregates(&f, 60_000_000_000, GroupBy::WaitCategory)
            .await
            .unwrap();
        let got: Vec<(&str, u64, f64)> = rows
            .iter()
            .map(|r| (r.group.as_str(), r.points, r.max))
            .collect();
        assert_eq!(got, vec![("Buffer IO", 1, 1.0), ("Lock", 2, 4.0)]);
        let types = store
            .aggregates(&f, 60_000_000_000, GroupBy::WaitType)
            .await
            .unwrap();
        assert_eq!(types.len(), 3);
    }

    #[tokio::test]
    async fn logs_are_stored_and_queried_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
        let log = |ns: i64, msg: &str| LogRecord {
            time: sqlvigil_model::ns_to_datetime(ns),
            severity: "ERROR".into(),
            severity_number: 17,
            message: msg.into(),
            category: "errorlog".into(),
            instance: "sql1".into(),
            host: "h".into(),
            attributes: Default::default(),
        };
        store.write_logs(&[log(1, "a"), log(2, "b")]).unwrap();
        store.flush().unwrap();
        store.write_logs(&[log(3, "c")]).unwrap();
        let got: Vec<String> = store
            .query_logs("sql1", 0, 10, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect();
        assert_eq!(got, vec!["b", "c"]);
    }
}
