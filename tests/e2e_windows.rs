//! Event-time windows through the binary: OTLP points in, window aggregates served by
//! the API as their own series, a rule watching a window's p95, and a straggler behind
//! an emitted window counted instead of used.

mod common;

use common::{gauge_request_at, post_metrics, self_metric, start_config, wait_values};
use prost::Message;
use sqlvigil_testkit::wait_for;
use std::time::Duration;

const CONFIG: &str = "\
operators:
  batch_interval: 100ms
  windows:
    - name: 1m
      size: 1m
      lateness: 0s
      metrics: [sqlserver.cpu.utilization]
      stats: [count, avg, p95]
rules:
  - name: hot_p95
    metric: sqlserver.cpu.utilization.p95_1m
    when: \"value > 85\"
    for: 0s
    severity: critical
store:
  flush_interval: 200ms
";

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
