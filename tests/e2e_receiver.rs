//! True to the real Collector: the `sqlserver` receiver's own golden test data
//! (`tests/fixtures/sqlserverreceiver/`, Apache-2.0, commits in its SOURCE.md) sent
//! through the `sqlvigil` binary, as the receiver would send it, in two scrapes:
//! over OTLP/HTTP JSON into the embedded store, over OTLP/gRPC into Elasticsearch (the
//! test server). Nothing is rejected; every metric lands under the catalogue's name and
//! unit; `…/s` rates are classified per mode (the Windows golden's steady 1.0 req/s
//! stays 1.0, the direct golden's running totals are differentiated); the top-query and
//! query-sample events come back from `/api/v1/top-queries` and `/api/v1/blocking`.

mod common;

use common::start_config;
use figment::providers::{Format, Yaml};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use serde_json::{json, Value};
use sqlvigil_model::catalogue;
use sqlvigil_testkit::{wait_for, Sqlvigil};
use sqlvigil_testkit_elastic::ElasticServer;
use std::collections::BTreeMap;
use std::time::Duration;

/// The receiver's own test data, copied under `tests/fixtures/`.
fn fixtures() -> String {
    let root = sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR"));
    format!("{}/tests/fixtures/sqlserverreceiver", root.display())
}

/// Metric goldens: (file, receiver mode it was scraped in).
const METRIC_GOLDENS: &[(&str, &str)] = &[
    ("testdata/golden_scrape.yaml", "windows"),
    ("testdata/expectedPerfCounters.yaml", "direct"),
    ("testdata/expectedDatabaseIO.yaml", "direct"),
    ("testdata/expectedWaitStats.yaml", "direct"),
    ("testdata/expectedCPUMemory.yaml", "direct"),
    ("testdata/expectedDiskIO.yaml", "direct"),
    ("testdata/expectedLatchWaitTime.yaml", "direct"),
    ("testdata/expectedWorkerThreads.yaml", "direct"),
];
const SAMPLE_GOLDEN: &str = "testdata/expectedRecordDatabaseSampleQuery.yaml";
/// Hand-written in the golden's shape (the upstream one could not be copied; SOURCE.md).
const TOP_QUERY: &str = "constructed/topQuery.yaml";

const SCRAPE_S: i64 = 10;
/// What a running total gains between the two scrapes in the direct goldens.
const COUNTER_STEP: f64 = 100.0;

fn load(file: &str) -> Value {
    figment::Figment::from(Yaml::file(format!("{}/{file}", fixtures())))
        .extract()
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn walk(v: &mut Value, f: &mut impl FnMut(&str, &mut Value)) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                f(k, child);
                walk(child, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| walk(c, f)),
        _ => {}
    }
}

/// The golden as scrape `n` (0 or 1) taken now: event times moved to the present,
/// and in scrape 1 the direct mode's integral `…/s` values grown by COUNTER_STEP
/// (SQL Server's `cntr_value` running on).
fn scrape(golden: &Value, n: i64, direct: bool, t0_ns: i64) -> Value {
    let mut v = golden.clone();
    let t = (t0_ns + n * SCRAPE_S * 1_000_000_000).to_string();
    let start = (t0_ns - 3_600_000_000_000).to_string();
    for rm in v["resourceMetrics"].as_array_mut().into_iter().flatten() {
        for m in rm["scopeMetrics"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .flat_map(|s| s["metrics"].as_array_mut().into_iter().flatten())
        {
            let per_second = m["name"]
                .as_str()
                .is_some_and(catalogue::is_per_second_by_mode);
            let grow = direct && per_second && n == 1 && m.get("gauge").is_some();
            walk(m, &mut |k, child| match k {
                "timeUnixNano" => *child = json!(t),
                "startTimeUnixNano" => *child = json!(start),
                "asDouble" if grow => {
                    if let Some(x) = child.as_f64().filter(|x| x.fract() == 0.0) {
                        *child = json!(x + COUNTER_STEP);
                    }
                }
                _ => {}
            });
        }
    }
    walk(&mut v, &mut |k, child| {
        if k == "logRecords" {
            for r in child.as_array_mut().into_iter().flatten() {
                r["timeUnixNano"] = json!(t);
            }
        }
    });
    v
}

/// OTLP/JSON as the `opentelemetry-proto` serde derive reads it (the receiver's own
/// leniency, `asInt` as a string and empty values, is for the HTTP path).
fn to_proto<T: serde::de::DeserializeOwned>(mut v: Value) -> T {
    fn fix(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, v| {
                    !(matches!(k.as_str(), "body" | "value")
                        && v.as_object().is_some_and(|o| o.is_empty()))
                });
                for (k, child) in map.iter_mut() {
                    if k == "asInt" {
                        if let Some(i) = child.as_str().and_then(|s| s.parse::<i64>().ok()) {
                            *child = json!(i);
                        }
                    }
                    fix(child);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(fix),
            _ => {}
        }
    }
    fix(&mut v);
    serde_json::from_value(v).expect("golden decodes as OTLP")
}

/// How the goldens go in.
#[derive(Clone, Copy)]
enum Transport {
    HttpJson,
    Grpc,
}

async fn send(sv: &Sqlvigil, transport: Transport, signal: &str, body: Value) {
    match transport {
        Transport::HttpJson => {
            let resp = reqwest::Client::new()
                .post(format!("{}/v1/{signal}", sv.http_endpoint()))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("http");
            let status = resp.status().as_u16();
            let reply: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 200, "{signal}: {reply}");
            let rejected = reply["partialSuccess"]["rejectedDataPoints"]
                .as_str()
                .or(reply["partialSuccess"]["rejectedLogRecords"].as_str())
                .unwrap_or("0");
            assert_eq!(rejected, "0", "{signal}: nothing rejected: {reply}");
        }
        Transport::Grpc => {
            let ep = sv.grpc_endpoint();
            if signal == "metrics" {
                let req: ExportMetricsServiceRequest = to_proto(body);
                let mut client = MetricsServiceClient::connect(ep).await.expect("grpc");
                let reply = client.export(req).await.expect("accepted").into_inner();
                assert!(reply
                    .partial_success
                    .is_none_or(|p| p.rejected_data_points == 0));
            } else {
                let req: ExportLogsServiceRequest = to_proto(body);
                let mut client = LogsServiceClient::connect(ep).await.expect("grpc");
                let reply = client.export(req).await.expect("accepted").into_inner();
                assert!(reply
                    .partial_success
                    .is_none_or(|p| p.rejected_log_records == 0));
            }
        }
    }
}

fn metric_names(golden: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rm in golden["resourceMetrics"].as_array().into_iter().flatten() {
        for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                let name = m["name"].as_str().unwrap_or_default().to_string();
                out.push((name, m["unit"].as_str().unwrap_or_default().to_string()));
            }
        }
    }
    out
}

async fn series(sv: &Sqlvigil, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = sv
        .get_json(&format!("/api/v1/series?from=0{query}"), Some(token))
        .await
        .expect("series");
    assert_eq!(status, 200, "{body}");
    body["series"].as_array().cloned().unwrap_or_default()
}

/// The latest value of the first series of `metric` with `attrs`.
async fn latest(sv: &Sqlvigil, token: &str, metric: &str, instance: &str) -> Option<(f64, Value)> {
    let (_, body) = sv
        .get_json(
            &format!("/api/v1/metrics?metric={metric}&instance={instance}&from=0"),
            Some(token),
        )
        .await
        .ok()?;
    let points = body["points"].as_array()?;
    let p = points.last()?;
    Some((p["value"].as_f64()?, p["attributes"].clone()))
}

async fn exercise(sv: &Sqlvigil, token: &str, transport: Transport) {
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 120_000_000_000;
    let goldens: Vec<(Value, bool)> = METRIC_GOLDENS
        .iter()
        .map(|(f, mode)| (load(f), *mode == "direct"))
        .collect();
    for n in 0..2 {
        for (g, direct) in &goldens {
            send(sv, transport, "metrics", scrape(g, n, *direct, t0)).await;
        }
    }
    for file in [SAMPLE_GOLDEN, TOP_QUERY] {
        send(sv, transport, "logs", scrape(&load(file), 0, false, t0)).await;
    }

    // Every golden metric under its name, in the catalogue's unit.
    let want: BTreeMap<String, String> =
        goldens.iter().flat_map(|(g, _)| metric_names(g)).collect();
    assert!(want.len() > 70, "the goldens hold {} metrics", want.len());
    let stored = wait_for(Duration::from_secs(30), || async {
        let all = series(sv, token, "").await;
        let names: BTreeMap<String, String> = all
            .iter()
            .map(|s| {
                (
                    s["metric"].as_str().unwrap_or_default().to_string(),
                    s["unit"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        want.keys().all(|m| names.contains_key(m)).then_some(names)
    })
    .await
    .unwrap_or_else(|| panic!("not every golden metric was stored"));
    for (metric, sent_unit) in &want {
        let def =
            catalogue::metric(metric).unwrap_or_else(|| panic!("{metric} not in the catalogue"));
        assert_eq!(
            stored[metric],
            catalogue::unit_of(def),
            "{metric} (sent as `{sent_unit}`) stored in the catalogue's unit"
        );
    }

    // Windows perf counters: a true rate, passed through (the golden's 1 req/s).
    let windows = wait_for(Duration::from_secs(20), || {
        latest(
            sv,
            token,
            "sqlserver.batch.request.rate.per_second",
            "unknown",
        )
    })
    .await
    .expect("windows rate derived");
    assert_eq!(windows.0, 1.0, "a rate of a rate would be 0");
    assert_eq!(windows.1["sqlvigil.rate_source"], "gauge");
    // A direct connection: the running total differentiated.
    let direct = wait_for(Duration::from_secs(20), || {
        latest(
            sv,
            token,
            "sqlserver.batch.request.rate.per_second",
            "d26d40521426",
        )
    })
    .await
    .expect("direct rate derived");
    assert_eq!(direct.0, COUNTER_STEP / SCRAPE_S as f64);
    assert_eq!(direct.1["sqlvigil.rate_source"], "counter");
    // Host CPU sent as a fraction (0.425) is stored as a percentage.
    let cpu = latest(sv, token, "sqlserver.cpu.utilization", "testhost")
        .await
        .expect("cpu");
    assert!((cpu.0 - 42.5).abs() < 1e-9, "{cpu:?}");

    // The events, typed.
    let tops = wait_for(Duration::from_secs(20), || async {
        let (_, body) = sv
            .get_json("/api/v1/top-queries?from=0", Some(token))
            .await
            .ok()?;
        let rows = body["top_queries"]["rows"].as_array()?.clone();
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("top queries served");
    let q = &tops[0];
    assert_eq!(q["query_hash"], "307833373834394538373431373145334633");
    assert_eq!(
        (q["executions"].as_f64(), q["total_cpu_ms"].as_f64()),
        (Some(1.0), Some(2.0))
    );
    assert_eq!(
        (q["total_logical_writes"].as_f64(), q["database"].as_str()),
        (Some(3.0), Some("master"))
    );
    let blocking = wait_for(Duration::from_secs(20), || async {
        let (_, body) = sv
            .get_json("/api/v1/blocking?from=0", Some(token))
            .await
            .ok()?;
        (!body["blocking"]["rows"].as_array()?.is_empty()).then_some(body)
    })
    .await
    .expect("blocking served");
    let b = &blocking["blocking"]["rows"][0];
    assert_eq!(
        (b["session_id"].as_i64(), b["blocking_session_id"].as_i64()),
        (Some(60), Some(71))
    );
    assert_eq!(b["wait_type"], "LCK_M_S");
    assert!((b["wait_time_ms"].as_f64().unwrap_or_default() - 2450.0).abs() < 1e-6);
    let chain = &blocking["chains"][0];
    assert_eq!(
        (chain["head_session_id"].as_i64(), chain["victims"].as_i64()),
        (Some(71), Some(1))
    );

    // The mode each instance's metrics give away, and what cannot fire there.
    let (_, cov) = sv
        .get_json("/api/v1/coverage?from=0", Some(token))
        .await
        .expect("coverage");
    let of = |instance: &str| -> Value {
        cov["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["instance"] == instance).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(of("unknown")["receiver_mode"], "windows", "{cov}");
    assert_eq!(of("d26d40521426")["receiver_mode"], "direct", "{cov}");
    let gaps = of("unknown")["rules_that_cannot_fire"].to_string();
    assert!(
        gaps.contains("cpu_storm") && gaps.contains("sqlserver.cpu.utilization"),
        "{gaps}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn goldens_over_http_json_into_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let (sv, token) = start_config(
        dir.path(),
        "store:\n  flush_interval: 300ms\noperators:\n  batch_interval: 100ms\n",
    );
    exercise(&sv, &token, Transport::HttpJson).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn goldens_over_grpc_into_elasticsearch() {
    let es = ElasticServer::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store:\n  backend: elastic\n  flush_interval: 300ms\noperators:\n  batch_interval: 100ms\n\
         elastic:\n  url: {}\n",
        es.url()
    );
    let (sv, token) = start_config(dir.path(), &yaml);
    exercise(&sv, &token, Transport::Grpc).await;
    // sqlvigil's own event documents are in Elasticsearch and read back as events above.
    let events = es
        .docs("mssql-logs-*")
        .into_iter()
        .filter(|(_, _, d)| d.to_string().contains("db.server.top_query"))
        .count();
    assert!(events >= 1, "the top-query event stored as a document");
}
