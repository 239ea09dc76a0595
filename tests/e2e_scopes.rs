//! Tenant isolation through the binary: a token scoped to instances A and B
//! (`sqlvigil token create --instances`, or `instances` in `POST /api/v1/tokens`) never
//! sees C — not in series, points, aggregates (fleet-wide or grouped), anomalies and
//! their totals, one anomaly by id, insights, root cause or the live stream — while an
//! unscoped token sees all three. Admin tokens cannot be scoped.

mod common;

use common::{bin, gauge_request, post_metrics, start_run};
use prost::Message;
use serde_json::{json, Value};
use sqlvigil_testkit::{wait_for, Sqlvigil};
use std::collections::BTreeSet;
use std::time::Duration;

const CPU: &str = "sqlserver.cpu.utilization";
const RULES: &str = "rules:\n  - name: hot\n    when: \"cpu_percent > 50\"\n    for: 0s\n";

async fn get(sv: &Sqlvigil, token: &str, path: &str) -> Value {
    let (status, body) = sv.get_json(path, Some(token)).await.expect("request");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The distinct `instance` (or `key`) values of `list`'s items.
fn instances_of(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.pointer(key).and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_token_never_sees_other_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, admin) = start_run(dir.path(), RULES);
    let d = dir.path().to_string_lossy().to_string();
    let scoped = common::cli(&[
        "token",
        "create",
        "--role",
        "viewer",
        "--name",
        "tenant-ab",
        "--instances",
        "sqlA,sqlB",
        "--data-dir",
        &d,
    ]);
    let unscoped = sqlvigil_testkit::create_token(&bin(), dir.path(), "viewer").expect("viewer");
    for instance in ["sqlA", "sqlB", "sqlC"] {
        let body = gauge_request(instance, CPU, &[95.0, 96.0, 97.0]).encode_to_vec();
        assert_eq!(post_metrics(&sv, body).await, 200);
    }
    // Everything stored and judged: three instances' anomalies (and their rules insights).
    wait_for(Duration::from_secs(30), || async {
        let all = get(&sv, &unscoped, "/api/v1/insights").await;
        let seen = instances_of(&all["insights"], "/instance");
        let points = get(&sv, &unscoped, &format!("/api/v1/metrics?metric={CPU}")).await;
        (seen.len() == 3 && points["points"].as_array()?.len() == 9).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("data of three instances; stderr: {}", sv.stderr_tail()));

    let ab = set(&["sqlA", "sqlB"]);
    let abc = set(&["sqlA", "sqlB", "sqlC"]);
    let checks: [(&str, &str, &str); 6] = [
        ("/api/v1/series", "series", "/instance"),
        (
            &format!("/api/v1/metrics?metric={CPU}"),
            "points",
            "/instance",
        ),
        (
            &format!("/api/v1/aggregates?metric={CPU}&group_by=instance&window=1h"),
            "aggregates",
            "/group",
        ),
        ("/api/v1/anomalies", "anomalies", "/series/instance"),
        ("/api/v1/insights", "insights", "/instance"),
        ("/api/v1/coverage", "instances", "/instance"),
    ];
    for (path, key, field) in checks {
        let mine = get(&sv, &scoped, path).await;
        assert_eq!(instances_of(&mine[key], field), ab, "{path}: {mine}");
        let all = get(&sv, &unscoped, path).await;
        assert_eq!(instances_of(&all[key], field), abc, "{path}: {all}");
    }
    // Asking for C by name answers as if it had no data.
    for path in [
        format!("/api/v1/metrics?metric={CPU}&instance=sqlC"),
        "/api/v1/series?instance=sqlC".to_string(),
        "/api/v1/anomalies?instance=sqlC".to_string(),
        "/api/v1/insights?instance=sqlC".to_string(),
    ] {
        let body = get(&sv, &scoped, &path).await;
        let empty = ["points", "series", "anomalies", "insights"]
            .iter()
            .filter_map(|k| body[*k].as_array())
            .all(Vec::is_empty);
        assert!(empty, "{path}: {body}");
    }
    // A fleet-wide aggregate counts A and B only; totals count what the scope sees.
    let fleet = get(
        &sv,
        &scoped,
        &format!("/api/v1/aggregates?metric={CPU}&group_by=all&window=1h"),
    )
    .await;
    let count: f64 = fleet["aggregates"]
        .as_array()
        .map(|l| l.iter().filter_map(|r| r["points"].as_f64()).sum())
        .unwrap_or(0.0);
    assert_eq!(count, 6.0, "{fleet}");
    let mine = get(&sv, &scoped, "/api/v1/anomalies").await;
    let all = get(&sv, &unscoped, "/api/v1/anomalies").await;
    assert_eq!(
        mine["total"],
        mine["anomalies"].as_array().map(Vec::len).unwrap_or(0)
    );
    assert!(
        all["total"].as_u64() > mine["total"].as_u64(),
        "{all} {mine}"
    );
    // C's anomaly by id, its insights and its root cause are unknown to the scope.
    let c_id = all["anomalies"]
        .as_array()
        .and_then(|l| l.iter().find(|a| a["series"]["instance"] == "sqlC"))
        .and_then(|a| a["id"].as_str())
        .expect("an anomaly on sqlC")
        .to_string();
    for path in [
        format!("/api/v1/anomalies/{c_id}"),
        format!("/api/v1/anomalies/{c_id}/root-cause"),
    ] {
        let (status, body) = sv.get_json(&path, Some(&scoped)).await.expect("request");
        assert_eq!(status, 404, "{path}: {body}");
        let (status, _) = sv.get_json(&path, Some(&unscoped)).await.expect("request");
        assert_eq!(status, 200, "{path} unscoped");
    }
    let by_c = get(&sv, &scoped, &format!("/api/v1/insights?anomaly_id={c_id}")).await;
    assert_eq!(by_c["insights"], json!([]), "{by_c}");

    // The stream, replayed from its start: A and B only (C's events exist).
    let mine = common::read_stream(&sv, &scoped, Some("0"), 1000, Duration::from_secs(3)).await;
    let all = common::read_stream(&sv, &unscoped, Some("0"), 1000, Duration::from_secs(3)).await;
    let seen = |events: &[common::Sse]| -> BTreeSet<String> {
        events
            .iter()
            .filter_map(|e| e.data["instance"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(seen(&mine), ab, "{mine:?}");
    assert_eq!(seen(&all), abc);

    // Admin tokens cannot be scoped, from the API or the CLI.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/tokens", sv.api_base()))
        .bearer_auth(&admin)
        .json(&json!({"name": "x", "role": "admin", "instances": ["sqlA"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("JSON");
    assert!(
        common::error_message(&body).contains("admin tokens cannot be scoped"),
        "{body}"
    );
    let out = std::process::Command::new(bin())
        .args([
            "token",
            "create",
            "--role",
            "admin",
            "--instances",
            "sqlA",
            "--data-dir",
            &d,
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    // A scoped operator made through the API is listed with its scope.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/tokens", sv.api_base()))
        .bearer_auth(&admin)
        .json(&json!({"name": "tenant-c", "role": "operator", "instances": ["sqlC"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 201);
    let made: Value = resp.json().await.expect("JSON");
    assert_eq!(made["instances"], json!(["sqlC"]), "{made}");
    let token = made["token"].as_str().expect("secret").to_string();
    let only_c = get(&sv, &token, "/api/v1/anomalies").await;
    assert_eq!(
        instances_of(&only_c["anomalies"], "/series/instance"),
        set(&["sqlC"])
    );
}
