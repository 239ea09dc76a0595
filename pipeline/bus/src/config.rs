//! `bus:` — which bus, its topics, and each kind's settings.

use crate::kafka::KafkaConfig;
use crate::memory::MemoryConfig;
use crate::wal::Durability;
use serde::{Deserialize, Serialize};
use sqlvigil_core::{Error, Result, Topics};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process bus (the embedded default).
    Memory,
    /// Kafka (`bus.kafka`).
    Kafka,
}

/// The bus between the receiver and the operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// Records a topic may hold before publishers are told to retry (back-pressure;
    /// in-process bus).
    pub capacity: usize,
    /// Partitions per topic; records with the same key (instance) share one
    /// (in-process bus; Kafka topics sqlvigil creates use `bus.kafka.partitions`).
    pub partitions: u32,
    /// What an acknowledged publish survives (in-process bus): `fsync` (default; on
    /// disk before the receiver answers, group-committed), `os_cache` (written to the
    /// OS: survives the process, not the machine) or `none` (memory only).
    pub durability: Durability,
    /// Least time between two group commits (`fsync`). 0 (the default): a round starts
    /// as soon as the previous one ends, and what was written meanwhile shares it; a
    /// longer interval gathers more writes per sync at the price of each publish's
    /// latency (see BENCHMARKS.md).
    #[serde(with = "sqlvigil_model::duration")]
    pub commit_interval: Duration,
    /// Size past which a write-ahead log segment is closed and a new one begun.
    pub segment_bytes: u64,
    pub topics: Topics,
    /// Brokers and client settings when `kind` is `kafka`.
    pub kafka: KafkaConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Memory,
            capacity: 20_000,
            partitions: 4,
            durability: Durability::Fsync,
            commit_interval: Duration::ZERO,
            segment_bytes: 64 << 20,
            topics: Topics::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl BusConfig {
    /// The in-process bus's settings.
    pub fn memory(&self) -> MemoryConfig {
        MemoryConfig {
            capacity: self.capacity,
            partitions: self.partitions,
            durability: self.durability,
            commit_interval: self.commit_interval,
            segment_bytes: self.segment_bytes,
        }
    }

    /// The section of the configured kind must be valid; the others are ignored.
    pub fn validate(&self) -> Result<()> {
        use sqlvigil_core::Build;
        for (field, value) in [
            ("bus.capacity", self.capacity),
            ("bus.partitions", self.partitions as usize),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{field} must be greater than 0")));
            }
        }
        match self.kind {
            BusKind::Memory => self.memory().validate(),
            BusKind::Kafka => self.kafka.validate(),
        }
    }
}
