//! `sqlvigil-bench api`: latency and throughput of the API over a day of history in the
//! embedded store. 1,000 series (`--quick`: 200) — 50 instances (`--quick`: 10) × 20
//! series: CPU, batch requests, page life expectancy, six wait types' seconds per second
//! and eleven more gauges — over 24 h (`--quick`: 6 h) at one point a minute, written as
//! the sink writes them and compacted; 2,000 anomalies (`--quick`: 400) over the day
//! with an insight each. The pipeline is then started on that data directory as
//! `sqlvigil run` starts it, and its API served on loopback; an in-process load
//! generator of 64 concurrent clients (HTTP/1.1 keep-alive) asks, per endpoint, 3,000
//! times (`--quick`: 500): anomalies (a page of 100), insights (100), metrics (one
//! instance's CPU over the last hour) and root cause (a random anomaly). Printed per
//! endpoint: p50, p99 and requests per second; last, the worst p99.

use anyhow::{bail, Context, Result};
use sqlvigil_core::{Sink, Stats};
use sqlvigil_model::{Anomaly, AnomalyState, EvidencePoint, Insight, Sample, SeriesKey, Severity};
use sqlvigil_store::{Role, StateStore, Store, TokenSpec};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request path of the `i`-th request.
type PathFn = Arc<dyn Fn(usize) -> String + Send + Sync>;

const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;
const CLIENTS: usize = 64;

/// The 20 series of one instance.
fn series_of(instance: &str) -> Vec<SeriesKey> {
    let key = |m: &str| SeriesKey::new(instance, "h", "", m);
    let mut keys = vec![
        key("sqlserver.cpu.utilization"),
        key("sqlserver.batch.request.rate"),
        key("sqlserver.page.life_expectancy"),
    ];
    // The simulator's six wait types, with the category the receiver assigns.
    for (wait, category) in sqlvigil_simulator::WAITS {
        keys.push(
            key("sqlserver.os.wait.duration.per_second")
                .with_attr("wait.type", wait)
                .with_attr("wait.category", category),
        );
    }
    for n in 0..11 {
        keys.push(key("sqlserver.user.connection.count").with_attr("n", &n.to_string()));
    }
    keys
}

fn instance(i: usize) -> String {
    format!("sql-{i:03}")
}

/// `hours` of one point a minute for every series of `instances`, ending at `end`.
fn write_history(store: &Store, instances: usize, hours: i64, end: i64) -> Result<u64> {
    let keys: Vec<SeriesKey> = (0..instances)
        .flat_map(|i| series_of(&instance(i)))
        .collect();
    let mut rows = 0u64;
    let mut t = end - hours * HOUR_NS;
    while t < end {
        // A flush per 10 minutes of data, as a busy sink writes them.
        let mut batch = Vec::with_capacity(keys.len() * 10);
        for _ in 0..10 {
            for (n, k) in keys.iter().enumerate() {
                let v = 10.0 + ((t / MINUTE_NS) as usize * 7 + n * 13) as f64 % 80.0;
                batch.push(Sample::gauge(k.clone(), t, v, "%"));
            }
            t += MINUTE_NS;
        }
        rows += batch.len() as u64;
        store.write_samples(&batch)?;
        store.flush()?;
    }
    Ok(rows)
}

/// `n` anomalies spread over the `hours` before `end` (most resolved), an insight each.
fn write_anomalies(
    state: &StateStore,
    instances: usize,
    n: usize,
    hours: i64,
    end: i64,
) -> Result<Vec<String>> {
    let span = hours * HOUR_NS;
    let mut ids = Vec::with_capacity(n);
    let mut list = Vec::with_capacity(n);
    for k in 0..n {
        let inst = instance(k % instances);
        let series = SeriesKey::new(&inst, "h", "", "sqlserver.cpu.utilization");
        let opened = end - span + (k as i64 * span) / n as i64;
        let at = sqlvigil_model::ns_to_datetime(opened);
        let fingerprint = Anomaly::fingerprint_for("cpu_storm", &series);
        let id = format!("{fingerprint}-{opened}");
        let resolved = k + 10 < n;
        list.push(Anomaly {
            id: id.clone(),
            fingerprint,
            rule: "cpu_storm".into(),
            condition: "cpu_percent > 85 for 5m".into(),
            series_id: series.id_hex(),
            series,
            severity: Severity::Critical,
            state: if resolved {
                AnomalyState::Resolved
            } else {
                AnomalyState::Open
            },
            opened_at: at,
            updated_at: at,
            resolved_at: resolved.then(|| at + chrono::Duration::minutes(10)),
            observed: 97.0,
            expected: Some(85.0),
            score: 1.14,
            evidence: (0..10)
                .map(|i| EvidencePoint {
                    time: at - chrono::Duration::minutes(10 - i),
                    value: 80.0 + i as f64,
                })
                .collect(),
            folded: 0,
            folded_into: None,
            handling: None,
        });
        ids.push(id);
    }
    state.record_anomalies(&list, &[])?;
    for a in &list {
        state.insert_insight(&Insight {
            id: format!("ins-{}", a.id),
            generated_at: a.opened_at,
            model: "rules".into(),
            prompt_version: "bench".into(),
            anomaly_ids: vec![a.id.clone()],
            fingerprint: a.fingerprint.clone(),
            instance: a.series.instance.to_string(),
            summary: "CPU storm driven by one query.".into(),
            recommended_actions: vec!["Find the top CPU query".into()],
            supporting_metrics: serde_json::json!({"sqlserver.cpu.utilization": 97.0}),
            input_digest: a.id.clone(),
            inputs: serde_json::Value::Null,
            latency_ms: None,
            prompt_tokens: None,
            completion_tokens: None,
            trigger: "anomaly".into(),
            note: None,
        })?;
    }
    Ok(ids)
}

/// Latencies (ms) of `total` GETs of `path(i)` by [`CLIENTS`] clients, and the wall time.
async fn load(base: &str, token: &str, total: usize, path: PathFn) -> Result<(Vec<f64>, Duration)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, next, path) = (client.clone(), next.clone(), path.clone());
        let (base, token) = (base.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut ms = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(ms);
                }
                let url = format!("{base}{}", path(i));
                let t = Instant::now();
                let resp = client.get(&url).bearer_auth(&token).send().await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                if !status.is_success() {
                    bail!("{url}: {status} {}", String::from_utf8_lossy(&body));
                }
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, began.elapsed()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub async fn run(quick: bool) -> Result<()> {
    let (instances, hours, anomalies, requests) = if quick {
        (10, 6, 400, 500)
    } else {
        (50, 24, 2_000, 3_000)
    };
    let dir = tempfile::tempdir()?;
    let end = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let began = Instant::now();
    let (rows, ids, token) = {
        let store = Store::open(dir.path(), Arc::new(Stats::default()))?;
        let rows = write_history(&store, instances, hours, end)?;
        store.compact(Duration::ZERO, 1.0).await?;
        store.delete_replaced(Duration::ZERO)?;
        let state = StateStore::open(dir.path())?;
        let ids = write_anomalies(&state, instances, anomalies, hours, end)?;
        let token = state
            .create_token(&TokenSpec::new(Role::Viewer, "bench"))?
            .token;
        (rows, ids, token)
    };
    println!(
        "history: {} series × {hours} h at 1 min = {rows} points (compacted), {anomalies} anomalies with insights, in {:.1} s",
        instances * 20,
        began.elapsed().as_secs_f64()
    );

    let mut cfg = sqlvigil_runtime::Config::default();
    cfg.store.data_dir = dir.path().to_path_buf();
    cfg.receiver.grpc_addr = "127.0.0.1:0".into();
    cfg.receiver.http_addr = "127.0.0.1:0".into();
    let pipeline = sqlvigil_runtime::Pipeline::start(cfg).await?;
    let api = sqlvigil_api::ApiConfig {
        rate_per_second: 0,
        ..Default::default()
    };
    let app = sqlvigil_api::AppState {
        guard: sqlvigil_api::Guard::new(&api),
        ..pipeline.handles().app_state()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sqlvigil_api::serve(
        sqlvigil_api::ApiListener::plain(listener),
        app,
        async {
            let _ = stopped.await;
        },
    ));

    let from = sqlvigil_model::ns_to_datetime(end - HOUR_NS).to_rfc3339();
    let to = sqlvigil_model::ns_to_datetime(end).to_rfc3339();
    let range = format!("from={}&to={}", urlencode(&from), urlencode(&to));
    let ids = Arc::new(ids);
    let endpoints: Vec<(&str, PathFn)> = vec![
        (
            "anomalies",
            Arc::new(|_| "/api/v1/anomalies?limit=100".to_string()),
        ),
        (
            "insights",
            Arc::new(|_| "/api/v1/insights?limit=100".to_string()),
        ),
        (
            "metrics",
            Arc::new(move |i| {
                format!(
                    "/api/v1/metrics?metric=sqlserver.cpu.utilization&instance={}&{range}",
                    instance(i % instances)
                )
            }),
        ),
        ("root cause", {
            let ids = ids.clone();
            Arc::new(move |i| {
                let id = &ids[(i * 7919) % ids.len()];
                format!("/api/v1/anomalies/{id}/root-cause")
            })
        }),
    ];
    let mut worst: f64 = 0.0;
    for (name, path) in endpoints {
        // A short warm-up (connections, caches), then the measured run.
        load(&base, &token, CLIENTS, path.clone())
            .await
            .with_context(|| format!("{name} warm-up"))?;
        let (mut ms, wall) = load(&base, &token, requests, path).await?;
        ms.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&ms, 0.50), percentile(&ms, 0.99));
        worst = worst.max(p99);
        println!(
            "{name}: p50 {p50:.1} ms, p99 {p99:.1} ms, {:.0} requests/s ({requests} requests, {CLIENTS} clients)",
            requests as f64 / wall.as_secs_f64()
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    pipeline.shutdown().await?;
    println!("api_worst_p99: {worst:.1} ms");
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
