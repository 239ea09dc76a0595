//! `sqlvigil-bench kafka [--quick] [--url BROKERS]`: OTLP → Kafka → consumer → operators →
//! store on loopback, in points/s, and in the same run the bare rdkafka producer and
//! consumer against the same broker (same producer settings: idempotent, lz4, acks=all).
//!
//! Without `--url` it starts a tansu broker (in-memory storage) on a free loopback port
//! (`sqlvigil-testkit`'s launcher); tansu must be installed (`cargo install tansu
//! --version 0.6.0 --features dynostore`).

use crate::workload::rate;
use anyhow::{anyhow, bail, Result};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlvigil_bus::kafka::{KafkaBus, KafkaConfig};
use sqlvigil_bus::BusKind;
use sqlvigil_core::Stats;
use sqlvigil_runtime::{Config, Pipeline};
use sqlvigil_testkit::KafkaBroker;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent OTLP exports in flight, as a fleet's Collectors send them. Each waits
/// for its Kafka delivery reports (`linger.ms` 5 plus a round trip), so with 64 the
/// receiver side alone topped out near the consumer's rate and hid it.
const IN_FLIGHT: usize = 256;

/// (busy, total) jiffies of all CPUs from `/proc/stat` (zeros where unreadable).
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// CPU seconds (user + system, all threads) a process has used, from
/// `/proc/PID/stat`; 0 where unreadable. Linux reports them in USER_HZ (100/s).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing paren.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// Where the CPU went during one part of the run: this process, the broker (when the
/// bench started it) and the whole machine.
struct CpuMeter {
    broker: Option<u32>,
    machine: (u64, u64),
    own: f64,
    broker_cpu: f64,
}

impl CpuMeter {
    fn start(broker: Option<u32>) -> Self {
        CpuMeter {
            broker,
            machine: cpu_times(),
            own: process_cpu(std::process::id()),
            broker_cpu: broker.map_or(0.0, process_cpu),
        }
    }

    /// Prints the part's CPU per point; returns the CPU microseconds per point both
    /// processes used.
    fn report(&self, part: &str, points: u64) -> f64 {
        let own = process_cpu(std::process::id()) - self.own;
        let broker = self.broker.map_or(0.0, process_cpu) - self.broker_cpu;
        let (busy, total) = cpu_times();
        let share = busy.saturating_sub(self.machine.0) as f64
            / total.saturating_sub(self.machine.1).max(1) as f64;
        let per_point = (own + broker) * 1e6 / points.max(1) as f64;
        println!(
            "  ({part}: {own:.2} CPU s in sqlvigil, {broker:.2} in the broker = {per_point:.2} CPU µs per point; machine {:.0} % busy)",
            share * 100.0
        );
        per_point
    }
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Bare producer: every body as one message, all in flight, until every delivery report.
async fn bare_produce(brokers: &str, topic: &str, bodies: &[Vec<u8>]) -> Result<Duration> {
    let producer: FutureProducer = client(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()?;
    let start = Instant::now();
    let mut pending = Vec::with_capacity(bodies.len());
    for (i, b) in bodies.iter().enumerate() {
        let key = (i % 64).to_string();
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(b)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for f in pending {
        f.await
            .map_err(|_| anyhow!("delivery canceled"))?
            .map_err(|(e, _)| anyhow!("delivery failed: {e}"))?;
    }
    Ok(start.elapsed())
}

/// Bare consumer: read `count` messages from the start of `topic`.
async fn bare_consume(brokers: &str, topic: &str, count: usize) -> Result<Duration> {
    let consumer: StreamConsumer = client(brokers)
        .set("group.id", "sqlvigil-bench-bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    // Joining the group is not reading: start the clock at the first message.
    tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .map_err(|_| anyhow!("bare consumer got nothing"))??;
    let start = Instant::now();
    for _ in 1..count {
        tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .map_err(|_| anyhow!("bare consumer stalled"))??;
    }
    Ok(start.elapsed())
}

/// CPU µs per point of turning every body into samples once on one thread (protobuf
/// decode and key building): the least any consumer of OTLP records must do.
fn decode_cost(bodies: &[Vec<u8>], points: u64) -> Result<f64> {
    let start = Instant::now();
    let mut samples = Vec::new();
    for b in bodies {
        let req = ExportMetricsServiceRequest::decode(b.as_slice())?;
        sqlvigil_otlp::metrics_to_samples(&req, &mut samples);
        samples.clear();
    }
    let per_point = start.elapsed().as_secs_f64() * 1e6 / points.max(1) as f64;
    println!(
        "  (decoding every body into points once, one thread: {per_point:.2} CPU µs per point)"
    );
    Ok(per_point)
}

/// The whole pipeline on the Kafka bus, fed through the receiver core.
async fn end_to_end(
    brokers: &str,
    broker: Option<u32>,
    bodies: &[Vec<u8>],
    points: u64,
) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.store.data_dir = dir.path().to_path_buf();
    cfg.receiver.grpc_addr = "127.0.0.1:0".into();
    cfg.receiver.http_addr = "127.0.0.1:0".into();
    cfg.bus.kind = BusKind::Kafka;
    cfg.bus.kafka.brokers = brokers.to_string();
    if let Ok(ms) = std::env::var("XLINGER") {
        cfg.bus.kafka.linger = Duration::from_millis(ms.parse()?);
    }
    let p = Pipeline::start(cfg).await?;
    let handles = p.handles().clone();
    let mut requests: Vec<ExportMetricsServiceRequest> = bodies
        .iter()
        .map(|b| ExportMetricsServiceRequest::decode(b.as_slice()))
        .collect::<Result<_, _>>()?;
    // Warm-up, untimed: the consumer group is joined once the first request is through.
    let first = requests.pop().ok_or_else(|| anyhow!("empty workload"))?;
    let first_points = sqlvigil_simulator::count_points(&first) as u64;
    handles
        .ingest
        .metrics(first)
        .await
        .map_err(|e| anyhow!("export refused: {e}"))?;
    let joined = Instant::now();
    while Stats::get(&handles.stats.processed_points) < first_points {
        if joined.elapsed() > Duration::from_secs(60) {
            bail!("the consumer got nothing within 60 s (no partitions assigned?)");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let queue = Arc::new(std::sync::Mutex::new(requests));
    tracing::info!("end-to-end part starts");
    let cpu = CpuMeter::start(broker);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (queue, ingest) = (queue.clone(), handles.ingest.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().map_err(|_| anyhow!("poisoned"))?.pop();
                let Some(req) = next else {
                    return anyhow::Ok(());
                };
                ingest
                    .metrics(req)
                    .await
                    .map_err(|e| anyhow!("export refused: {e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let produced = start.elapsed();
    let consumed_then = Stats::get(&handles.stats.processed_points);
    while Stats::get(&handles.stats.processed_points) < points {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("the operators did not see every point in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    cpu.report("end to end", points - first_points);
    println!(
        "  (all requests acknowledged after {:.2} s, the operators had {consumed_then} points then; all {points} after {:.2} s)",
        produced.as_secs_f64(),
        took.as_secs_f64()
    );
    p.shutdown().await?;
    Ok(took)
}

pub async fn run(quick: bool, url: Option<String>) -> Result<()> {
    let (broker, brokers) = match url {
        Some(u) => (None, u),
        None => {
            let b = KafkaBroker::try_start()?;
            let u = b.bootstrap();
            (Some(b), u)
        }
    };
    // Three times `bench ingest`'s fleet: the end-to-end part then lasts seconds, not
    // one, and the figure no longer swings with a scheduling hiccup.
    let (bodies, points) = if quick {
        crate::workload::workload(true)
    } else {
        crate::workload::fleet_workload(50, 600)
    };
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "broker {brokers}; workload: {} OTLP requests, {points} points, {:.1} MiB",
        bodies.len(),
        bytes as f64 / 1048576.0
    );
    let topic = format!("sqlvigil-bench-bare-{}", std::process::id());
    // The first produce creates nothing on tansu: create the topic through the bus.
    KafkaBus::connect(
        &KafkaConfig {
            brokers: brokers.clone(),
            ..Default::default()
        },
        &[&topic],
        Arc::new(Stats::default()),
    )
    .await?;
    let pid = broker.as_ref().map(KafkaBroker::pid);
    let cpu = CpuMeter::start(pid);
    let produce = rate(points, bare_produce(&brokers, &topic, &bodies).await?);
    println!("bare rdkafka producer: {produce:.0} points/s");
    let produce_cpu = cpu.report("bare producer", points);
    let cpu = CpuMeter::start(pid);
    let consume = rate(points, bare_consume(&brokers, &topic, bodies.len()).await?);
    println!("bare rdkafka consumer: {consume:.0} points/s");
    let consume_cpu = cpu.report("bare consumer", points);
    let decode_cpu = decode_cost(&bodies, points)?;
    // Every point the pipeline carries is produced, consumed and decoded at least once:
    // what those cost alone bounds the end-to-end rate on this machine's cores, before
    // any receiver, operator or store work.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let floor = produce_cpu + consume_cpu + decode_cpu;
    let ceiling = cores * 1e6 / floor.max(1e-9);
    println!(
        "  (producing, consuming and decoding alone: {floor:.2} CPU µs per point, so at most {ceiling:.0} points/s on {cores} cores = {:.2} of the bare producer)",
        ceiling / produce
    );
    let last = bodies
        .last()
        .map(|b| ExportMetricsServiceRequest::decode(b.as_slice()))
        .transpose()?;
    let warmup = last.map_or(0, |r| sqlvigil_simulator::count_points(&r) as u64);
    let e2e = rate(
        points - warmup,
        end_to_end(&brokers, pid, &bodies, points).await?,
    );
    println!(
        "OTLP → Kafka → operators → store: {e2e:.0} points/s ({:.2} of the bare producer)",
        e2e / produce
    );
    println!("kafka_end_to_end: {e2e:.0} points/s");
    Ok(())
}
