//! Where operator state is snapshotted, per bus partition.
//!
//! Records are keyed by instance, so each partition carries a disjoint set of series and
//! its operator chain can be checkpointed on its own, as a [`Snapshot`] naming the bus
//! offset it covers. The runtime saves snapshots before it commits offsets, and the next
//! owner of a partition loads its latest snapshot before judging its first record.
//! Implementations: SQLite (`sqlvigil-store`, for the in-process bus) and a compacted
//! Kafka topic (`sqlvigil-bus`, reachable from every process of a consumer group).

use crate::error::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The operator state of one partition of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub topic: String,
    pub partition: u32,
    /// The state reflects every record of the partition before this offset (and none
    /// after). Only meaningful on a durable bus, whose offsets outlive the process.
    pub next_offset: u64,
    /// Each operator's checkpoint, by operator name.
    pub operators: serde_json::Map<String, serde_json::Value>,
}

/// Where snapshots are kept.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Make the snapshots durable (all of them, or an error).
    async fn save(&self, snapshots: &[Snapshot]) -> Result<()>;
    /// The latest snapshot of `topic`/`partition`, if any.
    async fn load(&self, topic: &str, partition: u32) -> Result<Option<Snapshot>>;
}
