//! The Kafka bus (`bus.kind: kafka`), on rdkafka (librdkafka).
//!
//! Publishing waits for the delivery reports of every record (`acks=all`, idempotent
//! producer), so a receiver that answers success has its data in Kafka; a broker that
//! cannot take it within `message_timeout` turns into a retryable error (UNAVAILABLE /
//! 503), never success-and-drop. Consumers join a group with auto-commit off and commit
//! the offsets of what the runtime acknowledged — after the sinks and the operator
//! checkpoint made it durable — so a crash redelivers, and idempotent sinks make the
//! redelivery harmless. Telemetry topics carry OTLP protobuf exactly as the Collector's
//! kafka exporter (`otlp_proto`) writes it, keyed by instance.

use super::{Bus, BusError, Delivery, Record, Subscription};
use crate::stats::Stats;
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `bus.kafka`: brokers, topic creation, producer tuning and any librdkafka setting.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    pub client_id: String,
    /// Create missing topics at start-up (else a missing topic is an error naming it).
    pub create_topics: bool,
    /// Partitions of topics sqlvigil creates.
    pub partitions: i32,
    pub replication: i32,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// `linger.ms`: how long the producer waits to batch.
    #[serde(with = "crate::config::duration_str")]
    pub linger: Duration,
    /// `message.timeout.ms`: after this a record the broker did not take is refused
    /// to the OTLP client as retryable.
    #[serde(with = "crate::config::duration_str")]
    pub message_timeout: Duration,
    /// `session.timeout.ms` of consumers: how soon a dead consumer's partitions move.
    #[serde(with = "crate::config::duration_str")]
    pub session_timeout: Duration,
    /// Any other librdkafka property, passed through to every client: TLS and SASL
    /// (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, `sasl.username`, …).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            client_id: "sqlvigil".into(),
            create_topics: true,
            partitions: 6,
            replication: 1,
            compression: "lz4".into(),
            linger: Duration::from_millis(5),
            message_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            options: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("bus.kafka.brokers must name at least one broker".into());
        }
        if self.partitions < 1 || self.replication < 1 {
            return Err("bus.kafka.partitions and bus.kafka.replication must be at least 1".into());
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return Err(format!(
                "bus.kafka.compression: `{}` is not one of none, gzip, snappy, lz4, zstd",
                self.compression
            ));
        }
        Ok(())
    }

    pub(crate) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("statistics.interval.ms", "1000");
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// A client whose statistics nobody reads (rdkafka's default context would log them).
    pub(crate) fn quiet_client(&self) -> ClientConfig {
        let mut c = self.client();
        c.set("statistics.interval.ms", "0");
        c
    }

    fn producer(&self) -> ClientConfig {
        let mut c = self.client();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.message_timeout.as_millis().to_string(),
            );
        c
    }

    fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            );
        for (k, v) in CONSUMER_DEFAULTS {
            if !self.options.contains_key(k) {
                c.set(k, v);
            }
        }
        c
    }
}

/// librdkafka consumer settings sqlvigil changes unless `options` names them:
/// - `fetch.wait.max.ms`: a fetch that finds nothing waits this long on the broker
///   before it is asked again; brokers that do not answer as soon as data arrives
///   (tansu) otherwise add up to the 500 ms default to every quiet-to-busy transition;
/// - `fetch.queue.backoff.ms`: once its prefetch queue is full (64 MB by default)
///   librdkafka looks again only after this; the queue drains in well under the 1 s
///   default, and the consumer then sat idle for the rest.
const CONSUMER_DEFAULTS: [(&str, &str); 2] = [
    ("fetch.wait.max.ms", "100"),
    ("fetch.queue.backoff.ms", "10"),
];

/// Feeds librdkafka's statistics into the self metrics.
#[derive(Clone)]
pub struct MetricsContext {
    stats: Arc<Stats>,
}

impl ClientContext for MetricsContext {
    fn stats(&self, s: Statistics) {
        match s.client_type.as_str() {
            "producer" => self
                .stats
                .kafka_producer_queue
                .store(s.msg_cnt, Ordering::Relaxed),
            _ => {
                let lag: i64 = s
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.values())
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                    .map(|p| p.consumer_lag)
                    .sum();
                self.stats
                    .kafka_consumer_lag
                    .store(lag.max(0) as u64, Ordering::Relaxed);
            }
        }
    }
}

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

pub struct KafkaBus {
    config: KafkaConfig,
    /// Replaced when librdkafka declares it dead (a fatal idempotence error).
    producer: std::sync::RwLock<FutureProducer<MetricsContext>>,
    context: MetricsContext,
}

fn other(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Other(format!("{what}: {e}"))
}

impl KafkaBus {
    /// Connect, create (or check) the topics, and return the bus.
    pub async fn connect(
        config: &KafkaConfig,
        topics: &[&str],
        stats: Arc<Stats>,
    ) -> Result<KafkaBus, BusError> {
        let context = MetricsContext { stats };
        let producer = Self::new_producer(config, &context)?;
        let bus = KafkaBus {
            config: config.clone(),
            producer: std::sync::RwLock::new(producer),
            context,
        };
        if config.create_topics {
            bus.create_topics(topics).await?;
        }
        bus.check_topics(topics).await?;
        Ok(bus)
    }

    fn new_producer(
        config: &KafkaConfig,
        context: &MetricsContext,
    ) -> Result<FutureProducer<MetricsContext>, BusError> {
        config
            .producer()
            .create_with_context(context.clone())
            .map_err(|e| other("kafka producer", e))
    }

    fn producer(&self) -> FutureProducer<MetricsContext> {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replace a dead producer (unless another publisher already did). What it had not
    /// delivered was refused to the clients, who send it again.
    fn renew(&self, dead: &FutureProducer<MetricsContext>) {
        let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if slot.client().native_ptr() != dead.client().native_ptr() {
            return;
        }
        match Self::new_producer(&self.config, &self.context) {
            Ok(fresh) => {
                tracing::warn!("kafka producer was fenced or failed for good; started a new one");
                *slot = fresh;
            }
            Err(e) => tracing::error!("kafka producer failed and cannot be renewed: {e}"),
        }
    }

    async fn create_topics(&self, topics: &[&str]) -> Result<(), BusError> {
        let admin: AdminClient<_> = self
            .config
            .quiet_client()
            .create()
            .map_err(|e| other("kafka admin client", e))?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| self.broker_error("creating topics", e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(BusError::Other(format!(
                        "kafka: cannot create topic `{topic}` on {}: {code}",
                        self.config.brokers
                    )))
                }
            }
        }
        Ok(())
    }

    /// Every topic must exist with at least one partition.
    async fn check_topics(&self, topics: &[&str]) -> Result<(), BusError> {
        for t in topics {
            let producer = self.producer();
            let topic = t.to_string();
            let md = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
            })
            .await
            .map_err(|e| other("kafka metadata", e))?
            .map_err(|e| self.broker_error(&format!("reading topic `{t}`"), e))?;
            let ok = md
                .topics()
                .iter()
                .any(|m| m.name() == *t && m.error().is_none() && !m.partitions().is_empty());
            if !ok {
                return Err(BusError::Other(format!(
                    "kafka: topic `{t}` does not exist on {} (create it, or set bus.kafka.create_topics: true)",
                    self.config.brokers
                )));
            }
        }
        Ok(())
    }

    fn broker_error(&self, what: &str, e: KafkaError) -> BusError {
        BusError::Unavailable(format!("kafka {what} at {}: {e}", self.config.brokers))
    }

    /// A consumer of `group` on `topic`. The Kafka group id is `<group>.<topic>`: one
    /// group per topic, so a member joining one topic's group does not stop the
    /// consumers of the others for a rebalance.
    pub fn consumer(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<StreamConsumer<GroupContext>, BusError> {
        let context = GroupContext {
            metrics: self.context.clone(),
            revoked: Arc::default(),
        };
        let consumer: StreamConsumer<GroupContext> = self
            .config
            .consumer(&format!("{group}.{topic}"))
            .create_with_context(context)
            .map_err(|e| other("kafka consumer", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| self.broker_error(&format!("subscribing to `{topic}`"), e))?;
        Ok(consumer)
    }
}

/// Every record of `topic` from each partition's start to its end as of now, partition
/// by partition, without joining a group (nothing is committed): `sqlvigil replay`.
pub fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<Delivery>, BusError> {
    let unavailable = |what: &str, e: KafkaError| {
        BusError::Unavailable(format!("kafka {what} `{topic}` at {}: {e}", config.brokers))
    };
    let consumer: BaseConsumer = config
        .quiet_client()
        .set("group.id", "sqlvigil-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| other("kafka replay reader", e))?;
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
        return Err(BusError::Other(format!(
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
        .map_err(|e| BusError::Unavailable(format!("kafka at {}: {e}", config.brokers)))
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

/// An idempotent producer never sends again after librdkafka declares a fatal error, or
/// once the broker fenced its producer id (a broker without epoch bumps — tansu 0.6 —
/// does that after an outage): it has to be replaced.
fn producer_is_dead(producer: &FutureProducer<MetricsContext>, e: &KafkaError) -> bool {
    producer.client().fatal_error().is_some()
        || matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::Fatal
            )
        )
}

/// Whether a failed delivery is worth retrying (the broker is away or busy).
fn retryable(e: &KafkaError) -> bool {
    match e.rdkafka_error_code() {
        Some(code) => !matches!(
            code,
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
        ),
        None => true,
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<(), BusError> {
        let producer = self.producer();
        self.publish_with(&producer, topic, records)
            .await
            .map_err(|(err, cause)| {
                if cause.is_some_and(|c| producer_is_dead(&producer, &c)) {
                    self.renew(&producer);
                }
                err
            })
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        Ok(Box::new(KafkaSubscription {
            consumer: self.consumer(topic, group)?,
            topic: topic.to_string(),
        }))
    }

    /// Nothing to drain at shutdown: unacknowledged records stay in Kafka and are read
    /// again by the group.
    fn pending(&self, _topic: &str, _group: &str) -> u64 {
        0
    }

    fn durable(&self) -> bool {
        true
    }
}

impl KafkaBus {
    /// Send every record and wait for every delivery report.
    async fn publish_with(
        &self,
        producer: &FutureProducer<MetricsContext>,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<(), (BusError, Option<KafkaError>)> {
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let rec = FutureRecord::to(topic)
                .key(r.key.as_ref())
                .payload(r.payload.as_ref());
            match producer.send_result(rec) {
                Ok(f) => pending.push(f),
                Err((e, _)) => {
                    Stats::add(&self.context.stats.kafka_produce_errors, 1);
                    let err = if retryable(&e) {
                        BusError::Full(format!("{topic} (kafka producer: {e})"))
                    } else {
                        other(&format!("kafka produce to `{topic}`"), &e)
                    };
                    return Err((err, Some(e)));
                }
            }
        }
        // Every record must be acknowledged by the broker before the caller hears Ok.
        let mut first_err = None;
        for f in pending {
            let err = match f.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                Err(_) => KafkaError::Canceled,
            };
            Stats::add(&self.context.stats.kafka_produce_errors, 1);
            first_err.get_or_insert(err);
        }
        match first_err {
            None => Ok(()),
            Some(e) if retryable(&e) => Err((
                BusError::Unavailable(format!("kafka did not take the records for `{topic}`: {e}")),
                Some(e),
            )),
            Some(e) => Err((other(&format!("kafka produce to `{topic}`"), &e), Some(e))),
        }
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
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
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

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
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
                .map_err(|e| other("kafka offsets", e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_defaults_yield_to_options() {
        let mut cfg = KafkaConfig::default();
        let c = cfg.consumer("g");
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        cfg.options
            .insert("fetch.queue.backoff.ms".into(), "250".into());
        assert_eq!(cfg.consumer("g").get("fetch.queue.backoff.ms"), Some("250"));
        assert_eq!(cfg.consumer("g").get("fetch.wait.max.ms"), Some("100"));
    }
}
