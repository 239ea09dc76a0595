//! The consumer side: group members that commit only what the runtime acknowledged
//! ([`KafkaBus::consumer`], `KafkaSubscription`), and group-less range readers for
//! replay and checkpoint loading ([`read_topic`], `read_ranges`).

use super::config::KafkaConfig;
use super::producer::{KafkaBus, MetricsContext};
use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use sqlvigil_core::{async_trait, Delivery, Error, Record, Result, Subscription};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A consumer's context: self metrics, and the partitions rebalances took away (read by
/// the worker, which drops their operator state: the next owner restores it).
#[derive(Clone)]
pub struct GroupContext {
    metrics: MetricsContext,
    revoked: Arc<Mutex<Vec<u32>>>,
}

impl ClientContext for GroupContext {
    fn stats(&self, s: Statistics) {
        self.metrics.stats(s)
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let gone: Vec<u32> = tpl
                    .elements()
                    .iter()
                    .map(|e| e.partition().max(0) as u32)
                    .collect();
                self.revoked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(gone);
            }
            Rebalance::Assign(tpl) => tracing::info!(
                partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(),
                "kafka partitions assigned"
            ),
            Rebalance::Error(e) => tracing::warn!("kafka rebalance failed: {e}"),
        }
    }
}

impl KafkaBus {
    /// A consumer of `group` on `topic`. The Kafka group id is `<group>.<topic>`: one
    /// group per topic, so a member joining one topic's group does not stop the
    /// consumers of the others for a rebalance.
    pub fn consumer(&self, topic: &str, group: &str) -> Result<StreamConsumer<GroupContext>> {
        let context = GroupContext {
            metrics: self.context.clone(),
            revoked: Arc::default(),
        };
        let consumer: StreamConsumer<GroupContext> = self
            .config
            .consumer(&format!("{group}.{topic}"))
            .create_with_context(context)
            .map_err(|e| Error::Config(format!("kafka consumer settings: {e}")))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| self.broker_error(&format!("subscribing to `{topic}`"), e))?;
        Ok(consumer)
    }
}

/// Every record of `topic` from each partition's start to its end as of now, partition
/// by partition, without joining a group (nothing is committed): `sqlvigil replay`.
pub fn read_topic(config: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Vec<Delivery>> {
    let unavailable = |what: &str, e: KafkaError| {
        Error::Unavailable(format!("kafka {what} `{topic}` at {}: {e}", config.brokers))
    };
    let consumer: BaseConsumer = config
        .quiet_client()
        .set("group.id", "sqlvigil-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| Error::Config(format!("kafka replay reader settings: {e}")))?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| unavailable("reading", e))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::Invalid(format!(
            "kafka: topic `{topic}` does not exist on {}",
            config.brokers
        )));
    }
    // Where each partition ends now: records produced later are not part of the replay.
    let mut ranges = Vec::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| unavailable("reading offsets of", e))?;
        ranges.push((p, low, high));
    }
    read_ranges(&consumer, topic, &ranges, timeout)
        .map_err(|e| Error::Unavailable(format!("kafka at {}: {e}", config.brokers)))
}

/// The records of `topic` at offsets `start..end` of each `(partition, start, end)`, read
/// with `assign` (no group). Compaction may have removed a range's last offset: any later
/// record of that partition also ends its range.
pub(crate) fn read_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> Result<Vec<Delivery>, String> {
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &(p, start, end) in ranges.iter().filter(|(_, start, end)| end > start) {
        remaining.insert(p, end - 1);
        tpl.add_partition_offset(topic, p, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "reading `{topic}` timed out with partitions {:?} unfinished",
                remaining.keys().collect::<BTreeSet<_>>()
            ));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(|e| format!("reading `{topic}`: {e}"))?;
        let (p, offset) = (m.partition(), m.offset());
        let Some(last) = remaining.get(&p).copied() else {
            continue;
        };
        if offset <= last {
            out.push(Delivery {
                partition: p.max(0) as u32,
                offset: offset.max(0) as u64,
                record: Record {
                    key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
                    payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                },
            });
        }
        if offset >= last {
            remaining.remove(&p);
        }
    }
    Ok(out)
}

impl KafkaBus {
    /// A group member on `topic` (the `Bus::subscribe` of the Kafka bus).
    pub(crate) fn subscription(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(KafkaSubscription {
            consumer: self.consumer(topic, group)?,
            topic: topic.to_string(),
        }))
    }
}

struct KafkaSubscription {
    consumer: StreamConsumer<GroupContext>,
    topic: String,
}

impl KafkaSubscription {
    async fn recv(&self, wait: Duration) -> Option<Delivery> {
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => None,
            Ok(Ok(m)) => Some(Delivery {
                partition: m.partition().max(0) as u32,
                offset: m.offset().max(0) as u64,
                record: Record {
                    key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
                    payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                },
            }),
            Ok(Err(e)) => {
                // Broker away, rebalance in progress…: librdkafka recovers by itself.
                tracing::warn!(topic = %self.topic, "kafka consumer: {e}");
                tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
                None
            }
        }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let Some(first) = self.recv(wait).await else {
            return Ok(Vec::new());
        };
        let mut out = vec![first];
        // Take what librdkafka already fetched, without waiting for more.
        while out.len() < max {
            match self.recv(Duration::from_millis(1)).await {
                Some(d) => out.push(d),
                None => break,
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let mut next: HashMap<u32, u64> = HashMap::new();
        for d in deliveries {
            let e = next.entry(d.partition).or_default();
            *e = (*e).max(d.offset + 1);
        }
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(o as i64))
                .map_err(|e| super::producer::other("kafka offsets", e))?;
        }
        // A partition that moved to another consumer refuses the commit; its new owner
        // reads those records again, and the idempotent sinks absorb the repeat.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(topic = %self.topic, "kafka commit refused: {e}");
        }
        Ok(())
    }

    fn revoked(&mut self) -> Vec<u32> {
        let revoked = &self.consumer.context().revoked;
        std::mem::take(&mut *revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn assignment(&self) -> Option<BTreeSet<u32>> {
        let tpl = self.consumer.assignment().ok()?;
        Some(
            tpl.elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition().max(0) as u32)
                .collect(),
        )
    }
}
