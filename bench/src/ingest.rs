//! `sqlvigil-bench ingest`: simulator-generated OTLP requests (encoded once up front)
//! pushed through receiver → bus → rate + threshold operators → store sink, (a)
//! in-process through the receiver core and (b) over loopback gRPC, each timed from the
//! first request until the operators have processed every point (the store sink has
//! buffered them and flushes to Parquet every 2 s on the way); compared with a bare
//! `prost` decode of the same bytes in the same run. The shutdown drain and final flush
//! are reported apart.

use crate::workload::{rate, workload};
use anyhow::Result;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
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

async fn bench_pipeline(dir: &std::path::Path) -> Result<Pipeline> {
    let mut cfg = Config::default();
    cfg.store.data_dir = dir.to_path_buf();
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

async fn in_process(bodies: &[Vec<u8>], points: u64) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let p = bench_pipeline(dir.path()).await?;
    let ingest = p.handles().ingest.clone();
    let start = Instant::now();
    for b in bodies {
        ingest
            .metrics(ExportMetricsServiceRequest::decode(b.as_slice())?)
            .await?;
    }
    let done = finish(p, points).await?;
    Ok(rate(points, done - start))
}

async fn loopback_grpc(bodies: Arc<Vec<Vec<u8>>>, points: u64) -> Result<f64> {
    const CLIENTS: usize = 4;
    let dir = tempfile::tempdir()?;
    let p = bench_pipeline(dir.path()).await?;
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
    let inproc = in_process(&bodies, points).await?;
    println!(
        "in-process receiver→bus→operators→store: {inproc:.0} points/s ({:.3} of baseline)",
        inproc / base
    );
    let grpc = loopback_grpc(Arc::new(bodies), points).await?;
    println!(
        "loopback gRPC receiver→bus→operators→store: {grpc:.0} points/s ({:.3} of baseline)",
        grpc / base
    );
    println!("ingest_grpc_loopback: {grpc:.0} points/s");
    Ok(())
}
