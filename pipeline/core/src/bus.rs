//! The bus between the receiver and everything downstream.
//!
//! Topics are split into partitions; records with the same key (the SQL Server instance)
//! land in the same partition so one instance's data stays in order. Consumers read in a
//! group and acknowledge what they have made durable: a new subscription of the same
//! group resumes after the last acknowledged record (at-least-once). The in-process
//! The in-process bus (`sqlvigil-bus`'s `MemoryBus`) is the embedded default; its
//! `KafkaBus` implements the same trait over Kafka.
//!
//! A bus that cannot take records answers [`Error::Full`](crate::Error::Full) or
//! [`Error::Unavailable`](crate::Error::Unavailable) (both retryable): the receiver turns them
//! into gRPC UNAVAILABLE / HTTP 503, internal producers wait ([`publish_retrying`]).

use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// Topic names (the telemetry ones match the Collector's kafka exporter defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub metrics: String,
    pub logs: String,
    pub anomalies: String,
    pub insights: String,
    /// Operator state per metrics partition (compacted; Kafka bus only).
    pub checkpoints: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            metrics: "otlp_metrics".into(),
            logs: "otlp_logs".into(),
            anomalies: "sqlvigil.anomalies".into(),
            insights: "sqlvigil.insights".into(),
            checkpoints: "sqlvigil.checkpoints".into(),
        }
    }
}

impl Topics {
    /// The topics records are published to (the checkpoint topic is the checkpoint
    /// store's own).
    pub fn data(&self) -> [&str; 4] {
        [&self.metrics, &self.logs, &self.anomalies, &self.insights]
    }
}

/// One message: a key (routing, ordering) and opaque bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: Bytes,
    pub payload: Bytes,
}

/// A record handed to a consumer with its position.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub partition: u32,
    pub offset: u64,
    pub record: Record,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Append records; `Ok` means they are accepted (durable as far as this bus goes).
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<()>;

    /// Join consumer `group` on `topic`, resuming after its last acknowledged records.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>>;

    /// Records published but not yet acknowledged by `group` (for drain on shutdown).
    fn pending(&self, topic: &str, group: &str) -> u64;

    /// Whether records outlive this process. Then acknowledgements of stateful consumers
    /// wait for their state checkpoint (a restart resumes the state and is redelivered
    /// what came after it); on an in-process bus they follow each flush.
    fn durable(&self) -> bool {
        false
    }
}

#[async_trait]
pub trait Subscription: Send {
    /// Up to `max` records, waiting at most `wait` for the first; empty on timeout.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledge everything delivered so far up to and including these records.
    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()>;

    /// Partitions taken away from this subscriber since the last call (a consumer
    /// joined or left the group). Their state belongs to the next owner now.
    fn revoked(&mut self) -> Vec<u32> {
        Vec::new()
    }

    /// The partitions currently assigned, when the bus shares them out (`None`: all).
    fn assignment(&self) -> Option<BTreeSet<u32>> {
        None
    }
}

/// Longest pause between two attempts of [`publish_retrying`].
const MAX_PUBLISH_PAUSE: Duration = Duration::from_millis(500);

/// Publish to an internal topic, waiting for room as long as it takes: the producer is
/// one of sqlvigil's own workers, so back-pressure slows it down (and, through the
/// topics above it, the receiver answers 503) instead of losing what it publishes or
/// ending the worker. While it waits, `reporter` says so (health shows the part as
/// waiting, then stalled). Errors that retrying cannot fix are returned.
pub async fn publish_retrying(
    bus: &dyn Bus,
    topic: &str,
    records: Vec<Record>,
    reporter: Option<&crate::health::Component>,
) -> Result<()> {
    // In slices: a burst larger than a topic can ever hold at once still goes through,
    // as the consumer makes room.
    for chunk in records.chunks(PUBLISH_CHUNK) {
        publish_chunk(bus, topic, chunk, reporter).await?;
    }
    Ok(())
}

/// Most records [`publish_retrying`] publishes at once.
const PUBLISH_CHUNK: usize = 1_000;

async fn publish_chunk(
    bus: &dyn Bus,
    topic: &str,
    records: &[Record],
    reporter: Option<&crate::health::Component>,
) -> Result<()> {
    let mut delay = Duration::from_millis(5);
    let mut waited = false;
    loop {
        match bus.publish(topic, records.to_vec()).await {
            Ok(()) => {
                if waited {
                    if let Some(c) = reporter {
                        c.waiting(None);
                    }
                }
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                if !waited {
                    waited = true;
                    if let Some(c) = reporter {
                        c.waiting(Some(format!("room on topic `{topic}`: {e}")));
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_PUBLISH_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

impl Delivery {
    /// The position without the payload: all an acknowledgement needs.
    pub fn position(&self) -> Delivery {
        Delivery {
            partition: self.partition,
            offset: self.offset,
            record: Record {
                key: Bytes::new(),
                payload: Bytes::new(),
            },
        }
    }
}
