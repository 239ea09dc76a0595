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
use sqlvigil_model::catalogue::Mode;
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
fn metrics_match_the_catalogue_in_each_mode() {
    for (mode, other) in [
        (ReceiverModes::Direct, Mode::Windows),
        (ReceiverModes::Windows, Mode::Direct),
    ] {
        let seen = emitted(mode);
        for name in &seen {
            let def = catalogue::metric(name).expect("in the catalogue");
            assert_ne!(def.mode, other, "{name} is not sent in {mode:?} mode");
        }
        // What the simulator models of the receiver, in the modes that send it.
        for name in SIMULATED {
            let def = catalogue::metric(name).expect("in the catalogue");
            let sent = def.mode != other;
            assert_eq!(seen.contains(*name), sent, "{name} in {mode:?} mode");
        }
    }
}

/// The receiver metrics the simulator models.
const SIMULATED: &[&str] = &[
    "sqlserver.cpu.utilization",
    "sqlserver.user.connection.count",
    "sqlserver.processes.blocked",
    "sqlserver.lock.wait_time.avg",
    "sqlserver.lock.wait.rate",
    "sqlserver.batch.request.rate",
    "sqlserver.batch.sql_compilation.rate",
    "sqlserver.batch.sql_recompilation.rate",
    "sqlserver.deadlock.rate",
    "sqlserver.page.split.rate",
    "sqlserver.page.buffer_cache.hit_ratio",
    "sqlserver.page.life_expectancy",
    "sqlserver.database.tempdb.space",
    "sqlserver.transaction.rate",
    "sqlserver.transaction_log.usage",
    "sqlserver.transaction_log.growth.count",
    "sqlserver.database.io",
    "sqlserver.database.latency",
    "sqlserver.database.operations",
    "sqlserver.os.wait.duration",
];

#[test]
fn windows_rates_are_per_second_and_direct_ones_running_totals() {
    let rate_at = |mode: ReceiverModes, tick: u64| {
        let mut f = Fleet::new(FleetConfig {
            instances: 1,
            receiver_mode: mode,
            ..FleetConfig::default()
        });
        points(&f.metrics(tick)[0])
            .into_iter()
            .find(|(k, _)| k.contains("|sqlserver.batch.request.rate|"))
            .map(|(_, v)| v)
            .expect("batch requests")
    };
    let (w1, w2) = (
        rate_at(ReceiverModes::Windows, 5),
        rate_at(ReceiverModes::Windows, 6),
    );
    let (d1, d2) = (
        rate_at(ReceiverModes::Direct, 5),
        rate_at(ReceiverModes::Direct, 6),
    );
    assert!(w1 > 10.0 && w1 < 5_000.0, "a rate: {w1}");
    assert!(d1 > 1e5 && d2 > d1, "a running total: {d1} → {d2}");
    assert!(
        ((d2 - d1) / 10.0 - w2).abs() / w2 < 0.01,
        "same load: {w2} vs {d1}→{d2}"
    );
    assert!(w1 != w2);
}

#[test]
fn direct_mode_sends_the_query_events() {
    let mut f = fleet(4, 2, &["blocking_chain@0s+1h:1"]);
    let (mut samples, mut tops) = (0, 0);
    for tick in 0..13 {
        for req in f.logs(tick) {
            for rec in req
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
            {
                match rec.event_name.as_str() {
                    catalogue::QUERY_SAMPLE_EVENT => samples += 1,
                    catalogue::TOP_QUERY_EVENT => tops += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(samples > 13, "the chain's sessions each scrape: {samples}");
    assert_eq!(tops, 2 * 2 * 3, "3 queries, 2 instances, ticks 6 and 12");
}

fn emitted(mode: ReceiverModes) -> BTreeSet<String> {
    let mut f = Fleet::new(FleetConfig {
        seed: 3,
        instances: 2,
        receiver_mode: mode,
        ..FleetConfig::default()
    });
    let mut seen = BTreeSet::new();
    for req in f.metrics(0) {
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().expect("scope");
                assert_eq!(scope.name, SCOPE_NAME);
                for m in &sm.metrics {
                    let def = catalogue::metric(&m.name)
                        .unwrap_or_else(|| panic!("{} not in catalogue", m.name));
                    assert_eq!(&*m.unit, def.unit, "{}", m.name);
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
    seen
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
    // Direct mode: 54 points an instance (the Windows-only metrics are not sent).
    assert_eq!(n, 4 * 54);
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
        // The receiver sends host CPU as a fraction.
        let cpu = 100.0 * value(req, "sqlserver.cpu.utilization", None);
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
        // The receiver sends host CPU as a fraction.
        let cpu = 100.0 * value(req, "sqlserver.cpu.utilization", None);
        let blocked = value(req, "sqlserver.processes.blocked", None);
        // Only Windows perf counters send the lock wait average.
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
                assert!(lock_avg.is_nan(), "direct mode: no lock wait avg");
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
        .filter(|m| catalogue::has_rate(m))
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

/// The rule set the scenarios are built against: over a simulated week (10 s scrapes,
/// three instances) the quiet baseline never crosses a threshold, and each scenario
/// shows its signature inside its window and nowhere else.
mod rule_set {
    use super::*;
    use crate::instance::{IO_RAMP_S, LOG_FILL_S, PLE_TAU_S, TEMPDB_FILL_S, WAITS};
    use std::sync::OnceLock;

    const WEEK_TICKS: u64 = 7 * DAY_TICKS;
    const INSTANCES: usize = 3;
    const SEED: u64 = 42;
    const DT_S: f64 = 10.0;

    // Quiet-time bounds: what a sensible rule set alerts on.
    const CPU_MAX: f64 = 80.0;
    const BLOCKED_MAX: f64 = 1.0;
    const DEADLOCKS_PER_S_MAX: f64 = 0.05;
    const PLE_MIN: f64 = 300.0;
    const LOG_USAGE_MAX: f64 = 80.0;
    const TEMPDB_FREE_MIN: f64 = 0.25;
    const IO_MS_MAX: f64 = 20.0;
    const BATCH_MIN_OF_TYPICAL: f64 = 0.4;
    const WAIT_MAX_OF_TYPICAL: f64 = 3.0;

    /// What one scrape of one instance holds for the rule set (counters as totals).
    #[derive(Debug, Clone, Default)]
    struct Raw {
        cpu: f64,
        blocked: f64,
        conns: f64,
        batches: f64,
        deadlocks: f64,
        ple: f64,
        hit: f64,
        tempdb_free: f64,
        tempdb_used: f64,
        log_usage: f64,
        log_growths: f64,
        waits: [f64; 6],
        /// Per file and direction, in emission order.
        stall: Vec<f64>,
        ops: Vec<f64>,
    }

    fn raw(req: &ExportMetricsServiceRequest) -> Raw {
        let mut r = Raw::default();
        for rm in &req.resource_metrics {
            let db = rm
                .resource
                .as_ref()
                .and_then(|res| {
                    res.attributes
                        .iter()
                        .find(|kv| kv.key == "sqlserver.database.name")
                })
                .map(attr_str);
            let app = db
                .as_deref()
                .is_some_and(|d| d != "master" && d != "tempdb");
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                let dps = match &m.data {
                    Some(Data::Gauge(g)) => &g.data_points,
                    Some(Data::Sum(s)) => &s.data_points,
                    _ => continue,
                };
                let first = || num(&dps[0]);
                let attr = |p: &NumberDataPoint, key: &str| {
                    p.attributes
                        .iter()
                        .find(|kv| kv.key == key)
                        .map(attr_str)
                        .unwrap_or_default()
                };
                match m.name.as_str() {
                    // A fraction on the wire; the rules read 0–100.
                    "sqlserver.cpu.utilization" => r.cpu = 100.0 * first(),
                    "sqlserver.processes.blocked" => r.blocked = first(),
                    "sqlserver.user.connection.count" => r.conns = first(),
                    "sqlserver.batch.request.rate" => r.batches = first(),
                    "sqlserver.deadlock.rate" => r.deadlocks = first(),
                    "sqlserver.page.life_expectancy" => r.ple = first(),
                    "sqlserver.page.buffer_cache.hit_ratio" => r.hit = first(),
                    "sqlserver.database.tempdb.space" => {
                        for p in dps {
                            match attr(p, "tempdb.state").as_str() {
                                "free" => r.tempdb_free = num(p),
                                _ => r.tempdb_used = num(p),
                            }
                        }
                    }
                    "sqlserver.transaction_log.usage" if app => r.log_usage = first(),
                    "sqlserver.transaction_log.growth.count" if app => r.log_growths = first(),
                    "sqlserver.os.wait.duration" => {
                        for p in dps {
                            let ty = attr(p, "wait.type");
                            let i = WAITS.iter().position(|(w, _)| *w == ty).expect("wait");
                            r.waits[i] = num(p);
                        }
                    }
                    "sqlserver.database.latency" => r.stall.extend(dps.iter().map(num)),
                    "sqlserver.database.operations" => r.ops.extend(dps.iter().map(num)),
                    _ => {}
                }
            }
        }
        r
    }

    /// One scrape of one instance as the rule set sees it: gauges, and counters turned
    /// into per-second rates over the scrape interval (as the pipeline does).
    #[derive(Debug, Clone, Copy, Default)]
    struct Obs {
        t_ns: i64,
        cpu: f64,
        blocked: f64,
        conns: f64,
        batch_rate: f64,
        deadlock_rate: f64,
        ple: f64,
        hit: f64,
        tempdb_free_frac: f64,
        log_usage: f64,
        log_growths: f64,
        wait_rates: [f64; 6],
        /// Stall per operation over all files, ms (NaN without operations).
        io_ms: f64,
        /// Worst stall per operation of any file and direction with an operation, ms.
        io_file_max_ms: f64,
    }

    fn obs(prev: &Raw, cur: &Raw, t_ns: i64) -> Obs {
        let rate = |a: f64, b: f64| (b - a) / DT_S;
        let (mut stall, mut ops, mut worst) = (0.0, 0.0, 0f64);
        for k in 0..cur.ops.len() {
            let (ds, dn) = (cur.stall[k] - prev.stall[k], cur.ops[k] - prev.ops[k]);
            stall += ds;
            ops += dn;
            if dn >= 1.0 {
                worst = worst.max(1000.0 * ds / dn);
            }
        }
        Obs {
            t_ns,
            cpu: cur.cpu,
            blocked: cur.blocked,
            conns: cur.conns,
            batch_rate: rate(prev.batches, cur.batches),
            deadlock_rate: rate(prev.deadlocks, cur.deadlocks),
            ple: cur.ple,
            hit: cur.hit,
            tempdb_free_frac: cur.tempdb_free / (cur.tempdb_free + cur.tempdb_used),
            log_usage: cur.log_usage,
            log_growths: cur.log_growths,
            wait_rates: std::array::from_fn(|i| rate(prev.waits[i], cur.waits[i])),
            io_ms: if ops > 0.0 {
                1000.0 * stall / ops
            } else {
                f64::NAN
            },
            io_file_max_ms: worst,
        }
    }

    struct Run {
        /// `[instance][tick - 1]`.
        obs: Vec<Vec<Obs>>,
        labels: Vec<IncidentLabel>,
        names: Vec<String>,
    }

    /// The direct-mode fleet's requests with the Windows-only metrics of the same
    /// fleet read through Windows perf counters added (the state is the same whatever
    /// the mode), so every scenario's signal is observed.
    fn both_modes(
        direct: &mut Fleet,
        windows: &mut Fleet,
        tick: u64,
    ) -> Vec<ExportMetricsServiceRequest> {
        let mut out = direct.metrics(tick);
        for (req, win) in out.iter_mut().zip(windows.metrics(tick)) {
            for (rm, wrm) in req.resource_metrics.iter_mut().zip(win.resource_metrics) {
                let only_windows = wrm
                    .scope_metrics
                    .into_iter()
                    .flat_map(|s| s.metrics)
                    .filter(|m| {
                        catalogue::metric(&m.name).is_some_and(|d| d.mode == Mode::Windows)
                    });
                rm.scope_metrics[0].metrics.extend(only_windows);
            }
        }
        out
    }

    fn simulate(incidents: &[&str]) -> Run {
        let mut f = fleet(SEED, INSTANCES, incidents);
        let mut w = Fleet::new(FleetConfig {
            receiver_mode: ReceiverModes::Windows,
            ..f.config().clone()
        });
        assert_eq!(f.config().interval, Duration::from_secs(DT_S as u64));
        let mut prev: Vec<Raw> = both_modes(&mut f, &mut w, 0).iter().map(raw).collect();
        let mut out: Vec<Vec<Obs>> = (0..INSTANCES)
            .map(|_| Vec::with_capacity(WEEK_TICKS as usize))
            .collect();
        for tick in 1..WEEK_TICKS {
            let t = f.event_time_ns(tick);
            for (i, req) in both_modes(&mut f, &mut w, tick).iter().enumerate() {
                let cur = raw(req);
                out[i].push(obs(&prev[i], &cur, t));
                prev[i] = cur;
            }
        }
        Run {
            obs: out,
            labels: f.labels(),
            names: f.instance_names(),
        }
    }

    fn hour_of_day(t_ns: i64) -> usize {
        (t_ns.rem_euclid(86_400 * 1_000_000_000) / 3_600_000_000_000) as usize
    }

    /// The quiet week, and each instance's typical batch and wait rates per hour of day.
    struct Quiet {
        run: Run,
        /// `[instance][hour]`.
        typical_batch: Vec<[f64; 24]>,
        typical_waits: Vec<[[f64; 6]; 24]>,
    }

    fn quiet() -> &'static Quiet {
        static QUIET: OnceLock<Quiet> = OnceLock::new();
        QUIET.get_or_init(|| {
            let run = simulate(&[]);
            let mut typical_batch = vec![[0.0; 24]; INSTANCES];
            let mut typical_waits = vec![[[0.0; 6]; 24]; INSTANCES];
            for (i, series) in run.obs.iter().enumerate() {
                let mut n = [0.0; 24];
                for o in series {
                    let h = hour_of_day(o.t_ns);
                    n[h] += 1.0;
                    typical_batch[i][h] += o.batch_rate;
                    for (sum, rate) in typical_waits[i][h].iter_mut().zip(o.wait_rates) {
                        *sum += rate;
                    }
                }
                for h in 0..24 {
                    typical_batch[i][h] /= n[h];
                    typical_waits[i][h] = typical_waits[i][h].map(|v| v / n[h]);
                }
            }
            Quiet {
                run,
                typical_batch,
                typical_waits,
            }
        })
    }

    /// Every quiet-time rule an observation breaks (empty when it is clear of them all).
    fn broken_rules(q: &Quiet, i: usize, o: &Obs) -> Vec<String> {
        let h = hour_of_day(o.t_ns);
        let mut broken = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                broken.push(what);
            }
        };
        check(o.cpu < CPU_MAX, format!("cpu {}", o.cpu));
        check(o.blocked <= BLOCKED_MAX, format!("blocked {}", o.blocked));
        check(
            o.deadlock_rate < DEADLOCKS_PER_S_MAX,
            format!("deadlocks/s {}", o.deadlock_rate),
        );
        check(o.ple > PLE_MIN, format!("ple {}", o.ple));
        check(o.log_usage < LOG_USAGE_MAX, format!("log {}%", o.log_usage));
        check(
            o.tempdb_free_frac > TEMPDB_FREE_MIN,
            format!("tempdb free {}", o.tempdb_free_frac),
        );
        check(
            (o.io_ms.is_nan() || o.io_ms < IO_MS_MAX) && o.io_file_max_ms < IO_MS_MAX,
            format!("io {} ms (worst file {} ms)", o.io_ms, o.io_file_max_ms),
        );
        let batch = o.batch_rate / q.typical_batch[i][h];
        check(
            batch >= BATCH_MIN_OF_TYPICAL,
            format!("batch {batch:.2}× typical"),
        );
        for (w, (name, _)) in WAITS.iter().enumerate() {
            let ratio = o.wait_rates[w] / q.typical_waits[i][h][w];
            check(
                ratio <= WAIT_MAX_OF_TYPICAL,
                format!("{name} {ratio:.2}× typical"),
            );
        }
        broken
    }

    #[test]
    fn quiet_week_stays_clear_of_every_rule() {
        let q = quiet();
        let mut extremes = BTreeMap::<&str, f64>::new();
        let mut top = |k: &'static str, v: f64| {
            let e = extremes.entry(k).or_insert(v);
            *e = e.max(v);
        };
        for (i, series) in q.run.obs.iter().enumerate() {
            for o in series {
                let broken = broken_rules(q, i, o);
                assert!(broken.is_empty(), "instance {i} at {}: {broken:?}", o.t_ns);
                let h = hour_of_day(o.t_ns);
                top("cpu max", o.cpu);
                top("blocked max", o.blocked);
                top("deadlocks/s max", o.deadlock_rate);
                top("-ple min", -o.ple);
                top("log % max", o.log_usage);
                top("-tempdb free min", -o.tempdb_free_frac);
                top("io ms max (all files)", o.io_ms);
                top("io ms max (worst file)", o.io_file_max_ms);
                top("-batch/typical min", -o.batch_rate / q.typical_batch[i][h]);
                for (rate, typical) in o.wait_rates.iter().zip(q.typical_waits[i][h]) {
                    top("wait/typical max", rate / typical);
                }
            }
        }
        eprintln!("quiet week extremes (negated = minimum): {extremes:#?}");
    }

    #[test]
    fn weekly_and_daily_patterns_are_visible() {
        let q = quiet();
        for (i, series) in q.run.obs.iter().enumerate() {
            // Monday (day 0) against Saturday (day 5), same hours 08:00–20:00.
            let mean = |day: i64, f: &dyn Fn(&Obs) -> f64| {
                let day_ns = 86_400 * 1_000_000_000_i64;
                let xs: Vec<f64> = series
                    .iter()
                    .filter(|o| {
                        let d = (o.t_ns - DEFAULT_START_TIME_NS).div_euclid(day_ns);
                        d == day && (8..20).contains(&hour_of_day(o.t_ns))
                    })
                    .map(f)
                    .collect();
                xs.iter().sum::<f64>() / xs.len() as f64
            };
            for (what, f) in [
                ("batch", &(|o: &Obs| o.batch_rate) as &dyn Fn(&Obs) -> f64),
                ("connections", &|o: &Obs| o.conns),
                ("cpu", &|o: &Obs| o.cpu),
            ] {
                let ratio = mean(5, f) / mean(0, f);
                assert!(
                    (0.5..0.72).contains(&ratio),
                    "instance {i}: weekend {what} at {ratio:.2} of a weekday"
                );
            }
            let hours = &q.typical_batch[i];
            let (lo, hi) = hours
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            assert!(hi > 2.0 * lo, "instance {i}: daily batch curve {lo}..{hi}");
        }
    }

    /// Incidents spread over the week and the three instances, weekdays and weekend,
    /// long and short windows (short ones ramp over a third of the window).
    const WEEK_INCIDENTS: [&str; 15] = [
        "deadlock_burst@26h+20m:0",
        "ple_collapse@34h+30m:1",
        "wait_time_spike@53h+20m:1",
        "log_full@62h+45m:2",
        "tempdb_pressure@81h+30m:0",
        "io_stall@92h+20m:1",
        "batch_drop@107h+30m:2",
        "wait_time_spike@131h+25m:0",
        "batch_drop@140h+20m:1",
        "deadlock_burst@150h+15m:2",
        "cpu_storm@155h+15m:1",
        "log_full@158h+12m:0",
        "blocking_chain@160h+10m:2",
        "tempdb_pressure@164h+6m:1",
        "wait_time_spike@100h+10m:2",
    ];

    #[test]
    fn every_scenario_shows_its_signature_in_its_window_only() {
        // Simulate before waiting on the shared quiet week, so both run in parallel.
        let run = simulate(&WEEK_INCIDENTS);
        let q = quiet();
        assert_eq!(run.labels.len(), WEEK_INCIDENTS.len());
        let covered: BTreeSet<&str> = run.labels.iter().map(|l| l.name.as_str()).collect();
        let all: BTreeSet<&str> = Scenario::ALL[1..].iter().map(|s| s.name()).collect();
        assert_eq!(covered, all, "the week exercises every scenario");
        let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
        // Range of each scenario's main signal once settled, for the record.
        let mut seen: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        let mut record = |k: &'static str, v: f64| {
            let e = seen.entry(k).or_insert((v, v));
            *e = (e.0.min(v), e.1.max(v));
        };
        for (i, series) in run.obs.iter().enumerate() {
            let quiet_series = &q.run.obs[i];
            for (k, o) in series.iter().enumerate() {
                let normal = &quiet_series[k];
                assert_eq!(normal.t_ns, o.t_ns);
                let Some(l) = run
                    .labels
                    .iter()
                    .find(|l| l.instance == run.names[i] && l.contains(o.t_ns))
                else {
                    let broken = broken_rules(q, i, o);
                    assert!(
                        broken.is_empty(),
                        "instance {i} at {} outside any incident: {broken:?}",
                        o.t_ns
                    );
                    continue;
                };
                let elapsed = (o.t_ns - l.start_ns) as f64 / 1e9;
                let third = (l.end_ns - l.start_ns) as f64 / 1e9 / 3.0;
                let settled = |ramp_s: f64| elapsed >= ramp_s.min(third);
                let broken = broken_rules(q, i, o);
                // Signatures of other scenarios that this one must not show.
                let others = |allowed: &[&str]| {
                    let stray: Vec<&String> = broken
                        .iter()
                        .filter(|b| !allowed.iter().any(|a| b.starts_with(a)))
                        .collect();
                    assert!(stray.is_empty(), "{} at +{elapsed}s: {stray:?}", l.name);
                };
                let at = format!("{} on {} at +{elapsed}s", l.name, l.instance);
                match l.scenario {
                    Scenario::DeadlockBurst => {
                        assert!(
                            (0.5..=3.0).contains(&o.deadlock_rate),
                            "{at}: {} deadlocks/s",
                            o.deadlock_rate
                        );
                        record("deadlock_burst deadlocks/s", o.deadlock_rate);
                        others(&["deadlocks/s"]);
                    }
                    Scenario::PleCollapse => {
                        if settled(6.0 * PLE_TAU_S) {
                            assert!(o.ple < 100.0, "{at}: ple {}", o.ple);
                            assert!(o.hit < 95.0, "{at}: hit ratio {}", o.hit);
                            record("ple_collapse ple s", o.ple);
                            record("ple_collapse hit %", o.hit);
                        }
                        if o.ple < 100.0 {
                            record("ple_collapse first s under 100", elapsed);
                        }
                        others(&["ple", "PAGEIOLATCH_SH"]);
                    }
                    Scenario::LogFull => {
                        if settled(LOG_FILL_S) {
                            assert!(o.log_usage >= 95.0, "{at}: log {}%", o.log_usage);
                            record("log_full log %", o.log_usage);
                        }
                        if o.log_usage >= 80.0 {
                            record("log_full first s at 80 %", elapsed);
                        }
                        if elapsed == 0.0 {
                            assert!(o.log_usage <= 60.0, "{at}: starts at {}%", o.log_usage);
                        }
                        others(&["log"]);
                    }
                    Scenario::TempdbPressure => {
                        if settled(TEMPDB_FILL_S) {
                            assert!(
                                o.tempdb_free_frac < 0.05,
                                "{at}: tempdb free {}",
                                o.tempdb_free_frac
                            );
                            record("tempdb_pressure free share", o.tempdb_free_frac);
                        }
                        if o.tempdb_free_frac <= 0.25 {
                            record("tempdb_pressure first s under 25 % free", elapsed);
                        }
                        others(&["tempdb"]);
                    }
                    Scenario::IoStall => {
                        if settled(IO_RAMP_S) {
                            assert!(
                                (80.0..=300.0).contains(&o.io_ms),
                                "{at}: {} ms per operation",
                                o.io_ms
                            );
                            let h = hour_of_day(o.t_ns);
                            for w in [1, 4] {
                                let ratio = o.wait_rates[w] / q.typical_waits[i][h][w];
                                assert!(ratio > 3.0, "{at}: {} only {ratio}×", WAITS[w].0);
                                record("io_stall wait / typical", ratio);
                            }
                            record("io_stall ms per operation", o.io_ms);
                        }
                        others(&["io", "PAGEIOLATCH_SH", "WRITELOG"]);
                    }
                    Scenario::BatchDrop => {
                        let share = o.batch_rate / normal.batch_rate;
                        assert!(share < 0.15, "{at}: batches at {share:.3} of normal");
                        let conns = o.conns / normal.conns;
                        assert!(conns < 0.3, "{at}: connections at {conns:.2} of normal");
                        record("batch_drop batches / normal", share);
                        record("batch_drop connections / normal", conns);
                        others(&["batch"]);
                    }
                    Scenario::WaitTimeSpike => {
                        let ratios: Vec<f64> = (0..6)
                            .map(|w| o.wait_rates[w] / normal.wait_rates[w])
                            .collect();
                        let spiked = ratios.iter().filter(|r| **r >= 5.0).count();
                        let max = ratios.iter().copied().fold(0.0, f64::max);
                        assert!(
                            spiked == 1 && max <= 11.0,
                            "{at}: wait ratios to normal {ratios:?}"
                        );
                        record("wait_time_spike wait / normal", max);
                        let spiked_type = WAITS[ratios.iter().position(|r| *r >= 5.0).unwrap()].0;
                        record(spiked_type, 1.0);
                        others(&[spiked_type]);
                    }
                    Scenario::CpuStorm => assert!(o.cpu >= 90.0, "{at}: cpu {}", o.cpu),
                    Scenario::BlockingChain => {
                        assert!(o.blocked >= 5.0, "{at}: blocked {}", o.blocked)
                    }
                    Scenario::Quiet => unreachable!("quiet windows are not labelled"),
                }
                *checked.entry(l.scenario.name()).or_default() += 1;
            }
        }
        eprintln!("settled signatures (min, max): {seen:#?}");
        // Every tick of every window was checked (10 s scrapes).
        for l in &run.labels {
            assert!(checked[l.name.as_str()] > 0, "{}", l.name);
        }
        let expected: usize = run
            .labels
            .iter()
            .map(|l| ((l.end_ns - l.start_ns) / 10_000_000_000) as usize)
            .sum();
        assert_eq!(checked.values().sum::<usize>(), expected);
        // Full logs grow the log file.
        for l in run
            .labels
            .iter()
            .filter(|l| l.scenario == Scenario::LogFull)
        {
            let i = run
                .names
                .iter()
                .position(|n| *n == l.instance)
                .expect("name");
            let at = |t: i64| {
                run.obs[i]
                    .iter()
                    .find(|o| o.t_ns >= t)
                    .expect("tick")
                    .log_growths
            };
            assert!(at(l.end_ns - 10_000_000_000) >= at(l.start_ns) + 2.0);
        }
    }

    #[test]
    fn labels_cover_every_scenario() {
        let specs: Vec<String> = Scenario::ALL
            .iter()
            .enumerate()
            .map(|(k, s)| format!("{s}@{k}h+10m:{}", k % 2))
            .collect();
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        let f = fleet(1, 2, &specs);
        let labels = f.labels();
        let names: BTreeSet<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        let want: BTreeSet<&str> = Scenario::ALL[1..].iter().map(|s| s.name()).collect();
        assert_eq!(names, want);
        for l in &labels {
            assert_eq!(l.name, l.scenario.name());
            assert_eq!(l.end_ns - l.start_ns, 600_000_000_000);
            assert!(!scenario_metric(l.scenario).is_empty());
        }
    }

    #[test]
    fn every_scenario_is_deterministic() {
        // All scenarios at once, overlapping on the same instances.
        let specs: Vec<String> = Scenario::ALL[1..]
            .iter()
            .enumerate()
            .map(|(k, s)| format!("{s}@{}m+20m:{}", 2 * k, k % 2))
            .collect();
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        let (mut a, mut b) = (fleet(5, 2, &specs), fleet(5, 2, &specs));
        for tick in 0..200 {
            let enc = |f: &mut Fleet| -> Vec<Vec<u8>> {
                let mut out: Vec<Vec<u8>> =
                    f.metrics(tick).iter().map(|r| r.encode_to_vec()).collect();
                out.extend(f.logs(tick).iter().map(|r| r.encode_to_vec()));
                out
            };
            assert_eq!(enc(&mut a), enc(&mut b), "tick {tick}");
        }
        // Replaying from the start gives the same bytes.
        let late = a.metrics(150);
        assert_eq!(b.metrics(150), late);
        let mut c = fleet(5, 2, &specs);
        assert_eq!(c.metrics(150), late);
    }

    #[test]
    fn new_scenarios_write_their_error_log_lines() {
        let specs = [
            "deadlock_burst@0s+1h:0",
            "log_full@0s+1h:1",
            "tempdb_pressure@0s+1h:2",
            "io_stall@0s+1h:3",
        ];
        let mut f = fleet(3, 5, &specs);
        let mut errors: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); 5];
        for tick in 0..360 {
            for req in f.logs(tick) {
                for rl in &req.resource_logs {
                    let res = attrs(&rl.resource.as_ref().expect("resource").attributes);
                    let idx = f
                        .instance_names()
                        .iter()
                        .position(|n| *n == res["sqlserver.instance.name"])
                        .expect("instance");
                    // Error-log lines (the receiver's query events have no error number).
                    let lines = rl
                        .scope_logs
                        .iter()
                        .filter(|s| s.scope.as_ref().is_some_and(|sc| sc.name == LOG_SCOPE_NAME));
                    for rec in lines.flat_map(|s| &s.log_records) {
                        let n = rec
                            .attributes
                            .iter()
                            .find(|kv| kv.key == "sqlserver.error.number")
                            .map(attr_str)
                            .expect("error number");
                        errors[idx].insert(n.parse().expect("int"));
                    }
                }
            }
        }
        for (idx, code) in [(0, 1205), (1, 9002), (2, 1105), (3, 833)] {
            assert!(
                errors[idx].contains(&code),
                "instance {idx}: {:?}",
                errors[idx]
            );
        }
        for code in [1205, 9002, 1105, 833] {
            assert!(!errors[4].contains(&code), "quiet instance logged {code}");
        }
    }
}
