//! Tests of the embedded store: writes, reopen, dedup, aggregates and logs.

use crate::*;
use sqlvigil_core::{Sink, Stats};
use sqlvigil_model::query::{GroupBy, MetricFilter};
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
