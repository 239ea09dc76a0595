//! Snapshots in a compacted Kafka topic (`bus.topics.checkpoints`), so whichever process
//! of the group receives a partition finds its operator state.
//!
//! A snapshot of topic partition `p` is keyed `<topic>/<p>` and written to partition
//! `p mod n` of the checkpoint topic (n: its partition count), so loading one means
//! reading the tail of one partition, not the whole topic; compaction keeps the latest
//! per key. Loading takes the snapshot with the highest offset among the key's newest
//! records, so a late write from a process that had already lost the partition cannot
//! move its state backwards.

use super::consumer::read_ranges;
use super::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlvigil_core::{async_trait, CheckpointStore, Error, Result, Snapshot};
use std::time::Duration;

/// Largest snapshot, set on the topic (`max.message.bytes`) and the producer.
const MAX_SNAPSHOT_BYTES: usize = 64 << 20;
/// Records read per step when scanning a checkpoint partition backwards.
const SCAN_STEP: i64 = 16;
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaCheckpoints {
    config: KafkaConfig,
    topic: String,
    partitions: u32,
    producer: FutureProducer,
}

fn unavailable(what: &str, brokers: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("kafka {what} at {brokers}: {e}"))
}

impl KafkaCheckpoints {
    /// Create (when allowed) or check the checkpoint topic and open a producer for it.
    pub async fn connect(config: &KafkaConfig, topic: &str) -> Result<KafkaCheckpoints> {
        if config.create_topics {
            create(config, topic).await?;
        }
        let producer: FutureProducer = config
            .quiet_client()
            .set("compression.type", "zstd")
            .set("acks", "all")
            .set("message.max.bytes", MAX_SNAPSHOT_BYTES.to_string())
            .set("message.timeout.ms", TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| Error::Config(format!("kafka checkpoint producer settings: {e}")))?;
        let partitions = partition_count(config, &producer, topic).await?;
        Ok(KafkaCheckpoints {
            config: config.clone(),
            topic: topic.to_string(),
            partitions,
            producer,
        })
    }

    fn key(topic: &str, partition: u32) -> String {
        format!("{topic}/{partition}")
    }

    fn home(&self, partition: u32) -> i32 {
        (partition % self.partitions) as i32
    }
}

async fn create(config: &KafkaConfig, topic: &str) -> Result<()> {
    let brokers = &config.brokers;
    let admin: AdminClient<_> = config
        .quiet_client()
        .create()
        .map_err(|e| Error::Config(format!("kafka admin client settings: {e}")))?;
    let max = MAX_SNAPSHOT_BYTES.to_string();
    let new = NewTopic::new(
        topic,
        config.partitions,
        TopicReplication::Fixed(config.replication),
    )
    .set("cleanup.policy", "compact")
    .set("max.message.bytes", &max);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| unavailable("creating the checkpoint topic", brokers, e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::failed(
                    format!("kafka: cannot create checkpoint topic `{t}` on {brokers}"),
                    code.to_string(),
                ))
            }
        }
    }
    Ok(())
}

async fn partition_count(
    config: &KafkaConfig,
    producer: &FutureProducer,
    topic: &str,
) -> Result<u32> {
    let client = producer.clone();
    let name = topic.to_string();
    let md =
        tokio::task::spawn_blocking(move || client.client().fetch_metadata(Some(&name), TIMEOUT))
            .await
            .map_err(|e| Error::task("kafka metadata", e))?
            .map_err(|e| unavailable(&format!("reading topic `{topic}`"), &config.brokers, e))?;
    let n = md
        .topics()
        .iter()
        .find(|m| m.name() == topic && m.error().is_none())
        .map_or(0, |m| m.partitions().len() as u32);
    if n == 0 {
        return Err(Error::Config(format!(
            "kafka: checkpoint topic `{topic}` does not exist on {} (create it compacted, or set bus.kafka.create_topics: true)",
            config.brokers
        )));
    }
    Ok(n)
}

#[async_trait]
impl CheckpointStore for KafkaCheckpoints {
    async fn save(&self, snapshots: &[Snapshot]) -> Result<()> {
        let mut bodies = Vec::with_capacity(snapshots.len());
        for s in snapshots {
            bodies.push((
                Self::key(&s.topic, s.partition),
                self.home(s.partition),
                serde_json::to_vec(s)?,
            ));
        }
        let mut pending = Vec::with_capacity(bodies.len());
        for (key, partition, body) in &bodies {
            let record = FutureRecord::to(&self.topic)
                .key(key)
                .partition(*partition)
                .payload(body);
            pending.push(self.producer.send(record, TIMEOUT));
        }
        for (sent, (key, _, body)) in futures::future::join_all(pending)
            .await
            .into_iter()
            .zip(&bodies)
        {
            if let Err((e, _)) = sent {
                return Err(Error::Unavailable(format!(
                    "kafka did not take the operator checkpoint `{key}` ({} bytes) for `{}`: {e}",
                    body.len(),
                    self.topic
                )));
            }
        }
        Ok(())
    }

    async fn load(&self, topic: &str, partition: u32) -> Result<Option<Snapshot>> {
        let consumer: BaseConsumer = self
            .config
            .quiet_client()
            // librdkafka wants a group for `assign`; it never joins or commits here.
            .set("group.id", "sqlvigil-checkpoint-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| Error::Config(format!("kafka checkpoint reader settings: {e}")))?;
        let (ck, home, key) = (
            self.topic.clone(),
            self.home(partition),
            Self::key(topic, partition),
        );
        let brokers = self.config.brokers.clone();
        tokio::task::spawn_blocking(move || latest(&consumer, &ck, home, &key))
            .await
            .map_err(|e| Error::task("kafka checkpoint reader", e))?
            .map_err(|e| unavailable("reading operator checkpoints", &brokers, e))
    }
}

/// The newest snapshot for `key` in partition `home` of `topic`: scan back from the end
/// in steps until one is found or the partition's start is reached.
fn latest(
    consumer: &BaseConsumer,
    topic: &str,
    home: i32,
    key: &str,
) -> std::result::Result<Option<Snapshot>, String> {
    let (low, high) = consumer
        .fetch_watermarks(topic, home, TIMEOUT)
        .map_err(|e| e.to_string())?;
    let mut end = high;
    while end > low {
        let start = (end - SCAN_STEP).max(low);
        let found = read_range(consumer, topic, home, start, end, key)?;
        if let Some(best) = found.into_iter().max_by_key(|s| s.next_offset) {
            return Ok(Some(best));
        }
        end = start;
    }
    Ok(None)
}

/// The snapshots for `key` among the records at offsets `start..end`.
fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    home: i32,
    start: i64,
    end: i64,
    key: &str,
) -> std::result::Result<Vec<Snapshot>, String> {
    let records = read_ranges(consumer, topic, &[(home, start, end)], TIMEOUT)?;
    let mut out = Vec::new();
    for d in records.iter().filter(|d| d.record.key == key.as_bytes()) {
        if d.record.payload.is_empty() {
            continue; // a tombstone
        }
        match serde_json::from_slice::<Snapshot>(&d.record.payload) {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!(
                key,
                offset = d.offset,
                "unreadable operator checkpoint skipped: {e}"
            ),
        }
    }
    Ok(out)
}
