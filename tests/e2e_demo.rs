//! `sqlvigil demo` end to end: the simulated fleet goes through the real OTLP receiver,
//! bus, operators, store and analyzer; the `cpu_storm` scenario yields an anomaly and a
//! rules insight, a quiet run of the same length yields none, and Ctrl-C exits cleanly.

mod common;

use common::*;
use serde_json::Value;
use sqlvigil_testkit::{wait_for, Sqlvigil};
use std::time::Duration;

fn demo(dir: &std::path::Path, scenario: &str) -> Sqlvigil {
    let mut args = vec!["demo", "--scenario", scenario];
    args.extend_from_slice(DEMO_RUN);
    Sqlvigil::start(&bin(), &args, dir).expect("demo starts")
}

/// Wait until the simulator has sent everything and the pipeline has processed it.
async fn wait_until_simulated(sv: &Sqlvigil) {
    let done = wait_for(Duration::from_secs(90), || async {
        let out = std::fs::read_to_string(sv.stdout_path()).unwrap_or_default();
        out.contains("simulator finished").then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "simulator did not finish; stderr: {}",
        sv.stderr_tail()
    );
    // The demo's fleet: 3 instances, read in both receiver modes (sql-01 and sql-03 over
    // a direct connection, sql-02 through Windows perf counters).
    let per_tick = sqlvigil_simulator::Fleet::new(sqlvigil_simulator::FleetConfig {
        instances: 3,
        receiver_mode: sqlvigil_simulator::ReceiverModes::Mixed,
        ..Default::default()
    })
    .points_per_tick();
    let sent = 90.0 * per_tick as f64;
    let processed = wait_for(Duration::from_secs(30), || async {
        let n = self_metric(sv, "sqlvigil_processed_points").await;
        (n >= sent).then_some(n)
    })
    .await;
    assert!(processed.is_some(), "pipeline did not process all points");
}

async fn list(sv: &Sqlvigil, token: &str, what: &str) -> Vec<Value> {
    let (status, body) = sv
        .get_json(&format!("/api/v1/{what}"), Some(token))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body[what].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_storm_yields_an_anomaly_and_an_insight() {
    let dir = tempfile::tempdir().unwrap();
    let mut sv = demo(dir.path(), "cpu_storm");
    let token = sv.admin_token();
    let insight = wait_for(Duration::from_secs(90), || async {
        let insights = list(&sv, &token, "insights").await;
        insights.into_iter().next()
    })
    .await
    .unwrap_or_else(|| panic!("no insight; stderr: {}", sv.stderr_tail()));
    assert_eq!(insight["model"], "rules");
    assert!(
        insight["summary"]
            .as_str()
            .unwrap_or("")
            .starts_with("CPU storm on sql-01"),
        "{insight}"
    );
    assert!(!insight["recommended_actions"]
        .as_array()
        .unwrap()
        .is_empty());

    let anomalies = list(&sv, &token, "anomalies").await;
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let a = &anomalies[0];
    assert_eq!(
        (a["rule"].as_str(), a["series"]["instance"].as_str()),
        (Some("cpu_storm"), Some("sql-01"))
    );
    assert!(a["observed"].as_f64().unwrap() > 85.0);
    assert_eq!(insight["anomaly_ids"][0], a["id"]);

    // The evidence is queryable: CPU above the threshold on sql-01.
    let (_, pts) = sv
        .get_json(
            "/api/v1/metrics?metric=sqlserver.cpu.utilization&instance=sql-01",
            Some(&token),
        )
        .await
        .unwrap();
    assert!(pts["points"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["value"].as_f64().unwrap_or(0.0) > 85.0));

    let out = std::fs::read_to_string(sv.stdout_path()).unwrap_or_default();
    assert!(out.contains("first anomaly: cpu_storm on sql-01"), "{out}");
    assert!(
        sv.stop().unwrap().success(),
        "clean shutdown; stderr: {}",
        sv.stderr_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_of_the_same_length_yields_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sv = demo(dir.path(), "quiet");
    let token = sv.admin_token();
    wait_until_simulated(&sv).await;
    assert_eq!(list(&sv, &token, "anomalies").await, Vec::<Value>::new());
    assert_eq!(list(&sv, &token, "insights").await, Vec::<Value>::new());
    let (_, series) = sv
        .get_json(
            "/api/v1/series?metric=sqlserver.cpu.utilization",
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(
        series["series"].as_array().map(Vec::len),
        Some(2),
        "the two direct-connection instances report host CPU (Windows perf counters do not)"
    );
    // Wait time per second, grouped across the fleet by wait category.
    let (status, agg) = sv
        .get_json(
            "/api/v1/aggregates?metric=sqlserver.os.wait.duration.per_second&window=1h&group_by=wait_category",
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{agg}");
    let groups: std::collections::BTreeSet<String> = agg["aggregates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["group"].as_str().map(str::to_string))
        .collect();
    assert!(
        groups.len() >= 2 && groups.contains("Lock") && !groups.contains(""),
        "{groups:?}"
    );
    let (status, bad) = sv
        .get_json("/api/v1/aggregates?metric=x&group_by=wait", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(bad.to_string().contains("wait_category"), "{bad}");
    assert!(sv.stop().unwrap().success());
}
