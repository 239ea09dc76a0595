//! `sqlvigil-bench operators [--quick]`: the operator stage (the one chain of the
//! default config: rate, windows (none configured) and the default rules,
//! including EWMA baselines) at 1k, 100k and 1M active series — points/s and resident
//! memory per series — and the latency from a point's arrival at the receiver to its
//! anomaly event on the bus, through the whole in-process pipeline at 100k points/s.

use anyhow::Result;
use sqlvigil_core::{run_chain, MicroBatch, Stats};
use sqlvigil_model::{AnomalyEvent, MetricKind, Sample, SeriesKey};
use sqlvigil_operators::chain::ChainBuilder;
use sqlvigil_operators::rules::parse_rules;
use sqlvigil_runtime::{Config, Pipeline};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 16_384;
const STEP_NS: i64 = 10_000_000_000;

/// Resident set size of this process in bytes (Linux).
fn rss_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * page)
        .unwrap_or(0)
}

/// Series `i`: even ones a CPU gauge, odd ones a wait-time counter (rate + deviation rule).
fn sample(i: usize, round: i64, t0: i64) -> Sample {
    let instance = format!("sql-{:04}", i / 64);
    let t = t0 + round * STEP_NS;
    if i.is_multiple_of(2) {
        let key = SeriesKey::new(&instance, "h", "", "sqlserver.cpu.utilization")
            .with_attr("cpu", &(i % 64).to_string());
        Sample::gauge(key, t, 30.0 + (i % 7) as f64, "%")
    } else {
        let key = SeriesKey::new(&instance, "h", "master", "sqlserver.os.wait.duration")
            .with_attr("wait.type", &format!("W{}", i % 64));
        Sample {
            kind: MetricKind::CumulativeSum,
            monotonic: true,
            ..Sample::gauge(key, t, (round as f64 + 1.0) * (1.0 + (i % 5) as f64), "s")
        }
    }
}

/// Points/s through the operator chain and RSS growth per series for `series` series.
fn throughput(series: usize, rounds: i64) -> Result<(f64, f64)> {
    let chain = ChainBuilder::new(Config::default().chain()?, Arc::new(Stats::default()))?;
    let before = rss_bytes();
    let mut ops = chain.build()?;
    let t0 = 1_700_000_000_000_000_000;
    let mut busy = Duration::ZERO;
    for round in 0..rounds {
        for from in (0..series).step_by(BATCH) {
            // Built before the clock starts and dropped after it stops: only the
            // operators are timed, and only one micro-batch of input is alive at a time,
            // so the RSS growth is the operators' state.
            let samples: Vec<Sample> = (from..(from + BATCH).min(series))
                .map(|i| sample(i, round, t0))
                .collect();
            let mut mb = MicroBatch {
                samples,
                events: Vec::new(),
            };
            let start = Instant::now();
            run_chain(&mut ops, &mut mb)?;
            busy += start.elapsed();
            drop(mb);
        }
    }
    let per_series = rss_bytes().saturating_sub(before) as f64 / series as f64;
    drop(ops);
    Ok((
        (series as f64 * rounds as f64) / busy.as_secs_f64().max(1e-9),
        per_series,
    ))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// Arrival → anomaly event latency at `rate` points/s for `secs` seconds: background
/// points plus CPU breaches on fresh series (a `for: 0` rule) whose event time is their
/// send time, read back from the anomalies topic.
async fn latency(rate: u64, secs: u64) -> Result<Vec<f64>> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.store.data_dir = dir.path().to_path_buf();
    cfg.receiver.grpc_addr = "127.0.0.1:0".into();
    cfg.receiver.http_addr = "127.0.0.1:0".into();
    cfg.bus.capacity = 1_000_000;
    cfg.rules = parse_rules("- name: cpu_hot\n  when: \"cpu_percent > 85\"\n")
        .map_err(anyhow::Error::msg)?;
    let anomalies = cfg.bus.topics.anomalies.clone();
    let p = Pipeline::start(cfg).await?;
    let handles = p.handles().clone();
    let mut sub = handles.bus.subscribe(&anomalies, "bench").await?;
    let ingest = handles.ingest.clone();
    const PER_REQUEST: usize = 1000;
    let requests_per_sec = (rate as usize / PER_REQUEST).max(1);
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        let due = (start.elapsed().as_secs_f64() * requests_per_sec as f64) as usize;
        while sent < due {
            let t = now_ns();
            let mut req: ExportMetricsServiceRequest = crate::workload::gauge_request(
                &format!("bench-{}", sent % 50),
                sent,
                PER_REQUEST,
                t,
            );
            // Every 10th request carries one breach on a series of its own.
            if sent.is_multiple_of(10) {
                crate::workload::add_breach(&mut req, sent, t);
            }
            ingest.metrics(req).await?;
            sent += 1;
        }
        let batch = sub.next_batch(256, Duration::from_millis(1)).await?;
        for d in &batch {
            if let Ok(ev) = serde_json::from_slice::<AnomalyEvent>(&d.record.payload) {
                let opened = ev.anomaly.opened_at.timestamp_nanos_opt().unwrap_or(0);
                latencies.push((now_ns() - opened) as f64 / 1e6);
            }
        }
        sub.ack(&batch).await?;
    }
    p.shutdown().await?;
    Ok(latencies)
}

fn p99(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

pub async fn run(quick: bool) -> Result<()> {
    let sizes: &[usize] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let mut last = 0.0;
    for &n in sizes {
        let rounds = if n >= 1_000_000 { 4 } else { 6 };
        let (pps, per_series) =
            tokio::task::spawn_blocking(move || throughput(n, rounds)).await??;
        println!("{n} series: {pps:.0} points/s through the operator chain, {per_series:.0} bytes RSS per series");
        last = pps;
    }
    let secs = if quick { 5 } else { 15 };
    let lat = latency(100_000, secs).await?;
    println!(
        "arrival → anomaly event at 100k points/s: {} events, p99 {:.0} ms",
        lat.len(),
        p99(lat.clone())
    );
    println!("operators_points_per_second: {last:.0} points/s");
    Ok(())
}
