//! OTLP in over every transport and encoding, exact values back out of the API.
//! The gRPC and HTTP/protobuf paths use the official OpenTelemetry Python SDK as an
//! independent client; OTLP/JSON is written by hand following the spec.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_clients_over_grpc_http_and_json_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (sv, token) = start_run(dir.path(), "");

    // gRPC, official Python exporter.
    let out = sqlvigil_testkit::run_python_otlp_client(&[
        "--protocol",
        "grpc",
        "--endpoint",
        &sv.grpc_endpoint(),
        "--instance",
        "sql-grpc",
        "--host",
        "h1",
        "--metric",
        "sqlserver.cpu.utilization",
        "--unit",
        "%",
        "--values",
        "11.5,22.25,33.75",
        "--log",
        "Login failed for user 'sa'.",
        "--log-severity",
        "ERROR",
    ])
    .expect("python grpc export");
    assert_eq!(out["exported_points"], 3);

    // HTTP/protobuf, official Python exporter, with a point attribute.
    sqlvigil_testkit::run_python_otlp_client(&[
        "--protocol",
        "http",
        "--endpoint",
        &sv.http_endpoint(),
        "--instance",
        "sql-http",
        "--host",
        "h2",
        "--metric",
        "sqlserver.lock.wait_time.avg",
        "--unit",
        "ms",
        "--values",
        "1.25,2.5,5",
        "--attr",
        "wait.type=LCK_M_X",
    ])
    .expect("python http export");

    // OTLP/JSON: camelCase, int64 as strings, enums as ints; a cumulative counter with
    // explicit times so the derived rate is exact.
    let t0: u64 = 1_700_000_000_000_000_000;
    let point = |dt_s: u64, v: &str| json!({"timeUnixNano": (t0 + dt_s * 1_000_000_000).to_string(), "startTimeUnixNano": "1000", "asInt": v});
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [
            {"key": "sqlserver.instance.name", "value": {"stringValue": "sql-json"}},
            {"key": "server.port", "value": {"intValue": "1433"}}]},
        "scopeMetrics": [{"scope": {"name": "test"}, "metrics": [{
            "name": "sqlserver.transaction_log.growth.count", "unit": "{growths}",
            "sum": {"aggregationTemporality": 2, "isMonotonic": true,
                    "dataPoints": [point(0, "100"), point(10, "150"), point(20, "250")]}}]}]}]});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/metrics", sv.http_endpoint()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let reply: serde_json::Value = resp.json().await.unwrap();
    assert!(
        reply.get("partialSuccess").is_none_or(|p| p.is_null()),
        "{reply}"
    );

    assert_eq!(
        wait_values(&sv, &token, "sqlserver.cpu.utilization", "sql-grpc", 3).await,
        vec![11.5, 22.25, 33.75]
    );
    assert_eq!(
        wait_values(&sv, &token, "sqlserver.lock.wait_time.avg", "sql-http", 3).await,
        vec![1.25, 2.5, 5.0]
    );
    assert_eq!(
        wait_values(
            &sv,
            &token,
            "sqlserver.transaction_log.growth.count",
            "sql-json",
            3
        )
        .await,
        vec![100.0, 150.0, 250.0]
    );
    assert_eq!(
        wait_values(
            &sv,
            &token,
            "sqlserver.transaction_log.growth.count.per_second",
            "sql-json",
            2
        )
        .await,
        vec![5.0, 10.0]
    );

    // The series listing carries the key parts, and series ids select one series.
    let (_, series) = sv
        .get_json("/api/v1/series?instance=sql-http", Some(&token))
        .await
        .unwrap();
    let s = &series["series"][0];
    assert_eq!(
        (s["host"].as_str(), s["attributes"]["wait.type"].as_str()),
        (Some("h2"), Some("LCK_M_X"))
    );
    let (_, pts) = sv
        .get_json(
            &format!("/api/v1/metrics?series={}", s["id"].as_str().unwrap()),
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(pts["points"].as_array().unwrap().len(), 3);
    assert_eq!(
        pts["points"][0]["time"].as_str().map(|t| t.ends_with('Z')),
        Some(true)
    );

    // Time bounds: only the last two JSON points.
    let from = "2023-11-14T22:13:25Z"; // t0 + 5 s
    let (_, pts) = sv
        .get_json(
            &format!("/api/v1/metrics?metric=sqlserver.transaction_log.growth.count&from={from}"),
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(pts["points"].as_array().unwrap().len(), 2, "{pts}");

    // Windowed aggregates (DataFusion): the three gRPC points fall in one minute.
    let (status, agg) = sv
        .get_json(
            "/api/v1/aggregates?metric=sqlserver.cpu.utilization&window=1h&group_by=instance",
            Some(&token),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{agg}");
    let row = agg["aggregates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "sql-grpc")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            row["points"].as_u64(),
            row["min"].as_f64(),
            row["max"].as_f64()
        ),
        (Some(3), Some(11.5), Some(33.75)),
        "{agg}"
    );
    let (status, body) = sv
        .get_json("/api/v1/aggregates?metric=x&window=soon", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");

    // Logs were accepted and stored; traces are accepted, counted and dropped.
    let trace = reqwest::Client::new()
        .post(format!("{}/v1/traces", sv.http_endpoint()))
        .header("content-type", "application/json")
        .body(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"q","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), 200);
    let reply: serde_json::Value = trace.json().await.unwrap();
    assert_eq!(reply["partialSuccess"]["rejectedSpans"], "1", "{reply}");
    assert_eq!(self_metric(&sv, "sqlvigil_dropped_spans").await, 1.0);
    let logs = sqlvigil_testkit::wait_for(Duration::from_secs(10), || async {
        let n = self_metric(&sv, "sqlvigil_stored_log_records").await;
        (n >= 1.0).then_some(n)
    })
    .await;
    assert_eq!(logs, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sv, token) = start_run(dir.path(), "");
    let req = gauge_request("sql-restart", "sqlserver.cpu.utilization", &[42.0, 43.5]);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/metrics", sv.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(&req))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Stop right away: the clean shutdown must flush what was accepted.
    let status = sv.stop().unwrap();
    assert!(status.success(), "clean exit; stderr: {}", sv.stderr_tail());
    let cfg = dir
        .path()
        .join("sqlvigil.yaml")
        .to_string_lossy()
        .into_owned();
    let sv =
        sqlvigil_testkit::Sqlvigil::start(&bin(), &["run", "--config", &cfg], dir.path()).unwrap();
    assert_eq!(
        wait_values(&sv, &token, "sqlserver.cpu.utilization", "sql-restart", 2).await,
        vec![42.0, 43.5]
    );
}
