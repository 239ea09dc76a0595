//! `sqlvigil-bench ingest`: simulator-generated OTLP requests (encoded once up front)
//! pushed through receiver → bus → rate + threshold operators → store sink, (a)
//! in-process through the receiver core and (b) over loopback gRPC, each timed from the
//! first request until the operators have processed every point (the store sink has
//! buffered them and flushes to Parquet every 2 s on the way); compared with a bare
//! `prost` decode of the same bytes in the same run. The shutdown drain and final flush
//! are reported apart.
//!
//! The in-process run is repeated with 8 producers (a Collector's exporter sends from
//! a queue with 10 consumers by default) under each `bus.durability` — `none`,
//! `os_cache`, `fsync` — in the same run: the write-ahead log's cost is their ratio.

use crate::workload::{rate, workload};
use anyhow::Result;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sqlvigil_bus::Durability;
use sqlvigil_core::Stats;
use sqlvigil_runtime::{Config, Pipeline};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Decode every body `rounds` times; the cost floor of any OTLP receiver.
fn prost_baseline(bodies: &[Vec<u8>], points: u64) -> Result<f64> {
    let start = Instant::now();
    let mut rounds = 0u64;
    while rounds < 3 || start.elapsed() < Duration::from_secs(1) {
        for b in bodies {
            std::hint::black_box(ExportMetricsServiceRequest::decode(b.as_slice())?);
        }
        rounds += 1;
    }
    Ok(rate(points * rounds, start.elapsed()))
}

/// How the bus keeps what it acknowledged: the durability and, for `fsync`, the
/// group commit's interval.
#[derive(Clone, Copy)]
struct Keep(Durability, Duration);

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Durability::Fsync => write!(f, "fsync (commit_interval {:?})", self.1),
            Durability::OsCache => write!(f, "os_cache"),
            Durability::None => write!(f, "none"),
        }
    }
}

const DEFAULT_KEEP: Keep = Keep(Durability::Fsync, Duration::ZERO);

async fn bench_pipeline(dir: &std::path::Path, keep: Keep) -> Result<Pipeline> {
    let mut cfg = Config::default();
    cfg.store.data_dir = dir.to_path_buf();
    cfg.bus.durability = keep.0;
    cfg.bus.commit_interval = keep.1;
    cfg.receiver.grpc_addr = "127.0.0.1:0".into();
    cfg.receiver.http_addr = "127.0.0.1:0".into();
    cfg.bus.capacity = 1_000_000;
    Ok(Pipeline::start(cfg).await?)
}

/// Wait until the operators have processed `points` and return when that happened;
/// then shut down (drain + final Parquet flush) and report how long that took.
async fn finish(p: Pipeline, points: u64) -> Result<Instant> {
    while Stats::get(&p.handles().stats.processed_points) < points {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let processed = Instant::now();
    p.shutdown().await?;
    println!(
        "  (shutdown drain + final flush: {} ms)",
        processed.elapsed().as_millis()
    );
    Ok(processed)
}

/// `producers` tasks share the requests (strided) and push them through the receiver
/// core, each waiting for its answer before the next (as an exporter does).
async fn in_process(
    bodies: &Arc<Vec<Vec<u8>>>,
    points: u64,
    keep: Keep,
    producers: usize,
) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let p = bench_pipeline(dir.path(), keep).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..producers {
        let (bodies, ingest) = (bodies.clone(), p.handles().ingest.clone());
        tasks.push(tokio::spawn(async move {
            for b in bodies.iter().skip(c).step_by(producers) {
                ingest
                    .metrics(ExportMetricsServiceRequest::decode(b.as_slice())?)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let done = finish(p, points).await?;
    Ok(rate(points, done - start))
}

async fn loopback_grpc(bodies: Arc<Vec<Vec<u8>>>, points: u64) -> Result<f64> {
    const CLIENTS: usize = 4;
    let dir = tempfile::tempdir()?;
    let p = bench_pipeline(dir.path(), DEFAULT_KEEP).await?;
    let endpoint = format!("http://{}", p.handles().grpc_addr);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (bodies, endpoint) = (bodies.clone(), endpoint.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = MetricsServiceClient::connect(endpoint).await?;
            for b in bodies.iter().skip(c).step_by(CLIENTS) {
                client
                    .export(ExportMetricsServiceRequest::decode(b.as_slice())?)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let done = finish(p, points).await?;
    Ok(rate(points, done - start))
}

/// The requests merged into ones of at least `points` points each (as the Collector's
/// batch processor does).
fn batch(bodies: &[Vec<u8>], points: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut acc = ExportMetricsServiceRequest::default();
    let mut n = 0;
    for b in bodies {
        let req = ExportMetricsServiceRequest::decode(b.as_slice())?;
        n += sqlvigil_simulator::count_points(&req);
        acc.resource_metrics.extend(req.resource_metrics);
        if n >= points {
            out.push(std::mem::take(&mut acc).encode_to_vec());
            n = 0;
        }
    }
    if n > 0 {
        out.push(acc.encode_to_vec());
    }
    Ok(out)
}

pub async fn run(quick: bool) -> Result<()> {
    let (bodies, points) = workload(quick);
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "workload: {} requests, {points} points, {:.1} MiB of OTLP protobuf",
        bodies.len(),
        bytes as f64 / 1048576.0
    );
    let base = prost_baseline(&bodies, points)?;
    println!("prost decode (baseline): {base:.0} points/s");
    let bodies = Arc::new(bodies);
    let grpc = loopback_grpc(bodies.clone(), points).await?;
    println!(
        "loopback gRPC receiver→bus→operators→store (fsync): {grpc:.0} points/s ({:.3} of baseline)",
        grpc / base
    );
    let inproc = in_process(&bodies, points, DEFAULT_KEEP, 1).await?;
    println!(
        "in-process receiver→bus→operators→store, 1 producer, {DEFAULT_KEEP}: {inproc:.0} points/s ({:.3} of baseline)",
        inproc / base
    );
    // The write-ahead log's cost, on the scrape-sized requests and on requests of about
    // 8,192 points (the Collector's batch processor's default `send_batch_size`).
    let batched = Arc::new(batch(&bodies, 8_192)?);
    let keeps = [
        Keep(Durability::None, Duration::ZERO),
        Keep(Durability::OsCache, Duration::ZERO),
        DEFAULT_KEEP,
        Keep(Durability::Fsync, Duration::from_millis(2)),
    ];
    for (what, bodies) in [
        ("scrape-sized requests", &bodies),
        ("8k-point requests", &batched),
    ] {
        let mut rates = Vec::new();
        for keep in keeps {
            let r = in_process(bodies, points, keep, 8).await?;
            println!(
                "in-process, 8 producers, {what}, {keep}: {r:.0} points/s ({:.3} of baseline)",
                r / base
            );
            rates.push(r);
        }
        println!(
            "in-process, 8 producers, {what}: {DEFAULT_KEEP} / none = {:.3}",
            rates[2] / rates[0]
        );
    }
    println!("ingest_grpc_loopback: {grpc:.0} points/s");
    Ok(())
}
