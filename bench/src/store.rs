//! `sqlvigil-bench store`: query latency of the embedded store over generated history,
//! before and after compaction. 1,000 series (`--quick`: 100) of one metric over 90
//! days (`--quick`: 4) at one point per 5 minutes, written as the pipeline's sink writes
//! them (a flush per 10 minutes of data: many small files), then compacted. Timed, each
//! 10 times (p50 and the worst, which is the p99 of 10): one series over the last hour,
//! one series over 30 days, and the fleet's hourly aggregate (count, avg, min, max,
//! p50/p95/p99) over 30 days — after compaction served from the hourly rollups it
//! writes. Then raw points past 7 days (`--quick`: 1) are retired and the queries run
//! again, older ranges answered from the rollups.

use crate::workload::rate;
use anyhow::Result;
use sqlvigil_core::{Sink, Stats};
use sqlvigil_model::query::{GroupBy, MetricFilter};
use sqlvigil_model::{Sample, SeriesKey};
use sqlvigil_store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEP_NS: i64 = 300_000_000_000;
const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;
const DAY_NS: i64 = 24 * HOUR_NS;
const METRIC: &str = "sqlserver.cpu.utilization";

/// Write `days` of `series` series ending now; the rows written.
fn generate(store: &Store, series: usize, days: i64, end: i64) -> Result<u64> {
    let keys: Vec<SeriesKey> = (0..series)
        .map(|i| SeriesKey::new(&format!("sql-{i:04}"), "h", "", METRIC))
        .collect();
    let start = end - days * DAY_NS;
    let mut rows = 0u64;
    let mut t = start;
    while t < end {
        let flush_end = (t + 10 * MINUTE_NS).min(end);
        let mut batch = Vec::new();
        while t < flush_end {
            for (i, k) in keys.iter().enumerate() {
                let v = 20.0 + ((t / STEP_NS) as usize * 7 + i * 13) as f64 % 60.0;
                batch.push(Sample::gauge(k.clone(), t, v, "%"));
            }
            t += STEP_NS;
        }
        rows += batch.len() as u64;
        store.write_samples(&batch)?;
        store.flush()?;
    }
    Ok(rows)
}

/// p50 and worst of 10 runs of `q`, in ms.
async fn time<F, Fut>(mut q: F) -> Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let mut ms = Vec::new();
    for _ in 0..10 {
        let began = Instant::now();
        std::hint::black_box(q().await?);
        ms.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[4], ms[9]))
}

/// The three queries; prints them and returns the fleet aggregate's worst time.
async fn queries(store: &Store, end: i64, when: &str) -> Result<f64> {
    let one = SeriesKey::new("sql-0001", "h", "", METRIC).id();
    let series = |from: i64| MetricFilter {
        series_id: Some(one),
        from_ns: Some(from),
        to_ns: Some(end),
        ..Default::default()
    };
    let (p50, worst) =
        time(|| async { Ok(store.query_metrics(&series(end - HOUR_NS)).await?.len()) }).await?;
    println!("{when}: one series, last hour: p50 {p50:.1} ms, p99 {worst:.1} ms");
    let (p50, worst) =
        time(|| async { Ok(store.query_metrics(&series(end - 30 * DAY_NS)).await?.len()) }).await?;
    println!("{when}: one series, 30 days: p50 {p50:.1} ms, p99 {worst:.1} ms");
    let fleet = MetricFilter {
        metric: Some(METRIC.into()),
        from_ns: Some(end - 30 * DAY_NS),
        to_ns: Some(end),
        ..Default::default()
    };
    let (p50, worst) =
        time(|| async { Ok(store.aggregates(&fleet, HOUR_NS, GroupBy::All).await?.len()) }).await?;
    println!("{when}: fleet hourly aggregate, 30 days: p50 {p50:.1} ms, p99 {worst:.1} ms");
    Ok(worst)
}

pub async fn run(quick: bool) -> Result<()> {
    let (series, days) = if quick { (100, 4) } else { (1_000, 90) };
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), Arc::new(Stats::default()))?;
    let end = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) / HOUR_NS * HOUR_NS;
    let began = Instant::now();
    let rows = generate(&store, series, days, end)?;
    println!(
        "generated: {series} series × {days} days at 5 min = {rows} points in {} files ({:.0} points/s written)",
        store.file_count("metrics"),
        rate(rows, began.elapsed())
    );
    queries(&store, end, "before compaction").await?;
    let began = Instant::now();
    let done = store.compact(Duration::ZERO, 1.0).await?;
    println!(
        "compaction: {} hours, {} files → {}, {:.1} s ({:.0} points/s)",
        done.hours,
        done.files_in,
        done.files_out,
        began.elapsed().as_secs_f64(),
        rate(done.rows_in, began.elapsed())
    );
    store.delete_replaced(Duration::ZERO)?;
    let worst = queries(&store, end, "after compaction").await?;
    // Raw points kept 7 days (the default; --quick: 1), older ones served from rollups.
    let raw_days = if quick { 1 } else { 7 };
    let began = Instant::now();
    let gone = store
        .retire(
            Duration::from_secs(raw_days * 86_400),
            Duration::from_secs(90 * 86_400),
        )
        .await?;
    store.delete_replaced(Duration::ZERO)?;
    println!(
        "retention (raw {raw_days} d): {} raw files, {} points deleted in {:.1} s",
        gone.raw_files,
        gone.raw_rows,
        began.elapsed().as_secs_f64()
    );
    for t in store.storage()? {
        println!(
            "  {}: {} files, {} rows, {:.1} MiB",
            t.table,
            t.files,
            t.rows,
            t.bytes as f64 / 1048576.0
        );
    }
    queries(&store, end, "after retention").await?;
    println!("store_fleet_30d_p99_after_compaction: {worst:.1} ms");
    Ok(())
}
