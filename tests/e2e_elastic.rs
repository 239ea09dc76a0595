//! `store.backend: elastic` end to end: the `sqlvigil` binary against the Elasticsearch
//! API test server in `testkit` — OTLP in → pipeline → `_bulk` → the bridge → API — and
//! the sink's promises under per-item 429 storms, a 60 s outage, a full disk queue and
//! mapping errors.

mod common;

use common::{gauge_request_at, self_metric, start_config};
use prost::Message;
use serde_json::{json, Value};
use sqlvigil_testkit::wait_for;
use sqlvigil_testkit_elastic::{ElasticServer, Fault};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

fn now_ns() -> u64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64
}

/// A run config against `es`, with `extra` appended (top-level sections other than store/elastic).
fn elastic_config(es: &ElasticServer, elastic_extra: &str, extra: &str) -> String {
    format!(
        "store:\n  backend: elastic\n  flush_interval: 300ms\noperators:\n  batch_interval: 100ms\n\
         elastic:\n  url: {}\n  bulk:\n    backoff_initial: 100ms\n    backoff_max: 2s\n{elastic_extra}{extra}",
        es.url()
    )
}

/// Points of `instance` stored in the metrics data stream: (time, value) pairs.
fn stored_points(es: &ElasticServer, instance: &str) -> Vec<(String, f64)> {
    es.docs("mssql-metrics-*")
        .into_iter()
        .filter(|(_, _, d)| d["instance_name"] == instance)
        .map(|(_, _, d)| {
            (
                d["@timestamp"].as_str().unwrap_or_default().to_string(),
                d["metric"]["value"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

async fn wait_stored(es: &ElasticServer, instance: &str, n: usize, timeout: Duration) -> usize {
    wait_for(timeout, || async {
        let got = stored_points(es, instance).len();
        (got >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| stored_points(es, instance).len())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_to_elastic_and_back_through_the_bridge() {
    let es = ElasticServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = "rules:\n  - name: hot_cpu\n    when: \"cpu_percent > 50\"\n    for: 0s\n    severity: critical\n";
    let (sv, token) = start_config(dir.path(), &elastic_config(&es, "", rules));

    // The layout is installed before anything is written.
    let tpl = es
        .index_template("sqlvigil-metrics")
        .expect("metrics template installed");
    assert_eq!(tpl["template"]["settings"]["index"]["mode"], "time_series");
    assert_eq!(tpl["index_patterns"], json!(["mssql-metrics-*"]));
    let ilm = es
        .ilm_policy("sqlvigil-metrics")
        .expect("ILM policy installed");
    let phases = &ilm["policy"]["phases"];
    assert_eq!(phases["warm"]["min_age"], "7d");
    assert_eq!(
        phases["warm"]["actions"]["downsample"]["fixed_interval"],
        "5m"
    );
    assert_eq!(phases["delete"]["min_age"], "90d");
    assert!(es.index_template("sqlvigil-insights").is_some());
    assert!(es
        .data_streams()
        .contains(&"mssql-metrics-default".to_string()));

    let t0 = now_ns() - 60_000_000_000;
    let req = gauge_request_at(
        "es-sql1",
        "sqlserver.cpu.utilization",
        t0,
        1_000_000_000,
        &[12.5, 20.0, 61.0],
    );
    assert_eq!(common::post_metrics(&sv, req.encode_to_vec()).await, 200);
    assert_eq!(
        wait_stored(&es, "es-sql1", 3, Duration::from_secs(20)).await,
        3
    );

    // Read back through the bridge: exact values, oldest first.
    let values = common::wait_values(&sv, &token, "sqlserver.cpu.utilization", "es-sql1", 3).await;
    assert_eq!(values, vec![12.5, 20.0, 61.0]);
    let (status, body) = sv
        .get_json("/api/v1/series?instance=es-sql1", Some(&token))
        .await
        .expect("series");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["series"][0]["points"], 3, "{body}");
    assert_eq!(body["series"][0]["metric"], "sqlserver.cpu.utilization");

    // Anomaly and insight documents reach their indices and come back by the API.
    let anomaly = wait_for(Duration::from_secs(20), || async {
        let (_, b) = sv
            .get_json("/api/v1/anomalies?instance=es-sql1", Some(&token))
            .await
            .ok()?;
        b["anomalies"].as_array()?.first().cloned()
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no anomaly served from Elastic; stderr: {}",
            sv.stderr_tail()
        )
    });
    assert_eq!(anomaly["rule"], "hot_cpu");
    assert_eq!(anomaly["observed"], 61.0);
    let id = anomaly["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(es.docs("sqlvigil-anomalies").len(), 1);
    let insight = wait_for(Duration::from_secs(20), || async {
        let (_, b) = sv
            .get_json(&format!("/api/v1/insights?anomaly_id={id}"), Some(&token))
            .await
            .ok()?;
        b["insights"].as_array()?.first().cloned()
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no insight served from Elastic; stderr: {}",
            sv.stderr_tail()
        )
    });
    assert_eq!(insight["model"], "rules");
    let stored = es.docs("llm_insights");
    assert_eq!(stored.len(), 1);
    assert!(stored[0].2["recommended_actions"].is_array());
    assert!(stored[0].2["generated_at"].is_string());
}

/// Documents other tools wrote: the Collector's OTel mapping mode and seed 002's flat
/// layout, with one malformed document, summarized by the bridge's endpoints.
#[tokio::test(flavor = "multi_thread")]
async fn bridge_endpoints_read_collector_and_seed_documents() {
    let es = ElasticServer::start();
    let t = |s: u64| {
        chrono::DateTime::from_timestamp(1_795_975_200 + s as i64, 0)
            .unwrap_or_default()
            .to_rfc3339()
    };
    let otel = |s: u64, attrs: Value, metrics: Value| {
        json!({"@timestamp": t(s), "data_stream": {"type": "metrics", "dataset": "generic.otel", "namespace": "default"},
               "resource": {"attributes": {"host.name": "h1", "sqlserver.instance.name": "otel1"}},
               "attributes": attrs, "metrics": metrics})
    };
    let ds = "metrics-generic.otel-default";
    es.insert(
        ds,
        "w1",
        otel(
            0,
            json!({"wait.type": "LCK_M_X", "wait.category": "Lock"}),
            json!({"sqlserver.os.wait.duration": 10.0}),
        ),
    );
    es.insert(
        ds,
        "w2",
        otel(
            60,
            json!({"wait.type": "LCK_M_X", "wait.category": "Lock"}),
            json!({"sqlserver.os.wait.duration": 12.5}),
        ),
    );
    es.insert(
        ds,
        "c1",
        otel(60, json!({}), json!({"sqlserver.cpu.utilization": 33.0})),
    );
    es.insert(
        ds,
        "io1",
        otel(
            0,
            json!({"direction": "read"}),
            json!({"sqlserver.database.io": 1000.0}),
        ),
    );
    es.insert(
        ds,
        "io2",
        otel(
            60,
            json!({"direction": "read"}),
            json!({"sqlserver.database.io": 5000.0}),
        ),
    );
    // Seed 002's flat documents (wait time in ms, cumulative).
    es.insert("mssql-metrics-legacy", "f1", json!({"timestamp": t(0), "instance_name": "flat1", "wait_type": "PAGEIOLATCH_SH", "wait_time_ms": 1000}));
    es.insert("mssql-metrics-legacy", "f2", json!({"timestamp": t(60), "instance_name": "flat1", "wait_type": "PAGEIOLATCH_SH", "wait_time_ms": 4000}));
    es.insert("mssql-metrics-legacy", "b1", json!({"timestamp": t(30), "instance_name": "flat1", "session_id": 71, "blocking_session_id": 55, "wait_type": "LCK_M_S", "wait_time_ms": 2500, "query_hash": "0xABC"}));
    es.insert(
        "mssql-metrics-legacy",
        "bad",
        json!({"timestamp": t(30), "instance_name": "flat1", "cpu_percent": "high"}),
    );
    let top = |s: u64, cpu_s: f64| {
        json!({"@timestamp": t(s), "event_name": "db.server.top_query",
               "resource": {"attributes": {"sqlserver.instance.name": "otel1", "host.name": "h1"}},
               "attributes": {"sqlserver.query_hash": "0x1F", "sqlserver.execution_count": 4, "sqlserver.total_worker_time": cpu_s,
                              "sqlserver.total_elapsed_time": cpu_s * 2.0, "sqlserver.total_logical_reads": 100, "db.query.text": "SELECT 1"}})
    };
    es.insert("logs-generic.otel-default", "q1", top(10, 0.5));
    es.insert("logs-generic.otel-default", "q2", top(70, 0.25));

    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, token) = start_config(dir.path(), &elastic_config(&es, "", ""));
    let range = format!(
        "from={}&to={}",
        t(0).replace('+', "%2B"),
        t(120).replace('+', "%2B")
    );

    let (status, body) = sv
        .get_json(&format!("/api/v1/waits?{range}"), Some(&token))
        .await
        .expect("waits");
    assert_eq!(status, 200, "{body}");
    let waits = body["waits"].as_array().cloned().unwrap_or_default();
    let find = |inst: &str| {
        waits
            .iter()
            .find(|w| w["instance"] == inst)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(find("flat1")["wait_type"], "PAGEIOLATCH_SH");
    assert_eq!(find("flat1")["wait_time_ms"], 3000.0, "{body}");
    assert_eq!(find("otel1")["wait_type"], "LCK_M_X");
    assert_eq!(find("otel1")["wait_time_ms"], 2500.0, "{body}");
    assert_eq!(find("otel1")["wait_category"], "Lock");

    // Aggregates grouped by wait type across layouts (terms on each layout's attribute).
    let (status, body) = sv
        .get_json(
            &format!("/api/v1/aggregates?metric=sqlserver.os.wait.duration&window=1h&group_by=wait_type&{range}"),
            Some(&token),
        )
        .await
        .expect("aggregates");
    assert_eq!(status, 200, "{body}");
    let groups: std::collections::BTreeMap<String, u64> = body["aggregates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["group"].as_str()?.to_string(), r["points"].as_u64()?)))
        .collect();
    assert_eq!(groups.get("LCK_M_X"), Some(&2), "{body}");
    assert_eq!(groups.get("PAGEIOLATCH_SH"), Some(&2), "{body}");

    let (status, body) = sv
        .get_json(&format!("/api/v1/io?{range}"), Some(&token))
        .await
        .expect("io");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["io"][0]["instance"], "otel1");
    assert_eq!(body["io"][0]["read_bytes"], 4000.0, "{body}");

    let (status, body) = sv
        .get_json(&format!("/api/v1/top-queries?{range}"), Some(&token))
        .await
        .expect("top");
    assert_eq!(status, 200, "{body}");
    let q = &body["top_queries"]["rows"][0];
    assert_eq!(q["query_hash"], "0x1F", "{body}");
    assert_eq!(q["executions"], 8.0);
    assert_eq!(q["total_cpu_ms"], 750.0);
    assert_eq!(q["statement"], "SELECT 1");

    let (status, body) = sv
        .get_json(&format!("/api/v1/blocking?{range}"), Some(&token))
        .await
        .expect("blocking");
    assert_eq!(status, 200, "{body}");
    let b = &body["blocking"]["rows"][0];
    assert_eq!(b["blocking_session_id"], 55, "{body}");
    assert_eq!(b["session_id"], 71);
    assert_eq!(b["wait_time_ms"], 2500.0);

    // The OTel document reads like our own points; the malformed one is counted, not fatal.
    let (status, body) = sv
        .get_json(
            "/api/v1/metrics?metric=sqlserver.cpu.utilization&instance=otel1",
            Some(&token),
        )
        .await
        .expect("metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"][0]["value"], 33.0, "{body}");
    assert_eq!(body["points"][0]["host"], "h1");
    let (status, body) = sv
        .get_json(
            "/api/v1/metrics?metric=sqlserver.cpu.utilization&instance=flat1",
            Some(&token),
        )
        .await
        .expect("metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"].as_array().map(Vec::len), Some(0), "{body}");
    assert!(self_metric(&sv, "sqlvigil_bridge_malformed_docs").await >= 1.0);

    // Bad input is named.
    let (status, body) = sv
        .get_json("/api/v1/waits?from=later", Some(&token))
        .await
        .expect("waits");
    assert_eq!(status, 400, "{body}");
}

/// A storm of per-item 429s, then Elasticsearch unreachable for 60 s, under a steady
/// load: every point the receiver acknowledged is indexed exactly once, memory stays
/// bounded, and nothing goes to the dead-letter file.
#[tokio::test(flavor = "multi_thread")]
async fn item_429_storm_and_outage_lose_nothing_and_duplicate_nothing() {
    let es = ElasticServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, token) = start_config(dir.path(), &elastic_config(&es, "", ""));
    let _ = token;
    es.set_fault(Fault::ItemRejections {
        every: 3,
        items: 2_000,
    });

    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut refused = 0;
    let mut max_rss = 0;
    let t0 = now_ns() - 30 * 60_000_000_000;
    let started = Instant::now();
    let mut phase_outage = false;
    let mut k = 0u64;
    // 10 s of storm, 60 s of outage, 5 s after it: 20 points every 100 ms.
    while started.elapsed() < Duration::from_secs(75) {
        let elapsed = started.elapsed();
        if !phase_outage && elapsed >= Duration::from_secs(10) {
            es.refuse_connections(true);
            phase_outage = true;
        }
        if phase_outage && elapsed >= Duration::from_secs(70) {
            es.refuse_connections(false);
        }
        // One point per millisecond of event time, never the same one twice.
        let values: Vec<f64> = (0..20).map(|i| (k * 20 + i) as f64).collect();
        let req = gauge_request_at(
            "storm1",
            "sqlserver.user.connection.count",
            t0 + k * 20_000_000,
            1_000_000,
            &values,
        );
        match common::post_metrics(&sv, req.encode_to_vec()).await {
            200 => acked.extend((0..20).map(|i| k * 20 + i)),
            _ => refused += 1,
        }
        k += 1;
        max_rss = max_rss.max(rss_kib(sv.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    es.refuse_connections(false);
    let n = acked.len();
    assert!(
        n >= 10_000,
        "only {n} points acknowledged ({refused} requests refused)"
    );
    let got = wait_stored(&es, "storm1", n, Duration::from_secs(90)).await;
    let points = stored_points(&es, "storm1");
    let values: BTreeSet<u64> = points.iter().map(|(_, v)| *v as u64).collect();
    assert_eq!(
        got,
        n,
        "stored {got} of {n} acknowledged points; stderr: {}",
        sv.stderr_tail()
    );
    assert_eq!(values.len(), points.len(), "a point was stored twice");
    assert_eq!(
        values, acked,
        "stored points differ from the acknowledged ones"
    );
    let stats = es.stats();
    assert!(stats.items_rejected >= 2_000, "{stats:?}");
    assert!(self_metric(&sv, "sqlvigil_elastic_request_errors").await > 0.0);
    assert!(self_metric(&sv, "sqlvigil_elastic_retried_docs").await >= 2_000.0);
    assert!(
        !dir.path().join("elastic-dead-letter.jsonl").exists(),
        "nothing may be dead-lettered"
    );
    assert!(
        max_rss < 400 * 1024,
        "RSS reached {max_rss} KiB during the outage"
    );
    wait_for(Duration::from_secs(10), || async {
        (self_metric(&sv, "sqlvigil_elastic_queue_bytes").await == 0.0).then_some(())
    })
    .await
    .expect("queue drains");
}

/// With a tiny disk queue and Elasticsearch down, the receiver answers 503 instead of
/// accepting more; once Elasticsearch is back everything acknowledged is indexed.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_queue_pushes_back_to_the_receiver() {
    let es = ElasticServer::start();
    es.refuse_connections(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = "  queue:\n    max_bytes: 60000\n    segment_bytes: 20000\n";
    // The push back must come from the Elastic queue: a durable in-process bus holds
    // records until the operators' next checkpoint, so with room for 4 it would refuse
    // first (e2e_durable tests that bus).
    let (sv, _token) = start_config(
        dir.path(),
        &elastic_config(&es, queue, "bus:\n  capacity: 4\n  durability: none\n"),
    );
    let t0 = now_ns() - 10 * 60_000_000_000;
    let mut acked = BTreeSet::new();
    let mut status_503 = 0;
    for k in 0..400u64 {
        let values: Vec<f64> = (0..50).map(|i| (k * 50 + i) as f64).collect();
        let req = gauge_request_at(
            "bp1",
            "sqlserver.user.connection.count",
            t0 + k * 50_000_000,
            1_000_000,
            &values,
        );
        match common::post_metrics(&sv, req.encode_to_vec()).await {
            200 => acked.extend((0..50).map(|i| k * 50 + i)),
            503 => status_503 += 1,
            other => panic!("unexpected status {other}"),
        }
        if status_503 >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        status_503 >= 20,
        "the receiver never pushed back ({} points accepted)",
        acked.len()
    );
    assert!(self_metric(&sv, "sqlvigil_elastic_queue_bytes").await >= 60_000.0);
    es.refuse_connections(false);
    let n = acked.len();
    let got = wait_stored(&es, "bp1", n, Duration::from_secs(60)).await;
    let values: BTreeSet<u64> = stored_points(&es, "bp1")
        .iter()
        .map(|(_, v)| *v as u64)
        .collect();
    assert_eq!(got, n, "stderr: {}", sv.stderr_tail());
    assert_eq!(values, acked);
}

/// Documents Elasticsearch refuses for good (here: an operator's template maps
/// `database_name` as a number) go to the dead-letter file with the reason; the rest is indexed.
#[tokio::test(flavor = "multi_thread")]
async fn mapping_errors_go_to_the_dead_letter_file() {
    let es = ElasticServer::start();
    let override_tpl = json!({
        "index_patterns": ["mssql-metrics-*"], "data_stream": {}, "priority": 500,
        "template": {"mappings": {"properties": {"database_name": {"type": "long"}}}}
    });
    let put = reqwest::Client::new()
        .put(format!("{}/_index_template/site-override", es.url()))
        .json(&override_tpl)
        .send()
        .await
        .expect("PUT template");
    assert_eq!(put.status().as_u16(), 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sv, _token) = start_config(dir.path(), &elastic_config(&es, "", ""));
    let t0 = now_ns() - 60_000_000_000;
    let mut req = gauge_request_at(
        "dl1",
        "sqlserver.user.connection.count",
        t0,
        1_000_000_000,
        &[1.0, 2.0],
    );
    let per_db = gauge_request_at(
        "dl1",
        "sqlserver.transaction_log.usage",
        t0,
        1_000_000_000,
        &[40.0],
    );
    let mut rm = per_db.resource_metrics[0].clone();
    if let Some(res) = rm.resource.as_mut() {
        res.attributes
            .push(opentelemetry_proto::tonic::common::v1::KeyValue {
                key: "sqlserver.database.name".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            "sales".into(),
                        ),
                    ),
                }),
            });
    }
    req.resource_metrics.push(rm);
    assert_eq!(common::post_metrics(&sv, req.encode_to_vec()).await, 200);
    assert_eq!(wait_stored(&es, "dl1", 2, Duration::from_secs(20)).await, 2);
    let path = dir.path().join("elastic-dead-letter.jsonl");
    let lines = wait_for(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&path).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("no dead-letter file; stderr: {}", sv.stderr_tail()));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 400);
    assert_eq!(lines[0]["document"]["database_name"], "sales");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("database_name"),
        "{}",
        lines[0]
    );
    assert_eq!(
        self_metric(&sv, "sqlvigil_elastic_dead_letter_docs").await,
        1.0
    );
    assert!(Path::new(&path).exists());
}
