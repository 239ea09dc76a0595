//! The engine of `sqlvigil replay`: re-run stored telemetry through the operator chain
//! of a config — the same chain `run` builds, windows, baselines and lateness included.
//!
//! Reads the raw points of a data directory's Parquet store, or every record of a Kafka
//! telemetry topic as it stands (OTLP protobuf, read without joining a group), in
//! (event time, series) order — derived series (`*.per_second` rates and window
//! aggregates) are recomputed, not read — and pushes them through the chain in
//! fixed-size micro-batches. The open and resolve events come back in event-time order:
//! the same input and config always give the same events, whatever the source or the
//! batch size, so a rule can be tuned on a past incident.

use futures::StreamExt;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sqlvigil_bus::kafka::{read_topic, KafkaConfig};
use sqlvigil_core::{run_chain, Chain, Error, MicroBatch, Result, Stats};
use sqlvigil_model::arrow_schema::batch_to_samples;
use sqlvigil_model::query::MetricFilter;
use sqlvigil_model::{AnomalyEvent, AnomalyEventKind, Sample};
use sqlvigil_operators::chain::{ChainBuilder, ChainConfig};
use sqlvigil_operators::window::is_window_output;
use sqlvigil_store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where replayed telemetry comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A sqlvigil data directory (its `metrics/` Parquet files are read, never written).
    DataDir(PathBuf),
    /// A Kafka metrics topic, read from each partition's start to its current end.
    Topic { brokers: String, topic: String },
}

impl Source {
    /// `kafka://HOST:PORT[,HOST:PORT…]/TOPIC`, or a directory.
    pub fn parse(from: &str) -> Result<Source> {
        let Some(rest) = from.strip_prefix("kafka://") else {
            return Ok(Source::DataDir(PathBuf::from(from)));
        };
        let (brokers, topic) = rest
            .split_once('/')
            .filter(|(b, t)| !b.is_empty() && !t.is_empty())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--from kafka://BROKERS/TOPIC: `kafka://{rest}` names no topic"
                ))
            })?;
        Ok(Source::Topic {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
        })
    }
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Raw points pushed through the chain.
    pub points: u64,
    /// Open and resolve events in event-time order (then fingerprint, opens first).
    pub events: Vec<AnomalyEvent>,
    /// Records of a topic that were not OTLP metrics.
    pub undecodable: usize,
}

impl Replay {
    pub fn count(&self, kind: AnomalyEventKind) -> usize {
        self.events.iter().filter(|e| e.event == kind).count()
    }
}

/// Series the operators derive (rates, window aggregates): recomputed, never read back
/// as input.
fn derived(s: &Sample) -> bool {
    s.key.metric.ends_with(".per_second") || is_window_output(&s.key.metric)
}

/// Feeds points to the chain in micro-batches and collects the open and resolve events.
struct Replayer {
    chain: Chain,
    pending: Vec<Sample>,
    batch: usize,
    out: Replay,
}

impl Replayer {
    fn push(&mut self, s: Sample) -> Result<()> {
        if derived(&s) {
            return Ok(());
        }
        self.out.points += 1;
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
        run_chain(&mut self.chain, &mut mb)?;
        let lifecycle = mb
            .events
            .into_iter()
            .filter(|e| e.event != AnomalyEventKind::Update);
        self.out.events.extend(lifecycle);
        Ok(())
    }

    /// Batch boundaries change the order the rules report events in, never what they
    /// report: sort by event time (then rule and series).
    fn finish(mut self) -> Result<Replay> {
        self.flush()?;
        self.out.events.sort_by(|a, b| {
            let key = |e: &AnomalyEvent| {
                let open = e.event == AnomalyEventKind::Open;
                (e.anomaly.updated_at, e.anomaly.fingerprint.clone(), !open)
            };
            key(a).cmp(&key(b))
        });
        Ok(self.out)
    }
}

/// Replay `source` through a fresh chain built from `chain`, `batch` points per
/// micro-batch.
pub async fn replay(source: &Source, chain: &ChainConfig, batch: usize) -> Result<Replay> {
    let builder = ChainBuilder::new(chain.clone(), Arc::new(Stats::default()))?;
    let mut replayer = Replayer {
        chain: builder.build()?,
        pending: Vec::new(),
        batch: batch.max(1),
        out: Replay::default(),
    };
    match source {
        Source::DataDir(dir) => from_dir(dir, &mut replayer).await?,
        Source::Topic { brokers, topic } => from_topic(brokers, topic, &mut replayer).await?,
    }
    replayer.finish()
}

async fn from_dir(dir: &Path, replay: &mut Replayer) -> Result<()> {
    if !dir.join("metrics").is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a sqlvigil data directory (no metrics/ folder)",
            dir.display()
        )));
    }
    let store = Store::open(dir, Arc::new(Stats::default()))?;
    let mut stream = store.stream_metrics(&MetricFilter::default()).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(StoreError::from)?;
        for s in batch_to_samples(&batch).map_err(StoreError::from)? {
            replay.push(s)?;
        }
    }
    Ok(())
}

/// A topic's records decoded, in the store's (time, series) order, each point once (a
/// redelivered record is in the topic twice; the store keeps one).
async fn from_topic(brokers: &str, topic: &str, replay: &mut Replayer) -> Result<()> {
    let config = KafkaConfig {
        brokers: brokers.to_string(),
        ..KafkaConfig::default()
    };
    let name = topic.to_string();
    let records =
        tokio::task::spawn_blocking(move || read_topic(&config, &name, Duration::from_secs(120)))
            .await
            .map_err(|e| Error::task("kafka replay reader", e))??;
    let mut samples = Vec::new();
    for d in &records {
        match ExportMetricsServiceRequest::decode(d.record.payload.as_ref()) {
            Ok(req) => sqlvigil_otlp::metrics_to_samples(&req, &mut samples),
            Err(_) => replay.out.undecodable += 1,
        }
    }
    samples.sort_by_cached_key(|s| (s.time_ns, s.key.id()));
    samples.dedup_by(|a, b| a.time_ns == b.time_ns && a.key == b.key);
    for s in samples {
        replay.push(s)?;
    }
    Ok(())
}
