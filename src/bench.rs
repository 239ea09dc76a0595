//! `sqlvigil bench NAME [--quick]`. Each bench prints its figures and, last, its headline
//! as `label: value unit`.
//!
//! `ingest`: simulator-generated OTLP requests (encoded once up front) pushed through
//! receiver → bus → rate + threshold operators → store sink, (a) in-process through the
//! receiver core and (b) over loopback gRPC, each timed from the first request until the
//! operators have processed every point (the store sink has buffered them and flushes to
//! Parquet every 2 s on the way); compared with a bare `prost` decode of the same bytes in
//! the same run. The shutdown drain and final flush are reported apart.

use anyhow::{bail, Result};
use clap::Args;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sqlvigil_pipeline::stats::Stats;
use sqlvigil_pipeline::{Config, Pipeline};
use sqlvigil_simulator::{Fleet, FleetConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark: ingest, operators, elastic, kafka.
    name: String,
    /// A smaller run (under 30 s).
    #[arg(long)]
    quick: bool,
    /// `elastic`: the Elasticsearch URL (default: the bundled test server); `kafka`: the
    /// brokers (default: a tansu broker started for the run).
    #[arg(long)]
    url: Option<String>,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.name.as_str() {
        "ingest" => ingest(args.quick).await,
        "operators" => crate::bench_operators::run(args.quick).await,
        "elastic" => crate::bench_elastic::run(args.quick, args.url).await,
        "kafka" => crate::bench_kafka::run(args.quick, args.url).await,
        other => bail!("unknown benchmark `{other}`; available: ingest, operators, elastic, kafka"),
    }
}

/// Encoded requests and their point count.
pub(crate) fn workload(quick: bool) -> (Vec<Vec<u8>>, u64) {
    let (instances, ticks) = if quick { (20, 40) } else { (50, 200) };
    fleet_workload(instances, ticks)
}

/// `ticks` scrapes of `instances` simulated instances, one OTLP request each.
pub(crate) fn fleet_workload(instances: usize, ticks: u64) -> (Vec<Vec<u8>>, u64) {
    let mut fleet = Fleet::new(FleetConfig {
        instances,
        ..FleetConfig::default()
    });
    let mut bodies = Vec::new();
    let mut points = 0u64;
    for t in 0..ticks {
        for req in fleet.metrics(t) {
            points += sqlvigil_simulator::count_points(&req) as u64;
            bodies.push(req.encode_to_vec());
        }
    }
    (bodies, points)
}

fn rate(points: u64, d: Duration) -> f64 {
    points as f64 / d.as_secs_f64().max(1e-9)
}

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
    while Stats::get(&p.stats.processed_points) < points {
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
    let ingest = p.ingest.clone();
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
    let endpoint = format!("http://{}", p.grpc_addr);
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

async fn ingest(quick: bool) -> Result<()> {
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

fn kv(k: &str, v: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn cpu_metric(
    points: Vec<opentelemetry_proto::tonic::metrics::v1::NumberDataPoint>,
) -> opentelemetry_proto::tonic::metrics::v1::Metric {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Gauge, Metric};
    Metric {
        name: "sqlserver.cpu.utilization".into(),
        unit: "%".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn point(series: &str, t: i64, v: f64) -> opentelemetry_proto::tonic::metrics::v1::NumberDataPoint {
    use opentelemetry_proto::tonic::metrics::v1::{number_data_point, NumberDataPoint};
    NumberDataPoint {
        attributes: vec![kv("series", series)],
        time_unix_nano: t as u64,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

/// A request of `points` quiet CPU points (one per series) at event time `t`.
pub fn gauge_request(
    instance: &str,
    seq: usize,
    points: usize,
    t: i64,
) -> ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let pts = (0..points)
        .map(|i| point(&format!("{}", (seq * points + i) % 100_000), t, 20.0))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("sqlserver.instance.name", instance)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![cpu_metric(pts)],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// Add one breaching point on a series of its own (so each opens a new anomaly).
pub fn add_breach(req: &mut ExportMetricsServiceRequest, seq: usize, t: i64) {
    if let Some(sm) = req
        .resource_metrics
        .first_mut()
        .and_then(|rm| rm.scope_metrics.first_mut())
    {
        sm.metrics
            .push(cpu_metric(vec![point(&format!("breach-{seq}"), t, 99.0)]));
    }
}
