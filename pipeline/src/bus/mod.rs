//! The bus between the receiver and everything downstream.
//!
//! Topics are split into partitions; records with the same key (the SQL Server instance)
//! land in the same partition so one instance's data stays in order. Consumers read in a
//! group and acknowledge what they have made durable: a new subscription of the same
//! group resumes after the last acknowledged record (at-least-once). The in-process
//! [`memory::MemoryBus`] is the embedded default; [`kafka::KafkaBus`] implements the same
//! trait over Kafka.

pub mod kafka;
pub mod memory;

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The topic is at capacity; the publisher should retry later.
    #[error("topic `{0}` is full, retry later")]
    Full(String),
    #[error("bus is closed")]
    Closed,
    /// The broker is unreachable or did not take the records in time.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

impl BusError {
    /// Whether a client should retry (maps to UNAVAILABLE / HTTP 503).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BusError::Full(_) | BusError::Closed | BusError::Unavailable(_)
        )
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
    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<(), BusError>;

    /// Join consumer `group` on `topic`, resuming after its last acknowledged records.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError>;

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
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError>;

    /// Acknowledge everything delivered so far up to and including these records.
    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<(), BusError>;

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
