//! The producer side of [`KafkaBus`]: connect, create or check the topics, publish and
//! wait for every delivery report, replace a producer librdkafka declared dead.

use super::config::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use sqlvigil_core::{async_trait, Bus, Error, Record, Result, Stats, Subscription};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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

pub struct KafkaBus {
    pub(crate) config: KafkaConfig,
    /// Replaced when librdkafka declares it dead (a fatal idempotence error).
    producer: std::sync::RwLock<FutureProducer<MetricsContext>>,
    pub(crate) context: MetricsContext,
}

/// A client-side failure that retrying will not fix.
pub(crate) fn other(what: &str, e: impl std::fmt::Display) -> Error {
    Error::failed(what, e.to_string())
}

impl KafkaBus {
    /// Connect, create (or check) the topics, and return the bus.
    pub async fn connect(
        config: &KafkaConfig,
        topics: &[&str],
        stats: Arc<Stats>,
    ) -> Result<KafkaBus> {
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
    ) -> Result<FutureProducer<MetricsContext>> {
        config
            .producer()
            .create_with_context(context.clone())
            .map_err(|e| Error::Config(format!("kafka producer settings: {e}")))
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

    async fn create_topics(&self, topics: &[&str]) -> Result<()> {
        let admin: AdminClient<_> = self
            .config
            .quiet_client()
            .create()
            .map_err(|e| Error::Config(format!("kafka admin client settings: {e}")))?;
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
                    return Err(other(
                        &format!(
                            "kafka: cannot create topic `{topic}` on {}",
                            self.config.brokers
                        ),
                        code,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Every topic must exist with at least one partition.
    async fn check_topics(&self, topics: &[&str]) -> Result<()> {
        for t in topics {
            let producer = self.producer();
            let topic = t.to_string();
            let md = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
            })
            .await
            .map_err(|e| Error::task("kafka metadata", e))?
            .map_err(|e| self.broker_error(&format!("reading topic `{t}`"), e))?;
            let ok = md
                .topics()
                .iter()
                .any(|m| m.name() == *t && m.error().is_none() && !m.partitions().is_empty());
            if !ok {
                return Err(Error::Config(format!(
                    "kafka: topic `{t}` does not exist on {} (create it, or set bus.kafka.create_topics: true)",
                    self.config.brokers
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn broker_error(&self, what: &str, e: KafkaError) -> Error {
        Error::Unavailable(format!("kafka {what} at {}: {e}", self.config.brokers))
    }
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
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<()> {
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

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        self.subscription(topic, group)
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
    ) -> std::result::Result<(), (Error, Option<KafkaError>)> {
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
                        Error::Full(format!("{topic} (kafka producer: {e})"))
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
                Error::Unavailable(format!("kafka did not take the records for `{topic}`: {e}")),
                Some(e),
            )),
            Some(e) => Err((other(&format!("kafka produce to `{topic}`"), &e), Some(e))),
        }
    }
}
