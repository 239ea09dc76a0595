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
//!
//! [`config`] is the user-facing contract (`bus.kafka`), [`producer`] the publishing
//! side and the [`KafkaBus`] itself, [`consumer`] the group members and the range
//! readers, [`checkpoints`] the compacted topic of operator snapshots.

pub mod checkpoints;
pub mod config;
pub mod consumer;
pub mod producer;

pub use checkpoints::KafkaCheckpoints;
pub use config::KafkaConfig;
pub use consumer::read_topic;
pub use producer::KafkaBus;
