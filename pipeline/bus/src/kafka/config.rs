//! `bus.kafka`: brokers, topics, producer and consumer settings, passed to librdkafka.

use super::{KafkaBus, KafkaCheckpoints};
use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};
use sqlvigil_core::{async_trait, Build, BuildContext, Error, Result};
use std::collections::BTreeMap;
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
    #[serde(with = "sqlvigil_model::duration")]
    pub linger: Duration,
    /// `message.timeout.ms`: after this a record the broker did not take is refused
    /// to the OTLP client as retryable.
    #[serde(with = "sqlvigil_model::duration")]
    pub message_timeout: Duration,
    /// `session.timeout.ms` of consumers: how soon a dead consumer's partitions move.
    #[serde(with = "sqlvigil_model::duration")]
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

#[async_trait]
impl Build for KafkaConfig {
    type Output = KafkaBus;

    fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::Config(
                "bus.kafka.brokers must name at least one broker".into(),
            ));
        }
        if self.partitions < 1 || self.replication < 1 {
            return Err(Error::Config(
                "bus.kafka.partitions and bus.kafka.replication must be at least 1".into(),
            ));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return Err(Error::Config(format!(
                "bus.kafka.compression: `{}` is not one of none, gzip, snappy, lz4, zstd",
                self.compression
            )));
        }
        Ok(())
    }

    /// Connect, and create (or check) the data topics.
    async fn build(&self, ctx: &BuildContext) -> Result<KafkaBus> {
        KafkaBus::connect(self, &ctx.topics.data(), ctx.stats.clone()).await
    }
}

impl KafkaConfig {
    /// The compacted topic of operator snapshots (`bus.topics.checkpoints`).
    pub async fn checkpoints(&self, ctx: &BuildContext) -> Result<KafkaCheckpoints> {
        KafkaCheckpoints::connect(self, &ctx.topics.checkpoints).await
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

    pub(crate) fn producer(&self) -> ClientConfig {
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

    pub(crate) fn consumer(&self, group: &str) -> ClientConfig {
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
