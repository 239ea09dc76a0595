//! Operators through the binary. Event-time windows: OTLP points in, window aggregates
//! served by the API as their own series, a rule watching a window's p95, and a
//! straggler behind an emitted window counted instead of used. Absence: an instance that
//! falls silent is noticed although its partition receives nothing more.

mod common;

use common::{
    gauge_request_at, post_metrics, self_metric, start_config, wait_values,
    WINDOW_P95_CONFIG as CONFIG,
};
use prost::Message;
use sqlvigil_testkit::wait_for;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn window_aggregates_are_served_and_watched_by_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, token) = start_config(dir.path(), CONFIG);
    let metric = "sqlserver.cpu.utilization";
    // Minute-aligned event time an hour ago; six points in [t0, t0 + 1m), one after.
    let t0 = (chrono::Utc::now().timestamp() / 60 - 60) as u64 * 60_000_000_000;
    let values = [10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 5.0];
    let req = gauge_request_at("w-sql1", metric, t0, 10_000_000_000, &values);
    assert_eq!(post_metrics(&sv, req.encode_to_vec()).await, 200);

    let served = |stat: &'static str| {
        let (sv, token) = (&sv, &token);
        async move { wait_values(sv, token, &format!("{metric}.{stat}_1m"), "w-sql1", 1).await }
    };
    assert_eq!(served("count").await, vec![6.0]);
    assert_eq!(served("avg").await, vec![250.0 / 6.0]);
    // Ranks 0.95 * 5 = 4.75 between 50 and 100.
    assert_eq!(served("p95").await, vec![87.5]);

    let anomaly = wait_for(Duration::from_secs(20), || async {
        let (_, b) = sv
            .get_json("/api/v1/anomalies?instance=w-sql1", Some(&token))
            .await
            .ok()?;
        b["anomalies"].as_array()?.first().cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no anomaly on the window's p95; {}", sv.stderr_tail()));
    assert_eq!(anomaly["rule"], "hot_p95");
    assert_eq!(anomaly["observed"], 87.5);

    // The next point closes [t0 + 1m, t0 + 2m); a straggler for the first minute is late.
    let later = gauge_request_at("w-sql1", metric, t0 + 120_000_000_000, 1, &[1.0]);
    assert_eq!(post_metrics(&sv, later.encode_to_vec()).await, 200);
    let straggler = gauge_request_at("w-sql1", metric, t0 + 30_000_000_000, 1, &[99.0]);
    assert_eq!(post_metrics(&sv, straggler.encode_to_vec()).await, 200);
    let late = wait_for(Duration::from_secs(20), || async {
        (self_metric(&sv, "sqlvigil_window_late_points").await >= 1.0).then_some(())
    })
    .await;
    assert!(late.is_some(), "the straggler was not counted late");
    assert_eq!(
        wait_values(&sv, &token, &format!("{metric}.count_1m"), "w-sql1", 2).await,
        vec![6.0, 1.0],
        "the emitted first window must not change"
    );
}

/// An instance that stops reporting opens an absence anomaly, measured against the event
/// time the rest of the fleet reached, although nothing arrives on its partition any more.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_instance_alone_in_its_partition_is_noticed() {
    let config = "\
bus:
  partitions: 4
operators:
  batch_interval: 100ms
rules:
  - name: gone
    metric: cpu_percent
    absent_for: 2m
store:
  flush_interval: 200ms
";
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, token) = start_config(dir.path(), config);
    let partition = |i: &str| sqlvigil_bus::memory::partition_for(i.as_bytes(), 4);
    let silent = "abs-silent";
    let alive = (0..)
        .map(|i| format!("abs-alive{i}"))
        .find(|a| partition(a) != partition(silent))
        .expect("some name lands elsewhere");
    let metric = "sqlserver.cpu.utilization";
    let t0 = now_s() - 3600;
    let step = 10_000_000_000;
    let first = gauge_request_at(silent, metric, t0 * 1_000_000_000, step, &[30.0; 7]);
    assert_eq!(post_metrics(&sv, first.encode_to_vec()).await, 200);
    wait_values(&sv, &token, metric, silent, 7).await;
    // Only the other instance goes on, for 5 more minutes of event time.
    let rest = gauge_request_at(&alive, metric, t0 * 1_000_000_000, step, &[30.0; 37]);
    assert_eq!(post_metrics(&sv, rest.encode_to_vec()).await, 200);
    let found = wait_for(Duration::from_secs(20), || async {
        let (_, b) = sv
            .get_json(
                &format!("/api/v1/anomalies?instance={silent}"),
                Some(&token),
            )
            .await
            .ok()?;
        b["anomalies"].as_array()?.first().cloned()
    })
    .await
    .unwrap_or_else(|| panic!("the silent instance was not noticed; {}", sv.stderr_tail()));
    assert_eq!(found["rule"], "gone");
    let (_, b) = sv
        .get_json(&format!("/api/v1/anomalies?instance={alive}"), Some(&token))
        .await
        .expect("anomalies");
    assert_eq!(b["anomalies"].as_array().map(Vec::len), Some(0), "{b}");
}

fn now_s() -> u64 {
    chrono::Utc::now().timestamp() as u64
}
