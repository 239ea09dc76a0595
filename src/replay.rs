//! `sqlvigil replay --from DIR | kafka://BROKERS/TOPIC`: re-run stored telemetry through
//! the operators.
//!
//! Reads the raw points of a data directory's Parquet store, or every record of a Kafka
//! telemetry topic as it stands (OTLP protobuf, read without joining a group), in
//! (event time, series) order — derived `*.per_second` series are recomputed, not read —
//! pushes them through the rate operator and the rules (the shipped set or `--rules
//! FILE`) in fixed-size micro-batches, and prints every open and resolve event as a
//! JSON line in event-time order, then a summary. The same input and rules always give the same output, whatever the
//! source or the batch size, so a rule can be tuned on a past incident.

use anyhow::{anyhow, Context as _, Result};
use clap::Args;
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sqlvigil_model::arrow_schema::batch_to_samples;
use sqlvigil_model::{AnomalyEvent, AnomalyEventKind, Sample};
use sqlvigil_pipeline::bus::kafka::{read_topic, KafkaConfig};
use sqlvigil_pipeline::operators::baseline::BaselineConfig;
use sqlvigil_pipeline::operators::rate::RateOperator;
use sqlvigil_pipeline::operators::rules::RuleOperator;
use sqlvigil_pipeline::operators::window::is_window_output;
use sqlvigil_pipeline::operators::{MicroBatch, Operator};
use sqlvigil_pipeline::receiver::decode::metrics_to_samples;
use sqlvigil_pipeline::sinks::store::{MetricFilter, Store};
use sqlvigil_pipeline::stats::Stats;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ReplayArgs {
    /// A sqlvigil data directory (its `metrics/` Parquet files are read, never written),
    /// or `kafka://HOST:PORT[,HOST:PORT…]/TOPIC` (a metrics topic, e.g. `otlp_metrics`).
    #[arg(long)]
    from: String,
    /// Rules to replay with (default: the shipped rule set).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Points per micro-batch.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
}

/// Series the operators derive (rates, window aggregates): recomputed or left out, never
/// read back as input. Replays recompute rates, not windows.
fn derived(s: &Sample) -> bool {
    s.key.metric.ends_with(".per_second") || is_window_output(&s.key.metric)
}

/// Feeds points to the operators in micro-batches and collects the open and resolve
/// events.
struct Replayer {
    ops: Vec<Box<dyn Operator>>,
    pending: Vec<Sample>,
    batch: usize,
    points: u64,
    events: Vec<AnomalyEvent>,
}

impl Replayer {
    fn push(&mut self, s: Sample) -> Result<()> {
        if derived(&s) {
            return Ok(());
        }
        self.points += 1;
        self.pending.push(s);
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let mut mb = MicroBatch {
            samples: std::mem::take(&mut self.pending),
            events: Vec::new(),
        };
        for op in self.ops.iter_mut() {
            op.process(&mut mb)?;
        }
        let lifecycle = mb
            .events
            .into_iter()
            .filter(|e| e.event != AnomalyEventKind::Update);
        self.events.extend(lifecycle);
        Ok(())
    }

    /// Print the events in event-time order (then rule and series): batch boundaries
    /// change the order the rules report them in, never what they report.
    fn print(&mut self) -> Result<()> {
        self.events.sort_by(|a, b| {
            let key = |e: &AnomalyEvent| {
                let open = e.event == AnomalyEventKind::Open;
                (e.anomaly.updated_at, e.anomaly.fingerprint.clone(), !open)
            };
            key(a).cmp(&key(b))
        });
        for ev in &self.events {
            println!("{}", serde_json::to_string(ev)?);
        }
        Ok(())
    }

    fn count(&self, kind: AnomalyEventKind) -> usize {
        self.events.iter().filter(|e| e.event == kind).count()
    }
}

pub async fn run(args: ReplayArgs) -> Result<()> {
    let rules = crate::eval::load_rules(&args.rules)?;
    let stats = Arc::new(Stats::default());
    let mut replay = Replayer {
        ops: vec![
            Box::new(RateOperator::new(stats.clone())),
            Box::new(RuleOperator::new(
                &rules,
                BaselineConfig::default(),
                stats.clone(),
            )?),
        ],
        pending: Vec::new(),
        batch: args.batch.max(1),
        points: 0,
        events: Vec::new(),
    };
    match args.from.strip_prefix("kafka://") {
        Some(rest) => from_topic(rest, &mut replay).await?,
        None => from_dir(Path::new(&args.from), stats, &mut replay).await?,
    }
    replay.flush()?;
    replay.print()?;
    eprintln!(
        "replayed {} points with {} rules: {} anomalies opened, {} resolved",
        replay.points,
        rules.len(),
        replay.count(AnomalyEventKind::Open),
        replay.count(AnomalyEventKind::Resolve)
    );
    Ok(())
}

async fn from_dir(dir: &Path, stats: Arc<Stats>, replay: &mut Replayer) -> Result<()> {
    if !dir.join("metrics").is_dir() {
        anyhow::bail!(
            "{} is not a sqlvigil data directory (no metrics/ folder)",
            dir.display()
        );
    }
    let store = Store::open(dir, stats).with_context(|| format!("opening {}", dir.display()))?;
    let mut stream = store.stream_metrics(&MetricFilter::default()).await?;
    while let Some(batch) = stream.next().await {
        for s in batch_to_samples(&batch?)? {
            replay.push(s)?;
        }
    }
    Ok(())
}

/// A topic's records decoded, in the store's (time, series) order, each point once (a
/// redelivered record is in the topic twice; the store keeps one).
async fn from_topic(rest: &str, replay: &mut Replayer) -> Result<()> {
    let (brokers, topic) = rest
        .split_once('/')
        .filter(|(b, t)| !b.is_empty() && !t.is_empty())
        .ok_or_else(|| anyhow!("--from kafka://BROKERS/TOPIC: `kafka://{rest}` names no topic"))?;
    let config = KafkaConfig {
        brokers: brokers.to_string(),
        ..KafkaConfig::default()
    };
    let topic = topic.to_string();
    let records =
        tokio::task::spawn_blocking(move || read_topic(&config, &topic, Duration::from_secs(120)))
            .await??;
    let mut samples = Vec::new();
    let mut undecodable = 0;
    for d in &records {
        match ExportMetricsServiceRequest::decode(d.record.payload.as_ref()) {
            Ok(req) => metrics_to_samples(&req, &mut samples),
            Err(_) => undecodable += 1,
        }
    }
    if undecodable > 0 {
        eprintln!("skipped {undecodable} records that are not OTLP metrics");
    }
    samples.sort_by_cached_key(|s| (s.time_ns, s.key.id()));
    samples.dedup_by(|a, b| a.time_ns == b.time_ns && a.key == b.key);
    for s in samples {
        replay.push(s)?;
    }
    Ok(())
}
