//! The embedded telemetry store's read side: DataFusion over the Parquet files plus the
//! buffer not yet flushed — points, series, windowed aggregates, per-series statistics
//! and log lines, each (series, time) served once.

use crate::catalog;
use crate::error::Result;
use crate::writer::{lock, Buffer, Store};
use arrow::array::{Array, Float64Array, StringArray, UInt64Array};
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
use sqlvigil_model::arrow_schema::{batch_to_logs, batch_to_samples, log_schema, sample_schema};
use sqlvigil_model::query::{
    AggregateRow, GroupBy, MetricFilter, MetricStat, MetricStats, SeriesInfo,
};
use sqlvigil_model::{LogRecord, Sample};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

impl Store {
    /// A DataFrame over the buffer of `table` and those of its files whose time span
    /// overlaps `[from, to]` (from the catalogue: no directory is listed).
    pub(crate) async fn frame(
        &self,
        table: &str,
        buffer: &Mutex<Buffer>,
        schema: SchemaRef,
        (from, to): (Option<i64>, Option<i64>),
    ) -> Result<(SessionContext, DataFrame)> {
        let ctx = SessionContext::new();
        let urls: Vec<_> = self
            .catalog
            .files(table, from, to)?
            .into_iter()
            .map(|f| self.dir.join(f.path))
            .collect();
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
            Arc::new(MemTable::try_new(schema.clone(), vec![buffered])?),
        )?;
        let df = ctx.table("buffer").await?;
        if urls.is_empty() {
            return Ok((ctx, df));
        }
        ctx.register_table("files", Arc::new(files_table(urls, schema)?))?;
        let df = ctx.table("files").await?.union(df)?;
        Ok((ctx, df))
    }

    /// The time bounds of a metric filter, for [`Store::frame`].
    fn bounds(f: &MetricFilter) -> (Option<i64>, Option<i64>) {
        (f.from_ns, f.to_ns)
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
        each_point_once(df)
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
            .frame(
                "metrics",
                &self.metrics,
                sample_schema(),
                Self::bounds(filter),
            )
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
            .frame(
                "metrics",
                &self.metrics,
                sample_schema(),
                Self::bounds(filter),
            )
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

    /// Series matching `filter` (a time range selects those seen in it): the
    /// catalogue's, with what the unflushed buffer adds. No file is read.
    pub async fn series(&self, filter: &MetricFilter) -> Result<Vec<SeriesInfo>> {
        // Under the buffer's lock: a flush moves rows from the buffer to the catalogue
        // under it too, so they are seen in one place or the other, once.
        let (listed, buffered) = {
            let buf = lock(&self.metrics);
            let listed = self.catalog.series(filter)?;
            let rows: Vec<_> = buf.flushing.iter().chain(&buf.batches).cloned().collect();
            (listed, rows)
        };
        let mut by_id: BTreeMap<String, SeriesInfo> =
            listed.into_iter().map(|s| (s.id.clone(), s)).collect();
        for seen in catalog::series_seen(&buffered)? {
            let i = &seen.info;
            let wanted = filter.series_id.is_none_or(|id| id == seen.id)
                && filter.metric.as_ref().is_none_or(|m| *m == i.metric)
                && filter.instance.as_ref().is_none_or(|x| *x == i.instance)
                && filter.to_ns.is_none_or(|to| seen.first_ns <= to)
                && filter.from_ns.is_none_or(|from| {
                    i.last_time.timestamp_nanos_opt().unwrap_or(i64::MAX) >= from
                });
            if !wanted {
                continue;
            }
            by_id
                .entry(i.id.clone())
                .and_modify(|s| {
                    s.points += i.points;
                    s.last_time = s.last_time.max(i.last_time);
                })
                .or_insert_with(|| i.clone());
        }
        let mut out: Vec<SeriesInfo> = by_id.into_values().collect();
        out.sort_by(|a, b| (&a.metric, &a.instance, &a.id).cmp(&(&b.metric, &b.instance, &b.id)));
        Ok(out)
    }

    /// Average, min, max and count per series of `instance` between the bounds
    /// (gauges and derived rates; raw cumulative counters say little as averages),
    /// aggregated by DataFusion where the data is and folded into [`MetricStats`].
    pub async fn metric_stats(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<MetricStat>> {
        let (_ctx, df) = self
            .frame(
                "metrics",
                &self.metrics,
                sample_schema(),
                (Some(from_ns), Some(to_ns)),
            )
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
            )?;
        let mut stats = MetricStats::default();
        for b in df.collect().await? {
            let [metric, database, attributes, unit] =
                ["metric", "database", "attributes", "unit"].map(|n| string_col(&b, n));
            let (metric, database, attributes, unit) = (metric?, database?, attributes?, unit?);
            let [avg, min, max]: [Result<Float64Array>; 3] =
                ["avg", "min", "max"].map(|n| typed_col(&b, n, &DataType::Float64));
            let (avg, min, max) = (avg?, min?, max?);
            let points: UInt64Array = typed_col(&b, "points", &DataType::UInt64)?;
            for i in 0..b.num_rows() {
                let attrs = serde_json::from_str(attributes.value(i)).unwrap_or_default();
                stats.add(MetricStat {
                    metric: metric.value(i).into(),
                    attributes: sqlvigil_model::with_database(attrs, database.value(i)),
                    unit: unit.value(i).into(),
                    avg: avg.value(i),
                    min: min.value(i),
                    max: max.value(i),
                    points: points.value(i),
                });
            }
        }
        Ok(stats.finish())
    }

    /// Log records of `instance` between the bounds, oldest first, at most `limit` (the newest).
    pub async fn query_logs(
        &self,
        instance: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        let (_ctx, df) = self
            .frame(
                "logs",
                &self.logs,
                log_schema(),
                (Some(from_ns), Some(to_ns)),
            )
            .await?;
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
}

/// The Parquet files at `paths` as one table of `schema`.
pub(crate) fn files_table(
    paths: Vec<std::path::PathBuf>,
    schema: SchemaRef,
) -> Result<ListingTable> {
    let urls = paths
        .iter()
        .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(ListingTable::try_new(config)?)
}

/// Each (series, time) of metric rows once: a bus redelivers what a crash left
/// unacknowledged, so a point may have been written twice.
pub(crate) fn each_point_once(df: DataFrame) -> Result<DataFrame> {
    let all: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| col(datafusion::common::Column::from_name(f.name())))
        .collect();
    Ok(df.distinct_on(vec![col("series_id"), col("time")], all, None)?)
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

pub(crate) fn string_col(b: &RecordBatch, name: &'static str) -> Result<StringArray> {
    typed_col(b, name, &DataType::Utf8)
}
