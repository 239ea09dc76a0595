//! Tests of the embedded store: writes, reopen, dedup, aggregates and logs.

use crate::*;
use sqlvigil_core::{Sink, Stats};
use sqlvigil_model::query::{AggregateRow, GroupBy, MetricFilter, Resolution};
use sqlvigil_model::SeriesKey;
use sqlvigil_model::{LogRecord, Sample};
use std::sync::Arc;

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
        instances: sqlvigil_model::query::Instances::one("sql1"),
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
    let series = store.series(&all).await.unwrap();
    assert_eq!(series.len(), 1, "one series, listed once");
    // The catalogue counts points as stored: the redelivered two count as well.
    assert_eq!(series[0].points, 4);
}

/// An old hour's files (with a redelivered duplicate) become one sorted file per hour;
/// queries answer the same, each point once; the replaced files go after the grace.
#[tokio::test]
async fn compaction_keeps_every_point_once_and_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
    let hour = 3_600_000_000_000i64;
    let t0 = (chrono::Utc::now().timestamp_nanos_opt().unwrap() / hour - 5) * hour;
    let keys: Vec<SeriesKey> = (0..3)
        .map(|i| SeriesKey::new(&format!("sql{i}"), "h", "", "sqlserver.cpu.utilization"))
        .collect();
    // Five flushes, the last one spilling into the next hour, the third one twice.
    for (flush, at_s) in [0i64, 900, 1800, 2700, 3595].into_iter().enumerate() {
        let flush = flush as i64;
        let mut batch = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            for p in 0..10i64 {
                let t = t0 + (at_s + p) * 1_000_000_000;
                batch.push(Sample::gauge(
                    k.clone(),
                    t,
                    (flush * 100 + p + i as i64) as f64,
                    "%",
                ));
            }
        }
        store.write_samples(&batch).unwrap();
        if flush == 2 {
            store.write_samples(&batch).unwrap();
        }
        store.flush().unwrap();
    }
    let all = MetricFilter::default();
    let before = store.query_metrics(&all).await.unwrap();
    assert_eq!(before.len(), 150, "each point once before, too");
    let aggregates = store
        .aggregates(&all, 600_000_000_000, GroupBy::Instance)
        .await
        .unwrap();
    assert_eq!(store.file_count("metrics"), 5);

    let done = store.compact(std::time::Duration::ZERO, 1.0).await.unwrap();
    assert_eq!((done.files_in, done.rows_in), (5, 180));
    assert_eq!(done.rows_out, 150, "the duplicates are gone");
    assert_eq!(done.files_out, 2, "one file per hour the rows belong to");
    assert_eq!(
        done.hours, 2,
        "the spilled hour is rolled up in a second round"
    );
    assert_eq!(store.query_metrics(&all).await.unwrap(), before);
    // The same aggregates, now from the per-minute rollups written with the compaction.
    let after = store
        .aggregates(&all, 600_000_000_000, GroupBy::Instance)
        .await
        .unwrap();
    assert!(after.iter().all(|r| r.resolution == Resolution::Minute));
    let unlabelled = |rows: Vec<AggregateRow>| {
        rows.into_iter()
            .map(|r| AggregateRow {
                resolution: Resolution::Raw,
                ..r
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(unlabelled(after), aggregates);
    // Replaced files stay for queries in flight until the grace is over.
    assert_eq!(store.file_count("metrics"), 7);
    // The five small files, and the day's hourly rollup file rewritten for the second hour.
    assert_eq!(store.delete_replaced(std::time::Duration::ZERO).unwrap(), 6);
    assert_eq!(store.file_count("metrics"), 2);
    let stats = store.storage().unwrap();
    let m = stats.iter().find(|t| t.table == "metrics").unwrap();
    assert_eq!(
        (m.files, m.rows, m.uncompacted_files, m.series),
        (2, 150, 0, 3)
    );
    // A second pass has nothing to do; a reopen reads the same.
    assert_eq!(
        store
            .compact(std::time::Duration::ZERO, 1.0)
            .await
            .unwrap()
            .hours,
        0
    );
    drop(store);
    let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
    assert_eq!(store.query_metrics(&all).await.unwrap(), before);
}

/// A file a crash left uncatalogued (renamed, no row yet) is found at start-up.
#[tokio::test]
async fn a_file_the_catalogue_missed_is_found_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
    let key = SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization");
    store
        .write_samples(&[Sample::gauge(key.clone(), 1_000, 1.5, "%")])
        .unwrap();
    store.flush().unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("catalog.sqlite")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("catalog.sqlite-wal"));
    let _ = std::fs::remove_file(dir.path().join("catalog.sqlite-shm"));
    let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
    let all = MetricFilter::default();
    assert_eq!(store.query_metrics(&all).await.unwrap().len(), 1);
    assert_eq!(store.series(&all).await.unwrap()[0].id, key.id_hex());
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

/// Raw points past `retention.raw` go once rolled up; the rollups answer the same
/// aggregates (quantiles within the sketch's 1 %), say so, and stand in for the points;
/// rollups past `retention.rollup` go too.
#[tokio::test]
async fn expired_raw_points_are_served_from_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Arc::new(Stats::default())).unwrap();
    let hour = 3_600_000_000_000i64;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    // Six hours of 10 s points, three days ago, and the last hour (kept raw).
    let old = (now / hour - 72) * hour;
    let recent = (now / hour - 1) * hour;
    let key = SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization");
    let mut pts = Vec::new();
    for (start, n) in [(old, 6 * 360), (recent, 360)] {
        for i in 0..n {
            let v = 10.0 + (i % 97) as f64 + (i / 360) as f64 * 5.0;
            pts.push(Sample::gauge(
                key.clone(),
                start + i * 10_000_000_000,
                v,
                "%",
            ));
        }
    }
    for chunk in pts.chunks(500) {
        store.write_samples(chunk).unwrap();
        store.flush().unwrap();
    }
    let old_range = MetricFilter {
        series_id: Some(key.id()),
        from_ns: Some(old),
        to_ns: Some(old + 6 * hour - 1),
        ..Default::default()
    };
    let raw_hourly = store
        .aggregates(&old_range, hour, GroupBy::Series)
        .await
        .unwrap();
    let raw_ten_min = store
        .aggregates(&old_range, 600_000_000_000, GroupBy::Series)
        .await
        .unwrap();
    assert_eq!(raw_hourly.len(), 6);
    assert!(raw_hourly.iter().all(|r| r.resolution == Resolution::Raw));

    let day = std::time::Duration::from_secs(86_400);
    let gone = store.retire(day, 30 * day).await.unwrap();
    assert_eq!(gone.raw_rows, 6 * 360, "{gone:?}");
    assert_eq!(gone.rollup_files, 0);
    store.delete_replaced(std::time::Duration::ZERO).unwrap();
    assert!(store
        .catalog
        .files("metrics", Some(old), Some(old + 6 * hour))
        .unwrap()
        .is_empty());

    let close = |a: &[AggregateRow], b: &[AggregateRow], want: Resolution| {
        assert_eq!(a.len(), b.len());
        for (r, x) in a.iter().zip(b) {
            assert_eq!(r.resolution, want);
            assert_eq!(
                (r.window_start, r.points, r.min, r.max),
                (x.window_start, x.points, x.min, x.max)
            );
            assert!((r.avg - x.avg).abs() < 1e-9, "{r:?} {x:?}");
            for (q, p) in [(r.p50, x.p50), (r.p95, x.p95), (r.p99, x.p99)] {
                assert!((q - p).abs() <= 0.021 * p.abs(), "{r:?} {x:?}");
            }
        }
    };
    let hourly = store
        .aggregates(&old_range, hour, GroupBy::Series)
        .await
        .unwrap();
    close(&hourly, &raw_hourly, Resolution::Hour);
    let ten_min = store
        .aggregates(&old_range, 600_000_000_000, GroupBy::Series)
        .await
        .unwrap();
    close(&ten_min, &raw_ten_min, Resolution::Minute);

    // Points: per-minute means where the raw points expired, raw ones after.
    let all = MetricFilter {
        series_id: Some(key.id()),
        ..Default::default()
    };
    let points = store.query_metrics(&all).await.unwrap();
    assert_eq!(points.len(), 6 * 60 + 360);
    assert_eq!(points[0].time_ns, old);
    let first_minute: f64 = (0..6).map(|i| 10.0 + i as f64).sum::<f64>() / 6.0;
    assert!((points[0].value - first_minute).abs() < 1e-9);
    let (same, served) = store.query_points(&all).await.unwrap();
    assert_eq!(same, points);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].resolution, Resolution::Minute);
    assert_eq!(served[0].from.timestamp_nanos_opt(), Some(old));
    assert_eq!(served[0].to.timestamp_nanos_opt(), Some(old + 6 * hour));

    // A late point for an expired hour is dropped by compaction, not double counted.
    store
        .write_samples(&[Sample::gauge(key.clone(), old + 5, 1e6, "%")])
        .unwrap();
    store.flush().unwrap();
    let late = store.compact(std::time::Duration::ZERO, 1.0).await.unwrap();
    assert_eq!(late.late_dropped, 1, "{late:?}");
    close(
        &store
            .aggregates(&old_range, hour, GroupBy::Series)
            .await
            .unwrap(),
        &raw_hourly,
        Resolution::Hour,
    );

    // Rollups past their own age go as well.
    let gone = store.retire(day, day).await.unwrap();
    assert_eq!(gone.rollup_rows, 6 * 60 + 6, "{gone:?}");
    assert!(store
        .aggregates(&old_range, hour, GroupBy::Series)
        .await
        .unwrap()
        .is_empty());
}
