//! The embedded telemetry store's read side: DataFusion over the Parquet files plus the
//! buffer not yet flushed — points, series, windowed aggregates, per-series statistics
//! and log lines, each (series, time) served once.

use crate::catalog::{self, FileEntry};
use crate::error::Result;
use crate::rollup::{self, typed_col, Partial, RollupColumns};
use crate::writer::{hour_of, lock, Buffer, Store, HOUR_NS};
use arrow::array::{Float64Array, StringArray, UInt64Array};
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
use futures::StreamExt;
use sqlvigil_model::arrow_schema::{batch_to_logs, batch_to_samples, log_schema, sample_schema};
use sqlvigil_model::query::{
    AggregateRow, GroupBy, MetricFilter, MetricStat, MetricStats, PointCursor, Resolution,
    SeriesInfo, Served,
};
use sqlvigil_model::{ns_to_datetime, LogRecord, Sample};
use std::collections::{BTreeMap, HashMap, HashSet};
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
        let (files, buffered) = snapshot(buffer, || self.catalog.files(table, from, to))?;
        self.frame_of(files, buffered, schema).await
    }

    /// A DataFrame over `files` and `buffered` rows (from one [`snapshot`]).
    pub(crate) async fn frame_of(
        &self,
        files: Vec<FileEntry>,
        buffered: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> Result<(SessionContext, DataFrame)> {
        let ctx = SessionContext::new();
        let urls: Vec<_> = files.into_iter().map(|f| self.dir.join(f.path)).collect();
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

    /// `df` (raw points) filtered by `f`, each (series, time) once.
    fn apply(df: DataFrame, f: &MetricFilter) -> Result<DataFrame> {
        each_point_once(Self::conditions(df, f)?)
    }

    /// `df` filtered by `f`.
    fn conditions(df: DataFrame, f: &MetricFilter) -> Result<DataFrame> {
        let mut conds: Vec<Expr> = Vec::new();
        if let Some(id) = f.series_id {
            conds.push(col("series_id").eq(lit(id)));
        }
        if let Some(m) = &f.metric {
            conds.push(col("metric").eq(lit(m.as_str())));
        }
        if let Some(only) = f.instances.only() {
            conds.push(crate::scope::instance_in(only));
        }
        if let Some(from) = f.from_ns {
            conds.push(col("time").gt_eq(ts(from)));
        }
        if let Some(to) = f.to_ns {
            conds.push(col("time").lt_eq(ts(to)));
        }
        Ok(match conds.into_iter().reduce(Expr::and) {
            Some(c) => df.filter(c)?,
            None => df,
        })
    }

    /// Points matching `filter`, oldest (or newest) first, after its cursor.
    pub async fn query_metrics(&self, filter: &MetricFilter) -> Result<Vec<Sample>> {
        Ok(self.query_points(filter).await?.0)
    }

    /// Points matching `filter` and the stretches of its range served from rollups,
    /// from one plan (a retention pass in between cannot make them disagree).
    pub async fn query_points(&self, filter: &MetricFilter) -> Result<(Vec<Sample>, Vec<Served>)> {
        let plan = self.plan(filter, None)?;
        let df = self
            .sorted_points_of(filter, &plan)
            .await?
            .limit(0, filter.limit)?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            out.extend(batch_to_samples(&b)?);
        }
        Ok((out, served(&plan, filter)))
    }

    /// Points matching `filter` as a stream of batches in (time, series) order, for
    /// replays over more data than fits in memory.
    pub async fn stream_metrics(
        &self,
        filter: &MetricFilter,
    ) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
        Ok(self.sorted_points(filter).await?.execute_stream().await?)
    }

    /// The points `filter` selects, in (time, series) order (descending if it asks for
    /// newest first): a total order, so queries, pages and replays are deterministic.
    /// Where raw points have expired, their per-minute rollups stand in for them.
    async fn sorted_points(&self, filter: &MetricFilter) -> Result<DataFrame> {
        let plan = self.plan(filter, None)?;
        self.sorted_points_of(filter, &plan).await
    }

    async fn sorted_points_of(&self, filter: &MetricFilter, plan: &Plan) -> Result<DataFrame> {
        let df = self.raw_points(filter, plan).await?;
        let df = match self.rollup_rows(filter, plan).await? {
            Some(rollups) => {
                let columns: Vec<Expr> = sample_schema()
                    .fields()
                    .iter()
                    .map(|f| col(datafusion::common::Column::from_name(f.name())))
                    .collect();
                df.union(rollups.select(columns)?)?
            }
            None => df,
        };
        let df = match &filter.after {
            Some(c) => df.filter(after_cursor(c, filter.newest_first))?,
            None => df,
        };
        let ascending = !filter.newest_first;
        Ok(df.sort(vec![
            col("time").sort(ascending, false),
            col("series_id").sort(ascending, false),
        ])?)
    }

    /// Which hours of `filter`'s range are read from rollups, and at which resolution:
    /// for aggregates in windows of whole hours (minutes), every rolled-up hour at one
    /// hour (one minute); otherwise only the hours whose raw points have expired, at
    /// one minute.
    fn plan(&self, filter: &MetricFilter, window_ns: Option<i64>) -> Result<Plan> {
        let (from, to) = Self::bounds(filter);
        let ((rolled, raw_files), buffered) = snapshot(&self.metrics, || {
            Ok((
                self.rolled_hours(from, to)?,
                self.catalog.files("metrics", from, to)?,
            ))
        })?;
        let kept: HashSet<i64> = raw_files
            .iter()
            .filter(|f| f.compacted)
            .map(|f| hour_of(f.min_ns))
            .collect();
        let expired = || rolled.difference(&kept).copied().collect();
        let divides = |r: Resolution| window_ns.is_some_and(|w| w % r.width_ns() == 0);
        let (resolution, hours) = if divides(Resolution::Hour) {
            (Resolution::Hour, rolled.clone())
        } else if divides(Resolution::Minute) {
            (Resolution::Minute, rolled.clone())
        } else {
            (Resolution::Minute, expired())
        };
        let raw_files = raw_files
            .into_iter()
            .filter(|f| !(f.compacted && hours.contains(&hour_of(f.min_ns))))
            .collect();
        Ok(Plan {
            resolution,
            intervals: intervals(&hours),
            raw_files,
            buffered,
        })
    }

    /// The raw points of `filter` outside the hours `plan` reads from rollups, each
    /// (series, time) once.
    async fn raw_points(&self, filter: &MetricFilter, plan: &Plan) -> Result<DataFrame> {
        let (_ctx, df) = self
            .frame_of(
                plan.raw_files.clone(),
                plan.buffered.clone(),
                sample_schema(),
            )
            .await?;
        let df = Self::apply(df, filter)?;
        Ok(match plan.within(false) {
            Some(outside) => df.filter(outside)?,
            None => df,
        })
    }

    /// The rollup rows of `filter` in the hours `plan` reads from rollups (None when
    /// there are none): buckets overlapping the range are served whole.
    async fn rollup_rows(&self, filter: &MetricFilter, plan: &Plan) -> Result<Option<DataFrame>> {
        let Some(inside) = plan.within(true) else {
            return Ok(None);
        };
        let width = plan.resolution.width_ns();
        let from = filter.from_ns.map(|f| f.div_euclid(width) * width);
        let files = self
            .catalog
            .files(rollup::table_of(plan.resolution), from, filter.to_ns)?;
        if files.is_empty() {
            return Ok(None);
        }
        let (_ctx, df) = self
            .frame_of(files, Vec::new(), rollup::rollup_schema())
            .await?;
        let bucketed = MetricFilter {
            from_ns: from,
            ..filter.clone()
        };
        Ok(Some(Self::conditions(df, &bucketed)?.filter(inside)?))
    }

    /// Windowed aggregates of one metric: per event-time window (tumbling, aligned to the
    /// epoch) and group, count/avg/min/max and p50/p95/p99 (from DDSketches: within 1 %
    /// relative error). Raw points and rollup rows are selected and binned by DataFusion
    /// and folded here; each row says the coarsest resolution it was computed from.
    pub async fn aggregates(
        &self,
        filter: &MetricFilter,
        window_ns: i64,
        group_by: GroupBy,
    ) -> Result<Vec<AggregateRow>> {
        let plan = self.plan(filter, Some(window_ns))?;
        let mut folded = Folded::default();
        let raw = self.raw_points(filter, &plan).await?;
        fold(raw, window_ns, group_by, Resolution::Raw, &mut folded).await?;
        if let Some(rollups) = self.rollup_rows(filter, &plan).await? {
            fold(rollups, window_ns, group_by, plan.resolution, &mut folded).await?;
        }
        Ok(folded.rows())
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
                && filter.instances.allows(&i.instance)
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
            instances: sqlvigil_model::query::Instances::one(instance),
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
/// What `list` finds in the catalogue and the rows of `buffer` not in a file yet, both
/// taken under the buffer's lock: a flush publishes its file and lets go of its rows
/// under that lock, so every row is seen once — in a listed file or in the buffer —
/// never in neither (a flush between listing and reading the buffer lost them).
pub(crate) fn snapshot<T>(
    buffer: &Mutex<Buffer>,
    list: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<RecordBatch>)> {
    let buf = lock(buffer);
    let listed = list()?;
    let rows = buf.flushing.iter().chain(&buf.batches).cloned().collect();
    Ok((listed, rows))
}

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

pub(crate) fn string_col(b: &RecordBatch, name: &'static str) -> Result<StringArray> {
    typed_col(b, name, &DataType::Utf8)
}

/// Fold the rows of `df` (raw points, or rollup rows at `resolution`) into their
/// window and group.
async fn fold(
    df: DataFrame,
    window_ns: i64,
    group_by: GroupBy,
    resolution: Resolution,
    into: &mut Folded,
) -> Result<()> {
    let ctx = SessionContext::new();
    ctx.register_table("rows", df.into_view())?;
    let group = group_column(group_by);
    let columns = if resolution == Resolution::Raw {
        "value"
    } else {
        "count, sum, min, max, last, sketch"
    };
    // Only integers and fixed column names are spliced in; user strings went
    // through the DataFrame filter above.
    let sql = format!(
        "SELECT date_bin(INTERVAL '{window_ns} nanoseconds', time, TIMESTAMP '1970-01-01T00:00:00Z') AS window_start, \
                CAST({group} AS VARCHAR) AS grp, time, {columns} FROM rows"
    );
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    while let Some(b) = stream.next().await {
        into.add(&b?, resolution)?;
    }
    Ok(())
}

/// Rows after cursor `c` in (time, series id) order, ascending or (`newest_first`) not.
fn after_cursor(c: &PointCursor, newest_first: bool) -> Expr {
    let (t, id) = (ts(c.time_ns), lit(c.series_id));
    if newest_first {
        col("time")
            .lt(t.clone())
            .or(col("time").eq(t).and(col("series_id").lt(id)))
    } else {
        col("time")
            .gt(t.clone())
            .or(col("time").eq(t).and(col("series_id").gt(id)))
    }
}

/// Which hours a query reads from rollups ([`Store::plan`]).
struct Plan {
    /// The rollups' resolution.
    resolution: Resolution,
    /// Those hours as `[start, end)` stretches, oldest first.
    intervals: Vec<(i64, i64)>,
    /// The raw files to read: all in the range but the compacted ones of those hours.
    raw_files: Vec<FileEntry>,
    /// The rows not in a file yet, as they were when the files were listed.
    buffered: Vec<RecordBatch>,
}

impl Plan {
    /// Rows inside (`true`) or outside the rollup stretches; None when that is all rows
    /// (outside, no stretch) or none (inside, no stretch).
    fn within(&self, inside: bool) -> Option<Expr> {
        let each = self
            .intervals
            .iter()
            .map(|&(a, z)| col("time").gt_eq(ts(a)).and(col("time").lt(ts(z))));
        let any = each.reduce(Expr::or)?;
        Some(if inside { any } else { !any })
    }
}

/// The stretches of `filter`'s range that `plan` serves from rollups.
fn served(plan: &Plan, filter: &MetricFilter) -> Vec<Served> {
    plan.intervals
        .iter()
        .map(|&(a, z)| Served {
            resolution: plan.resolution,
            from: ns_to_datetime(filter.from_ns.map_or(a, |f| f.max(a))),
            to: ns_to_datetime(filter.to_ns.map_or(z, |t| t.min(z))),
        })
        .collect()
}

/// Hours (since the epoch) as merged `[start, end)` stretches in nanoseconds.
fn intervals(hours: &HashSet<i64>) -> Vec<(i64, i64)> {
    let mut sorted: Vec<i64> = hours.iter().copied().collect();
    sorted.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for h in sorted {
        let (a, z) = (h * HOUR_NS, (h + 1) * HOUR_NS);
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = z,
            _ => out.push((a, z)),
        }
    }
    out
}

/// Aggregates being folded: per group, per window.
#[derive(Default)]
struct Folded(HashMap<String, HashMap<i64, (Partial, Resolution)>>);

impl Folded {
    /// Fold a batch of (window_start, grp, time, value) or (…, rollup columns) rows.
    fn add(&mut self, b: &RecordBatch, resolution: Resolution) -> Result<()> {
        let start: arrow::array::Int64Array = typed_col(b, "window_start", &DataType::Int64)?;
        let grp = string_col(b, "grp")?;
        let rollups = RollupColumns::of(b)?;
        let times: arrow::array::Int64Array = typed_col(b, "time", &DataType::Int64)?;
        let values = match rollups {
            None => Some(typed_col::<Float64Array>(b, "value", &DataType::Float64)?),
            Some(_) => None,
        };
        for i in 0..b.num_rows() {
            let windows = match self.0.get_mut(grp.value(i)) {
                Some(w) => w,
                None => self.0.entry(grp.value(i).to_string()).or_default(),
            };
            let (acc, res) = windows.entry(start.value(i)).or_default();
            *res = (*res).max(resolution);
            match (&rollups, &values) {
                (Some(r), _) => acc.merge(&r.partial(i)?)?,
                (None, Some(v)) => acc.add(times.value(i), v.value(i)),
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// The rows, by window then group; windows with no finite value are left out.
    fn rows(self) -> Vec<AggregateRow> {
        let mut out: Vec<AggregateRow> = self
            .0
            .into_iter()
            .flat_map(|(group, windows)| {
                windows.into_iter().filter(|(_, (p, _))| p.count > 0).map(
                    move |(start, (p, resolution))| AggregateRow {
                        window_start: ns_to_datetime(start),
                        group: group.clone(),
                        resolution,
                        points: p.count,
                        avg: p.mean(),
                        min: p.min,
                        max: p.max,
                        p50: p.quantile(0.5),
                        p95: p.quantile(0.95),
                        p99: p.quantile(0.99),
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| (a.window_start, &a.group).cmp(&(b.window_start, &b.group)));
        out
    }
}
