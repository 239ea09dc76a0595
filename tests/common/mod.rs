//! Shared helpers for the end-to-end tests: start the real `sqlvigil` binary on free
//! loopback ports and talk to it over its sockets.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value;
use sqlvigil_testkit::{wait_for, Sqlvigil};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A one-minute window (count, avg, p95) over CPU and a rule on its p95: what only a
/// chain that runs the config's windows can fire.
pub const WINDOW_P95_CONFIG: &str = "\
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

/// 15 simulated minutes at 10 s per scrape, replayed at 60x: about 15 s of wall time.
pub const DEMO_RUN: &[&str] = &["--ticks", "90", "--backfill", "15m", "--speed", "60"];

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sqlvigil"))
}

/// `sqlvigil run` with `extra_yaml` appended to a small test config; returns it and an admin token.
pub fn start_run(data_dir: &Path, extra_yaml: &str) -> (Sqlvigil, String) {
    start_config(
        data_dir,
        &format!(
            "store:\n  flush_interval: 300ms\noperators:\n  batch_interval: 100ms\n{extra_yaml}"
        ),
    )
}

/// `sqlvigil run` with exactly `yaml` as its config; returns it and an admin token.
pub fn start_config(data_dir: &Path, yaml: &str) -> (Sqlvigil, String) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let cfg = data_dir.join("sqlvigil.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let token = sqlvigil_testkit::create_token(&bin(), data_dir, "admin").expect("token");
    let cfg = cfg.to_string_lossy().into_owned();
    let sv =
        Sqlvigil::start(&bin(), &["run", "--config", &cfg], data_dir).expect("sqlvigil run starts");
    (sv, token)
}

/// Values of `metric` on `instance` from the API, oldest first, waiting until `n` exist.
pub async fn wait_values(
    sv: &Sqlvigil,
    token: &str,
    metric: &str,
    instance: &str,
    n: usize,
) -> Vec<f64> {
    let path = format!("/api/v1/metrics?metric={metric}&instance={instance}");
    let got = sqlvigil_testkit::wait_for(Duration::from_secs(20), || async {
        let (status, body) = sv.get_json(&path, Some(token)).await.ok()?;
        assert_eq!(status, 200, "{body}");
        let values: Vec<f64> = body["points"]
            .as_array()?
            .iter()
            .filter_map(|p| p["value"].as_f64())
            .collect();
        (values.len() >= n).then_some(values)
    })
    .await;
    got.unwrap_or_else(|| {
        panic!(
            "{metric} on {instance}: fewer than {n} points; stderr: {}",
            sv.stderr_tail()
        )
    })
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

/// A protobuf request with one gauge point per value (1 s apart).
pub fn gauge_request(instance: &str, metric: &str, values: &[f64]) -> ExportMetricsServiceRequest {
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    gauge_request_at(instance, metric, t0, 1_000_000_000, values)
}

/// Like [`gauge_request`] with the first point at `t0` and the others `step_ns` apart.
pub fn gauge_request_at(
    instance: &str,
    metric: &str,
    t0: u64,
    step_ns: u64,
    values: &[f64],
) -> ExportMetricsServiceRequest {
    let data_points = values
        .iter()
        .enumerate()
        .map(|(i, v)| NumberDataPoint {
            time_unix_nano: t0 + i as u64 * step_ns,
            value: Some(number_data_point::Value::AsDouble(*v)),
            ..Default::default()
        })
        .collect();
    gauge_points(instance, metric, data_points)
}

/// One instance's CPU gauge over `series` series (attribute `n`), `points` points each,
/// 1 s apart from `t0`, values 90–96: `series × points` data points.
pub fn fleet_request(
    instance: &str,
    series: usize,
    t0: u64,
    points: usize,
) -> ExportMetricsServiceRequest {
    let data_points = (0..series)
        .flat_map(|n| {
            (0..points).map(move |i| NumberDataPoint {
                attributes: vec![kv("n", &n.to_string())],
                time_unix_nano: t0 + i as u64 * 1_000_000_000,
                value: Some(number_data_point::Value::AsDouble(90.0 + (n % 7) as f64)),
                ..Default::default()
            })
        })
        .collect();
    gauge_points(instance, "sqlserver.cpu.utilization", data_points)
}

/// A request of one gauge (unit `%`) on `instance` with these points.
fn gauge_points(
    instance: &str,
    metric: &str,
    data_points: Vec<NumberDataPoint>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("sqlserver.instance.name", instance),
                    kv("host.name", "test-host"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: metric.into(),
                    unit: "%".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// A counter value from the Prometheus `/metrics` text.
pub async fn self_metric(sv: &Sqlvigil, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", sv.api_base()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// `sqlvigil ARGS…`'s stdout, trimmed; panics with its stderr if it fails.
pub fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .expect("sqlvigil runs");
    assert!(
        out.status.success(),
        "sqlvigil {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The message of an API error (`{"error": {"code", "message", "request_id"}}`).
pub fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// POST one OTLP/HTTP protobuf metrics request; the HTTP status (0 when it never answered).
pub async fn post_metrics(sv: &Sqlvigil, body: Vec<u8>) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/metrics", sv.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The points of `metric` on `instance` the API serves now (up to 100k), as JSON.
pub async fn served_points(sv: &Sqlvigil, token: &str, metric: &str, instance: &str) -> Vec<Value> {
    let path = format!("/api/v1/metrics?metric={metric}&instance={instance}&limit=100000");
    match sv.get_json(&path, Some(token)).await {
        Ok((200, mut body)) => match body["points"].take() {
            Value::Array(points) => points,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Values of `metric` on `instance` the API serves now (up to 100k).
pub async fn served(sv: &Sqlvigil, token: &str, metric: &str, instance: &str) -> Vec<f64> {
    served_points(sv, token, metric, instance)
        .await
        .iter()
        .filter_map(|p| p["value"].as_f64())
        .collect()
}

/// Wait until every acknowledged point is served; on timeout, fail naming what is missing.
pub async fn wait_served(
    sv: &Sqlvigil,
    token: &str,
    metric: &str,
    instance: &str,
    acked: &BTreeSet<u64>,
    when: &str,
) -> Vec<f64> {
    let got = wait_for(Duration::from_secs(90), || async {
        let v = served(sv, token, metric, instance).await;
        let set: BTreeSet<u64> = v.iter().map(|x| *x as u64).collect();
        acked.is_subset(&set).then_some(v)
    })
    .await;
    if let Some(v) = got {
        return v;
    }
    let v = served(sv, token, metric, instance).await;
    let set: BTreeSet<u64> = v.iter().map(|x| *x as u64).collect();
    let missing: Vec<u64> = acked.difference(&set).copied().collect();
    panic!(
        "{when}: {} of {} acknowledged points not served (first {:?}, last {:?}); {} served; log:\n{}",
        missing.len(),
        acked.len(),
        missing.first(),
        missing.last(),
        v.len(),
        std::fs::read_to_string(sv.stderr_path()).unwrap_or_default()
    )
}

/// One Server-Sent Event of `/api/v1/stream`: its id, event name and data (JSON).
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// Read `/api/v1/stream` (after `last_event_id` if given, sent as the `Last-Event-ID`
/// header) until `want` events came or `within` passed; the events read.
pub async fn read_stream(
    sv: &Sqlvigil,
    token: &str,
    last_event_id: Option<&str>,
    want: usize,
    within: Duration,
) -> Vec<Sse> {
    let mut req = reqwest::Client::new()
        .get(format!("{}/api/v1/stream", sv.api_base()))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let mut resp = req.send().await.expect("stream request");
    assert_eq!(resp.status(), 200, "stream: {:?}", resp.text().await);
    assert!(resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")));
    let deadline = tokio::time::Instant::now() + within;
    let (mut text, mut out) = (String::new(), Vec::new());
    while out.len() < want {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            _ => break,
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Events end with a blank line; keep-alive comments start with ':'.
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().into();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().into();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !id.is_empty() {
                let data = serde_json::from_str(&data).expect("event data is JSON");
                out.push(Sse { id, event, data });
            }
        }
    }
    out
}
