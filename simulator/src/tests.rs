//! Crate tests: determinism, independence, catalogue conformance, scenario shapes,
//! counter monotonicity and the sender against a local OTLP/HTTP endpoint.

use super::*;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, NumberDataPoint,
};
use prost::Message;
use sqlvigil_model::{catalogue, MetricKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

const DAY_TICKS: u64 = 8_640;

fn fleet(seed: u64, instances: usize, incidents: &[&str]) -> Fleet {
    Fleet::new(FleetConfig {
        seed,
        instances,
        incidents: incidents
            .iter()
            .map(|s| Incident::parse(s).expect("valid spec"))
            .collect(),
        ..FleetConfig::default()
    })
}

fn attr_str(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), attr_str(kv)))
        .collect()
}

fn num(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => f64::NAN,
    }
}

/// Every point of a request as (series identity, value).
fn points(req: &ExportMetricsServiceRequest) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let res = attrs(
            &rm.resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default(),
        );
        let db = res
            .get("sqlserver.database.name")
            .cloned()
            .unwrap_or_default();
        let inst = res
            .get("sqlserver.instance.name")
            .cloned()
            .unwrap_or_default();
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let dps = match &m.data {
                Some(Data::Gauge(g)) => &g.data_points,
                Some(Data::Sum(s)) => &s.data_points,
                _ => continue,
            };
            for p in dps {
                out.push((
                    format!("{inst}|{db}|{}|{:?}", m.name, attrs(&p.attributes)),
                    num(p),
                ));
            }
        }
    }
    out
}

/// Value of a metric on an instance's request (first point; summed for a wait type).
fn value(req: &ExportMetricsServiceRequest, metric: &str, attr: Option<&str>) -> f64 {
    points(req)
        .into_iter()
        .find(|(k, _)| k.contains(&format!("|{metric}|")) && attr.is_none_or(|a| k.contains(a)))
        .map_or(f64::NAN, |(_, v)| v)
}

#[test]
fn same_seed_gives_identical_bytes() {
    let specs = ["cpu_storm@3m+10m", "blocking_chain@20m+6m:1"];
    let (mut a, mut b) = (fleet(7, 3, &specs), fleet(7, 3, &specs));
    for tick in 0..300 {
        let ma: Vec<Vec<u8>> = a.metrics(tick).iter().map(|r| r.encode_to_vec()).collect();
        let mb: Vec<Vec<u8>> = b.metrics(tick).iter().map(|r| r.encode_to_vec()).collect();
        assert_eq!(ma, mb, "metrics differ at tick {tick}");
        let la: Vec<Vec<u8>> = a.logs(tick).iter().map(|r| r.encode_to_vec()).collect();
        let lb: Vec<Vec<u8>> = b.logs(tick).iter().map(|r| r.encode_to_vec()).collect();
        assert_eq!(la, lb, "logs differ at tick {tick}");
    }
    let other = fleet(8, 3, &specs).metrics(0)[0].encode_to_vec();
    assert_ne!(other, fleet(7, 3, &specs).metrics(0)[0].encode_to_vec());
}

#[test]
fn replaying_an_earlier_tick_gives_the_same_request() {
    let mut f = fleet(1, 2, &["cpu_storm@1m+2m"]);
    let first: Vec<_> = (0..20).map(|t| f.metrics(t)).collect();
    assert_eq!(f.metrics(5), first[5]);
    assert_eq!(f.metrics(19), first[19]);
    // Skipping ahead is the same as walking there.
    let mut g = fleet(1, 2, &["cpu_storm@1m+2m"]);
    assert_eq!(g.metrics(19), first[19]);
}

#[test]
fn instances_are_independent_of_fleet_size() {
    let mut small = fleet(11, 2, &["cpu_storm@2m+5m:1"]);
    let mut large = fleet(11, 5, &["cpu_storm@2m+5m:1", "blocking_chain@1m+5m:4"]);
    for tick in 0..100 {
        let (s, l) = (small.metrics(tick), large.metrics(tick));
        assert_eq!(s[..], l[..2], "tick {tick}");
    }
    let m = small.metrics(100);
    assert_ne!(
        points(&m[0]),
        points(&m[1]),
        "two instances must not be copies"
    );
    assert_eq!(
        large.instance_names(),
        ["sql-01", "sql-02", "sql-03", "sql-04", "sql-05"]
    );
}

#[test]
fn metrics_match_the_catalogue() {
    let mut f = fleet(3, 2, &[]);
    let mut seen = BTreeSet::new();
    for req in f.metrics(0) {
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().expect("scope");
                assert_eq!(scope.name, SCOPE_NAME);
                for m in &sm.metrics {
                    let def = catalogue::metric(&m.name)
                        .unwrap_or_else(|| panic!("{} not in catalogue", m.name));
                    assert_eq!(m.unit, def.unit, "{}", m.name);
                    assert_eq!(m.description, def.description, "{}", m.name);
                    let dps = match (&m.data, def.kind) {
                        (Some(Data::Gauge(g)), MetricKind::Gauge) => &g.data_points,
                        (Some(Data::Sum(s)), MetricKind::CumulativeSum) => {
                            assert_eq!(
                                s.aggregation_temporality,
                                AggregationTemporality::Cumulative as i32
                            );
                            assert_eq!(s.is_monotonic, def.monotonic, "{}", m.name);
                            &s.data_points
                        }
                        (data, kind) => panic!("{}: {kind:?} sent as {data:?}", m.name),
                    };
                    for p in dps {
                        let keys: BTreeSet<&str> =
                            p.attributes.iter().map(|kv| kv.key.as_str()).collect();
                        let want: BTreeSet<&str> = def.attributes.iter().copied().collect();
                        assert_eq!(keys, want, "{}", m.name);
                        assert!(
                            p.start_time_unix_nano > 0 && p.start_time_unix_nano < p.time_unix_nano
                        );
                    }
                    seen.insert(m.name.clone());
                }
            }
        }
    }
    let all: BTreeSet<String> = catalogue::METRICS
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    assert_eq!(seen, all, "every catalogue metric is emitted");
}

#[test]
fn resources_look_like_the_receiver() {
    let req = fleet(3, 1, &[]).metrics(0).remove(0);
    let res: Vec<BTreeMap<String, String>> = req
        .resource_metrics
        .iter()
        .map(|rm| attrs(&rm.resource.as_ref().expect("resource").attributes))
        .collect();
    assert_eq!(res[0]["host.name"], "sqlhost-01");
    assert_eq!(res[0]["server.address"], "sqlhost-01");
    assert_eq!(res[0]["server.port"], "1433");
    assert_eq!(res[0]["service.instance.id"], "sqlhost-01:1433");
    assert_eq!(
        res[0]["service.name"],
        "unknown_service:microsoft.sql_server"
    );
    assert_eq!(res[0]["sqlserver.instance.name"], "sql-01");
    assert!(!res[0].contains_key("sqlserver.database.name"));
    let dbs: Vec<&str> = res[1..]
        .iter()
        .map(|r| r["sqlserver.database.name"].as_str())
        .collect();
    assert_eq!(dbs, ["master", "tempdb", "sales"]);
}

#[test]
fn points_per_tick_counts_every_point() {
    let mut f = fleet(5, 4, &["cpu_storm@0s+1m"]);
    let n: usize = f.metrics(3).iter().map(count_points).sum();
    assert_eq!(n, f.points_per_tick());
    assert_eq!(n, 4 * 65);
}

/// Walk `ticks` ticks and call `check(instance index, tick, event ns, request)`.
fn walk(
    f: &mut Fleet,
    ticks: u64,
    mut check: impl FnMut(usize, u64, i64, &ExportMetricsServiceRequest),
) {
    for tick in 0..ticks {
        let t = f.event_time_ns(tick);
        for (i, req) in f.metrics(tick).iter().enumerate() {
            check(i, tick, t, req);
        }
    }
}

#[test]
fn quiet_day_stays_below_alert_thresholds() {
    let mut f = fleet(42, 3, &[]);
    let (mut max_cpu, mut min_cpu, mut max_blocked) = (0f64, 100f64, 0f64);
    walk(&mut f, DAY_TICKS, |_, _, _, req| {
        let cpu = value(req, "sqlserver.cpu.utilization", None);
        max_cpu = max_cpu.max(cpu);
        min_cpu = min_cpu.min(cpu);
        max_blocked = max_blocked.max(value(req, "sqlserver.processes.blocked", None));
    });
    assert!(max_cpu <= 58.0, "quiet CPU peaked at {max_cpu}");
    assert!(
        max_cpu - min_cpu > 10.0,
        "daily pattern visible ({min_cpu}..{max_cpu})"
    );
    assert!(max_blocked <= 1.0, "quiet blocked peaked at {max_blocked}");
}

#[test]
fn incidents_shape_their_windows_and_nothing_else() {
    let specs = [
        "cpu_storm@3h+10m:0",
        "blocking_chain@5h+6m:1",
        "cpu_storm@12h+30m:2",
        "quiet@1h+1h:2",
    ];
    let mut f = fleet(42, 3, &specs);
    let labels = f.labels();
    assert_eq!(labels.len(), 3, "quiet windows are not labelled");
    assert_eq!(
        (labels[1].name.as_str(), labels[1].instance.as_str()),
        ("blocking_chain", "sql-02")
    );
    let names = f.instance_names();
    let mut prev_lock_wait: HashMap<usize, f64> = HashMap::new();
    let (mut storm_ticks, mut chain_ticks) = (0, 0);
    walk(&mut f, DAY_TICKS, |i, _, t, req| {
        let active: Vec<&IncidentLabel> = labels
            .iter()
            .filter(|l| l.instance == names[i] && l.contains(t))
            .collect();
        let cpu = value(req, "sqlserver.cpu.utilization", None);
        let blocked = value(req, "sqlserver.processes.blocked", None);
        let lock_avg = value(req, "sqlserver.lock.wait_time.avg", None);
        let lck = value(req, "sqlserver.os.wait.duration", Some("LCK_M_X"));
        let lck_rate = lck - prev_lock_wait.insert(i, lck).unwrap_or(lck);
        match active.first().map(|l| l.scenario) {
            Some(Scenario::CpuStorm) => {
                storm_ticks += 1;
                assert!((90.0..=99.0).contains(&cpu), "storm CPU {cpu}");
            }
            Some(Scenario::BlockingChain) => {
                chain_ticks += 1;
                assert!((5.0..=20.0).contains(&blocked), "chain blocked {blocked}");
                assert!(lock_avg > 1_000.0, "chain lock wait avg {lock_avg}");
                assert!(
                    t == labels[1].start_ns || lck_rate > 30.0,
                    "LCK_M_X grew only {lck_rate}s"
                );
            }
            _ => {
                assert!(cpu < 85.0, "quiet CPU {cpu}");
                assert!(blocked <= 1.0, "quiet blocked {blocked}");
            }
        }
    });
    assert_eq!((storm_ticks, chain_ticks), (60 + 180, 36));
}

#[test]
fn counters_never_decrease() {
    let mut f = fleet(
        9,
        3,
        &[
            "cpu_storm@10m+20m",
            "blocking_chain@30m+20m:1",
            "blocking_chain@0s+1h:2",
        ],
    );
    let raw: BTreeSet<&str> = catalogue::METRICS
        .iter()
        .filter(|m| m.raw_counter || (m.kind == MetricKind::CumulativeSum && m.monotonic))
        .map(|m| m.name)
        .collect();
    let mut last: HashMap<String, f64> = HashMap::new();
    let mut checked = 0usize;
    walk(&mut f, 1_500, |_, tick, _, req| {
        for (key, v) in points(req) {
            if !raw.iter().any(|m| key.contains(&format!("|{m}|"))) {
                continue;
            }
            if let Some(prev) = last.insert(key.clone(), v) {
                assert!(v >= prev, "{key} went from {prev} to {v} at tick {tick}");
                checked += 1;
            }
        }
    });
    assert!(checked > 1_000);
}

#[test]
fn logs_are_busier_during_incidents() {
    let mut f = fleet(4, 2, &["blocking_chain@0s+1h:1"]);
    let mut per_instance = [0usize; 2];
    for tick in 0..360 {
        for req in f.logs(tick) {
            for rl in &req.resource_logs {
                let res = attrs(&rl.resource.as_ref().expect("resource").attributes);
                let idx = usize::from(res["sqlserver.instance.name"] == "sql-02");
                per_instance[idx] += rl
                    .scope_logs
                    .iter()
                    .map(|s| s.log_records.len())
                    .sum::<usize>();
            }
        }
    }
    assert!(
        per_instance[1] > 3 * per_instance[0].max(1),
        "{per_instance:?}"
    );
}

#[test]
fn out_of_range_incidents_are_dropped() {
    let f = fleet(1, 2, &["cpu_storm@1m+1m:5"]);
    assert!(f.labels().is_empty());
}

mod sender {
    use super::*;
    use axum::body::Bytes;
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn past_fleet(instances: usize) -> Fleet {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as i64;
        Fleet::new(FleetConfig {
            seed: 1,
            instances,
            start_time_ns: now_ns - 3_600 * 1_000_000_000,
            incidents: vec![Incident::parse("blocking_chain@0s+1h").expect("spec")],
            ..FleetConfig::default()
        })
    }

    /// An OTLP/HTTP endpoint that answers the first metrics POST with 503 and
    /// `Retry-After: 0`, then accepts everything, rejecting one point per request.
    async fn flaky_endpoint() -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let app = axum::Router::new()
            .route(
                "/v1/metrics",
                post(move |body: Bytes| {
                    let c = c.clone();
                    async move {
                        if ExportMetricsServiceRequest::decode(body).is_err() {
                            return StatusCode::BAD_REQUEST.into_response();
                        }
                        if c.fetch_add(1, Ordering::SeqCst) == 0 {
                            return (
                                StatusCode::SERVICE_UNAVAILABLE,
                                [(header::RETRY_AFTER, "0")],
                            )
                                .into_response();
                        }
                        let reply = ExportMetricsServiceResponse {
                            partial_success: Some(ExportMetricsPartialSuccess {
                                rejected_data_points: 1,
                                error_message: "one bad point".into(),
                            }),
                        };
                        (
                            [(header::CONTENT_TYPE, "application/x-protobuf")],
                            reply.encode_to_vec(),
                        )
                            .into_response()
                    }
                }),
            )
            .route("/v1/logs", post(|| async { "not protobuf at all" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), calls)
    }

    #[tokio::test]
    async fn http_run_retries_and_counts_rejections() {
        let (endpoint, calls) = flaky_endpoint().await;
        let fleet = past_fleet(2);
        let ppt = fleet.points_per_tick() as u64;
        let cfg = RunConfig {
            endpoint,
            protocol: Protocol::Http,
            speed: f64::INFINITY,
            ticks: Some(5),
        };
        let stats = run(fleet, cfg, std::future::pending()).await.expect("run");
        assert_eq!(stats.ticks, 5);
        assert_eq!(stats.errors, 0);
        assert_eq!(stats.points, 5 * ppt);
        assert_eq!(
            stats.rejected_points, 10,
            "one per accepted metrics request"
        );
        assert!(stats.requests >= 10);
        assert_eq!(calls.load(Ordering::SeqCst), 11, "10 requests + 1 retry");
    }

    #[tokio::test]
    async fn unreachable_grpc_counts_errors_without_panicking() {
        let cfg = RunConfig {
            endpoint: "http://127.0.0.1:9".into(),
            protocol: Protocol::Grpc,
            speed: f64::INFINITY,
            ticks: Some(1),
        };
        let stats = run(past_fleet(1), cfg, std::future::pending())
            .await
            .expect("run");
        assert_eq!((stats.ticks, stats.requests), (1, 0));
        assert!(stats.errors >= 1);
    }

    #[tokio::test]
    async fn shutdown_stops_a_real_time_run() {
        let (endpoint, _) = flaky_endpoint().await;
        let fleet = Fleet::new(FleetConfig {
            start_time_ns: i64::MAX / 2,
            ..FleetConfig::default()
        });
        let cfg = RunConfig {
            endpoint,
            protocol: Protocol::Http,
            speed: 1.0,
            ticks: None,
        };
        let started = std::time::Instant::now();
        let stats = run(fleet, cfg, tokio::time::sleep(Duration::from_millis(200)))
            .await
            .expect("run");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            stats.ticks, 0,
            "event time far in the future is never sent early"
        );
    }

    #[test]
    fn run_future_can_be_spawned() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let cfg = RunConfig {
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: Protocol::Http,
            speed: 1.0,
            ticks: Some(0),
        };
        assert_send(&run(past_fleet(1), cfg, std::future::ready(())));
    }

    #[tokio::test]
    async fn rejects_bad_configs() {
        let cfg = |speed| RunConfig {
            endpoint: "http://x".into(),
            protocol: Protocol::Http,
            speed,
            ticks: Some(1),
        };
        assert!(run(past_fleet(1), cfg(0.0), std::future::pending())
            .await
            .is_err());
        assert!(run(past_fleet(1), cfg(f64::NAN), std::future::pending())
            .await
            .is_err());
        let bad = RunConfig {
            endpoint: "http://[::1".into(),
            ..cfg(1.0)
        };
        assert!(matches!(
            run(past_fleet(1), bad, std::future::pending()).await,
            Err(SimError::Endpoint { .. })
        ));
    }
}
